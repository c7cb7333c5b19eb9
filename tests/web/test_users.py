"""Real users at the WSGI level: authenticated pages by default (no REMOTE_USER: refused),
single-user mode only when configured and announced on every page, Kerberos-style user names,
what owners, other users and admins see of a reservation (pages and JSON twins alike), numbers
in query parameters and paths, readiness and login lines, the no-SSH-key warning, the nav."""

from datetime import timedelta

import pytest

from conftest import NOW, count_rows
from vc import keys
from vc import reservations as R
from vc.errors import ConfigError
from vc.web import settings as wsettings
from webutil import Client, make_app, web_config

H = timedelta(hours=1)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("webstate-users")


@pytest.fixture
def wcfg(migrated, db, state_dir):
    # admins: root and alice; frontend fixed so that the login lines are known
    return web_config(migrated, state_dir, frontend="fe.example")


@pytest.fixture
def app(wcfg):
    """The pages as configured by default: Apache authenticates (auth = pam)."""
    return make_app(wcfg, auth="pam")


def reserve(cfg, db, owner, start=NOW + H, end=NOW + 3 * H, computes=1, **kw):
    fields = {"owner": owner, "start": start, "end": end, "gateways": 1, "computes": computes}
    fields.update(kw)
    return R.create(cfg, db, fields, NOW)


def register_form(**over):
    f = {"start": "2026-12-01 10:00", "end": "2026-12-01 14:00", "gateways": "1",
         "computes": "1", "gateway_memory_mb": "256", "gateway_disk_gb": "5",
         "gateway_vcpus": "1", "compute_memory_mb": "256", "compute_disk_gb": "5",
         "compute_vcpus": "1", "comment": ""}
    f.update(over)
    return f


def new_key():
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ed25519

    k = ed25519.Ed25519PrivateKey.generate()
    return k.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()


def running_cluster(cfg, db, owner, readiness=("up", "up")):
    """A running rack of ``owner`` with a gateway and a compute node, an error and events that
    name internals: a path under the state dir, an IQN, the physical host."""
    rack = reserve(cfg, db, owner, start=NOW - H)
    state = cfg.site.state_dir

    def run(cur):
        cur.execute("UPDATE vcregist SET state = 'running', error = %s WHERE rack = %s",
                    ("storage: h1 refused iqn.2026-11.vc.frontend:rack%d.data" % rack, rack))
        for app, rank, ip, pub in (("gateway", 0, "10.200.9.2", "198.51.100.10"),
                                   ("compute", 0, "10.200.9.3", None)):
            cur.execute(
                "INSERT INTO vcnode (rack, appliance, `rank`, name, mac, ip, public_ip, host, "
                "state, readiness, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 'h1', "
                "'running', %s, %s)",
                (rack, app, rank, "%s-%d-%d" % (app, rack, rank),
                 "52:54:00:aa:%02x:%02x" % (rack % 256, rank + (app != "gateway")), ip, pub,
                 readiness[0 if app == "gateway" else 1], NOW.replace(tzinfo=None)))
        cur.execute("INSERT INTO vcevent (rack, at, actor, from_state, to_state, reason) "
                    "VALUES (%s, %s, 'vc_cron', 'running', 'running', %s)",
                    (rack, NOW.replace(tzinfo=None),
                     "start: dump done: %s/dumps/rack-%d.dump on h1" % (state, rack)))

    db.transaction(run)
    return rack


def section(text, rack):
    return text.split('id="rack-%d"' % rack)[1].split("</section>")[0]


# ---------------------------------------------------------------------------- authentication
def test_auth_is_on_by_default():
    assert wsettings.WebSettings().auth == "pam"
    assert wsettings.WebSettings().htpasswd is None


@pytest.mark.parametrize("text, key", [
    ("[web]\nauth = kerberos\n", "[web] auth"),
    ("[web]\nauth =\n", "[web] auth"),
    ("[web]\nhtpasswd = relative/file\n", "[web] htpasswd"),
])
def test_auth_settings_errors_name_the_key(tmp_path, text, key):
    p = tmp_path / "vc.conf"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        wsettings.load(str(p))
    assert e.value.key == key


def test_htpasswd_path_default_and_given(tmp_path):
    assert wsettings.htpasswd_path(wsettings.WebSettings(), "/srv/vc") == "/srv/vc/web/htpasswd"
    s = wsettings.WebSettings(htpasswd="/etc/vc/htpasswd")
    assert wsettings.htpasswd_path(s, "/srv/vc") == "/etc/vc/htpasswd"


@pytest.mark.parametrize("method, path", [
    ("GET", "/"), ("GET", "/reservations"), ("GET", "/register"), ("GET", "/targets"),
    ("GET", "/tables"), ("GET", "/timeline"), ("GET", "/keys"), ("GET", "/nowhere"),
    ("POST", "/register"), ("POST", "/reservations/1/stop"),
])
def test_no_remote_user_is_refused_never_a_default_user(app, wcfg, db, method, path):
    rack = reserve(wcfg, db, "root")
    before = count_rows(db)
    anon = Client(app)  # no REMOTE_USER
    if method == "POST":
        r = anon.post(path, register_form(confirm="yes"))
    else:
        r = anon.get(path)
    assert r.status == 403 and "nobody is signed in" in r.text, r
    assert '<span class="who">not signed in</span>' in r.text  # not acting as root
    assert count_rows(db) == before and R.get(db, rack)["state"] == "reserved"
    j = anon.get("/reservations", "format=json")
    assert j.status == 403 and "nobody is signed in" in j.json()["error"]


@pytest.mark.parametrize("remote", ["a b", "x" * 65, "<b>eve</b>", "bob;rm -rf", "-bob",
                                    "eve\u00e9"])
def test_unusable_remote_user_is_refused(app, db, remote):
    r = Client(app, user=remote).get("/")
    assert r.status == 403 and "not a user name VC can use" in r.text
    assert "<b>eve</b>" not in r.text
    r = Client(app, user=remote).post("/register", register_form(), csrf=None)
    assert r.status == 403 and count_rows(db)["vcregist"] == 0


def test_authenticated_user_acts_as_remote_user_no_banner(app, db):
    r = Client(app, user="bob").get("/")
    assert r.status == 200 and "Signed in as <strong>bob</strong>" in r.text
    assert 'id="single-user"' not in r.text and "single-user" not in r.text
    assert Client(app, user="bob").get("/", "format=json").json()["single_user"] is False


@pytest.mark.parametrize("path", ["/", "/register", "/reservations", "/timeline", "/keys",
                                  "/targets", "/tables", "/nowhere"])
def test_single_user_mode_is_announced_on_every_page(wcfg, path):
    single = Client(make_app(wcfg, auth="single-user"))
    r = single.get(path)
    assert 'id="single-user"' in r.text and "Single-user mode" in r.text, path
    assert "everyone who reaches these pages acts as <strong>root</strong>" in r.text
    # an authenticated user in single-user mode is that user (and no banner)
    r = Client(make_app(wcfg, auth="single-user"), user="bob").get(path)
    assert 'id="single-user"' not in r.text


def test_kerberos_style_user_books_and_changes_own(app, db):
    krb = Client(app, user="alice@EXAMPLE.ORG")
    page = krb.get("/register")
    assert page.status == 200
    r = krb.post("/register", register_form(), csrf=page.token)
    assert r.status == 303, r
    [row] = R.list_all(db)
    assert row["owner"] == "alice@EXAMPLE.ORG"
    mine = krb.get("/reservations", "show=mine&format=json").json()["reservations"]
    assert [x["owner"] for x in mine] == ["alice@EXAMPLE.ORG"]
    assert set(mine[0]["actions"]) == {"extend", "stop", "delete"}
    r = krb.post("/reservations/%d/stop" % row["rack"], {"confirm": "yes"})
    assert r.status == 303 and R.get(db, row["rack"])["state"] == "stopped"
    # another realm's alice is somebody else
    r = Client(app, user="alice@OTHER.ORG").post("/reservations/%d/delete" % row["rack"],
                                                 {"confirm": "yes"})
    assert r.status == 403


# ---------------------------------------------------------------------------- who sees what
def test_other_users_see_no_internal_details(app, wcfg, db):
    rack = running_cluster(wcfg, db, "carol")
    bob = Client(app, user="bob")
    html = section(bob.get("/reservations").text, rack)
    assert "owner carol" in html and "gateway-%d-0" % rack in html  # the node, by name
    for secret in ("52:54:00:aa", "10.200.9.", "198.51.100.10", "<td>h1</td>", "Error:",
                   "iqn.", "refused", "ssh -J", "Stop now", "Delete", "Change end"):
        assert secret not in html, secret
    detail = bob.get("/reservations/%d" % rack).text
    for secret in ("52:54:00:aa", "10.200.9.", "dumps", str(wcfg.site.state_dir), "iqn.",
                   "refused", "ssh -J", 'action="/vc/reservations/%d/' % rack):
        assert secret not in detail, secret
    # the JSON twins carry the same, no more
    item = [x for x in bob.get("/reservations", "format=json").json()["reservations"]
            if x["rack"] == rack][0]
    assert {k for n in item["nodes"] for k in n} <= {"name", "appliance", "rank", "state",
                                                      "readiness"}
    assert item["error"] is None and item["actions"] == {} and item["login"] == []
    d = bob.get("/reservations/%d" % rack, "format=json").json()["reservation"]
    assert d["error"] is None and all(e["reason"] is None for e in d["events"])
    assert {k for n in d["nodes"] for k in n} <= {"name", "appliance", "rank", "state",
                                                   "readiness"}
    assert "dumps" not in str(d) and "52:54:00:aa" not in str(d)


def test_owner_sees_what_they_need_not_the_frontends_internals(app, wcfg, db):
    rack = running_cluster(wcfg, db, "carol")
    carol = Client(app, user="carol")  # not an admin
    html = section(carol.get("/reservations").text, rack)
    assert "52:54:00:aa:%02x:00" % (rack % 256) in html and "10.200.9.2" in html
    assert "198.51.100.10" in html and "Stop now" in html
    assert "<th>Host</th>" not in html and "<td>h1</td>" not in html
    assert "Error: storage: a host refused an iSCSI volume" in html
    detail = carol.get("/reservations/%d" % rack).text
    assert "start: dump done: …/rack-%d.dump on a host" % rack in detail
    assert str(wcfg.site.state_dir) not in detail and "iqn." not in detail
    d = carol.get("/reservations/%d" % rack, "format=json").json()["reservation"]
    assert str(wcfg.site.state_dir) not in str(d) and "iqn." not in str(d)
    assert all("host" not in n for n in d["nodes"]) and d["nodes"][0]["ip"] == "10.200.9.2"


def test_admin_sees_everything(app, wcfg, db):
    rack = running_cluster(wcfg, db, "carol")
    alice = Client(app, user="alice")  # an admin
    detail = alice.get("/reservations/%d" % rack).text
    assert "%s/dumps/rack-%d.dump on h1" % (wcfg.site.state_dir, rack) in detail
    assert "iqn.2026-11.vc.frontend:rack%d.data" % rack in detail and "<td>h1</td>" in detail
    html = section(alice.get("/reservations").text, rack)
    assert "Stop now" in html and "<td>h1</td>" in html
    d = alice.get("/reservations/%d" % rack, "format=json").json()["reservation"]
    assert d["nodes"][0]["host"] == "h1" and d["visibility"] == "admin"


# ---------------------------------------------------------------------------- readiness, login
def test_readiness_and_ready_on_list_detail_and_json(app, wcfg, db):
    up = running_cluster(wcfg, db, "carol")
    booting = running_cluster(wcfg, db, "carol", readiness=("up", "late"))
    carol = Client(app, user="carol")
    html = carol.get("/reservations").text
    assert '<span class="ready">ready</span>' in section(html, up)
    assert '<span class="notready">not ready</span>' in section(html, booting)
    assert '<td class="readiness late">late</td>' in section(html, booting)
    data = {x["rack"]: x for x in carol.get("/reservations", "format=json").json()[
        "reservations"]}
    assert data[up]["ready"] is True and data[booting]["ready"] is False
    assert [n["readiness"] for n in data[booting]["nodes"]] == ["up", "late"]
    assert data[booting]["readiness"] == {"up": 1, "late": 1}
    d = carol.get("/reservations/%d" % booting).text
    assert "not ready" in d and "1 late, 1 up" in d
    assert carol.get("/reservations/%d" % up, "format=json").json()["reservation"]["ready"]
    # others see readiness too (not addresses)
    bob = Client(app, user="bob").get("/reservations", "format=json").json()["reservations"]
    assert {x["rack"]: x["ready"] for x in bob} == {up: True, booting: False}


def test_login_lines_for_owner_and_admins_only(app, wcfg, db):
    rack = running_cluster(wcfg, db, "carol")
    line = "ssh -J carol@fe.example root@198.51.100.10"
    for who in ("carol", "alice"):
        c = Client(app, user=who)
        assert line in c.get("/reservations/%d" % rack).text, who
        # one line each (through the gateway to the nodes by name)
        assert line + "\nthen on the gateway: ssh compute-%d-0" % rack in c.get(
            "/reservations/%d" % rack).text
        assert line in section(c.get("/reservations").text, rack), who
        assert c.get("/reservations/%d" % rack, "format=json").json()["reservation"][
            "login"][0] == line
    bob = Client(app, user="bob")
    assert "ssh -J" not in bob.get("/reservations/%d" % rack).text
    assert bob.get("/reservations/%d" % rack, "format=json").json()["reservation"][
        "login"] == []


# ---------------------------------------------------------------------------- no SSH key
WARNING = ("you have no SSH key: you will not be able to log in to your cluster — add one on "
           "My SSH keys")


def test_no_key_warning_register_and_view_booking_accepted(app, wcfg, db):
    bob = Client(app, user="bob")
    page = bob.get("/register")
    assert WARNING in page.text and 'id="key-warning"' in page.text
    assert bob.get("/register", "format=json").json()["key_warning"] == WARNING
    r = bob.post("/register", register_form(), csrf=page.token)
    assert r.status == 303  # accepted without a key
    rack = R.list_all(db)[0]["rack"]
    assert WARNING in bob.get("/reservations", r.location.split("?")[1].split("#")[0]).text
    assert WARNING in bob.get("/reservations/%d" % rack).text
    assert bob.get("/reservations/%d" % rack, "format=json").json()["key_warning"] == WARNING
    r = bob.post("/register", register_form(start="2026-12-01 15:00", end="2026-12-01 16:00"),
                 query="format=json")
    assert r.status == 201 and r.json()["key_warning"] == WARNING
    # an admin is told about the owner; another user nothing
    assert "bob has no SSH key" in Client(app, user="alice").get("/reservations/%d" % rack).text
    assert 'id="key-warning"' not in Client(app, user="carol").get(
        "/reservations/%d" % rack).text
    keys.add(db, "bob", new_key())
    assert 'id="key-warning"' not in bob.get("/register").text
    assert 'id="key-warning"' not in bob.get("/reservations/%d" % rack).text
    assert bob.get("/register", "format=json").json()["key_warning"] is None


# ---------------------------------------------------------------------------- nav, tables
def test_my_ssh_keys_in_nav_and_menu_once(app, db):
    bob = Client(app, user="bob")
    for path in ("/", "/reservations", "/register", "/timeline", "/keys"):
        nav = bob.get(path).text.split('<nav aria-label="pages">')[1].split("</nav>")[0]
        assert 'href="/vc/keys"' in nav and "My SSH keys" in nav, path
    menu = bob.get("/")
    main = menu.text.split("<main>")[1]
    assert main.count('href="/vc/keys"') == 1
    assert "/vc/keys" in [p["url"] for p in bob.get("/", "format=json").json()["pages"]]


def test_tables_list_vcsshkey_admin_only(app, db):
    keys.add(db, "bob", new_key())
    r = Client(app, user="alice").get("/tables")
    assert r.status == 200 and 'id="t-vcsshkey"' in r.text
    one = Client(app, user="alice").get("/tables", "table=vcsshkey&format=json").json()
    assert one["tables"][0]["total"] == 1
    assert Client(app, user="bob").get("/tables").status == 403
    assert Client(app, user="bob").get("/targets").status == 403


# ---------------------------------------------------------------------------- numbers
BAD_NUMBERS = ["²", "١", "9" * 5000, "99999999999999999999999", "-1", "1e3", " ", "0x10",
               "+5", "１"]


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("path, name, extra", [
    ("/reservations", "page", ""),
    ("/reservations", "rack", "msg=created&"),
    ("/tables", "offset", "table=vcregist&"),
    ("/timeline", "days", ""), ("/timeline", "gateways", ""), ("/timeline", "computes", ""),
    ("/timeline", "memory_mb", ""), ("/timeline", "vcpus", ""), ("/timeline", "hours", ""),
    ("/timeline.svg", "days", ""),
])
def test_bad_numbers_in_query_are_400(app, db, path, name, extra, value):
    from urllib.parse import quote

    r = Client(app, user="alice").get(path, "%s%s=%s" % (extra, name, quote(value)))
    assert r.status == 400, (name, value[:20], r)
    assert name in r.text and "Traceback" not in r.text
    assert "must be a whole number from" in r.text


@pytest.mark.parametrize("value", ["²", "١", "9" * 5000, "99999999999999999999999", "0", "-3"])
def test_bad_numbers_in_paths_are_400(app, wcfg, db, value):
    rack = reserve(wcfg, db, "bob")
    before = count_rows(db)
    alice = Client(app, user="alice")
    for method, path, what in (("GET", "/reservations/%s", "rack"),
                               ("POST", "/reservations/%s/stop", "rack"),
                               ("POST", "/targets/%s/edit", "target id"),
                               ("POST", "/targets/%s/pin", "target id"),
                               ("POST", "/keys/%s/delete", "key id")):
        r = alice.get(path % value) if method == "GET" else alice.post(path % value,
                                                                        {"confirm": "yes"})
        assert r.status == 400 and what in r.text, (path, value[:20], r)
    assert count_rows(db) == before and R.get(db, rack)["state"] == "reserved"


@pytest.mark.parametrize("value", ["２０２６-12-01", "9999-12-31", "0001-01-01", "2026-13-01",
                                   "2026-1-1", "x" * 5000])
def test_bad_timeline_from_is_400(app, db, value):
    r = Client(app, user="bob").get("/timeline", {"from": value})
    assert r.status == 400 and "from must be" in r.text
    assert Client(app, user="bob").get("/timeline.svg", {"from": value}).status == 400


@pytest.mark.parametrize("field", ["port", "iscsi_port"])
@pytest.mark.parametrize("value", ["²", "١", "9" * 5000, "99999999999999999999999", "0"])
def test_bad_target_ports_are_400_form_again(app, db, field, value):
    alice = Client(app, user="alice")
    form = {"name": "store1", "address": "192.0.2.7", "port": "22", "ssh_user": "root",
            "iscsi_port": "3260", field: value}
    r = alice.post("/targets/add", form)
    assert r.status == 400 and 'id="e-%s"' % field in r.text
    assert "must be a whole number from 1 to 65535" in r.text
    assert count_rows(db)["vciscsitarget"] == 0
    tid = db.transaction(lambda cur: (cur.execute(
        "INSERT INTO vciscsitarget (name, address, port, ssh_user, iscsi_port, created_at) "
        "VALUES ('keep', '192.0.2.9', 22, 'root', 3260, %s)", (NOW.replace(tzinfo=None),)),
        cur.lastrowid)[1])
    r = alice.post("/targets/%d/edit" % tid, form)
    assert r.status == 400 and 'id="e-%s"' % field in r.text
    assert db.query("SELECT name, port, iscsi_port FROM vciscsitarget") == [
        {"name": "keep", "port": 22, "iscsi_port": 3260}]


def test_parse_int_contract():
    from vc.errors import ValidationError
    from vc.numbers import parse_int

    assert parse_int("42", "n", 0, 100) == 42 and parse_int(" 7 ", "n", 0, 9) == 7
    assert parse_int("-5", "n", -10, 10) == -5 and parse_int(3, "n", 0, 9) == 3
    assert parse_int("007", "n", 0, 9) == 7
    for bad, lo in (("-5", 0), ("²", 0), ("١", 0), ("9" * 5000, 0), ("", 0), ("+1", 0),
                    ("1_0", 0), ("--1", -5), ("101", 0), (True, 0)):
        with pytest.raises(ValidationError) as e:
            parse_int(bad, "count", lo, 100)
        msg = e.value.errors["count"]
        assert msg.startswith("count must be a whole number from %d to 100" % lo)
        assert "\n" not in msg and len(msg) < 120

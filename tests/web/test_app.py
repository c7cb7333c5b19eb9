"""The web application at the WSGI level: every page, form rule, permission and CSRF case,
the JSON twins, and "invalid input: the form again, HTTP 400, nothing written"."""

import os
import re
import socket
import stat
import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from conftest import NOW, ROOT, count_rows, write_conf, BASE_CONF, db_overrides
from vc import reservations as R
from vc.errors import ConfigError
from vc.web import security, settings as wsettings, sshkey
from webutil import Client, make_app, web_config

H = timedelta(hours=1)


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("webstate")


@pytest.fixture
def wcfg(migrated, db, state_dir):
    """Config for the (emptied) test database; single-user mode user root (an admin)."""
    return web_config(migrated, state_dir)


@pytest.fixture
def app(wcfg):
    return make_app(wcfg)


@pytest.fixture
def client(app):
    return Client(app)


def reserve(cfg, db, owner="root", start=NOW + H, end=NOW + 3 * H, computes=1, **kw):
    fields = {"owner": owner, "start": start, "end": end, "gateways": 1, "computes": computes}
    fields.update(kw)
    return R.create(cfg, db, fields, NOW)


def set_state(db, rack, state, error=None, pending=None):
    db.transaction(lambda cur: cur.execute(
        "UPDATE vcregist SET state = %s, error = %s, pending = %s WHERE rack = %s",
        (state, error, pending, rack)))


def mac(rack, n):
    """A node's MAC in these tests (racks grow past 255 over a run)."""
    return "52:54:00:%02x:%02x:%02x" % (rack >> 8 & 255, rack & 255, n)


def add_node(db, rack, rank, appliance="compute", host="h1", state="running"):
    db.transaction(lambda cur: cur.execute(
        "INSERT INTO vcnode (rack, appliance, `rank`, name, mac, ip, public_ip, host, state, "
        "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (rack, appliance, rank, "%s-%d-%d" % (appliance, rack, rank),
         mac(rack, rank + (0 if appliance == "gateway" else 100)),
         "10.200.%d.%d" % (rack, rank + 10), "198.51.100.10" if appliance == "gateway" else None,
         host, state, NOW.replace(tzinfo=None))))


def add_target(db, name="t1", address="127.0.0.1", port=22):
    def run(cur):
        cur.execute("INSERT INTO vciscsitarget (name, address, port, ssh_user, iscsi_port, "
                    "created_at) VALUES (%s, %s, %s, 'root', 3260, %s)",
                    (name, address, port, NOW.replace(tzinfo=None)))
        return cur.lastrowid

    return db.transaction(run)


def register_form(**over):
    f = {"start": "2026-12-01 10:00", "end": "2026-12-01 14:00", "gateways": "1",
         "computes": "2", "gateway_memory_mb": "256", "gateway_disk_gb": "5",
         "gateway_vcpus": "1", "compute_memory_mb": "256", "compute_disk_gb": "5",
         "compute_vcpus": "1", "comment": ""}
    f.update(over)
    return f


# ---------------------------------------------------------------------------- settings
def _ini(tmp_path, text):
    p = tmp_path / "vc.conf"
    p.write_text(text)
    return str(p)


def test_settings_defaults_and_values(tmp_path):
    assert wsettings.load(_ini(tmp_path, "[database]\nuser = vc\n")) == wsettings.WebSettings(
        "root", 8080, "/vc")
    s = wsettings.load(_ini(tmp_path, "[web]\nuser = alice\nport = 9090\nurl_prefix = /x/vc/\n"))
    assert (s.user, s.port, s.url_prefix) == ("alice", 9090, "/x/vc")


@pytest.mark.parametrize("text, key", [
    ("[web]\nport = eighty\n", "[web] port"),
    ("[web]\nport = 70000\n", "[web] port"),
    ("[web]\nuser = a b\n", "[web] user"),
    ("[web]\nuser =\n", "[web] user"),
    ("[web]\nurl_prefix = vc\n", "[web] url_prefix"),
    ("[web]\nurl_prefix = /v c\n", "[web] url_prefix"),
    ("[web]\nprot = 80\n", "[web] prot"),
    ("[web\nport = 80\n", "(syntax)"),
])
def test_settings_errors_name_key_and_file(tmp_path, text, key):
    path = _ini(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        wsettings.load(path)
    assert e.value.key == key and e.value.path == path
    assert str(e.value).startswith("config error in %s: %s: " % (path, key))


def test_settings_missing_file_and_cli(tmp_path):
    with pytest.raises(ConfigError) as e:
        wsettings.load(str(tmp_path / "nope.conf"))
    assert e.value.key == "(file)"
    path = _ini(tmp_path, "[web]\nport = 9191\n")
    r = subprocess.run([sys.executable, "-m", "vc.web.settings", "--get", "port", path],
                       capture_output=True, text=True, cwd=ROOT)
    assert (r.returncode, r.stdout) == (0, "9191\n")
    r = subprocess.run([sys.executable, "-m", "vc.web.settings", "--get", "port",
                        _ini(tmp_path, "[web]\nport = x\n")], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2 and "[web] port" in r.stderr


def test_settings_for_config_without_file(wcfg):
    assert wsettings.for_config(wcfg) == wsettings.WebSettings()


# ---------------------------------------------------------------------------- menu, basics
def test_menu_single_user(client, wcfg, db):
    reserve(wcfg, db)
    r = client.get("/")
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    for title in ("iSCSI target setup", "Register a new virtual cluster", "View registrations",
                  "Timeline", "Show all tables"):
        assert title in r.text
    assert "single-user mode" in r.text and "1 reserved" in r.text
    assert 'href="/vc/register"' in r.text
    # no scripts, and headers that keep other sites out
    assert "<script" not in r.text
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY"


def test_menu_json_twin(client, wcfg, db):
    reserve(wcfg, db)
    for r in (client.get("/", "format=json"),
              client.get("/", headers={"HTTP_ACCEPT": "application/json"})):
        assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
        data = r.json()
        assert data["user"] == "root" and data["admin"] is True and data["single_user"] is True
        assert data["counts"] == {"reserved": 1}
        assert [p["url"] for p in data["pages"]][:2] == ["/vc/targets", "/vc/register"]
    # a browser's Accept (text/html first) gets HTML
    r = client.get("/", headers={"HTTP_ACCEPT": "text/html,application/json;q=0.9,*/*"})
    assert r.headers["Content-Type"].startswith("text/html")


def test_menu_known_user_not_admin(app):
    r = Client(app, user="bob").get("/")
    assert r.status == 200
    assert "bob" in r.text and "single-user" not in r.text
    assert "iSCSI target setup" not in r.text and "Show all tables" not in r.text


def test_redirect_to_slash_and_404_405(client):
    r = client.get("")
    assert r.status == 303 and r.location == "/vc/"
    r = client.get("/nowhere")
    assert r.status == 404 and "there is no page /vc/nowhere" in r.text
    r = client.post("/reservations")
    assert r.status == 405 and r.headers["Allow"] == "GET"
    r = client.get("/reservations/1/delete")
    assert r.status == 405 and r.headers["Allow"] == "POST"


def test_head_has_no_body(client):
    r = client.request("HEAD", "/")
    assert r.status == 200 and r.text == "" and int(r.headers["Content-Length"]) > 100


@pytest.mark.parametrize("host, ok", [
    ("localhost:8080", True), ("127.0.0.1:8080", True), ("[::1]:8080", True),
    ("vc.localhost", True), ("127.3.4.5", True), ("evil.example:8080", False),
    ("10.0.0.1", False), ("localhost.evil.example", False),
])
def test_host_must_be_loopback(app, host, ok):
    r = Client(app, host=host).get("/")
    assert (r.status == 200) is ok
    if not ok:
        assert r.status == 421 and "port-forward" in r.text


# ---------------------------------------------------------------------------- CSRF / Origin
def test_post_without_token_is_refused_and_writes_nothing(client, db):
    before = count_rows(db)
    r = client.post("/register", register_form(), csrf=None)
    assert r.status == 403 and "security token" in r.text
    assert count_rows(db) == before


@pytest.mark.parametrize("case", ["wrong-user", "garbage", "tampered", "expired", "future"])
def test_bad_tokens_refused(client, app, wcfg, db, case):
    secret = app.secret(wcfg)
    import time

    token = {
        "wrong-user": security.make_token(secret, "mallory"),
        "garbage": "hello",
        "tampered": security.make_token(secret, "root")[:-1] + "0",
        "expired": security.make_token(secret, "root", time.time() - 25 * 3600),
        "future": security.make_token(secret, "root", time.time() + 3600),
    }[case]
    if case == "tampered" and token == security.make_token(secret, "root"):
        token = token[:-1] + "1"
    r = client.post("/register", register_form(), csrf=token)
    assert r.status == 403
    assert count_rows(db)["vcregist"] == 0


def test_token_from_page_works_and_is_per_user(app, db):
    root = Client(app)
    page = root.get("/register")
    r = root.post("/register", register_form(), csrf=page.token)
    assert r.status == 303
    # bob (REMOTE_USER) cannot use root's token
    r = Client(app, user="bob").post("/register", register_form(), csrf=page.token)
    assert r.status == 403 and count_rows(db)["vcregist"] == 1


@pytest.mark.parametrize("headers", [
    {"HTTP_ORIGIN": "http://evil.example"},
    {"HTTP_ORIGIN": "http://localhost:9999"},
    {"HTTP_ORIGIN": "null"},
    {"HTTP_REFERER": "http://evil.example/page"},
    {"HTTP_REFERER": "not a url"},
])
def test_foreign_origin_or_referer_refused_even_with_token(client, db, headers):
    r = client.post("/register", register_form(), origin=None, headers=headers)
    assert r.status == 403 and "another site" in r.text
    assert count_rows(db)["vcregist"] == 0


@pytest.mark.parametrize("headers", [
    {},  # some clients send neither; the token still protects
    {"HTTP_REFERER": "http://localhost:8080/vc/register"},
    {"HTTP_ORIGIN": "http://localhost:8080"},
])
def test_same_origin_posts_pass(client, db, headers):
    r = client.post("/register", register_form(), origin=None, headers=headers)
    assert r.status == 303


def test_secret_generated_once(wcfg, tmp_path):
    cfg = web_config({"socket": "/x", "user": "u", "password": "", "name": "n"}, tmp_path)
    a = security.load_secret(cfg)
    b = security.load_secret(cfg)
    assert a == b and len(a) == 64
    assert stat.S_IMODE(os.stat(security.secret_path(cfg)).st_mode) == 0o640


# ---------------------------------------------------------------------------- register
def test_register_form_prefilled(client):
    r = client.get("/register")
    assert r.status == 200
    assert 'value="2026-12-01 09:00"' in r.text  # now, in Asia/Tokyo
    assert 'value="2026-12-01 11:00"' in r.text
    assert 'name="vol_mount_2"' in r.text and 'name="vol_mount_3"' not in r.text  # max_volumes 2
    assert 'name="owner"' in r.text  # root is an admin
    data = client.get("/register", "format=json").json()
    assert data["limits"]["max_nodes"] == 16 and data["csrf_token"]
    assert data["fields"]["gateway_memory_mb"] == "256"


def test_register_form_prefill_from_timeline_link(client):
    r = client.get("/register", {"start": "2026-12-02 10:00", "computes": "3",
                                 "memory_mb": "512"})
    assert 'value="2026-12-02 10:00"' in r.text
    assert 'id="f-computes" name="computes" value="3"' in r.text
    assert 'id="f-compute_memory_mb" name="compute_memory_mb" value="512"' in r.text


def test_register_creates_and_redirects(client, wcfg, db):
    t = add_target(db)
    r = client.post("/register", register_form(
        comment="for <b>the</b> course", vol_mount_1="/data", vol_target_1="t1",
        vol_size_1="10"))
    assert r.status == 303
    rack = int(re.search(r"rack=(\d+)", r.location).group(1))
    assert r.location == "/vc/reservations?msg=created&rack=%d#rack-%d" % (rack, rack)
    got = R.get(db, rack)
    assert got["owner"] == "root" and got["resources"]["compute"]["count"] == 2
    assert got["start"] == NOW + H  # 10:00 JST
    assert [(v["mount_point"], v["target"], v["size_gb"]) for v in got["volumes"]] == [
        ("/data", "t1", 10)]
    assert got["events"][0]["actor"] == "root"
    page = client.get("/reservations", r.location.split("?")[1].split("#")[0])
    assert "Reserved: rack %d." % rack in page.text
    assert "for &lt;b&gt;the&lt;/b&gt; course" in page.text  # autoescaped
    assert t


def test_register_start_in_the_past_is_accepted(client, db):
    r = client.post("/register", register_form(start="2026-12-01 08:00"))
    assert r.status == 303


def test_register_json(client, db):
    r = client.post("/register", register_form(), query="format=json")
    assert r.status == 201 and r.json()["url"] == "/vc/reservations/%d" % r.json()["rack"]
    r = client.post("/register", register_form(gateways="0"), query="format=json")
    assert r.status == 400 and "gateways" in r.json()["errors"]


BAD_FORMS = [
    ({"start": "tomorrow-ish"}, "start", "is not a time"),
    ({"start": ""}, "start", "start time is required"),
    ({"end": "2026-12-01 09:30", "start": "2026-12-01 10:00"}, "end", "must be after start"),
    ({"start": "2026-11-30 08:00", "end": "2026-12-01 08:30"}, "end", "already past"),
    ({"end": "2026-12-05 10:00"}, "end", "at most 48 hours"),
    ({"gateways": "0"}, "gateways", "between 1 and 2"),
    ({"gateways": "one"}, "gateways", "whole number"),
    ({"computes": "-1"}, "computes", "between 0 and 16"),
    ({"computes": "16"}, "computes", "at most 16 nodes per reservation"),
    ({"gateway_memory_mb": "8192"}, "gateway_memory_mb", "between 64 and 4096"),
    ({"compute_disk_gb": "0"}, "compute_disk_gb", "between 1 and 50"),
    ({"compute_vcpus": "9"}, "compute_vcpus", "between 1 and 4"),
    ({"comment": "two\nlines"}, "comment", "one line"),
    ({"comment": "x" * 256}, "comment", "at most 255"),
    ({"vol_mount_1": "data", "vol_target_1": "t1", "vol_size_1": "5"}, "vol_1",
     "absolute path"),
    ({"vol_mount_1": "/data", "vol_target_1": "nope", "vol_size_1": "5"}, "vol_1",
     "unknown iSCSI target"),
    ({"vol_mount_1": "/data", "vol_target_1": "", "vol_size_1": "5"}, "vol_1",
     "choose the iSCSI target"),
    ({"vol_mount_2": "/data", "vol_target_2": "t1", "vol_size_2": "500"}, "vol_2",
     "between 1 and 100"),
    ({"vol_mount_1": "/d", "vol_target_1": "t1", "vol_size_1": "1", "vol_mount_2": "/d/",
      "vol_target_2": "t1", "vol_size_2": "1"}, "vol_2", "given twice"),
]


@pytest.mark.parametrize("over, field, needle", BAD_FORMS,
                         ids=["%s-%d" % (f[1], i) for i, f in enumerate(BAD_FORMS)])
def test_register_invalid_input_400_form_again_nothing_written(client, db, over, field, needle):
    add_target(db)
    before = count_rows(db)
    form = register_form(**over)
    r = client.post("/register", form)
    assert r.status == 400, r
    assert any(needle in m for m in r.messages), r.messages
    assert "The reservation was not made" in r.text
    # the form comes back as typed
    for key, value in over.items():
        if value and "\n" not in value and not key.startswith("vol_target"):
            assert 'value="%s"' % value in r.text
        elif key.startswith("vol_target") and value == "t1":
            assert '<option value="t1" selected>' in r.text
    assert re.search(r'class="field error"', r.text)
    assert count_rows(db) == before


def test_register_owner_rules(app, db):
    r = Client(app, user="bob").post("/register", register_form(owner="carol"))
    assert r.status == 400 and any("only an admin" in m for m in r.messages)
    assert count_rows(db)["vcregist"] == 0
    assert 'name="owner"' not in Client(app, user="bob").get("/register").text
    r = Client(app, user="bob").post("/register", register_form())
    assert r.status == 303
    r = Client(app, user="alice").post("/register", register_form(owner="carol",
                                                                  start="2026-12-01 15:00",
                                                                  end="2026-12-01 16:00"))
    assert r.status == 303
    owners = sorted(x["owner"] for x in R.list_all(db))
    assert owners == ["bob", "carol"]


def test_register_capacity_refused_in_words_form_kept(client, wcfg, db):
    # h1 has 4096 MB: 2 x 2048 MB already booked over the window
    reserve(wcfg, db, computes=1, memory_mb=2048, start=NOW, end=NOW + 6 * H)
    before = count_rows(db)
    r = client.post("/register", register_form(computes="3", comment="big one"))
    assert r.status == 409
    assert "It does not fit." in r.text
    assert "refused: not enough memory from 2026-12-01 10:00 JST" in r.text
    assert 'value="big one"' in r.text and 'name="computes" value="3"' in r.text
    assert count_rows(db) == before


# ---------------------------------------------------------------------------- view registrations
def test_reservations_list_nodes_error_actions(client, wcfg, db):
    a = reserve(wcfg, db, computes=2)
    b = reserve(wcfg, db, start=NOW + 5 * H, end=NOW + 6 * H, computes=0)
    c = reserve(wcfg, db, start=NOW + 7 * H, end=NOW + 8 * H, computes=0)
    set_state(db, a, "running")
    add_node(db, a, 0, "gateway")
    add_node(db, a, 0)
    add_node(db, a, 1, host="h2")
    set_state(db, b, "failed", error="boot timed out on <h1>")
    set_state(db, c, "stopped")
    r = client.get("/reservations")
    assert r.status == 200
    for rack in (a, b, c):
        assert 'id="rack-%d"' % rack in r.text
    assert mac(a, 100) in r.text and "10.200.%d.10" % a in r.text
    assert "compute-%d-1" % a in r.text and "<td>h2</td>" in r.text
    assert "Error: boot timed out on &lt;h1&gt;" in r.text

    def section(rack):
        return r.text.split('id="rack-%d"' % rack)[1].split("</section>")[0]

    assert "Delete (stops it first)" in section(a) and "Stop now" in section(a)
    assert "Change end" in section(a)
    assert ">Delete<" in section(b) and "Stop now" in section(b)
    assert ">Delete<" in section(c) and "Stop now" not in section(c)
    assert "Change end" not in section(c)


def test_reservations_actions_only_for_owner_or_admin(app, wcfg, db):
    rack = reserve(wcfg, db, owner="carol")
    bob = Client(app, user="bob").get("/reservations")
    assert 'id="rack-%d"' % rack in bob.text and "Stop now" not in bob.text
    alice = Client(app, user="alice").get("/reservations")
    assert "Stop now" in alice.text
    carol = Client(app, user="carol").get("/reservations")
    assert "Stop now" in carol.text


def test_reservations_json_twin(client, wcfg, db):
    rack = reserve(wcfg, db)
    add_node(db, rack, 0, "gateway")
    data = client.get("/reservations", "format=json").json()
    assert data["page"] == 1 and data["next_page"] is None
    item = data["reservations"][0]
    assert item["rack"] == rack and item["start"] == "2026-12-01T01:00:00Z"
    assert item["nodes"][0]["mac"].startswith("52:54:00") and item["nodes"][0]["host"] == "h1"
    assert set(item["actions"]) == {"extend", "stop", "delete"}
    assert item["resources"]["compute"]["count"] == 1


def test_reservations_paging_and_filters(client, wcfg, db):
    def run(cur):
        for i in range(60):
            s = (NOW + timedelta(days=i - 30)).replace(tzinfo=None)
            cur.execute("INSERT INTO vcregist (owner, start_at, end_at, state, created_at, "
                        "updated_at) VALUES (%s, %s, %s, %s, %s, %s)",
                        ("root" if i % 3 else "bob", s, s + H,
                         "stopped" if i < 30 else "reserved", s, s))

    db.transaction(run)
    p1 = client.get("/reservations", "format=json").json()
    assert p1["page"] == 1 and p1["next_page"] == 2 and len(p1["reservations"]) == 20
    starts = [x["start"] for x in p1["reservations"]]
    assert starts == sorted(starts, reverse=True)
    seen = []
    page = 1
    while page:
        data = client.get("/reservations", "format=json&page=%d" % page).json()
        seen += [x["rack"] for x in data["reservations"]]
        page = data["next_page"]
    assert len(seen) == len(set(seen)) == 60  # every reservation, once
    cur = client.get("/reservations", "show=current&format=json&page=2").json()
    assert cur["next_page"] is None and len(cur["reservations"]) == 10
    first = client.get("/reservations", "show=current&format=json").json()["reservations"]
    assert [x["start"] for x in first] == sorted(x["start"] for x in first)  # soonest first
    mine = client.get("/reservations", "show=mine&format=json&page=2").json()
    assert len(mine["reservations"]) == 20 and mine["next_page"] is None
    assert {x["owner"] for x in mine["reservations"]} == {"root"}
    html = client.get("/reservations")
    assert "Next →" in html.text and "page 1" in html.text
    assert client.get("/reservations", "page=0").status == 400
    assert client.get("/reservations", "show=everything").status == 400


def test_reservation_detail_and_json(client, wcfg, db):
    rack = reserve(wcfg, db, comment="hello")
    r = client.get("/reservations/%d" % rack)
    assert r.status == 200 and "Rack %d" % rack in r.text and "History" in r.text
    assert "reserved 2026-12-01T01:00:00Z" in r.text
    data = client.get("/reservations/%d" % rack, "format=json").json()
    assert data["reservation"]["comment"] == "hello"
    assert data["reservation"]["events"][0]["to_state"] == "reserved"
    assert client.get("/reservations/999999").status == 404


# ---------------------------------------------------------------------------- actions
def test_delete_asks_then_deletes(client, wcfg, db):
    rack = reserve(wcfg, db)
    r = client.post("/reservations/%d/delete" % rack)
    assert r.status == 200 and "Delete rack %d?" % rack in r.text
    assert 'name="confirm" value="yes"' in r.text
    assert count_rows(db)["vcregist"] == 1
    r = client.post("/reservations/%d/delete" % rack, {"confirm": "yes"})
    assert r.status == 303 and r.location == "/vc/reservations?msg=deleted&rack=%d#rack-%d" % (
        rack, rack)
    assert count_rows(db)["vcregist"] == 0
    assert "Rack %d was deleted." % rack in client.get("/reservations",
                                                       "msg=deleted&rack=%d" % rack).text


def test_delete_with_volume_data_needs_the_checkbox(client, wcfg, db):
    add_target(db)
    rack = reserve(wcfg, db, volumes=["/data:t1:5"])
    set_state(db, rack, "stopped")
    db.transaction(lambda cur: cur.execute(
        "UPDATE vciscsi SET iqn = 'iqn.2026-11.vc.frontend:rack%d.data', lun = 1 "
        "WHERE rack = %%s" % rack, (rack,)))
    page = client.post("/reservations/%d/delete" % rack)
    assert 'name="delete_volumes"' in page.text and "/data" in page.text
    before = count_rows(db)
    r = client.post("/reservations/%d/delete" % rack, {"confirm": "yes"})
    assert r.status == 409 and "holding data" in r.text
    assert count_rows(db) == before and R.get(db, rack)["pending"] is None
    r = client.post("/reservations/%d/delete" % rack, {"confirm": "yes", "delete_volumes": "yes"})
    assert r.status == 303 and "msg=delete-pending" in r.location
    # the web process never speaks SSH: the tick (or vc_ctl) removes the LUNs, then the row
    got = R.get(db, rack)
    assert got["pending"] == "delete" and got["state"] == "stopped"


def test_delete_running_marks_pending(client, wcfg, db):
    rack = reserve(wcfg, db, start=NOW - H)
    set_state(db, rack, "running")
    add_node(db, rack, 0, "gateway")
    r = client.post("/reservations/%d/delete" % rack, {"confirm": "yes", "next": "detail"})
    assert r.status == 303 and "msg=delete-pending" in r.location
    assert r.location.startswith("/vc/reservations/%d?" % rack)
    got = R.get(db, rack)
    assert got["pending"] == "delete" and got["end"] == NOW and got["state"] == "running"
    page = client.get("/reservations")
    assert "delete pending" in page.text


def test_stop_now(client, wcfg, db):
    a = reserve(wcfg, db)
    b = reserve(wcfg, db, start=NOW - H, end=NOW + 4 * H, computes=0)
    set_state(db, b, "running")
    r = client.post("/reservations/%d/stop" % a, {"confirm": "yes"})
    assert r.status == 303 and "msg=stopped" in r.location
    assert R.get(db, a)["state"] == "stopped"
    r = client.post("/reservations/%d/stop" % b, {"confirm": "yes"})
    assert "msg=stop-requested" in r.location
    assert R.get(db, b)["end"] == NOW
    # stopped: no stop any more
    r = client.post("/reservations/%d/stop" % a, {"confirm": "yes"})
    assert r.status == 409 and "cannot stop it" in r.text


def test_extend(client, wcfg, db):
    rack = reserve(wcfg, db)
    r = client.post("/reservations/%d/extend" % rack, {"end": "2026-12-01 15:00"})
    assert r.status == 303 and "msg=extended" in r.location
    assert R.get(db, rack)["end"] == NOW + 6 * H
    assert client.post("/reservations/%d/extend" % rack, {"end": "now+2h"},
                       query="format=json").json()["end"] == "2026-12-01T02:00:00Z"


@pytest.mark.parametrize("end, status, needle", [
    ("soon", 400, "is not a time"),
    ("2026-12-01 08:00", 400, "must be after the start"),
    ("2026-12-05 12:00", 400, "at most 48 hours"),
])
def test_extend_invalid_400_nothing_changed(client, wcfg, db, end, status, needle):
    rack = reserve(wcfg, db)
    before = R.get(db, rack)
    r = client.post("/reservations/%d/extend" % rack, {"end": end, "next": "detail"})
    assert r.status == status and needle in r.text
    assert 'value="%s"' % end in r.text  # typed value kept
    after = R.get(db, rack)
    assert after["end"] == before["end"] and len(after["events"]) == len(before["events"])


def test_extend_beyond_capacity_409(client, wcfg, db):
    rack = reserve(wcfg, db, computes=1, memory_mb=2048)
    reserve(wcfg, db, start=NOW + 3 * H, end=NOW + 5 * H, computes=1, memory_mb=2048)
    r = client.post("/reservations/%d/extend" % rack, {"end": "2026-12-01 14:00"})
    assert r.status == 409 and "refused: not enough memory" in r.text
    assert R.get(db, rack)["end"] == NOW + 3 * H


def test_actions_permissions(app, wcfg, db):
    rack = reserve(wcfg, db, owner="carol")
    bob = Client(app, user="bob")
    for action in ("delete", "stop", "extend"):
        r = bob.post("/reservations/%d/%s" % (rack, action), {"confirm": "yes",
                                                               "end": "now+5h"})
        assert r.status == 403 and "belongs to carol" in r.text
    assert R.get(db, rack)["state"] == "reserved" and len(R.get(db, rack)["events"]) == 1
    r = Client(app, user="alice").post("/reservations/%d/stop" % rack, {"confirm": "yes"})
    assert r.status == 303
    assert bob.post("/reservations/999999/delete", {"confirm": "yes"}).status == 404


def test_action_json_needs_confirm(client, wcfg, db):
    rack = reserve(wcfg, db)
    r = client.post("/reservations/%d/delete" % rack, query="format=json")
    assert r.status == 400 and "confirm=yes" in r.json()["error"]
    r = client.post("/reservations/%d/delete" % rack, {"confirm": "yes"}, query="format=json")
    assert r.json() == {"rack": rack, "state": "deleted"}


# ---------------------------------------------------------------------------- timeline
def test_timeline_page_svg_and_fit(client, wcfg, db):
    a = reserve(wcfg, db, computes=2, memory_mb=1024)  # 3 GB of 4 GB from 10:00 to 12:00 JST
    r = client.get("/timeline")
    assert r.status == 200
    assert "<svg" in r.text and 'id="bar-%d"' % a in r.text
    assert "rack %d (root, reserved)" % a in r.text
    assert 'class="fit"' in r.text and "Book it" in r.text
    data = client.get("/timeline", "format=json").json()
    assert data["capacity"] == {"memory_mb": 4096, "vcpus": 8, "hosts": ["h1"]}
    assert [x["rack"] for x in data["reservations"]] == [a]
    assert data["reservations"][0]["memory_mb"] == 3072
    assert data["usage"][1]["memory_mb"] == 3072
    # default shape (1+2 x 256 MB, 2 h) fits at once
    assert data["fit"]["first"] == "2026-12-01T00:00:00Z"
    # 3 x 512 MB for 2 h: not beside rack a (10:00-12:00 JST); first at 12:00 JST = 03:00Z
    data = client.get("/timeline", "format=json&memory_mb=512&computes=2&hours=2").json()
    assert data["fit"]["first"] == "2026-12-01T03:00:00Z"
    assert data["fit"]["starts"][0] == {"from": "2026-12-01T03:00:00Z",
                                        "to": "2026-12-07T15:00:00Z"}  # 7 days in JST
    html = client.get("/timeline", "memory_mb=512&computes=2&hours=2").text
    assert "can start first at <strong>2026-12-01 12:00 JST</strong>" in html
    assert "start=2026-12-01+12%3A00" in html  # the "Book it" link fills the form


def test_timeline_nothing_fits(client, wcfg, db):
    data = client.get("/timeline", "format=json&computes=15&memory_mb=4096&vcpus=4").json()
    assert data["fit"]["first"] is None and data["fit"]["starts"] == []
    assert "does not fit anywhere" in client.get("/timeline", "computes=15&memory_mb=4096&"
                                                              "vcpus=4").text


@pytest.mark.parametrize("query", ["days=0", "days=99", "from=yesterday", "computes=x",
                                   "memory_mb=1", "hours=100"])
def test_timeline_bad_params_400(client, query):
    r = client.get("/timeline", query)
    assert r.status == 400


def test_timeline_other_days_and_svg(client, wcfg, db):
    rack = reserve(wcfg, db, start=NOW + timedelta(days=9), end=NOW + timedelta(days=9, hours=2))
    assert 'id="bar-%d"' % rack not in client.get("/timeline").text
    r = client.get("/timeline", "from=2026-12-08&days=3")
    assert 'id="bar-%d"' % rack in r.text
    svg = client.get("/timeline.svg", "from=2026-12-08&days=3")
    assert svg.headers["Content-Type"].startswith("image/svg+xml")
    assert svg.text.startswith("<svg xmlns=") and 'id="bar-%d"' % rack in svg.text


# ---------------------------------------------------------------------------- tables
def test_tables_admin_only_when_users_known(app, wcfg, db):
    reserve(wcfg, db)
    assert Client(app).get("/tables").status == 200  # single-user mode
    r = Client(app, user="bob").get("/tables")
    assert r.status == 403 and "admins only" in r.text
    r = Client(app, user="alice").get("/tables")
    assert r.status == 200
    for t in ("vcregist", "vcresource", "vcevent", "vccounter", "schema_version"):
        assert 'id="t-%s"' % t in r.text


def test_tables_json_and_one_table(client, wcfg, db):
    rack = reserve(wcfg, db)
    data = client.get("/tables", "format=json").json()
    regist = [t for t in data["tables"] if t["name"] == "vcregist"][0]
    assert regist["total"] == 1 and regist["rows"][0][regist["columns"].index("rack")] == rack
    one = client.get("/tables", "table=vcevent&format=json").json()
    assert [t["name"] for t in one["tables"]] == ["vcevent"]
    assert client.get("/tables", "table=mysql.user").status == 404
    assert client.get("/tables", "table=vcregist;DROP").status == 404


# ---------------------------------------------------------------------------- targets
def test_targets_page_shows_public_key(client, wcfg):
    r = client.get("/targets")
    assert r.status == 200
    pub = open(sshkey.key_path(wcfg) + ".pub").read().strip()
    assert pub.startswith("ssh-ed25519 ") and pub in r.text
    fp = subprocess.run(["ssh-keygen", "-lf", sshkey.key_path(wcfg) + ".pub"],
                        capture_output=True, text=True, check=True).stdout.split()[1]
    assert sshkey.fingerprint(pub) == fp and fp in r.text
    d = os.path.dirname(sshkey.key_path(wcfg))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o711
    assert stat.S_IMODE(os.stat(sshkey.key_path(wcfg)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sshkey.key_path(wcfg) + ".pub").st_mode) == 0o644
    # generated once: the same key on the next visit
    assert pub in client.get("/targets").text
    data = client.get("/targets", "format=json").json()
    assert data["public_key"] == pub and data["targets"] == []


def test_ssh_key_unavailable_is_explained(wcfg, tmp_path, monkeypatch):
    cfg = web_config({"socket": "/x", "user": "u", "password": "", "name": "n"},
                     tmp_path / "st")
    monkeypatch.setattr(sshkey, "ensure", lambda cfg: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied")))
    with pytest.raises(sshkey.KeyUnavailable) as e:
        sshkey.public_key(cfg)
    assert "ssh-keygen -t ed25519" in str(e.value)


def test_targets_add_edit_remove(client, db):
    r = client.post("/targets/add", {"name": "store1", "address": "192.0.2.7", "port": "22",
                                     "ssh_user": "root", "iscsi_port": "3260"})
    assert r.status == 303 and r.location == "/vc/targets?msg=target-added"
    rows = db.query("SELECT * FROM vciscsitarget")
    assert [(t["name"], t["address"], t["port"]) for t in rows] == [("store1", "192.0.2.7", 22)]
    tid = rows[0]["id"]
    page = client.get("/targets", "msg=target-added")
    assert "The iSCSI target was added." in page.text and "store1" in page.text
    # duplicate name
    r = client.post("/targets/add", {"name": "store1", "address": "h2.example", "port": "22",
                                     "ssh_user": "root", "iscsi_port": "3260"})
    assert r.status == 400 and any("exists already" in m for m in r.messages)
    # edit: a new address drops a pinned key
    db.transaction(lambda cur: cur.execute(
        "UPDATE vciscsitarget SET host_key_fingerprint = 'SHA256:x' WHERE id = %s",
        (tid,)))
    assert 'value="192.0.2.7"' in client.get("/targets/%d/edit" % tid).text
    r = client.post("/targets/%d/edit" % tid, {"name": "store1", "address": "192.0.2.8",
                                               "port": "2222", "ssh_user": "vc",
                                               "iscsi_port": "3261"})
    assert r.status == 303
    t = db.query("SELECT * FROM vciscsitarget")[0]
    assert (t["address"], t["port"], t["ssh_user"], t["iscsi_port"],
            t["host_key_fingerprint"]) == ("192.0.2.8", 2222, "vc", 3261, None)
    r = client.post("/targets/%d/delete" % tid)
    assert r.status == 303 and count_rows(db)["vciscsitarget"] == 0


@pytest.mark.parametrize("over, field", [
    ({"name": ""}, "name"), ({"name": "a b"}, "name"), ({"address": ""}, "address"),
    ({"address": "bad host!"}, "address"), ({"address": "300.1.1.1"}, "address"),
    ({"port": "0"}, "port"), ({"port": "ssh"}, "port"), ({"iscsi_port": "70000"}, "iscsi_port"),
    ({"ssh_user": "Root User"}, "ssh_user"),
])
def test_targets_invalid_400_nothing_written(client, db, over, field):
    form = {"name": "store1", "address": "store.example", "port": "22", "ssh_user": "root",
            "iscsi_port": "3260"}
    form.update(over)
    r = client.post("/targets/add", form)
    assert r.status == 400 and 'id="e-%s"' % field in r.text
    assert count_rows(db)["vciscsitarget"] == 0
    tid = add_target(db, "keep")
    r = client.post("/targets/%d/edit" % tid, form)
    assert r.status == 400 and 'id="e-%s"' % field in r.text
    assert db.query("SELECT name FROM vciscsitarget")[0]["name"] == "keep"


def test_target_in_use_cannot_be_removed(client, wcfg, db):
    tid = add_target(db)
    rack = reserve(wcfg, db, volumes=["/data:t1:5"])
    r = client.post("/targets/%d/delete" % tid)
    assert r.status == 409 and "holds volumes of rack %d" % rack in r.text
    assert count_rows(db)["vciscsitarget"] == 1


def test_targets_admin_only_when_users_known(app, db):
    tid = add_target(db)
    bob = Client(app, user="bob")
    assert bob.get("/targets").status == 403
    assert bob.post("/targets/add", {"name": "x", "address": "x.example", "port": "22",
                                     "ssh_user": "root", "iscsi_port": "3260"}).status == 403
    assert bob.post("/targets/%d/delete" % tid).status == 403
    assert bob.post("/targets/%d/pin" % tid, {"pin": "SHA256:" + "a" * 43}).status == 403
    assert count_rows(db)["vciscsitarget"] == 1
    assert Client(app, user="alice").get("/targets").status == 200


@pytest.fixture
def ssh_server(tmp_path):
    """A throw-away SSH server on 127.0.0.1 that shows its host key and accepts nobody."""
    import paramiko

    keyfile = tmp_path / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keyfile)],
                   check=True)
    key = paramiko.Ed25519Key(filename=str(keyfile))
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    lsock.settimeout(20)

    def serve():
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(key)
            try:
                t.start_server(server=paramiko.ServerInterface())
                while t.is_active():
                    t.join(0.05)
            except Exception:
                pass
            finally:
                t.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    fp = subprocess.run(["ssh-keygen", "-lf", str(keyfile) + ".pub"], capture_output=True,
                        text=True, check=True).stdout.split()[1]
    yield lsock.getsockname()[1], fp
    lsock.close()


def test_test_connection_shows_key_and_pins_on_confirm(client, db, ssh_server):
    port, fp = ssh_server
    tid = add_target(db, "local", "127.0.0.1", port)
    r = client.post("/targets/%d/test" % tid)
    assert r.status == 200 and fp in r.text and "ssh-ed25519" in r.text
    assert "Pin this host key" in r.text
    assert db.query("SELECT host_key_fingerprint FROM vciscsitarget")[0][
        "host_key_fingerprint"] is None  # not before the user confirms
    # the page's own form: the fingerprint VC saw, signed (see test_pin_without_a_scan_...)
    r = client.post("/targets/%d/pin" % tid, _pin_form(r.text))
    assert r.status == 303 and r.location == "/vc/targets?msg=pinned"
    assert db.query("SELECT host_key_fingerprint FROM vciscsitarget")[0][
        "host_key_fingerprint"] == fp  # what vc.remote compares
    r = client.post("/targets/%d/test" % tid)
    assert "It matches the pinned key." in r.text and "Pin this host key" not in r.text
    # a different key now: warned loudly
    db.transaction(lambda cur: cur.execute(
        "UPDATE vciscsitarget SET host_key_fingerprint = %s", ("SHA256:" + "A" * 43,)))
    r = client.post("/targets/%d/test" % tid, query="")
    assert "It differs from the pinned key" in r.text
    data = client.post("/targets/%d/test" % tid, query="format=json").json()
    assert data["result"]["matches"] == "no" and data["result"]["fingerprint"] == fp


def test_test_connection_refused_port(client, db):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    tid = add_target(db, "dead", "127.0.0.1", port)
    r = client.post("/targets/%d/test" % tid)
    assert r.status == 200 and "cannot reach 127.0.0.1:%d over SSH: connection refused" % port \
        in r.text
    assert "Pin this host key" not in r.text


@pytest.mark.parametrize("pin", ["", "SHA256:abc", "ssh-ed25519 SHA256:" + "a" * 43,
                                 "MD5:aa", "x" * 200])
def test_pin_rejects_non_fingerprints(client, db, pin):
    tid = add_target(db)
    r = client.post("/targets/%d/pin" % tid, {"pin": pin})
    assert r.status == 400
    assert db.query("SELECT host_key_fingerprint FROM vciscsitarget")[0][
        "host_key_fingerprint"] is None


# ---------------------------------------------------------------------------- errors, limits
def test_internal_error_shows_reference_not_traceback(client, monkeypatch, caplog):
    from vc.web import views

    def boom(req):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(views, "menu", boom)
    with caplog.at_level("ERROR", logger="vc.web"):
        r = client.get("/")
    assert r.status == 500
    ref = re.search(r"reference ([0-9a-f]{12})", r.text).group(1)
    assert "secret detail" not in r.text and "Traceback" not in r.text
    assert any(ref in rec.getMessage() and rec.exc_info for rec in caplog.records)
    r = client.get("/", "format=json")
    assert r.status == 500 and "reference" in r.json()["error"]


def test_database_down_is_503_with_message(migrated, state_dir, tmp_path):
    info = dict(migrated, socket=str(tmp_path / "no.sock"))
    c = Client(make_app(web_config(info, state_dir)))
    r = c.get("/reservations")
    assert r.status == 503 and "cannot connect to the database" in r.text
    assert "Traceback" not in r.text


def test_body_limits(client):
    r = client.request("POST", "/register", body=b"a=" + b"x" * 70000)
    assert r.status == 413
    r = client.request("POST", "/register", body=b"--x\r\n", content_type="multipart/form-data")
    assert r.status == 415
    r = client.request("POST", "/register", body=b"\xff\xfe=1")
    assert r.status == 400


def test_config_error_is_shown_not_a_traceback(tmp_path, monkeypatch):
    from vc.web.app import App

    bad = tmp_path / "vc.conf"
    bad.write_text("[database]\nuser = vc\n")
    monkeypatch.setenv("VC_CONFIG", str(bad))
    r = Client(App()).get("/")
    assert r.status == 500 and "config error in %s" % bad in r.text


# ---------------------------------------------------------------------------- serving
def _conf_file(tmp_path, migrated, state_dir):
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    data.update(db_overrides(migrated))
    data["site"]["state_dir"] = str(state_dir)
    path = tmp_path / "vc.conf"
    write_conf(path, data)
    return str(path)


CHECK_IMPORTS = r"""
import io, sys
from vc.web.app import application
for path in sys.argv[1:]:
    env = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/vc", "PATH_INFO": path, "QUERY_STRING": "",
           "HTTP_HOST": "localhost", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
           "SERVER_NAME": "localhost", "SERVER_PORT": "80", "REMOTE_USER": "alice"}
    out = {}
    application(env, lambda s, h: out.update(s=s))
    assert out["s"].startswith("200"), (path, out)
print(" ".join(sorted(m for m in ("paramiko", "libvirt", "vc.virt", "vc.ctl", "cgi")
                      if m in sys.modules)))
"""


def test_pages_import_no_paramiko_or_libvirt(tmp_path, migrated, db, state_dir):
    conf = _conf_file(tmp_path, migrated, state_dir)
    env = dict(os.environ, VC_CONFIG=conf)
    r = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, "/", "/reservations", "/register",
                        "/targets", "/timeline", "/tables"], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_cgi_wrapper_runs_the_app(tmp_path, migrated, db, state_dir):
    conf = _conf_file(tmp_path, migrated, state_dir)
    env = {"PATH": "/usr/bin:/bin", "VC_CONFIG": conf, "GATEWAY_INTERFACE": "CGI/1.1",
           "REQUEST_METHOD": "GET", "SCRIPT_NAME": "/vc", "PATH_INFO": "/reservations",
           "QUERY_STRING": "format=json", "SERVER_NAME": "localhost", "SERVER_PORT": "8080",
           "HTTP_HOST": "localhost:8080", "SERVER_PROTOCOL": "HTTP/1.1",
           "PYTHONPATH": ROOT, "REMOTE_USER": "bob"}
    script = os.path.join(ROOT, "cgi-bin", "vc.cgi")
    code = [line for line in open(script) if line.strip() and not line.startswith("#")]
    assert len(code) == 3 and "CGIHandler" in "".join(code) and "import cgi\n" not in code
    r = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python3"), script],
                       capture_output=True, env=env, timeout=60)
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert b"Status: 200 OK" in head and b"application/json" in head, r.stdout[:300] + r.stderr
    assert b'"reservations": []' in body


def test_wsgi_module_and_devserver_mount(tmp_path, migrated, db, state_dir, monkeypatch):
    import importlib

    conf = _conf_file(tmp_path, migrated, state_dir)
    wsgi = importlib.import_module("vc.web.wsgi")
    assert wsgi.application.persistent_db
    env = {"VC_CONFIG": conf}
    c = Client(wsgi.application, user="bob")
    r = c.get("/", headers=env)
    assert r.status == 200
    r = c.get("/reservations", headers=env)  # the pooled connection is reused
    assert r.status == 200
    from vc.web.devserver import mount

    seen = {}

    def inner(environ, start_response):
        seen.update(s=environ["SCRIPT_NAME"], p=environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b""]

    m = mount(inner, "/vc")
    m({"PATH_INFO": "/vc/timeline", "SCRIPT_NAME": ""}, lambda s, h: None)
    assert seen == {"s": "/vc", "p": "/timeline"}
    out = {}
    m({"PATH_INFO": "/", "SCRIPT_NAME": ""}, lambda s, h: out.update(s=s, h=dict(h)))
    assert out["s"].startswith("303") and out["h"]["Location"] == "/vc/"
    m({"PATH_INFO": "/other", "SCRIPT_NAME": ""}, lambda s, h: out.update(s=s))
    assert out["s"].startswith("404")


def test_view_page_memo_follows_data_user_and_clock(app, wcfg, db):
    rack = reserve(wcfg, db)
    root = Client(app)
    assert "badge reserved" in root.get("/reservations").text
    set_state(db, rack, "running")
    add_node(db, rack, 0, "gateway")
    page = root.get("/reservations").text
    assert "badge running" in page and "gateway-%d-0" % rack in page
    assert "Stop now" not in Client(app, user="bob").get("/reservations").text
    assert "Stop now" in root.get("/reservations").text
    # after its end has passed: no "Change end" any more (the clock is part of the page)
    later = Client(make_app(wcfg, now=NOW + 4 * H))
    assert "Change end" not in later.get("/reservations").text
    assert "Change end" in root.get("/reservations").text
    # the flash message and the filter are part of it too
    assert "Rack %d was stopped." % rack in root.get("/reservations", "msg=stopped&rack=%d"
                                                     % rack).text
    assert "Rack %d was stopped." % rack not in root.get("/reservations").text


def test_prepare_and_check_as_the_web_user(tmp_path, migrated, db):
    import grp

    from vc import config as vconfig
    from vc.web import prepare

    state = tmp_path / "state"
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    data.update(db_overrides(migrated))
    data["site"]["state_dir"] = str(state)
    conf = tmp_path / "vc.conf"
    write_conf(conf, data)
    os.chmod(conf, 0o600)
    done = prepare.prepare(vconfig.load(str(conf)), "www-data")
    gid = grp.getgrnam("www-data").gr_gid
    for path in (str(conf), done["secret"]):
        st = os.stat(path)
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (gid, 0o640), path
    assert os.path.exists(done["ssh_key"] + ".pub")
    env = dict(os.environ, VC_CONFIG=str(conf))
    r = subprocess.run([sys.executable, "-m", "vc.web.prepare", "--check", "/reservations"],
                       env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    env["VC_CONFIG"] = str(tmp_path / "missing.conf")
    r = subprocess.run([sys.executable, "-m", "vc.web.prepare", "--check"], env=env,
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1 and "500" in r.stderr and "not found" in r.stderr


# ---------------------------------------------------------------------------- pinning (item 3)
def _pin_form(page_text):
    """The hidden fields of the "Pin this host key" form of a test-connection page."""
    form = page_text.split('/pin"', 1)[1].split("</form>", 1)[0]
    return dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', form))


def test_pin_without_a_scan_is_refused(client, db, ssh_server):
    """A well-formed fingerprint VC never saw from the target is not pinned (before the fix any
    ``SHA256:...`` was stored as given)."""
    port, fp = ssh_server
    tid = add_target(db, "local", "127.0.0.1", port)
    for form in ({"pin": fp}, {"pin": "SHA256:" + "a" * 43},
                 {"pin": fp, "pin_token": "1.%s" % ("0" * 64)}):
        r = client.post("/targets/%d/pin" % tid, form)
        assert r.status in (400, 403), r
        assert db.query("SELECT host_key_fingerprint FROM vciscsitarget")[0][
            "host_key_fingerprint"] is None


def test_pin_is_bound_to_the_address_it_was_scanned_at(client, db, ssh_server):
    """Scan at one address, change the address, submit the old pin form: refused, no pin."""
    port, fp = ssh_server
    tid = add_target(db, "local", "127.0.0.1", port)
    form = _pin_form(client.post("/targets/%d/test" % tid).text)
    assert form["pin"] == fp and form["pin_token"]
    r = client.post("/targets/%d/edit" % tid, {"name": "local", "address": "127.0.0.2",
                                               "port": str(port), "ssh_user": "root",
                                               "iscsi_port": "3260"})
    assert r.status == 303
    r = client.post("/targets/%d/pin" % tid, form)
    assert r.status in (400, 403, 409) and "not pinned" in r.text
    assert db.query("SELECT host_key_fingerprint FROM vciscsitarget")[0][
        "host_key_fingerprint"] is None
    # and a signed form for another target does not pin this one
    other = add_target(db, "other", "127.0.0.1", port)
    form = _pin_form(client.post("/targets/%d/test" % other).text)
    r = client.post("/targets/%d/pin" % tid, form)
    assert r.status in (400, 403, 409)
    assert db.query("SELECT host_key_fingerprint FROM vciscsitarget WHERE id = %s",
                    (tid,))[0]["host_key_fingerprint"] is None


def test_pin_rescans_and_refuses_a_changed_key(client, db, ssh_server, monkeypatch):
    port, fp = ssh_server
    tid = add_target(db, "local", "127.0.0.1", port)
    form = _pin_form(client.post("/targets/%d/test" % tid).text)
    from vc.web import testconn

    # the server now shows another key (a host in between since the scan)
    monkeypatch.setattr(testconn, "scan", lambda address, port, timeout=8.0: testconn.HostKey(
        "ssh-ed25519", "SHA256:" + "B" * 43))
    r = client.post("/targets/%d/pin" % tid, form)
    assert r.status == 409 and "not pinned" in r.text and "SHA256:" + "B" * 43 in r.text
    assert db.query("SELECT host_key_fingerprint FROM vciscsitarget")[0][
        "host_key_fingerprint"] is None
    # unreachable on submit: not pinned either
    def down(address, port, timeout=8.0):
        raise testconn.ConnectFailed("connection refused")

    monkeypatch.setattr(testconn, "scan", down)
    r = client.post("/targets/%d/pin" % tid, form)
    assert r.status == 409 and "not pinned" in r.text
    assert db.query("SELECT host_key_fingerprint FROM vciscsitarget")[0][
        "host_key_fingerprint"] is None


def test_pin_token_is_per_user(app, db, ssh_server):
    port, fp = ssh_server
    tid = add_target(db, "local", "127.0.0.1", port)
    alice = Client(app, user="alice")  # an admin
    form = _pin_form(alice.post("/targets/%d/test" % tid).text)
    r = Client(app, user="root").post("/targets/%d/pin" % tid, form)
    assert r.status in (400, 403)
    assert db.query("SELECT host_key_fingerprint FROM vciscsitarget")[0][
        "host_key_fingerprint"] is None
    r = alice.post("/targets/%d/pin" % tid, form)
    assert r.status == 303
    assert db.query("SELECT host_key_fingerprint FROM vciscsitarget")[0][
        "host_key_fingerprint"] == fp

"""The pages in a real browser (headless Chromium driven by Playwright) against the real Apache
that ``tools/web.sh`` starts: CGI as www-data, mpm_event + mod_cgid, 127.0.0.1 only, and Apache
authenticating the users: by default (``[web] auth = pam``) against real local accounts of this
machine through mod_authnz_external + pwauth, made by ``tools/web.sh users`` (two ordinary users
and an admin in ``[site] admins``, with per-run names so that runs never share accounts, removed
again afterwards); ``auth = htpasswd`` on a second Apache.

Each user logs in with HTTP basic auth (credentials in the browser context): an owner sees and
changes only their own reservations (others' have no buttons and no internal details), an admin
changes all, target setup and "Show all tables" are admin-only (403 for others). Register a
cluster through the form, see it on View registrations and on the Timeline, a bad form, a
refusal, delete. Apache itself: TRACE is off, a 5 MB body gets a clean 413. Screenshots go to
``tests/web/artifacts/``. If Apache or Chromium cannot start, these tests fail (they never skip).
"""

import base64
import glob
import http.client
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import BASE_CONF, ROOT, VAR, count_rows, db_overrides, write_conf

ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SCRIPT = os.path.join(ROOT, "tools", "web.sh")
MARK = "VC demo user (tools/web.sh)"  # the GECOS of the accounts tools/web.sh makes
RUN = uuid.uuid4().hex[:6]
WARNING = ("you have no SSH key: you will not be able to log in to your cluster — add one on "
           "My SSH keys")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _stop_stale():
    """A run that was killed left its Apache and its accounts: stop it (by its pid file) and
    remove them once they are old enough not to belong to a run going on now."""
    for d in glob.glob(os.path.join(VAR, "test-web-*")):
        if time.time() - os.path.getmtime(d) > 3 * 3600:
            subprocess.run(["bash", SCRIPT, "stop"], env=dict(os.environ, VC_VAR=d),
                           capture_output=True, timeout=60)
            shutil.rmtree(d, ignore_errors=True)
    for p in pwd.getpwall():
        if p.pw_gecos == MARK and re.match(r"^(alice|bob|carol)-[0-9a-f]{6}$", p.pw_name):
            home = p.pw_dir if os.path.isdir(p.pw_dir) else None
            if home and time.time() - os.path.getmtime(home) > 3 * 3600:
                subprocess.run(["userdel", "-r", p.pw_name], capture_output=True, timeout=60)


def _start(dbinfo, auth, names, admins):
    """tools/web.sh start + users for a config on the test database, on a free port."""
    var = os.path.join(VAR, "test-web-%s" % uuid.uuid4().hex[:8])
    os.makedirs(var)
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    data.update(db_overrides(dbinfo))
    data["site"].update(timezone="UTC", state_dir=os.path.join(var, "state"),
                        admins=" ".join(admins), frontend="fe.example")
    if auth is not None:  # None: the default (pam)
        data["web"] = {"auth": auth}
    conf = os.path.join(var, "vc.conf")
    write_conf(conf, data)
    os.chmod(conf, 0o600)  # like the demo's: tools/web.sh must give www-data access itself
    port = free_port()
    env = dict(os.environ, VC_VAR=var, VC_CONFIG=conf, VC_WEB_PORT=str(port),
               VC_WEB_USERS=" ".join(names))
    info = {"url": "http://localhost:%d/vc" % port, "port": port, "var": var, "conf": conf,
            "env": env, "state_dir": os.path.join(var, "state"), "users": {}}
    r = subprocess.run(["bash", SCRIPT, "start"], env=env, capture_output=True, text=True,
                       timeout=600)
    if r.returncode == 0:
        r = subprocess.run(["bash", SCRIPT, "users"], env=env, capture_output=True, text=True,
                           timeout=300)
    if r.returncode:
        _stop(info)
        pytest.fail("tools/web.sh start/users failed (rc %d):\n%s" % (r.returncode, r.stderr))
    for line in r.stdout.splitlines():
        name, role, password, path = line.split()
        info["users"][name.rsplit("-", 1)[0] if name.endswith(RUN) else name] = {
            "login": name, "role": role, "password": password, "file": path}
    return info


def _stop(info):
    env = info["env"]
    subprocess.run(["bash", SCRIPT, "remove-users"], env=env, capture_output=True, timeout=120)
    r = subprocess.run(["bash", SCRIPT, "stop"], env=env, capture_output=True, text=True,
                       timeout=60)
    kind = "htpasswd" if "htpasswd" in open(info["conf"]).read() else "pam"
    os.makedirs(ARTIFACTS, exist_ok=True)
    for src, dst in (("logs/error.log", "apache-error-%s.log"), ("httpd.conf", "httpd-%s.conf")):
        src = os.path.join(info["var"], "apache", src)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(ARTIFACTS, dst % kind))
    shutil.rmtree(info["var"], ignore_errors=True)
    return r


@pytest.fixture(scope="session")
def apache(migrated):
    """The default set-up: [web] auth not set (= pam); alice and bob ordinary, carol admin,
    as local accounts of this machine (per-run names alice-<run> ...)."""
    _stop_stale()
    names = ["%s-%s" % (n, RUN) for n in ("alice", "bob", "carol")]
    info = _start(migrated, None, names, ["root", names[2]])
    try:
        yield info
    finally:
        r = _stop(info)
        for n in names:  # the accounts are gone again
            assert subprocess.run(["getent", "passwd", n], capture_output=True).returncode == 2
        assert r.returncode == 0, r.stderr


@pytest.fixture(scope="session")
def apache_htpasswd(apache, migrated):
    """[web] auth = htpasswd: the fallback; users only in the password file."""
    names = ["dave-%s" % RUN, "erin-%s" % RUN]
    info = _start(migrated, "htpasswd", names, ["root", names[1]])
    try:
        yield info
    finally:
        r = _stop(info)
        assert r.returncode == 0, r.stderr


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.fail("playwright is not installed in the venv: %s" % e)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("%s is missing (apt-get install chromium)" % CHROMIUM)
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    except Exception as e:
        pw.stop()
        pytest.fail("Chromium did not start: %s" % e)
    yield b
    b.close()
    pw.stop()


@pytest.fixture
def login(browser, apache, db):
    """``login("alice")``: a fresh page in a browser context signed in as that user (HTTP basic
    auth); the test database is emptied first (``db``)."""
    contexts = []

    def make(who):
        u = apache["users"][who]
        ctx = browser.new_context(viewport={"width": 1280, "height": 900},
                                  http_credentials={"username": u["login"],
                                                    "password": u["password"]})
        contexts.append(ctx)
        p = ctx.new_page()
        p.set_default_timeout(20000)
        return p

    yield make
    for ctx in contexts:
        ctx.close()


def shot(page, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, name + ".png"), full_page=True)


def basic(user):
    return "Basic " + base64.b64encode(("%s:%s" % (user["login"], user["password"])).encode()
                                       ).decode()


def book(page, apache, comment, computes="1"):
    page.goto(apache["url"] + "/register")
    page.fill("#f-computes", computes)
    page.fill("#f-comment", comment)
    with page.expect_navigation() as nav:
        page.click("button:has-text('Register')")
    assert nav.value.status == 200, page.content()[:2000]  # after the 303
    return int(re.search(r"Reserved: rack (\d+)\.", page.text_content(".flash")).group(1))


def make_running(db, rack, state_dir):
    """What a tick would have left: the cluster runs, its nodes are up, an event names the dump
    file under the state dir and the physical host."""
    def run(cur):
        cur.execute("UPDATE vcregist SET state = 'running' WHERE rack = %s", (rack,))
        for app, rank, ip, pub in (("gateway", 0, "10.200.%d.2" % rack, "198.51.100.10"),
                                   ("compute", 0, "10.200.%d.3" % rack, None)):
            cur.execute(
                "INSERT INTO vcnode (rack, appliance, `rank`, name, mac, ip, public_ip, host, "
                "state, readiness, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 'h1', "
                "'running', 'up', UTC_TIMESTAMP())",
                (rack, app, rank, "%s-%d-%d" % (app, rack, rank),
                 "52:54:00:bb:%02x:%02x" % (rack % 256, rank + (app == "compute")), ip, pub))
        cur.execute("INSERT INTO vcevent (rack, at, actor, from_state, to_state, reason) "
                    "VALUES (%s, UTC_TIMESTAMP(), 'vc_cron', 'running', 'running', %s)",
                    (rack, "start: dump done: %s/dumps/rack-%d.dump" % (state_dir, rack)))

    db.transaction(run)


# ---------------------------------------------------------------------------- who may do what
def test_nobody_signed_in_gets_401(apache, db):
    for path in ("/", "/reservations?format=json", "/targets"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(apache["url"] + path, timeout=30)
        assert e.value.code == 401
        assert e.value.headers["WWW-Authenticate"].startswith("Basic ")
    wrong = dict(apache["users"]["bob"], password="not-the-password")
    req = urllib.request.Request(apache["url"] + "/", headers={"Authorization": basic(wrong)})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 401
    # root is not a web account (pwauth refuses system accounts)
    req = urllib.request.Request(apache["url"] + "/", headers={
        "Authorization": basic({"login": "root", "password": "x"})})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 401


def test_owners_change_only_their_own_admin_all(login, apache, db):
    url, users = apache["url"], apache["users"]
    A, B, C = (users[k]["login"] for k in ("alice", "bob", "carol"))
    assert (users["alice"]["role"], users["bob"]["role"], users["carol"]["role"]) == (
        "user", "user", "admin")
    for u in users.values():  # generated once, root's only
        assert oct(os.stat(u["file"]).st_mode & 0o777) == "0o600"
    alice, bob, carol = login("alice"), login("bob"), login("carol")

    # alice: no SSH key yet: warned, and the booking is still accepted
    alice.goto(url + "/register")
    assert WARNING in alice.text_content("#key-warning")
    assert A in alice.text_content(".who")
    shot(alice, "10-alice-register-no-key")
    a = book(alice, apache, "alice's cluster")
    assert WARNING in alice.text_content("#key-warning")
    b = book(bob, apache, "bob's cluster")
    make_running(db, a, apache["state_dir"])

    # alice: her rack with its buttons, addresses, readiness and how to log in; bob's without
    alice.goto(url + "/reservations")
    mine, his = alice.locator("#rack-%d" % a), alice.locator("#rack-%d" % b)
    assert mine.locator("button").count() == 3 and his.locator("button").count() == 0
    text = mine.text_content()
    assert "52:54:00:bb" in text and "10.200.%d.2" % a in text and "ready" in text
    assert "ssh -J %s@fe.example root@198.51.100.10" % A in text
    assert "h1" not in mine.locator("table.nodes").text_content()  # the physical host: admins'
    shot(alice, "11-alice-list")
    alice.fill("#end-%d" % a, "now+3h")
    mine.locator("button:has-text('Change end')").click()
    assert "The end of rack %d was changed." % a in alice.text_content(".flash")
    alice.goto(url + "/reservations/%d" % a)
    history = alice.text_content("table.data")
    assert "…/rack-%d.dump" % a in history and apache["state_dir"] not in history

    # bob: alice's rack shows no buttons and no internal details; his own has its buttons
    bob.goto(url + "/reservations")
    hers, own = bob.locator("#rack-%d" % a), bob.locator("#rack-%d" % b)
    assert own.locator("button").count() == 3 and hers.locator("button").count() == 0
    text = hers.text_content()
    assert "owner %s" % A in text and "gateway-%d-0" % a in text and "ready" in text
    for secret in ("52:54:00", "10.200.", "198.51.100.10", "ssh -J"):
        assert secret not in text, secret
    shot(bob, "12-bob-list")
    bob.goto(url + "/reservations/%d" % a)
    page = bob.content()
    assert "dumps" not in page and "52:54:00" not in page and bob.locator(
        "form[action*='/reservations/%d/']" % a).count() == 0
    # ... not even by posting the form himself (his own valid token)
    bob.goto(url + "/register")
    token = re.search(r'name="csrf" value="([^"]+)"', bob.content())
    for action in ("stop", "delete", "extend"):
        r = bob.request.post(url + "/reservations/%d/%s" % (a, action), form={
            "csrf": token.group(1), "confirm": "yes", "end": "now+9h"},
            headers={"Origin": "http://localhost:%d" % apache["port"]})
        assert r.status == 403 and "belongs to %s" % A in r.text()
    # admin-only pages
    for path in ("/targets", "/tables"):
        resp = bob.goto(url + path)
        assert resp.status == 403 and "admins only" in bob.text_content(".errors")
    assert bob.locator("nav >> text=iSCSI targets").count() == 0
    shot(bob, "13-bob-403-tables")

    # carol (admin): every rack has its buttons and all details; she stops alice's
    carol.goto(url + "/reservations")
    assert carol.locator("#rack-%d button" % a).count() == 3
    assert carol.locator("#rack-%d button" % b).count() == 3
    assert "h1" in carol.locator("#rack-%d table.nodes" % a).text_content()
    shot(carol, "14-carol-list")
    carol.goto(url + "/reservations/%d" % a)
    assert "%s/dumps/rack-%d.dump" % (apache["state_dir"], a) in carol.text_content("table.data")
    carol.click("button:has-text('Stop now')")
    carol.click("button:has-text('Yes, stop rack %d')" % a)
    assert "Rack %d ends now" % a in carol.text_content(".flash")
    assert [e["actor"] for e in db.query(
        "SELECT actor FROM vcevent WHERE rack = %s ORDER BY id", (a,))][-1] == C
    carol.goto(url + "/reservations")
    carol.locator("#rack-%d button:has-text('Delete')" % b).click()
    carol.click("button:has-text('Yes, delete rack %d')" % b)
    assert "Rack %d was deleted." % b in carol.text_content(".flash")
    for path in ("/targets", "/tables"):
        assert carol.goto(url + path).status == 200
    assert carol.locator("#t-vcsshkey").count() == 1
    assert [r["owner"] for r in db.query("SELECT owner FROM vcregist")] == [A]
    assert B != A


def test_register_view_timeline_delete(login, apache, db):
    page = login("alice")
    me = apache["users"]["alice"]["login"]
    page.goto(apache["url"] + "/")
    assert page.title() == "Menu · VC"
    assert page.locator("#single-user").count() == 0
    assert page.locator("nav >> text=My SSH keys").count() == 1
    shot(page, "01-menu")
    page.click("text=Register a new virtual cluster")
    assert page.url.endswith("/vc/register")
    page.fill("#f-computes", "2")
    page.fill("#f-compute_memory_mb", "512")
    page.fill("#f-comment", "browser test <b>")
    shot(page, "02-register-form")
    with page.expect_navigation() as nav:
        page.click("button:has-text('Register')")
    assert nav.value.status == 200  # after the 303
    assert "/vc/reservations?msg=created" in page.url
    flash = page.text_content(".flash")
    rack = int(re.search(r"Reserved: rack (\d+)\.", flash).group(1))
    section = page.locator("#rack-%d" % rack)
    assert "reserved" in section.text_content()
    assert "2 computes × 512 MB" in section.text_content()
    assert "browser test <b>" in section.text_content()  # shown as text, not markup
    shot(page, "03-view-registrations")

    page.click("nav >> text=Timeline")
    bar = page.locator("#bar-%d" % rack)
    assert bar.count() == 1
    assert "rack %d (%s, reserved)" % (rack, me) in bar.locator("title").text_content()
    assert page.locator("rect.fit").count() >= 1
    shot(page, "04-timeline")
    # a bar links to the reservation
    bar.locator("rect").click()
    assert page.url.endswith("/vc/reservations/%d" % rack)

    page.goto(apache["url"] + "/reservations")
    page.locator("#rack-%d button:has-text('Delete')" % rack).click()
    assert "Delete rack %d?" % rack in page.text_content("h1")
    shot(page, "05-confirm-delete")
    page.click("button:has-text('Yes, delete rack %d')" % rack)
    assert "Rack %d was deleted." % rack in page.text_content(".flash")
    assert page.locator("#rack-%d" % rack).count() == 0
    shot(page, "06-deleted")
    assert count_rows(db)["vcregist"] == 0


def test_bad_form_shows_messages_and_keeps_input(login, apache, db):
    page = login("bob")
    page.goto(apache["url"] + "/register")
    page.fill("#f-start", "next tuesday")
    page.fill("#f-gateways", "0")
    page.fill("#f-compute_memory_mb", "999999")
    with page.expect_navigation() as nav:
        page.click("button:has-text('Register')")
    assert nav.value.status == 400
    assert "The reservation was not made" in page.text_content(".errors")
    assert "is not a time" in page.text_content("#e-start")
    assert "between 1 and 2" in page.text_content("#e-gateways")
    assert "between 64 and 4096" in page.text_content("#e-compute_memory_mb")
    assert page.input_value("#f-start") == "next tuesday"  # the form kept as typed
    assert page.input_value("#f-compute_memory_mb") == "999999"
    shot(page, "07-bad-form")
    assert count_rows(db)["vcregist"] == 0


def test_capacity_refusal_in_words(login, apache, db):
    page = login("bob")
    page.goto(apache["url"] + "/register")
    page.fill("#f-computes", "15")
    page.fill("#f-compute_memory_mb", "4096")
    page.fill("#f-gateway_memory_mb", "4096")
    with page.expect_navigation() as nav:
        page.click("button:has-text('Register')")
    assert nav.value.status == 409
    text = page.text_content(".refusal")
    assert "It does not fit." in text and "refused:" in text
    assert page.input_value("#f-computes") == "15"
    shot(page, "08-refused")
    assert count_rows(db)["vcregist"] == 0


def test_targets_page_shows_key(login, apache, db):
    page = login("carol")
    page.goto(apache["url"] + "/targets")
    key = page.text_content("#public-key")
    assert key.startswith("ssh-ed25519 ")
    page.fill("#f-name", "store1")
    page.fill("#f-address", "192.0.2.10")
    page.click("button:has-text('Add target')")
    assert "The iSCSI target was added." in page.text_content(".flash")
    assert page.locator("text=store1").count() >= 1
    shot(page, "09-targets")


# ---------------------------------------------------------------------------- raw HTTP
def _post(url, data, headers):
    req = urllib.request.Request(url, data=data.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_apache_refuses_foreign_origin_and_spoofed_user(apache, db):
    bob = apache["users"]["bob"]
    auth = {"Authorization": basic(bob)}
    page = urllib.request.urlopen(urllib.request.Request(apache["url"] + "/register",
                                                         headers=auth), timeout=30).read()
    token = re.search(r'name="csrf" value="([^"]+)"', page.decode()).group(1)
    form = "csrf=%s&start=now&end=now%%2B1h&gateways=1&computes=0" % token
    ct = dict(auth, **{"Content-Type": "application/x-www-form-urlencoded"})
    status, body = _post(apache["url"] + "/register", form,
                         dict(ct, Origin="http://evil.example"))
    assert status == 403 and "another site" in body
    # a header cannot make the CGI believe Apache authenticated someone else
    status, body = _post(apache["url"] + "/register", form,
                         dict(ct, Origin="http://localhost:%d" % apache["port"],
                              **{"Remote-User": "carol", "X-Remote-User": "carol"}))
    assert status == 200 and "Reserved: rack" in body  # urllib followed the 303
    assert [r["owner"] for r in db.query("SELECT owner FROM vcregist")] == [bob["login"]]
    # without credentials nothing is written
    status, body = _post(apache["url"] + "/register", form, {
        "Content-Type": "application/x-www-form-urlencoded", "Remote-User": "carol"})
    assert status == 401 and count_rows(db)["vcregist"] == 1
    # DNS rebinding: another host name is refused
    req = urllib.request.Request(apache["url"] + "/", headers=dict(auth, Host="evil.example"))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 421
    # JSON twin through Apache
    data = json.loads(urllib.request.urlopen(urllib.request.Request(
        apache["url"] + "/reservations?format=json", headers=auth), timeout=30).read())
    assert [r["owner"] for r in data["reservations"]] == [bob["login"]]


def test_trace_is_off(apache):
    for headers in ({}, {"Authorization": basic(apache["users"]["bob"])}):
        conn = http.client.HTTPConnection("localhost", apache["port"], timeout=30)
        conn.request("TRACE", "/vc/", headers=dict(headers, **{"X-Probe": "echo-me-back"}))
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        conn.close()
        assert resp.status == 405, (resp.status, body[:300])
        assert "echo-me-back" not in body and "Authorization" not in body


@pytest.mark.parametrize("size, status, needle", [
    (5 * 1024 * 1024, 413, "larger than 1048576 bytes"),  # Apache's LimitRequestBody
    (200 * 1024, 413, "the form is larger than 65536 bytes"),  # the app's own limit
])
def test_big_bodies_get_a_clean_413(apache, db, size, status, needle):
    body = b"a=" + b"x" * (size - 2)
    conn = http.client.HTTPConnection("localhost", apache["port"], timeout=60)
    # the whole body is sent and the answer read: a connection reset would raise here
    conn.request("POST", "/vc/register", body=body, headers={
        "Authorization": basic(apache["users"]["bob"]),
        "Content-Type": "application/x-www-form-urlencoded",
        "Origin": "http://localhost:%d" % apache["port"]})
    resp = conn.getresponse()
    text = resp.read().decode("utf-8", "replace")
    conn.close()
    assert resp.status == status and needle in text, (resp.status, text[:300])
    assert count_rows(db)["vcregist"] == 0


# ---------------------------------------------------------------------------- htpasswd
def test_htpasswd_fallback(apache_htpasswd, db):
    info = apache_htpasswd
    dave, erin = info["users"]["dave"], info["users"]["erin"]
    assert (dave["role"], erin["role"]) == ("user", "admin")
    # only the password file: no local account was made
    assert subprocess.run(["getent", "passwd", dave["login"]],
                          capture_output=True).returncode == 2
    htpasswd = os.path.join(info["state_dir"], "web", "htpasswd")
    st = os.stat(htpasswd)
    assert oct(st.st_mode & 0o777) == "0o640"
    assert dave["login"] + ":$2y$" in open(htpasswd).read()  # bcrypt
    page = urllib.request.urlopen(urllib.request.Request(
        info["url"] + "/", headers={"Authorization": basic(dave)}), timeout=30).read().decode()
    assert "Signed in as <strong>%s</strong>" % dave["login"] in page
    assert 'id="single-user"' not in page
    req = urllib.request.Request(info["url"] + "/tables", headers={"Authorization": basic(dave)})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 403
    assert urllib.request.urlopen(urllib.request.Request(
        info["url"] + "/tables", headers={"Authorization": basic(erin)}), timeout=30).status \
        == 200
    for headers in ({}, {"Authorization": basic(dict(dave, password="wrong"))}):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(info["url"] + "/", headers=headers),
                                   timeout=30)
        assert e.value.code == 401

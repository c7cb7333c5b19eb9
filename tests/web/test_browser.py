"""The pages in a real browser (headless Chromium driven by Playwright) against the real Apache
that ``tools/web.sh`` starts: CGI as www-data, mpm_event + mod_cgid, 127.0.0.1 only.

Register a cluster through the form, see it on View registrations and on the Timeline, submit a
bad form and see the messages, delete the cluster. Screenshots go to ``tests/web/artifacts/``.
If Apache or Chromium cannot start, these tests fail (they never skip).
"""

import os
import re
import shutil
import socket
import subprocess
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


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _stop_stale(script):
    """A run that was killed left its Apache: stop it (by its pid file) once it is old enough
    not to belong to a run going on now."""
    import glob
    import time

    for d in glob.glob(os.path.join(VAR, "test-web-*")):
        if time.time() - os.path.getmtime(d) > 3 * 3600:
            subprocess.run(["bash", script, "stop"], env=dict(os.environ, VC_VAR=d),
                           capture_output=True, timeout=60)
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def apache(migrated):
    """tools/web.sh start with a config for the test database, on a free port; stopped after."""
    script = os.path.join(ROOT, "tools", "web.sh")
    _stop_stale(script)
    # under ./var (not pytest's 0700 tmp dirs): www-data must reach the config and the state
    var = os.path.join(VAR, "test-web-%s" % uuid.uuid4().hex[:8])
    os.makedirs(var)
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    data.update(db_overrides(migrated))
    data["site"].update(timezone="UTC", state_dir=os.path.join(var, "state"))
    conf = os.path.join(var, "vc.conf")
    write_conf(conf, data)
    os.chmod(conf, 0o600)  # like the demo's: tools/web.sh must give www-data access itself
    port = free_port()
    env = dict(os.environ, VC_VAR=var, VC_CONFIG=conf, VC_WEB_PORT=str(port))
    r = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True,
                       timeout=600)
    if r.returncode:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(var, ignore_errors=True)
        pytest.fail("Apache did not start (tools/web.sh start, rc %d):\n%s" % (r.returncode,
                                                                               r.stderr))
    try:
        yield {"url": "http://localhost:%d/vc" % port, "port": port, "var": var, "conf": conf}
    finally:
        r = subprocess.run(["bash", script, "stop"], env=env, capture_output=True, text=True,
                           timeout=60)
        log = os.path.join(var, "apache", "logs", "error.log")
        if os.path.exists(log):
            os.makedirs(ARTIFACTS, exist_ok=True)
            shutil.copy(log, os.path.join(ARTIFACTS, "apache-error.log"))
        shutil.rmtree(var, ignore_errors=True)
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
def page(browser, apache, db):
    """A fresh browser page; the test database is emptied first (``db``)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    p = ctx.new_page()
    p.set_default_timeout(20000)
    yield p
    ctx.close()


def shot(page, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, name + ".png"), full_page=True)


def test_register_view_timeline_delete(page, apache, db):
    page.goto(apache["url"] + "/")
    assert page.title() == "Menu · VC"
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
    assert "rack %d (root, reserved)" % rack in bar.locator("title").text_content()
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


def test_bad_form_shows_messages_and_keeps_input(page, apache, db):
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


def test_capacity_refusal_in_words(page, apache, db):
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


def test_targets_page_shows_key(page, apache, db):
    page.goto(apache["url"] + "/targets")
    key = page.text_content("#public-key")
    assert key.startswith("ssh-ed25519 ")
    page.fill("#f-name", "store1")
    page.fill("#f-address", "192.0.2.10")
    page.click("button:has-text('Add target')")
    assert "The iSCSI target was added." in page.text_content(".flash")
    assert page.locator("text=store1").count() >= 1
    shot(page, "09-targets")


def _post(url, data, headers):
    req = urllib.request.Request(url, data=data.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_apache_refuses_foreign_origin_and_spoofed_user(apache, db):
    page = urllib.request.urlopen(apache["url"] + "/register", timeout=30).read().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = "csrf=%s&start=now&end=now%%2B1h&gateways=1&computes=0" % token
    ct = {"Content-Type": "application/x-www-form-urlencoded"}
    status, body = _post(apache["url"] + "/register", form,
                         dict(ct, Origin="http://evil.example"))
    assert status == 403 and "another site" in body
    # a header cannot make the CGI believe Apache authenticated someone
    status, body = _post(apache["url"] + "/register", form,
                         dict(ct, Origin="http://localhost:%d" % apache["port"],
                              **{"Remote-User": "alice", "X-Remote-User": "alice"}))
    assert status == 200 and "Reserved: rack" in body  # urllib followed the 303
    assert [r["owner"] for r in db.query("SELECT owner FROM vcregist")] == ["root"]
    # DNS rebinding: another host name is refused
    req = urllib.request.Request(apache["url"] + "/", headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 421
    # JSON twin through Apache
    import json

    data = json.loads(urllib.request.urlopen(apache["url"] + "/reservations?format=json",
                                             timeout=30).read())
    assert [r["owner"] for r in data["reservations"]] == ["root"]

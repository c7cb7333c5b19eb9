"""My SSH keys at the WSGI level: add, duplicate, refusals (a private key is never echoed and
never stored), who may remove what, CSRF, the JSON twin."""

import re

import pytest

from conftest import count_rows
from vc import keys
from vc.web import keys as wkeys
from webutil import Client, make_app, web_config

from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("webstate-keys")


@pytest.fixture
def wcfg(migrated, db, state_dir):
    return web_config(migrated, state_dir)


@pytest.fixture
def app(wcfg):
    return make_app(wcfg)


def new_key(comment="bob@laptop"):
    k = ed25519.Ed25519PrivateKey.generate()
    line = k.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()
    return line + (" " + comment if comment else ""), k


def rows(db):
    return db.query("SELECT id, owner, name, public_key FROM vcsshkey ORDER BY id")


def test_add_list_and_json_twin(app, db):
    bob = Client(app, user="bob")
    page = bob.get("/keys")
    assert page.status == 200 and "My SSH keys" in page.text
    assert "You have no SSH key" in page.text
    line, _ = new_key()
    r = bob.post("/keys", {"key": line + "\r\n", "name": ""}, csrf=page.token)
    [row] = rows(db)
    assert r.status == 303 and r.location == "/vc/keys?msg=key-added#key-%d" % row["id"]
    assert (row["owner"], row["name"], row["public_key"]) == ("bob", "bob@laptop", line)
    page = bob.get("/keys", "msg=key-added")
    assert "The key was added." in page.text
    fp = keys.get(db, row["id"])["fingerprint"]
    assert fp in page.text and "ssh-ed25519" in page.text and "bob@laptop" in page.text
    assert "<th>Owner</th>" not in page.text and "You have no SSH key" not in page.text
    assert 'action="/vc/keys/%d/delete"' % row["id"] in page.text
    data = bob.get("/keys", "format=json").json()
    assert data["user"] == "bob" and data["all_owners"] is False
    [k] = data["keys"]
    assert (k["id"], k["owner"], k["name"], k["key_type"], k["fingerprint"], k["public_key"]) \
        == (row["id"], "bob", "bob@laptop", "ssh-ed25519", fp, line)
    assert k["created_at"].startswith("2026-12-01T00:00")
    # JSON add: 201 with the row
    line2, _ = new_key("second")
    r = bob.post("/keys", {"key": line2, "name": "work"}, query="format=json")
    assert r.status == 201 and r.json()["changed"] is True
    assert r.json()["key"]["name"] == "work"


def test_duplicate_is_a_no_op(app, db):
    bob = Client(app, user="bob")
    line, _ = new_key()
    assert bob.post("/keys", {"key": line}).status == 303
    r = bob.post("/keys", {"key": "  " + line + "  ", "name": "other name"})
    assert r.status == 303 and "msg=key-exists" in r.location
    assert "You have this key already" in bob.get("/keys", "msg=key-exists").text
    r = bob.post("/keys", {"key": line}, query="format=json")
    assert r.status == 200 and r.json()["changed"] is False
    assert [x["name"] for x in rows(db)] == ["bob@laptop"]


def _private_pastes():
    _, k = new_key()
    openssh = k.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH,
                              ser.NoEncryption()).decode()
    r = rsa.generate_private_key(65537, 2048)
    pem = r.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL,
                          ser.NoEncryption()).decode()
    putty = ("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: bob\n"
             "Public-Lines: 1\nAAAAC3NzaC1lZDI1NTE5AAAAIB8fHx8f\nPrivate-Lines: 1\n"
             "AAAAIHNlY3JldHNlY3JldHNlY3JldHNlY3JldA==\nPrivate-MAC: 00ff\n")
    return [openssh, pem, putty]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_private_key_refused_not_echoed_not_stored(app, db, which):
    paste = _private_pastes()[which]
    bob = Client(app, user="bob")
    before = count_rows(db)
    for query in ("", "format=json"):
        r = bob.post("/keys", {"key": paste, "name": "mine"}, query=query)
        assert r.status == 400
        assert "this is a PRIVATE key" in r.text
        body_lines = [ln for ln in paste.splitlines() if len(ln) >= 8]
        assert body_lines
        for ln in body_lines:
            assert ln not in r.text, ln
        # a distinctive piece of the key body is nowhere either (not even HTML-escaped)
        assert paste.splitlines()[1][10:40] not in r.text
    assert count_rows(db) == before
    # the form comes back with an empty text area but the name kept
    r = bob.post("/keys", {"key": paste, "name": "mine"})
    assert re.search(r'<textarea[^>]*name="key"[^>]*></textarea>', r.text)
    assert 'value="mine"' in r.text


@pytest.mark.parametrize("paste, needle", [
    ("not a key at all", "not an OpenSSH public key"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "ssh-dss (DSA) keys are refused"),
    ("", "paste an OpenSSH public key"),
    ("ssh-ed25519 " + "A" * 20000, "at most 16384 bytes"),
])
def test_refusals_show_the_form_again_400(app, db, paste, needle):
    bob = Client(app, user="bob")
    r = bob.post("/keys", {"key": paste, "name": "n"})
    assert r.status == 400 and needle in r.text and "The key was not added" in r.text
    assert 'name="csrf"' in r.text  # the form again, ready to send
    assert count_rows(db)["vcsshkey"] == 0
    r = bob.post("/keys", {"key": paste}, query="format=json")
    assert r.status == 400 and needle in r.json()["error"]


def test_two_keys_and_short_rsa_refused(app, db):
    bob = Client(app, user="bob")
    a, _ = new_key("a")
    b, _ = new_key("b")
    r = bob.post("/keys", {"key": a + "\n" + b})
    assert r.status == 400 and "one key at a time" in r.text
    short = rsa.generate_private_key(65537, 1024).public_key().public_bytes(
        ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()
    r = bob.post("/keys", {"key": short})
    assert r.status == 400 and "1024 bits: at least 2048" in r.text
    assert count_rows(db)["vcsshkey"] == 0


def test_bad_name_refused(app, db):
    line, _ = new_key()
    r = Client(app, user="bob").post("/keys", {"key": line, "name": "x" * 65})
    assert r.status == 400 and "at most 64" in r.text and count_rows(db)["vcsshkey"] == 0


def test_markup_in_comment_and_name_is_escaped(app, db):
    bob = Client(app, user="bob")
    line, _ = new_key("<b>bold</b>")
    assert bob.post("/keys", {"key": line}).status == 303
    page = bob.get("/keys")
    assert "&lt;b&gt;bold&lt;/b&gt;" in page.text and "<b>bold</b>" not in page.text


def test_body_over_the_form_limit_is_413(app, db):
    r = Client(app, user="bob").post("/keys", {"key": "ssh-ed25519 " + "A" * (1024 * 1024)})
    assert r.status == 413 and count_rows(db)["vcsshkey"] == 0


def test_owners_delete_only_theirs_admin_may(app, db):
    bob, carol, alice = (Client(app, user=u) for u in ("bob", "carol", "alice"))
    bob_key, _ = keys.add(db, "bob", new_key("b")[0])
    carol_key, _ = keys.add(db, "carol", new_key("c")[0])
    # bob sees only his; alice (an admin) everyone's, with the owner
    assert bob.get("/keys").text.count('id="key-') == 1
    admin_page = alice.get("/keys")
    assert admin_page.text.count('id="key-') == 2 and "<th>Owner</th>" in admin_page.text
    assert alice.get("/keys", "format=json").json()["all_owners"] is True
    r = bob.post("/keys/%d/delete" % carol_key["id"])
    assert r.status == 403 and "belongs to carol" in r.text
    r = bob.post("/keys/%d/delete" % carol_key["id"], query="format=json")
    assert r.status == 403 and "belongs to carol" in r.json()["error"]
    assert len(rows(db)) == 2
    r = bob.post("/keys/%d/delete" % bob_key["id"])
    assert r.status == 303 and r.location == "/vc/keys?msg=key-removed"
    assert "The key was removed." in bob.get("/keys", "msg=key-removed").text
    r = alice.post("/keys/%d/delete" % carol_key["id"], query="format=json")
    assert r.status == 200 and r.json() == {"deleted": carol_key["id"]}
    assert rows(db) == []
    r = bob.post("/keys/%d/delete" % bob_key["id"])
    assert r.status == 404 and "no such SSH key" in r.text


def test_csrf_missing_or_foreign_origin_refused(app, db):
    bob = Client(app, user="bob")
    line, _ = new_key()
    r = bob.post("/keys", {"key": line}, csrf=None)
    assert r.status == 403 and count_rows(db)["vcsshkey"] == 0
    r = bob.post("/keys", {"key": line}, origin="http://evil.example")
    assert r.status == 403 and count_rows(db)["vcsshkey"] == 0
    # another user's token does not work either
    r = bob.post("/keys", {"key": line}, csrf=Client(app, user="carol").token())
    assert r.status == 403 and count_rows(db)["vcsshkey"] == 0
    row, _ = keys.add(db, "bob", line)
    assert bob.post("/keys/%d/delete" % row["id"], csrf=None).status == 403
    assert bob.post("/keys/%d/delete" % row["id"], csrf="garbage").status == 403
    assert len(rows(db)) == 1


def test_methods_and_menu_link(app, db):
    bob = Client(app, user="bob")
    assert bob.get("/keys/1/delete").status == 405
    menu = bob.get("/")
    assert 'href="/vc/keys"' in menu.text and "My SSH keys" in menu.text


def test_no_key_warning_for_the_register_page(app, wcfg, db):
    from vc.web.app import Request
    from vc.web.settings import WebSettings

    req = Request(app, {"REQUEST_METHOD": "GET", "PATH_INFO": "/register",
                        "REMOTE_USER": "bob"}, wcfg, WebSettings())
    assert wkeys.no_key_warning(req) == (
        "you have no SSH key: you will not be able to log in to your cluster — add one on My "
        "SSH keys")
    keys.add(db, "bob", new_key()[0])
    assert wkeys.no_key_warning(req) is None
    assert wkeys.no_key_warning(req, "carol") is not None

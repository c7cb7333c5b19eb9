"""My SSH keys: list, add and remove the public keys put in root's ``authorized_keys`` on every
node of the user's clusters.

Everyone sees and changes their own keys; an admin sees everyone's (with an owner column) and may
remove any. A refused paste shows the form again with the reason (HTTP 400) and writes nothing; a
pasted private key is never shown back (the text area comes back empty).
"""

from typing import Optional

from vc import keys, sshkeys
from vc.web.app import MAX_ID, HTTPError, number, redirect

FIELD_MAX = 20000  # the form's textarea; sshkeys refuses anything over 16 KiB in words
NO_KEY_WARNING = ("you have no SSH key: you will not be able to log in to your cluster — add "
                  "one on My SSH keys")

MESSAGES = {
    "key-added": "The key was added.",
    "key-exists": "You have this key already: nothing changed.",
    "key-removed": "The key was removed.",
}


def _flash(req) -> Optional[str]:
    return MESSAGES.get(req.query.get("msg", ""))


def _public(row: dict) -> dict:
    """A key as the page and its JSON twin show it."""
    return {"id": row["id"], "owner": row["owner"], "name": row["name"],
            "key_type": row["key_type"], "fingerprint": row["fingerprint"],
            "public_key": row["public_key"], "created_at": row["created_at"]}


def _page(req, status=200, error=None, form=None):
    everyone = req.admin
    rows = keys.list_keys(req.db, None if everyone else req.user)
    data = {"keys": [_public(r) for r in rows], "user": req.user, "all_owners": everyone,
            "types": sshkeys.known_types()}
    if error:
        data["error"] = error
    return req.page("keys.html", data, status, flash=_flash(req), csrf_token=req.csrf_token,
                    form=form or {"key": "", "name": ""}, error=error)


def index(req):
    return _page(req)


def add(req):
    text = req.form.get("key", "")
    name = req.form.get("name", "")[:200]
    try:
        row, changed = keys.add(req.db, req.user, text, name=name, now=req.now)
    except sshkeys.PrivateKeyPasted as e:
        # the pasted text is never sent back: the text area comes back empty
        return _page(req, 400, str(e), {"key": "", "name": name})
    except sshkeys.InvalidKey as e:
        return _page(req, 400, str(e), {"key": text[:FIELD_MAX], "name": name})
    if req.wants_json:
        return req.json({"key": _public(row), "changed": changed}, 201 if changed else 200)
    return redirect(req.url("/keys", msg="key-added" if changed else "key-exists")
                    + "#key-%d" % row["id"])


def delete(req, kid):
    kid = number(kid, "key id", 1, MAX_ID)
    try:
        keys.remove(req.db, kid, req.user, req.admin)
    except keys.NotOwner as e:
        raise HTTPError(403, str(e)) from None
    if req.wants_json:
        return req.json({"deleted": kid})
    return redirect(req.url("/keys", msg="key-removed"))


def no_key_warning(req, owner: Optional[str] = None) -> Optional[str]:
    """The warning the Register page shows when ``owner`` (default: the user) has no SSH key,
    else None. (For :mod:`vc.web.views`: ``keys.list_keys(db, owner)`` is the whole check.)"""
    return None if keys.list_keys(req.db, owner or req.user) else NO_KEY_WARNING

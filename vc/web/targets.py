"""iSCSI target setup: list, add, edit and remove targets (``vciscsitarget``), show the
frontend's public SSH key, and "test connection" (fetch the target's host key, pin it when the
user confirms).

Admins only when users are known (``REMOTE_USER``); anyone in single-user mode.
"""

from typing import Dict, Optional

from vc import targets
from vc.errors import ValidationError
from vc.web.app import HTTPError, redirect

# the rules and every write are vc.targets' (shared with 'vc_ctl.py target ...')
FIELDS, DEFAULTS, validate = targets.FIELDS, targets.DEFAULTS, targets.validate


def _all(req):
    return targets.list_all(req.db)


def _one(req, tid) -> dict:
    return targets.get(req.db, int(tid))


def _key(req) -> dict:
    from vc.web import sshkey

    try:
        pub = sshkey.public_key(req.cfg)
        return {"public_key": pub, "fingerprint": sshkey.fingerprint(pub), "key_error": None}
    except (sshkey.KeyUnavailable, ValueError) as e:
        return {"public_key": None, "fingerprint": None, "key_error": str(e)}


def _index_page(req, values=None, errors=None, status=200, problem=None):
    from vc.web.views import flash

    data = {"targets": _all(req), "form": values or dict(DEFAULTS), "errors": errors or {},
            "problem": problem, "csrf_token": req.csrf_token}
    data.update(_key(req))
    return req.page("targets.html", data, status, flash=flash(req))


def index(req):
    req.require_admin_pages()
    return _index_page(req)


def add(req):
    req.require_admin_pages()
    values, errors = validate(req.form)
    if errors:
        return _index_page(req, values, errors, 400)
    try:
        tid = targets.add(req.db, values, req.now)
    except ValidationError as e:  # the name is taken
        return _index_page(req, values, e.errors, 400)
    if req.wants_json:
        return req.json({"id": tid}, 201)
    return redirect(req.url("/targets", msg="target-added"))


def edit(req, tid):
    req.require_admin_pages()
    t = _one(req, tid)
    if req.method != "POST":
        values = {k: str(t[k]) for k in FIELDS}
        return req.page("target_edit.html", {"target": t, "form": values, "errors": {},
                                             "csrf_token": req.csrf_token})
    values, errors = validate(req.form)
    if errors:
        return req.page("target_edit.html", {"target": t, "form": values, "errors": errors,
                                             "csrf_token": req.csrf_token}, 400)
    try:
        r = targets.update(req.db, t["id"], values)
    except ValidationError as e:  # the name is taken
        return req.page("target_edit.html", {"target": t, "form": values, "errors": e.errors,
                                             "csrf_token": req.csrf_token}, 400)
    if req.wants_json:
        return req.json({"id": t["id"], "pin_dropped": r["moved"]})
    return redirect(req.url("/targets", msg="target-saved"))


def delete(req, tid):
    req.require_admin_pages()
    t = _one(req, tid)
    try:
        targets.remove(req.db, t["id"])
    except targets.TargetInUse as e:
        problem = "target %s holds volumes of rack %s: delete those reservations first" % (
            e.name, ", ".join(str(r) for r in e.racks))
        if req.wants_json:
            return req.json({"error": problem}, 409)
        return _index_page(req, status=409, problem=problem)
    if req.wants_json:
        return req.json({"deleted": t["id"]})
    return redirect(req.url("/targets", msg="target-removed"))


def test(req, tid):
    """Connect, show the host key; the page offers to pin it (a second POST)."""
    req.require_admin_pages()
    t = _one(req, tid)
    from vc.web import testconn  # paramiko: only here

    result: Dict[str, Optional[str]] = {"error": None, "key_type": None, "fingerprint": None,
                                        "pin": None, "matches": None}
    try:
        hk = testconn.scan(t["address"], int(t["port"]))
        result.update(key_type=hk.key_type, fingerprint=hk.fingerprint, pin=hk.pin)
        if t["host_key_fingerprint"]:
            result["matches"] = "yes" if t["host_key_fingerprint"] == hk.pin else "no"
    except testconn.ConnectFailed as e:
        result["error"] = str(e)
    data = {"target": t, "result": result, "csrf_token": req.csrf_token}
    return req.page("target_test.html", data)


def pin(req, tid):
    req.require_admin_pages()
    t = _one(req, tid)
    try:
        fp = targets.pin(req.db, t["id"], req.form.get("pin", ""))
    except ValueError as e:
        raise HTTPError(400, str(e)) from None
    if req.wants_json:
        return req.json({"id": t["id"], "host_key_fingerprint": fp})
    return redirect(req.url("/targets", msg="pinned"))

"""iSCSI target setup: list, add, edit and remove targets (``vciscsitarget``), show the
frontend's public SSH key, and "test connection" (fetch the target's host key, pin it when the
user confirms).

Pinning pins only a key VC itself saw: "test connection" scans the target and puts the
fingerprint in the pin form together with a signature (:func:`vc.web.security.sign`) over the
user, the target id, its address and SSH port and that fingerprint. The pin POST is refused
unless the signature holds for the target as it is now (so a changed address or port, another
target, another user or a typed fingerprint is refused), then the target is scanned again and
pinned only when it still shows that key. Every write is :mod:`vc.targets`' (whose
:func:`~vc.targets.update` drops the pin when the address or port changes).

Admins only when users are known (``REMOTE_USER``); anyone in single-user mode.
"""

from typing import Dict, Optional

from vc import targets
from vc.errors import ValidationError
from vc.web import security
from vc.web.app import MAX_ID, HTTPError, number, redirect

# the rules and every write are vc.targets' (shared with 'vc_ctl.py target ...')
FIELDS, DEFAULTS = targets.FIELDS, targets.DEFAULTS
PORTS = (("port", "SSH port"), ("iscsi_port", "iSCSI port"))


def validate(form):
    """:func:`vc.targets.validate`, with the port fields checked first by
    :func:`vc.numbers.parse_int` (ASCII digits, bounded length): ``²``, ``١`` or 5,000 digits are
    a message on the form, not an exception."""
    from vc.numbers import parse_int

    safe, bad = dict(form), {}
    for key, what in PORTS:
        raw = form.get(key)
        if raw is None:
            continue
        try:
            parse_int(raw, what, 1, 65535)
        except ValidationError as e:
            bad[key] = e.errors[what]
            safe[key] = DEFAULTS[key]
    values, errors = targets.validate(safe)
    for key, msg in bad.items():
        values[key] = str(form.get(key, ""))[:40].strip()
        errors[key] = msg
    return values, errors


def _all(req):
    return targets.list_all(req.db)


def _one(req, tid) -> dict:
    return targets.get(req.db, number(tid, "target id", 1, MAX_ID))


def _signed(t, fingerprint):
    """What a pin form's signature covers."""
    return [t["id"], t["address"], t["port"], fingerprint]


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
                                        "pin": None, "pin_token": None, "matches": None}
    try:
        hk = testconn.scan(t["address"], int(t["port"]))
        # the pin form carries what VC saw, signed: only this key, for this target at this
        # address and port, by this user, can be pinned from it
        token = security.sign(req.app.secret(req.cfg), "pin", req.user, _signed(t, hk.pin))
        result.update(key_type=hk.key_type, fingerprint=hk.fingerprint, pin=hk.pin,
                      pin_token=token)
        if t["host_key_fingerprint"]:
            result["matches"] = "yes" if t["host_key_fingerprint"] == hk.pin else "no"
    except testconn.ConnectFailed as e:
        result["error"] = str(e)
    data = {"target": t, "result": result, "csrf_token": req.csrf_token}
    return req.page("target_test.html", data)


def pin(req, tid):
    """Pin the host key of the "test connection" form: only when the form carries VC's
    signature over this target's current address and port and that key, and a new scan shows
    the same key."""
    req.require_admin_pages()
    t = _one(req, tid)
    try:
        fp = targets.check_fingerprint(req.form.get("pin", ""))
    except ValueError as e:
        raise HTTPError(400, "not pinned: %s" % e) from None
    why = security.check_signed(req.app.secret(req.cfg), "pin", req.user, _signed(t, fp),
                                req.form.get("pin_token", ""))
    if why:
        raise HTTPError(403, "not pinned: %s. VC pins only a host key it fetched itself from "
                        "the target at its current address: use Test connection (again)." % why)
    from vc.web import testconn  # paramiko: only here

    try:
        hk = testconn.scan(t["address"], int(t["port"]))
    except testconn.ConnectFailed as e:
        return _pin_refused(req, t, "not pinned: %s, so its host key could not be checked "
                            "again" % e)
    if hk.pin != fp:
        return _pin_refused(req, t, "not pinned: %s:%d now shows the host key %s, not the %s "
                            "you confirmed; test the connection again and compare"
                            % (t["address"], t["port"], hk.pin, fp))
    targets.pin(req.db, t["id"], fp)
    now = _one(req, t["id"])
    if (now["address"], now["port"]) != (t["address"], t["port"]):
        # moved meanwhile (vc.targets.update): the key pinned is the old address's, which the
        # new one cannot show, so the target is refused until it is tested and pinned again
        return _pin_refused(req, t, "the target moved to %s:%d while its key was pinned: test "
                            "the connection again" % (now["address"], now["port"]))
    if req.wants_json:
        return req.json({"id": t["id"], "host_key_fingerprint": fp})
    return redirect(req.url("/targets", msg="pinned"))


def _pin_refused(req, t, message):
    if req.wants_json:
        return req.json({"id": t["id"], "error": message}, 409)
    return _index_page(req, status=409, problem=message)

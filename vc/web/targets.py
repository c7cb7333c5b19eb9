"""iSCSI target setup: list, add, edit and remove targets (``vciscsitarget``), show the
frontend's public SSH key, and "test connection" (fetch the target's host key, pin it when the
user confirms).

Admins only when users are known (``REMOTE_USER``); anyone in single-user mode.
"""

from typing import Dict, Optional

from vc import targets
from vc.storage import check_fingerprint
from vc.db import naive_utc
from vc.errors import NotFound
from vc.web.app import HTTPError, redirect

# the rules are vc.targets' (shared with 'vc_ctl.py target add')
FIELDS, DEFAULTS, validate = targets.FIELDS, targets.DEFAULTS, targets.validate


def _all(req):
    return req.db.query(
        "SELECT t.id, t.name, t.address, t.port, t.ssh_user, t.iscsi_port, "
        "t.host_key_fingerprint, t.created_at, "
        "(SELECT COUNT(*) FROM vciscsi v WHERE v.target_id = t.id) AS volumes "
        "FROM vciscsitarget t ORDER BY t.name")


def _one(req, tid) -> dict:
    rows = req.db.query("SELECT id, name, address, port, ssh_user, iscsi_port, "
                        "host_key_fingerprint FROM vciscsitarget WHERE id = %s", (int(tid),))
    if not rows:
        raise NotFound(what="iSCSI target", key=tid)
    return rows[0]


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
    def run(cur):
        # the unique key on name stays the guard; this check only turns a clash into words
        cur.execute("SELECT id FROM vciscsitarget WHERE name = %s", (values["name"],))
        if cur.fetchone():
            return None
        cur.execute("INSERT INTO vciscsitarget (name, address, port, ssh_user, iscsi_port, "
                    "created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    (values["name"], values["address"], int(values["port"]), values["ssh_user"],
                     int(values["iscsi_port"]), naive_utc(req.now)))
        return cur.lastrowid

    tid = req.db.transaction(run)
    if tid is None:
        return _index_page(req, values, {"name": "a target named %s exists already"
                                                 % values["name"]}, 400)
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
    moved = values["address"] != t["address"] or int(values["port"]) != t["port"]

    def run(cur):
        cur.execute("SELECT id FROM vciscsitarget WHERE name = %s AND id <> %s",
                    (values["name"], t["id"]))
        if cur.fetchone():
            return False
        # a pinned key belongs to the machine that showed it: a new address drops the pin
        cur.execute("UPDATE vciscsitarget SET name = %s, address = %s, port = %s, ssh_user = %s, "
                    "iscsi_port = %s, host_key_fingerprint = IF(%s, NULL, host_key_fingerprint) "
                    "WHERE id = %s",
                    (values["name"], values["address"], int(values["port"]), values["ssh_user"],
                     int(values["iscsi_port"]), 1 if moved else 0, t["id"]))
        return True

    if not req.db.transaction(run):
        return req.page("target_edit.html", {
            "target": t, "form": values, "csrf_token": req.csrf_token,
            "errors": {"name": "a target named %s exists already" % values["name"]}}, 400)
    if req.wants_json:
        return req.json({"id": t["id"], "pin_dropped": moved})
    return redirect(req.url("/targets", msg="target-saved"))


def delete(req, tid):
    req.require_admin_pages()
    t = _one(req, tid)

    def run(cur):
        cur.execute("SELECT DISTINCT rack FROM vciscsi WHERE target_id = %s ORDER BY rack "
                    "FOR UPDATE", (t["id"],))
        racks = [r["rack"] for r in cur.fetchall()]
        if racks:
            return racks
        cur.execute("DELETE FROM vciscsitarget WHERE id = %s", (t["id"],))
        return []

    racks = req.db.transaction(run)
    if racks:
        problem = "target %s holds volumes of rack %s: delete those reservations first" % (
            t["name"], ", ".join(str(r) for r in racks))
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
        fp = check_fingerprint(req.form.get("pin", ""))
    except ValueError as e:
        raise HTTPError(400, str(e)) from None
    req.db.transaction(lambda cur: cur.execute(
        "UPDATE vciscsitarget SET host_key_fingerprint = %s WHERE id = %s", (fp, t["id"])))
    if req.wants_json:
        return req.json({"id": t["id"], "host_key_fingerprint": fp})
    return redirect(req.url("/targets", msg="pinned"))

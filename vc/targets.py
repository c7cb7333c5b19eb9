"""iSCSI targets (``vciscsitarget``): validate, add, list, update, pin a host key, remove.

The one place that writes targets: ``vc_ctl.py target ...`` and the "iSCSI target setup" page
both call these (the page keeps only the form handling). Pinning a host key is an admin's
decision: :func:`pin` stores the fingerprint the admin confirmed; :mod:`vc.remote` refuses any
other key afterwards (and an unpinned target altogether). A pinned key belongs to the machine
that showed it: :func:`update` drops the pin when the address or the SSH port changes.

A target is named by its name (``str``, the CLI) or its id (``int``, the pages).
"""

import ipaddress
import re
from typing import Dict, List, Tuple, Union

from vc.db import naive_utc
from vc.errors import NotFound, ValidationError, VcError

Key = Union[int, str]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HOST_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                     r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
SSH_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
FIELDS = ("name", "address", "port", "ssh_user", "iscsi_port")
DEFAULTS = {"name": "", "address": "", "port": "22", "ssh_user": "root", "iscsi_port": "3260"}


def validate(form: dict) -> Tuple[dict, Dict[str, str]]:
    """``(values, errors)``: the values as typed (to show the form again) and one message per
    bad field."""
    v = {k: str(form.get(k, DEFAULTS[k]) if form.get(k) is not None else DEFAULTS[k]).strip()
         for k in FIELDS}
    errors: Dict[str, str] = {}
    if not NAME_RE.match(v["name"]):
        errors["name"] = "name must be 1-64 letters, digits, . _ - (starting with a letter or " \
                         "digit), got %r" % v["name"][:40]
    addr = v["address"]
    try:
        ipaddress.ip_address(addr)
        ok = True
    except ValueError:
        ok = bool(HOST_RE.match(addr)) and not addr.replace(".", "").isdigit()
    if not ok:
        errors["address"] = "address must be a host name or an IP address, got %r" % addr[:60]
    for key, what in (("port", "SSH port"), ("iscsi_port", "iSCSI port")):
        s = v[key]
        if not s.isdigit() or not 1 <= int(s) <= 65535:
            errors[key] = "%s must be a number from 1 to 65535, got %r" % (what, s[:20])
    if not SSH_USER_RE.match(v["ssh_user"]):
        errors["ssh_user"] = "SSH user must be a login name (lower-case letters, digits, _ . -), " \
                             "got %r" % v["ssh_user"][:40]
    return v, errors


def add(db, form: dict, now) -> int:
    """Register a target (its host key is not trusted yet). :raises ValidationError:"""
    values, errors = validate(form)
    if errors:
        raise ValidationError(errors)

    def run(cur):
        # the unique key on name stays the guard; this check only turns a clash into words
        _name_free(cur, values["name"])
        cur.execute("INSERT INTO vciscsitarget (name, address, port, ssh_user, iscsi_port, "
                    "created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    (values["name"], values["address"], int(values["port"]), values["ssh_user"],
                     int(values["iscsi_port"]), naive_utc(now)))
        return cur.lastrowid

    return db.transaction(run)


def list_all(db) -> List[dict]:
    return db.query(
        "SELECT t.id, t.name, t.address, t.port, t.ssh_user, t.iscsi_port, "
        "t.host_key_fingerprint, t.created_at, "
        "(SELECT COUNT(*) FROM vciscsi v WHERE v.target_id = t.id) AS volumes "
        "FROM vciscsitarget t ORDER BY t.name")


def _where(key: Key) -> Tuple[str, tuple]:
    if isinstance(key, int):
        return "id = %s", (key,)
    return "name = %s", (key,)


def _name_free(cur, name: str, but_id=None) -> None:
    cur.execute("SELECT id FROM vciscsitarget WHERE name = %s AND id <> %s",
                (name, -1 if but_id is None else but_id))
    if cur.fetchone():
        raise ValidationError({"name": "a target named %s exists already" % name})


def _lock(cur, key: Key) -> dict:
    where, args = _where(key)
    cur.execute("SELECT * FROM vciscsitarget WHERE " + where + " FOR UPDATE", args)
    row = cur.fetchone()
    if row is None:
        raise NotFound(what="iSCSI target", key=key)
    return row


def get(db, key: Key) -> dict:
    where, args = _where(key)
    rows = db.query("SELECT * FROM vciscsitarget WHERE " + where, args)
    if not rows:
        raise NotFound(what="iSCSI target", key=key)
    return rows[0]


def update(db, key: Key, changes: dict) -> dict:
    """Change some of a target's fields (``changes``: any of :data:`FIELDS`; the others keep
    their values). A new address or SSH port drops the pinned host key: it belonged to the
    machine that showed it.

    :returns: ``{"id", "name", "moved", "pin_dropped"}``: ``moved`` when the address or SSH
        port changed (any pin is gone), ``pin_dropped`` when there was a pin.
    :raises ValidationError: a bad field or a name another target has (nothing written).
    :raises NotFound:
    """

    def run(cur):
        t = _lock(cur, key)
        form = {k: t[k] for k in FIELDS}
        form.update({k: v for k, v in changes.items() if k in FIELDS and v is not None})
        values, errors = validate(form)
        if errors:
            raise ValidationError(errors)
        _name_free(cur, values["name"], but_id=t["id"])
        moved = values["address"] != t["address"] or int(values["port"]) != t["port"]
        cur.execute("UPDATE vciscsitarget SET name = %s, address = %s, port = %s, ssh_user = %s, "
                    "iscsi_port = %s, host_key_fingerprint = IF(%s, NULL, host_key_fingerprint) "
                    "WHERE id = %s",
                    (values["name"], values["address"], int(values["port"]), values["ssh_user"],
                     int(values["iscsi_port"]), 1 if moved else 0, t["id"]))
        return {"id": t["id"], "name": values["name"], "moved": moved,
                "pin_dropped": bool(moved and t["host_key_fingerprint"])}

    return db.transaction(run)


def check_fingerprint(fingerprint: str) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it. :raises ValueError: anything else."""
    from vc import remote

    return remote.check_fingerprint(fingerprint)


def pin(db, key: Key, fingerprint: str) -> str:
    """Trust this host key for the target (an admin confirmed it). Returns the fingerprint.

    :raises ValueError: not a SHA256 fingerprint (nothing written).
    :raises NotFound:
    """
    fp = check_fingerprint(fingerprint)

    def run(cur):
        t = _lock(cur, key)
        cur.execute("UPDATE vciscsitarget SET host_key_fingerprint = %s WHERE id = %s",
                    (fp, t["id"]))

    db.transaction(run)
    return fp


class TargetInUse(VcError):
    """A target that holds volumes of reservations cannot be removed."""

    def __init__(self, name, racks, volumes):
        self.name, self.racks, self.volumes = name, racks, volumes
        super().__init__("iSCSI target %s holds %d volume(s) of reservations: delete those first"
                         % (name, volumes))


def remove(db, key: Key) -> None:
    """Remove a target no reservation uses.

    :raises TargetInUse: it holds volumes (``racks``: of which reservations).
    :raises NotFound:
    """

    def run(cur):
        # the target row locked: a reservation cannot add a volume on it meanwhile (foreign key)
        t = _lock(cur, key)
        cur.execute("SELECT rack, COUNT(*) AS n FROM vciscsi WHERE target_id = %s GROUP BY rack "
                    "ORDER BY rack", (t["id"],))
        held = cur.fetchall()
        if held:
            raise TargetInUse(t["name"], [r["rack"] for r in held], sum(r["n"] for r in held))
        cur.execute("DELETE FROM vciscsitarget WHERE id = %s", (t["id"],))

    db.transaction(run)

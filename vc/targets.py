"""iSCSI targets (``vciscsitarget``): validate, add, list, pin a host key, remove.

Shared by ``vc_ctl.py target ...`` and the "iSCSI target setup" page. Pinning a host key is an
admin's decision: :func:`pin` stores the fingerprint the admin confirmed; :mod:`vc.storage`
refuses any other key afterwards (and an unpinned target altogether).
"""

import ipaddress
import re
from typing import Dict, List, Tuple

from vc.db import naive_utc
from vc.errors import NotFound, ValidationError, VcError

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
        cur.execute("SELECT id FROM vciscsitarget WHERE name = %s", (values["name"],))
        if cur.fetchone():
            raise ValidationError({"name": "a target named %s exists already" % values["name"]})
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


def get(db, name: str) -> dict:
    rows = db.query("SELECT * FROM vciscsitarget WHERE name = %s", (name,))
    if not rows:
        raise NotFound(what="iSCSI target", key=name)
    return rows[0]


def pin(db, name: str, fingerprint: str) -> None:
    """Trust this host key for the target (an admin confirmed it)."""
    from vc.storage import check_fingerprint

    fp = check_fingerprint(fingerprint)
    get(db, name)
    db.transaction(lambda cur: cur.execute(
        "UPDATE vciscsitarget SET host_key_fingerprint = %s WHERE name = %s", (fp, name)))


def remove(db, name: str) -> None:
    """Remove a target no reservation uses."""

    def run(cur):
        cur.execute("SELECT t.id, (SELECT COUNT(*) FROM vciscsi v WHERE v.target_id = t.id) AS n "
                    "FROM vciscsitarget t WHERE t.name = %s FOR UPDATE", (name,))
        row = cur.fetchone()
        if row is None:
            raise NotFound(what="iSCSI target", key=name)
        if row["n"]:
            raise VcError("iSCSI target %s holds %d volume(s) of reservations: delete those "
                          "first" % (name, row["n"]))
        cur.execute("DELETE FROM vciscsitarget WHERE id = %s", (row["id"],))

    db.transaction(run)

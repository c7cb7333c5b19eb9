"""Owners' SSH public keys in the database (``vcsshkey``): add, list, get, remove, and the
``authorized_keys`` lines a cluster of an owner gets.

Every key is validated and normalised by :mod:`vc.sshkeys` before anything is written; a refused
paste writes nothing. The unique key ``(owner, fingerprint)`` makes a key held twice impossible:
adding it again is a no-op.
"""

import re
from typing import List, Optional, Tuple

from vc import sshkeys, timeutil
from vc.config import USER_RE
from vc.db import aware_utc, naive_utc
from vc.errors import NotFound, VcError

MAX_NAME = 64
COLUMNS = "id, owner, name, key_type, fingerprint, public_key, created_at"


class NotOwner(VcError):
    """Only the owner of a key (or an admin) may remove it."""

    msg_fmt = "SSH key %(key)s belongs to %(owner)s; only its owner or an admin may remove it"


def _row(r: dict) -> dict:
    out = dict(r)
    out["created_at"] = aware_utc(out["created_at"])
    return out


def check_name(name: Optional[str], default: str) -> str:
    """The key's name: ``name`` stripped, or ``default`` (cut to 64 characters) when empty.

    :raises sshkeys.InvalidKey: not printable, or longer than 64 characters.
    """
    name = (name or "").strip()
    if not name:
        return default.strip()[:MAX_NAME]
    if len(name) > MAX_NAME:
        raise sshkeys.InvalidKey("the key name is %d characters long: at most %d"
                                 % (len(name), MAX_NAME))
    if not name.isprintable():
        raise sshkeys.InvalidKey("the key name must be printable text (no control characters)")
    return name


def _check_owner(owner: str) -> str:
    owner = (owner or "").strip()
    if not re.match(USER_RE, owner):  # what Apache hands over: alice, alice@EXAMPLE.ORG
        raise VcError("owner must be a user name (letters, digits, . _ @ -)")
    return owner


def add(db, owner: str, text: str, name: Optional[str] = None, now=None) -> Tuple[dict, bool]:
    """Add an owner's key. ``(row, changed)``: ``changed`` is False when the owner holds this key
    already (the row is the existing one, its name unchanged).

    :raises sshkeys.InvalidKey: the paste was refused (:class:`sshkeys.PrivateKeyPasted` for a
        private key); nothing was written.
    """
    owner = _check_owner(owner)
    key = sshkeys.parse(text)
    name = check_name(name, key.comment or key.key_type)
    created = naive_utc(now or timeutil.utcnow())

    def run(cur):
        # the unique key decides (two adds at once: one row); id = id changes nothing, so the
        # affected-row count says whether this call inserted
        cur.execute("INSERT INTO vcsshkey (owner, name, key_type, fingerprint, public_key, "
                    "created_at) VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE id = id",
                    (owner, name, key.key_type, key.fingerprint, key.line, created))
        inserted = cur.rowcount == 1
        cur.execute("SELECT " + COLUMNS + " FROM vcsshkey WHERE owner = %s AND fingerprint = %s",
                    (owner, key.fingerprint))
        return _row(cur.fetchone()), inserted

    return db.transaction(run)


def list_keys(db, owner: Optional[str] = None) -> List[dict]:
    """Every key (``owner=None``) or one owner's, by owner then in the order they were added."""
    if owner is None:
        rows = db.query("SELECT " + COLUMNS + " FROM vcsshkey ORDER BY owner, id")
    else:
        rows = db.query("SELECT " + COLUMNS + " FROM vcsshkey WHERE owner = %s ORDER BY id",
                        (owner,))
    return [_row(r) for r in rows]


def get(db, key_id) -> dict:
    """:raises NotFound: no key has this id."""
    rows = db.query("SELECT " + COLUMNS + " FROM vcsshkey WHERE id = %s", (int(key_id),))
    if not rows:
        raise NotFound(what="SSH key", key=key_id)
    return _row(rows[0])


def remove(db, key_id, user: str, is_admin: bool) -> bool:
    """Remove a key: its owner may, and an admin. True when this call removed it.

    :raises NotFound: no key has this id.
    :raises NotOwner: ``user`` is neither its owner nor an admin (nothing is removed).
    """
    kid = int(key_id)

    def run(cur):
        cur.execute("SELECT owner FROM vcsshkey WHERE id = %s FOR UPDATE", (kid,))
        r = cur.fetchone()
        if r is None:
            raise NotFound(what="SSH key", key=key_id)
        if r["owner"] != user and not is_admin:
            raise NotOwner(key=kid, owner=r["owner"])
        cur.execute("DELETE FROM vcsshkey WHERE id = %s", (kid,))
        return cur.rowcount == 1

    return db.transaction(run)


def authorized_lines(db, owner: str) -> List[str]:
    """The owner's normalised public key lines, for root's ``authorized_keys`` on every node of
    the owner's clusters (the cluster's own public key is added by the caller)."""
    return [r["public_key"] for r in db.query(
        "SELECT public_key FROM vcsshkey WHERE owner = %s ORDER BY id", (owner,))]

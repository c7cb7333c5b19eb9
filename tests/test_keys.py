"""Owners' SSH keys in the database: add, a duplicate is a no-op, list by owner, remove (own,
refused for another's, an admin may), authorized_keys lines."""

import threading
from datetime import timedelta

import pytest

from conftest import NOW, count_rows
from vc import keys, sshkeys
from vc.errors import NotFound, VcError

from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


def new_key(comment="alice@laptop", kind="ed25519"):
    k = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else \
        ec.generate_private_key(ec.SECP256R1())
    line = k.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()
    return line + (" " + comment if comment else "")


def test_add_and_get(db):
    line = new_key()
    row, changed = keys.add(db, "alice", line + "\n", now=NOW)
    assert changed is True
    assert row["owner"] == "alice" and row["name"] == "alice@laptop"
    assert row["key_type"] == "ssh-ed25519" and row["public_key"] == line
    assert row["fingerprint"] == sshkeys.parse(line).fingerprint
    assert row["created_at"] == NOW
    assert keys.get(db, row["id"]) == row


def test_name_defaults_and_rules(db):
    row, _ = keys.add(db, "alice", new_key(comment=""), now=NOW)
    assert row["name"] == "ssh-ed25519"  # no comment: the type
    row, _ = keys.add(db, "alice", new_key(comment="c" * 150), now=NOW)
    assert row["name"] == "c" * 64  # a long comment is cut for the name
    row, _ = keys.add(db, "alice", new_key(), name="  work laptop ", now=NOW)
    assert row["name"] == "work laptop"
    before = count_rows(db)
    for bad, msg in (("n" * 65, "at most 64"), ("tab\there", "printable"),
                     ("nl\x00", "printable")):
        with pytest.raises(sshkeys.InvalidKey, match=msg):
            keys.add(db, "alice", new_key(), name=bad, now=NOW)
    with pytest.raises(VcError, match="owner must be a user name"):
        keys.add(db, "bad owner", new_key(), now=NOW)
    assert count_rows(db) == before


def test_duplicate_is_a_no_op(db):
    line = new_key()
    first, changed = keys.add(db, "alice", line, name="first", now=NOW)
    assert changed
    # the same key again, renamed, re-spaced, later: nothing changes
    again, changed = keys.add(db, "alice", "  " + line.replace(" ", "  ") + "  ", name="second",
                              now=NOW + timedelta(hours=1))
    assert changed is False and again == first
    assert len(keys.list_keys(db, "alice")) == 1
    # another owner may hold the same public key
    other, changed = keys.add(db, "bob", line, now=NOW)
    assert changed and other["id"] != first["id"]


def test_concurrent_adds_make_one_row(db):
    line = new_key()
    results, errors = [], []

    def run():
        try:
            results.append(keys.add(db, "alice", line, now=NOW))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(c for _, c in results) == [False] * 5 + [True]
    assert len({r["id"] for r, _ in results}) == 1
    assert len(keys.list_keys(db, "alice")) == 1


def test_list_by_owner(db):
    a1, _ = keys.add(db, "alice", new_key("a1"), now=NOW)
    b1, _ = keys.add(db, "bob", new_key("b1", kind="p256"), now=NOW)
    a2, _ = keys.add(db, "alice", new_key("a2"), now=NOW)
    assert [r["id"] for r in keys.list_keys(db, "alice")] == [a1["id"], a2["id"]]
    assert [r["id"] for r in keys.list_keys(db, "bob")] == [b1["id"]]
    assert keys.list_keys(db, "carol") == []
    assert [r["id"] for r in keys.list_keys(db)] == [a1["id"], a2["id"], b1["id"]]
    assert keys.authorized_lines(db, "alice") == [a1["public_key"], a2["public_key"]]
    assert keys.authorized_lines(db, "carol") == []


def test_remove_own_refused_for_other_admin_may(db):
    a, _ = keys.add(db, "alice", new_key("a"), now=NOW)
    b, _ = keys.add(db, "bob", new_key("b"), now=NOW)
    with pytest.raises(keys.NotOwner) as e:
        keys.remove(db, b["id"], "alice", False)
    assert isinstance(e.value, VcError)
    assert str(e.value) == ("SSH key %d belongs to bob; only its owner or an admin may remove it"
                            % b["id"])
    assert keys.get(db, b["id"])  # still there
    assert keys.remove(db, a["id"], "alice", False) is True
    assert keys.remove(db, b["id"], "root", True) is True
    assert keys.list_keys(db) == []
    with pytest.raises(NotFound, match="no such SSH key"):
        keys.remove(db, a["id"], "alice", False)
    with pytest.raises(NotFound):
        keys.get(db, 999999)


def test_kerberos_style_owner_may_add_a_key(db):
    """What Apache hands over as REMOTE_USER (alice@EXAMPLE.ORG) owns keys too."""
    from vc import sshkeys

    _, line = sshkeys.cluster_keypair("alice@laptop")
    row, changed = keys.add(db, "alice@EXAMPLE.ORG", line)
    assert changed and keys.authorized_lines(db, "alice@EXAMPLE.ORG") == [row["public_key"]]

"""vc.db.Database against the project's MariaDB: a thread's connection kept for its next
transaction, and a kept connection the server dropped is reconnected and the work re-run."""

import threading

import pytest

from vc.db import Database


def conn_id(cur):
    cur.execute("SELECT CONNECTION_ID() AS id")
    return cur.fetchone()["id"]


def test_a_thread_keeps_its_connection_and_another_thread_has_its_own(db):
    a = db.transaction(conn_id)
    assert db.transaction(conn_id) == a
    other = []
    t = threading.Thread(target=lambda: other.append(db.transaction(conn_id)))
    t.start()
    t.join()
    assert other and other[0] != a
    assert db.transaction(conn_id) == a


def test_a_refusal_inside_the_transaction_keeps_the_connection_and_rolls_back(db):
    a = db.transaction(conn_id)

    def fail(cur):
        cur.execute("UPDATE vccounter SET value = 42")
        raise ValueError("refused")

    with pytest.raises(ValueError):
        db.transaction(fail)
    assert db.transaction(conn_id) == a
    assert {r["value"] for r in db.query("SELECT value FROM vccounter")} == {0}


def test_a_kept_connection_the_server_killed_is_replaced_and_the_work_done(db, cfg):
    a = db.transaction(conn_id)
    Database(cfg, reuse=False).transaction(lambda cur: cur.execute("KILL %s" % a))
    ran = []

    def work(cur):
        ran.append(1)
        return conn_id(cur)

    b = db.transaction(work)
    assert b != a and len(ran) == 2        # the first run hit the dead connection
    assert db.transaction(conn_id) == b


def test_reuse_off_opens_a_connection_per_transaction(cfg):
    d = Database(cfg, reuse=False)
    assert d.transaction(conn_id) != d.transaction(conn_id)

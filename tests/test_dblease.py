"""vc.dblease on the single MariaDB, with an injected clock: take, renew, refuse while held,
take over after expiry, release, and the step runner stopping on a lost lease."""

import threading
import time
import uuid
from datetime import timedelta

import pytest

from conftest import NOW, db_overrides, make_cfg
from test_ctl import Recorder, TESTNODE, reserve
from vc import ctl as vctl
from vc import dblease, steps
from vc import reservations as R
from vc.db import Database
from vc.errors import DatabaseError
from vc.scheduler import Scheduler

S = timedelta(seconds=1)


class Clock:
    def __init__(self, t=NOW):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, seconds):
        self.t += timedelta(seconds=seconds)


@pytest.fixture
def name(db):
    """A lease name of this test alone (its row removed afterwards)."""
    n = "test-%s" % uuid.uuid4().hex[:10]
    yield n
    db.transaction(lambda cur: cur.execute("DELETE FROM vclease WHERE name = %s", (n,)))


def row(db, name):
    return dblease.Lease(db, name, "nobody", 1).current()


def test_take_renew_release(db, name):
    clock = Clock()
    a = dblease.Lease(db, name, "fe-a", 30, clock)
    assert row(db, name) is None
    assert a.try_take() and a.held
    r = row(db, name)
    assert r["holder"] == "fe-a" and r["expires_at"] == NOW + 30 * S
    assert r["generation"] == a.generation == 1
    clock.advance(10)
    assert a.renew()
    assert row(db, name)["expires_at"] == NOW + 40 * S and a.expires_at == NOW + 40 * S
    # a renewal at the same instant still changes the row (beats): it is not taken for lost
    assert a.renew() and a.renew() and row(db, name)["beats"] == 3
    a.release()
    r = row(db, name)
    assert r["holder"] is None and r["expires_at"] is None and not a.held


def test_refused_while_held_taken_over_after_expiry(db, name):
    clock = Clock()
    a = dblease.Lease(db, name, "fe-a", 30, clock)
    b = dblease.Lease(db, name, "fe-b", 30, clock)
    assert a.try_take()
    assert not b.try_take()
    assert b.describe_holder() == "frontend fe-a (lease until 2026-12-01T00:00:30Z)"
    clock.advance(29.9)
    assert not b.try_take()                    # not yet expired
    assert not b.acquire(wait=0.3, poll=0.1)   # waiting does not help while it is renewed
    clock.advance(0.2)                         # a's lease has expired: b takes it over
    assert b.try_take() and b.generation == 2
    assert row(db, name)["holder"] == "fe-b"
    # a finds out at its next renewal: lost, and it cannot renew or release b's lease
    assert not a.renew() and a.lost and "taken over by frontend fe-b" in a.lost_reason
    with pytest.raises(dblease.LeaseLost, match="lost .*taken over by frontend fe-b"):
        a.check()
    a.release()
    assert row(db, name)["holder"] == "fe-b"
    b.check()                                  # b holds it: no error
    b.release()
    assert a.try_take() and a.generation == 3  # free again: taken at once


def test_own_lease_retaken_at_once_after_a_crash(db, name):
    clock = Clock()
    dead = dblease.Lease(db, name, "fe-a", 30, clock)
    assert dead.try_take()                     # ... and its process dies (never released)
    again = dblease.Lease(db, name, "fe-a", 30, clock)
    assert again.try_take() and again.generation == dead.generation + 1
    assert not dead.renew() and dead.lost      # the dead one's generation is gone


def test_released_lease_is_free_for_others(db, name):
    clock = Clock()
    a = dblease.Lease(db, name, "fe-a", 30, clock)
    b = dblease.Lease(db, name, "fe-b", 30, clock)
    assert a.try_take()
    threading.Timer(0.3, a.release).start()
    t0 = time.monotonic()
    assert b.acquire(wait=5, poll=0.05)        # waits for the release, not for the expiry
    assert time.monotonic() - t0 < 2
    b.release()


def test_background_renewal_keeps_it_and_stops_at_release(db, name):
    clock = Clock()
    a = dblease.Lease(db, name, "fe-a", 3, clock)
    b = dblease.Lease(db, name, "fe-b", 3, clock)
    assert a.try_take()
    a.start_renewing(interval=0.05)
    for _ in range(5):                         # time passes; a keeps renewing
        clock.advance(2)
        time.sleep(0.3)
        assert not b.try_take(), row(db, name)
    assert row(db, name)["expires_at"] > NOW + 10 * S
    a.release()
    assert a._thread is None and row(db, name)["holder"] is None
    assert b.try_take()
    b.release()


def test_renewal_finds_the_lease_taken_over(db, name):
    clock = Clock()
    a = dblease.Lease(db, name, "fe-a", 3, clock)
    b = dblease.Lease(db, name, "fe-b", 3, clock)
    assert a.try_take()
    a.start_renewing(interval=3600)            # a stalls: no renewal in time
    clock.advance(4)
    assert b.try_take()
    assert a.renew() is False and a.lost
    a.release()
    assert row(db, name)["holder"] == "fe-b"
    b.release()


class DownDb:
    """A database that does not answer (after the take)."""

    def __init__(self, db):
        self.db, self.down = db, False

    def transaction(self, fn, conn=None):
        if self.down:
            raise DatabaseError("cannot connect to the database x at /nowhere: refused")
        return self.db.transaction(fn, conn)

    def query(self, *a):
        return self.db.query(*a)


def test_unrenewable_lease_is_lost_once_it_expires(db, name):
    clock = Clock()
    down = DownDb(db)
    a = dblease.Lease(down, name, "fe-a", 3, clock)
    assert a.try_take()
    down.down = True
    a.start_renewing(interval=0.05)
    time.sleep(0.3)
    assert not a.lost                          # failures are retried while it lasts
    clock.advance(3)
    for _ in range(100):
        if a.lost:
            break
        time.sleep(0.05)
    assert a.lost and "could not renew it before it expired" in a.lost_reason
    a.release()                                # cannot reach the database: logged, not raised
    down.down = False
    assert row(db, name)["holder"] == "fe-a"   # it expires by itself


def test_exactly_one_of_many_takers(db, name):
    clock = Clock()
    n = 16
    barrier = threading.Barrier(n)
    won = []

    def take(i):
        lease = dblease.Lease(Database(db.cfg), name, "fe-%d" % i, 30, clock)
        barrier.wait()
        if lease.try_take():
            won.append(i)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(won) == 1 and row(db, name)["holder"] == "fe-%d" % won[0]


def test_frontend_id_and_ttl_from_config(migrated):
    import socket

    cfg = make_cfg(db_overrides(migrated))
    assert cfg.site.frontend_id is None and cfg.site.lease_seconds == 60
    assert dblease.frontend_id(cfg) == socket.gethostname()
    cfg = make_cfg(dict(db_overrides(migrated), site={"frontend_id": "fe-b",
                                                      "lease_seconds": "7"}))
    lease = dblease.Lease.for_config(cfg, Database(cfg), "x")
    assert (lease.holder, lease.ttl) == ("fe-b", 7)


# ------------------------------------------------------------------ through vc.ctl / the tick
@pytest.fixture
def frontends(migrated, db, tmp_path):
    """Two frontends (own state dirs and frontend ids) on one database and one test host."""

    def make(fid):
        o = db_overrides(migrated)
        o["host:h1"] = {"uri": TESTNODE, "memory_mb": "4096", "vcpus": "8"}
        o["site"] = {"state_dir": str(tmp_path / fid), "timezone": "UTC",
                     "frontend_id": fid, "lease_seconds": "30"}
        o["virt"] = {"name_prefix": "vt", "boot_timeout": "5", "shutdown_timeout": "1",
                     "disk_dir": str(tmp_path / "disks")}
        o["network"] = {"isolation": "none"}
        cfg = make_cfg(o)
        c = vctl.Ctl(cfg, db, execute=Recorder(), clock=lambda: NOW, actor=fid)
        c.lease_clock = Clock()
        return cfg, c

    return make("fe-a"), make("fe-b")


def test_rack_busy_on_another_frontend(frontends, db):
    (cfg, a), (_, b) = frontends
    rack = reserve(cfg, db)
    with a.locked(rack):
        with pytest.raises(vctl.RackBusy, match="rack %d is being started or stopped by "
                                                "frontend fe-a" % rack):
            b.start(rack)
        out = b.stop(rack, "stop by root", wait=0.3)   # busy throughout: recorded
        assert out["state"] == "stop recorded"
    assert R.get(db, rack)["end"] == NOW


def test_lost_lease_stops_the_start_at_the_next_step(frontends, db, monkeypatch):
    (cfg, a), (_, b) = frontends
    rack = reserve(cfg, db)
    ran = []
    real_dump = steps.Dump.run

    def dump_then_lose(self, r):
        out = real_dump(self, r)
        # a stalls past its lease; b takes the rack over; a's renewal finds out
        a.lease_clock.advance(31)
        b.lease_clock.advance(31)
        taker = dblease.Lease.for_config(b.cfg, db, dblease.rack_name(rack), b.lease_clock)
        assert taker.try_take()
        taker.generation = None        # (b's own start re-takes it below)
        assert a._leases[rack].renew() is False
        ran.append("dump")
        return out

    monkeypatch.setattr(steps.Dump, "run", dump_then_lose)
    with pytest.raises(dblease.LeaseLost, match="taken over by frontend fe-b"):
        a.start(rack)
    monkeypatch.setattr(steps.Dump, "run", real_dump)
    got = R.get(db, rack)
    assert got["state"] == "starting" and got["error"] is None   # not failed: b goes on
    events = [e["reason"] for e in got["events"]]
    assert "start: dump done: %s" % a.cfg.site.state_dir in " ".join(events)
    assert not any(e.startswith("start: network done") for e in events)
    # a released nothing of b's
    assert dblease.Lease(db, dblease.rack_name(rack), "x", 1).current()["holder"] == "fe-b"
    # b finishes the start (it holds the lease: its own frontend id)
    out = b.start(rack)
    assert out["state"] == "running"
    events = [e["reason"] for e in R.get(db, rack)["events"]]
    assert sum(e.startswith("start: allocate done") for e in events) == 2
    assert sum(e.startswith("start: boot_computes done") for e in events) == 1
    assert dblease.Lease(db, dblease.rack_name(rack), "x", 1).current()["holder"] is None
    b.stop(rack)


def test_one_tick_at_a_time_over_frontends(frontends, db):
    (cfg_a, a), (cfg_b, b) = frontends
    held = dblease.Lease.for_config(cfg_a, db, dblease.TICK)
    assert held.try_take()
    try:
        report = Scheduler(cfg_b, db, b, clock=lambda: NOW, lookahead=False).tick()
        assert report.acted is False
    finally:
        held.release()
    report = Scheduler(cfg_b, db, b, clock=lambda: NOW, lookahead=False).tick()
    assert report.acted is True
    assert dblease.Lease(db, dblease.TICK, "x", 1).current()["holder"] is None

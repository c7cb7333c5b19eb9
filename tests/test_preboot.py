"""Pre-boot and the tick's pre-flight, driven by a fake clock (libvirt's test driver, MariaDB).

Pre-boot: a reserved cluster starts ``[cron] preboot_minutes`` before its start when admission
says the early window is free of still-running reservations' capacity, else at its start; the
owner's window is unchanged. The tick's pre-flight runs once per reservation,
``[cron] preflight_minutes`` before the start, and mails problems to the owner and the admins.
"""

from datetime import timedelta

import pytest

from conftest import NOW, db_overrides, make_cfg
from vc import ctl as vctl
from vc import hosts, preflight
from vc import reservations as R
from vc.scheduler import Scheduler, next_event
from test_ctl import Recorder, TESTNODE
from test_scheduler import Clock, acts, book, state

M = timedelta(minutes=1)


def make_world(migrated, db, tmp_path, preboot="5", preflight_minutes="0"):
    o = db_overrides(migrated)
    o["host:h1"] = {"uri": TESTNODE, "memory_mb": "4096", "vcpus": "8"}
    o["site"] = {"state_dir": str(tmp_path / "state"), "timezone": "UTC",
                 "admins": "root alice"}
    o["virt"] = {"name_prefix": "vt", "boot_timeout": "5", "shutdown_timeout": "1"}
    o["network"] = {"isolation": "none"}
    o["cron"] = {"preboot_minutes": preboot, "preflight_minutes": preflight_minutes}
    cfg = make_cfg(o)
    clock = Clock(NOW)
    c = vctl.Ctl(cfg, db, execute=Recorder(), clock=clock, actor="test")
    s = Scheduler(cfg, db, c, clock=clock, sleep=clock.sleep, lookahead=False)
    return cfg, c, s, clock


@pytest.fixture
def world(migrated, db, tmp_path):
    return make_world(migrated, db, tmp_path)


def window(db, rack):
    r = db.query("SELECT start_at, end_at FROM vcregist WHERE rack=%s", (rack,))[0]
    return r["start_at"], r["end_at"]


def test_preboot_starts_early_and_keeps_the_window(world, db):
    cfg, c, s, clock = world
    rack = book(cfg, db, NOW + 5 * M, NOW + 20 * M)
    before = window(db, rack)
    clock.t = NOW - M                      # 6 minutes before: not yet
    assert acts(s.tick()) == []
    clock.t = NOW                          # 5 minutes before: pre-boot
    assert acts(s.tick()) == [(rack, "preboot")]
    assert state(db, rack) == "running"
    assert window(db, rack) == before      # the owner's window is unchanged
    reasons = [e["reason"] for e in db.query("SELECT reason FROM vcevent WHERE rack=%s "
                                             "ORDER BY id", (rack,))]
    assert any(r.startswith("pre-boot: starting 300 s before the start") for r in reasons), \
        reasons
    r = R.get(db, rack)
    assert r["start"] == NOW + 5 * M and r["end"] == NOW + 20 * M
    clock.t = NOW + 5 * M                  # at the start: nothing more to do
    assert acts(s.tick()) == []
    clock.t = NOW + 20 * M
    assert acts(s.tick()) == [(rack, "stop")]


def test_no_preboot_while_a_running_reservation_needs_the_capacity(world, db):
    cfg, c, s, clock = world
    a = book(cfg, db, NOW, NOW + 5 * M, mem="1536")          # 3 of the 4 GB until NOW+5
    b = book(cfg, db, NOW + 5 * M, NOW + 20 * M, mem="1536")  # back to back
    small = book(cfg, db, NOW + 7 * M, NOW + 20 * M, mem="64", computes="0")
    assert acts(s.tick()) == [(a, "start")]
    clock.t = NOW + 2 * M                  # b is in its pre-boot window but a holds the memory
    assert acts(s.tick()) == [(small, "preboot")]             # the small one fits beside a
    assert state(db, b) == "reserved"
    clock.t = NOW + 5 * M                  # a ends, b starts at its start time as before
    assert acts(s.tick()) == [(a, "stop"), (b, "start")]
    assert state(db, b) == "running"
    assert not any("pre-boot" in e["reason"] for e in db.query(
        "SELECT reason FROM vcevent WHERE rack=%s", (b,)))


def test_preboot_zero_starts_at_the_start(migrated, db, tmp_path):
    cfg, c, s, clock = make_world(migrated, db, tmp_path, preboot="0")
    rack = book(cfg, db, NOW + 2 * M, NOW + 20 * M)
    assert acts(s.tick()) == []
    clock.t = NOW + 2 * M
    assert acts(s.tick()) == [(rack, "start")]


def test_lookahead_wakes_at_the_preboot_time(world, db):
    cfg, c, s, clock = world
    s.lookahead = True
    rack = book(cfg, db, NOW + 5 * M + timedelta(seconds=20), NOW + 20 * M)
    assert next_event(db, NOW, NOW + M, s.preboot) == NOW + timedelta(seconds=20)
    report = s.tick()
    assert clock.slept == [20.0]
    assert acts(report) == [(rack, "preboot")]
    ev = db.query("SELECT at FROM vcevent WHERE rack=%s AND to_state = 'starting'", (rack,))
    assert str(ev[0]["at"]) == "2026-12-01 00:00:20"


def test_lookahead_still_wakes_at_the_start_when_preboot_was_refused(world, db):
    cfg, c, s, clock = world
    a = book(cfg, db, NOW, NOW + 5 * M + timedelta(seconds=30), mem="1536")
    s.tick()
    b = book(cfg, db, NOW + 5 * M + timedelta(seconds=30), NOW + 20 * M, mem="1536")
    clock.t = NOW + 5 * M
    s.lookahead = True
    report = s.tick()                      # refused pre-boot; end of a, then start of b at :30
    assert acts(report) == [(a, "stop"), (b, "start")]
    assert clock.slept == [30.0]


class Mail:
    def __init__(self):
        self.sent = []

    def __call__(self, cfg, recipients, subject, body):
        self.sent.append((list(recipients), subject, body))


def test_tick_preflight_runs_once_and_mails_problems(migrated, db, tmp_path):
    cfg, c, s, clock = make_world(migrated, db, tmp_path, preboot="0", preflight_minutes="15")
    mail = Mail()
    s.preflight_kw = {"send": mail}
    rack = book(cfg, db, NOW + 20 * M, NOW + 40 * M)
    ok = book(cfg, db, NOW + 10 * M, NOW + 12 * M, mem="64", computes="0")
    assert acts(s.tick()) == []
    # ok is due (10 minutes away), rack is not yet (20 minutes away)
    assert preflight.last(db, ok)["problems"] == [] and preflight.last(db, rack) is None
    assert mail.sent == []
    hosts.drain(cfg, db, "h1", NOW)        # nothing can run rack now
    clock.t = NOW + 5 * M
    s.tick()
    p = preflight.last(db, rack)
    assert p["trigger"] == "tick" and p["checked_at"] == NOW + 5 * M
    assert [(x["kind"], x["where"]) for x in p["problems"]] == [("capacity", "pools")]
    assert "no physical host is enabled" in p["problems"][0]["detail"]
    assert len(mail.sent) == 1
    to, subject, body = mail.sent[0]
    assert [a.split("@")[0] for a in to] == ["bob", "root", "alice"]
    assert ("reservation %d" % rack) in subject and "no physical host is enabled" in body
    clock.t = NOW + 6 * M                  # once: not again at the next tick
    s.tick()
    assert len(mail.sent) == 1 and preflight.last(db, rack)["checked_at"] == NOW + 5 * M


def test_preflight_due_is_one_query_and_empty_when_disabled(world, db):
    cfg, c, s, clock = world
    book(cfg, db, NOW + 10 * M, NOW + 12 * M)
    assert preflight.due(db, NOW, 0) == []
    assert len(preflight.due(db, NOW, 15)) == 1


def test_a_preboot_cluster_holds_its_capacity_for_new_bookings(world, db):
    from vc.errors import CapacityError

    cfg, c, s, clock = world
    a = book(cfg, db, NOW + 5 * M, NOW + 20 * M, mem="1536")   # 3 of the 4 GB
    assert acts(s.tick()) == [(a, "preboot")]
    # running before its start: a booking for the early window does not get its memory
    with pytest.raises(CapacityError):
        book(cfg, db, NOW + M, NOW + 4 * M, mem="1536", now=NOW + 30 * timedelta(seconds=1))
    assert book(cfg, db, NOW + M, NOW + 4 * M, mem="64", computes="0", now=NOW)

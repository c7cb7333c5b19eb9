"""The tick, driven by a fake clock, on libvirt's test driver and the real MariaDB."""

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from conftest import NOW, ROOT, db_overrides, make_cfg, write_conf, BASE_CONF
from vc import ctl as vctl
from vc import reservations as R
from vc.errors import VcError
from vc.scheduler import Scheduler
from test_ctl import Recorder, TESTNODE

M = timedelta(minutes=1)


class Clock:
    def __init__(self, t):
        self.t = t
        self.slept = []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.slept.append(s)
        self.t += timedelta(seconds=s)


@pytest.fixture
def world(migrated, db, tmp_path):
    o = db_overrides(migrated)
    o["host:h1"] = {"uri": TESTNODE, "memory_mb": "4096", "vcpus": "8"}
    o["site"] = {"state_dir": str(tmp_path / "state"), "timezone": "UTC"}
    o["virt"] = {"name_prefix": "vt", "boot_timeout": "5", "shutdown_timeout": "1"}
    o["network"] = {"isolation": "none"}
    # these tests are about starting at the start time (pre-boot: tests/test_preboot.py)
    o["cron"] = {"preboot_minutes": "0"}
    cfg = make_cfg(o)
    clock = Clock(NOW)
    c = vctl.Ctl(cfg, db, execute=Recorder(), clock=clock, actor="test")
    s = Scheduler(cfg, db, c, clock=clock, sleep=clock.sleep, lookahead=False)
    return cfg, c, s, clock


def book(cfg, db, start, end, mem="256", computes="1", now=NOW):
    return R.create(cfg, db, {"owner": "bob", "start": start.isoformat(), "end": end.isoformat(),
                              "gateways": "1", "computes": computes, "memory_mb": mem}, now)


def state(db, rack):
    rows = db.query("SELECT state FROM vcregist WHERE rack=%s", (rack,))
    return rows[0]["state"] if rows else "deleted"


def acts(report):
    return sorted((a.rack, a.verb) for a in report.actions if a.verb != "heal")


def test_expected_actions_per_tick(world, db):
    cfg, c, s, clock = world
    a = book(cfg, db, NOW + M, NOW + 5 * M, mem="1536")       # 3 GB of the 4 GB host...
    b = book(cfg, db, NOW + 5 * M, NOW + 8 * M, mem="1536")   # ...and so does b: back to back only
    past = book(cfg, db, NOW - 10 * M, NOW + 10 * M, mem="64", computes="0")
    gone = book(cfg, db, NOW - 2 * M, NOW + timedelta(seconds=30), mem="64", computes="0")
    ext = book(cfg, db, NOW + 2 * M, NOW + 3 * M, mem="64", computes="0")
    stp = book(cfg, db, NOW + 2 * M, NOW + 9 * M, mem="64", computes="0")
    dele = book(cfg, db, NOW + 2 * M, NOW + 9 * M, mem="64", computes="0")

    expected = {
        # minute: (actions, then states to check)
        0: ([(past, "start"), (gone, "start")], {past: "running", a: "reserved"}),
        1: ([(a, "start"), (gone, "stop")], {a: "running", gone: "stopped"}),
        2: ([(ext, "start"), (stp, "start"), (dele, "start")], {ext: "running"}),
        3: ([(stp, "stop"), (dele, "stop")], {ext: "running", stp: "stopped",
                                              dele: "deleted"}),
        4: ([(ext, "stop")], {ext: "stopped"}),
        5: ([(a, "stop"), (b, "start")], {a: "stopped", b: "running"}),
        6: ([], {}),
        8: ([(b, "stop")], {b: "stopped"}),
        10: ([(past, "stop")], {past: "stopped"}),
        11: ([], {}),
    }
    for minute in range(12):
        clock.t = NOW + minute * M
        report = s.tick()
        if minute == 2:
            # while running: extend one, stop one now, delete one
            R.extend(cfg, db, ext, (NOW + 4 * M).isoformat(), clock.t, "bob")
            R.stop_now(cfg, db, stp, clock.t + timedelta(seconds=30), "bob")
            assert R.delete(cfg, db, dele, clock.t + timedelta(seconds=30), "bob") == "running"
        want, states_ = expected.get(minute, ([], {}))
        assert acts(report) == sorted(want), (minute, acts(report))
        assert all(a.ok for a in report.actions), report.actions
        for rack, st in states_.items():
            assert state(db, rack) == st, (minute, rack)
    assert db.query("SELECT COUNT(*) AS n FROM vcalloc")[0]["n"] == 0
    assert c.host("h1").list_domains("vt-") == []


def test_lookahead_acts_on_time(world, db):
    cfg, c, s, clock = world
    s.lookahead = True
    rack = book(cfg, db, NOW + timedelta(seconds=20), NOW + timedelta(seconds=50))
    report = s.tick()
    # slept until the start, started; slept until the end, stopped; nothing after the minute
    assert clock.slept == [20.0, 30.0]
    assert acts(report) == [(rack, "start"), (rack, "stop")]
    ev = db.query("SELECT at, to_state FROM vcevent WHERE rack=%s AND from_state <> to_state "
                  "AND to_state IN ('starting', 'stopping')", (rack,))
    assert [(str(e["at"]), e["to_state"]) for e in ev] == [
        ("2026-12-01 00:00:20", "starting"), ("2026-12-01 00:00:50", "stopping")]


def test_lookahead_leaves_the_next_minute_alone(world, db):
    cfg, c, s, clock = world
    s.lookahead = True
    rack = book(cfg, db, NOW + timedelta(seconds=61), NOW + 5 * M)
    assert s.tick().actions == [] and clock.slept == []
    assert state(db, rack) == "reserved"


def test_one_failure_does_not_block_others_and_backoff(world, db):
    cfg, c, s, clock = world
    bad = book(cfg, db, NOW, NOW + 30 * M)
    good = book(cfg, db, NOW, NOW + 30 * M)
    c.execute.fail_on = "create"
    first = s.tick()
    assert {(a.rack, a.ok) for a in first.actions} == {(bad, False), (good, False)}
    c.execute.fail_on = None
    # backoff: 1 minute after the first failure
    clock.t = NOW + timedelta(seconds=30)
    assert acts(s.tick()) == []
    clock.t = NOW + M
    assert acts(s.tick()) == [(bad, "retry-start"), (good, "retry-start")]
    assert state(db, bad) == "running" and state(db, good) == "running"
    ev = [e["reason"] for e in db.query("SELECT reason FROM vcevent WHERE rack=%s", (bad,))]
    assert any(r.startswith("tick: start failed") for r in ev)


def test_backoff_gives_up(world, db):
    cfg, c, s, clock = world
    s.max_start_retries = 2
    rack = book(cfg, db, NOW, NOW + 60 * M)
    c.execute.fail_on = "create"
    tries = 0
    for minute in range(0, 30):
        clock.t = NOW + minute * M
        tries += len([a for a in s.tick().actions if a.rack == rack])
    assert tries == 3  # the start and two retries (after 1 and 2 minutes)
    assert state(db, rack) == "failed"


def test_ha_restarts_a_dead_node_same_address(world, db):
    cfg, c, s, clock = world
    rack = book(cfg, db, NOW, NOW + 60 * M)
    s.tick()
    dom = "vt-compute-%d-0" % rack
    c.host("h1").destroy(dom)
    clock.t += M
    report = s.tick()
    heal = [a for a in report.actions if a.verb == "heal"]
    assert len(heal) == 1 and heal[0].why.startswith("ha: restarted compute-%d-0 on h1" % rack)
    assert c.host("h1").state(dom) == "running"
    # at most ha_max_restarts per hour
    for _ in range(5):
        c.host("h1").destroy(dom)
        clock.t += M
        s.tick()
    assert c.host("h1").state(dom) == "shutoff"
    n = db.query("SELECT COUNT(*) AS n FROM vcevent WHERE rack=%s AND "
                 "reason LIKE 'ha: restarted%%'", (rack,))[0]["n"]
    assert n == 3


def _two_host_world(migrated, db, tmp_path):
    o = db_overrides(migrated)
    o["host:h1"] = {"uri": TESTNODE, "memory_mb": "4096", "vcpus": "8"}
    o["host:h2"] = {"uri": TESTNODE, "memory_mb": "4096", "vcpus": "8"}
    o["site"] = {"state_dir": str(tmp_path / "state"), "timezone": "UTC"}
    o["virt"] = {"name_prefix": "vt", "boot_timeout": "5"}
    o["network"] = {"isolation": "none"}
    cfg = make_cfg(o)
    clock = Clock(NOW)
    down = set()
    from vc import virt

    def opener(name, uri):
        def open_(u):
            if name in down:
                raise virt.libvirt.libvirtError("unable to connect to %s" % name)
            return virt.libvirt.open(u)
        return virt.Host(uri, name=name, opener=open_)

    c = vctl.Ctl(cfg, db, open_host=opener, execute=Recorder(), clock=clock, actor="test")
    s = Scheduler(cfg, db, c, clock=clock, sleep=clock.sleep, lookahead=False)
    return cfg, c, s, clock, down


def test_ha_moves_nodes_off_an_unreachable_host(migrated, db, tmp_path):
    cfg, c, s, clock, down = _two_host_world(migrated, db, tmp_path)
    book(cfg, db, NOW, NOW + 60 * M, computes="3")
    s.tick()
    hosts = {r["name"]: r["host"] for r in db.query("SELECT name, host FROM vcnode")}
    assert set(hosts.values()) == {"h1", "h2"}
    lost = sorted(n for n, h in hosts.items() if h == "h2")
    down.add("h2")
    c._hosts.pop("h2")  # the connection to h2 dies with it
    clock.t += M
    report = s.tick()
    moved = sorted(a.why.split()[2] for a in report.actions if a.verb == "heal")
    assert moved == lost
    assert {r["host"] for r in db.query("SELECT host FROM vcnode")} == {"h1"}
    assert db.query("SELECT reachable FROM vchost WHERE name='h2'")[0]["reachable"] == 0
    for n in lost:
        assert c.host("h1").state("vt-" + n) == "running"
    down.clear()
    clock.t += M
    s.tick()
    assert db.query("SELECT reachable FROM vchost WHERE name='h2'")[0]["reachable"] == 1


def test_a_moved_node_whose_boot_fails_is_not_shown_running(migrated, db, tmp_path,
                                                             monkeypatch):
    cfg, c, s, clock, down = _two_host_world(migrated, db, tmp_path)
    book(cfg, db, NOW, NOW + 60 * M, computes="3")
    s.tick()
    lost = sorted(r["name"] for r in db.query("SELECT name FROM vcnode WHERE host = 'h2'"))
    down.add("h2")
    c._hosts.pop("h2")
    from vc import steps

    def refuse(*a, **kw):
        raise steps.ClusterError("the new host refuses to boot it")

    monkeypatch.setattr(steps, "boot", refuse)
    clock.t += M
    s.tick()
    rows = db.query("SELECT name, host, state FROM vcnode WHERE name IN (%s)" %
                    ", ".join(["%s"] * len(lost)), tuple(lost))
    got = [(r["host"], r["state"]) for r in rows]
    # the first is moved and not booted: 'moving' on h1, never 'running' there; the heal of
    # the rack stops at that failure (the others wait on the lost host for the next tick)
    assert got[0] == ("h1", "moving") and ("h1", "running") not in got, got


def _cron(env, *args):
    return subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "sbin", "vc_cron.py")] +
                          list(args), env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def cron_env(migrated, db, tmp_path):
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    data.update(db_overrides(migrated))
    data["site"] = {"state_dir": str(tmp_path / "state"), "timezone": "UTC",
                    "log_file": str(tmp_path / "vc.log")}
    path = tmp_path / "vc.conf"
    write_conf(path, data)
    return dict(os.environ, VC_CONFIG=str(path)), tmp_path


def test_cron_overlap_one_acts_one_exits(cron_env, db):
    env, tmp = cron_env
    os.makedirs(tmp / "state", exist_ok=True)
    import fcntl

    with open(tmp / "state" / "cron.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        r = _cron(env)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    assert "another tick is running" in open(tmp / "vc.log").read()


def test_cron_dry_run_and_bad_now(cron_env, db, cfg):
    env, tmp = cron_env
    rack = book(cfg, db, NOW, NOW + 60 * M)
    r = _cron(env, "--now", "2026-12-01T00:05:00Z", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "rack %d: would start (start reached)" % rack
    assert state(db, rack) == "reserved"
    r = _cron(env, "--now", "someday")
    assert r.returncode == 2 and "--now" in r.stderr and len(r.stderr.splitlines()) == 1
    r = _cron(env, "--bogus")
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr


def test_cron_install_uninstall(tmp_path, cron_env):
    env, _ = cron_env
    f = tmp_path / "vc.cron"
    ctl = [sys.executable, os.path.join(ROOT, "sbin", "vc_ctl.py")]
    r = subprocess.run(ctl + ["cron", "install", "--file", str(f)], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    line = f.read_text().splitlines()[1]
    assert line.startswith("* * * * * root VC_CONFIG=") and line.endswith("/sbin/vc_cron.py")
    r = subprocess.run(ctl + ["cron", "uninstall", "--file", str(f)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and not f.exists()



def test_returning_host_is_fenced_before_it_is_marked_reachable(migrated, db, tmp_path):
    cfg, c, s, clock, down = _two_host_world(migrated, db, tmp_path)
    rack = book(cfg, db, NOW, NOW + 60 * M, computes="3")
    s.tick()
    lost = sorted(r["name"] for r in db.query("SELECT name FROM vcnode WHERE host='h2'"))
    assert lost
    old_h2 = c._hosts.pop("h2")          # the host (and its domains) as they were
    down.add("h2")
    clock.t += M
    s.tick()
    assert {r["host"] for r in db.query("SELECT host FROM vcnode")} == {"h1"}
    # it comes back with its stale domains still defined (and, here, even running)
    down.clear()
    c._hosts["h2"] = old_h2
    assert all(old_h2.state("vt-" + n) == "running" for n in lost)
    order = []
    fence, mark = c.ha.fence, c.ha.mark_host
    c.ha.fence = lambda h: order.append(("fence", h)) or fence(h)
    c.ha.mark_host = lambda h, ok: order.append(("mark", h, ok)) or mark(h, ok)
    clock.t += M
    s.tick()
    assert order[:2] == [("fence", "h2"), ("mark", "h2", True)]
    assert all(old_h2.state("vt-" + n) == "absent" for n in lost)
    assert all(c.host("h1").state("vt-" + n) == "running" for n in lost)
    events = [e["reason"] for e in db.query("SELECT reason FROM vcevent WHERE rack=%s", (rack,))]
    assert sorted(e.split()[4] for e in events if e.startswith("fence: h2")) == \
        sorted("vt-" + n for n in lost), events
    assert db.query("SELECT reachable FROM vchost WHERE name='h2'")[0]["reachable"] == 1


def test_a_host_that_cannot_be_fenced_stays_unreachable(migrated, db, tmp_path):
    cfg, c, s, clock, down = _two_host_world(migrated, db, tmp_path)
    book(cfg, db, NOW, NOW + 60 * M, computes="3")
    s.tick()
    c._hosts.pop("h2")
    down.add("h2")
    clock.t += M
    s.tick()
    down.clear()

    def refuse(h):
        raise VcError("destroy refused")
    c.ha.fence = refuse
    clock.t += M
    s.tick()
    assert db.query("SELECT reachable FROM vchost WHERE name='h2'")[0]["reachable"] == 0
    # and no node goes back to it meanwhile
    assert {r["host"] for r in db.query("SELECT host FROM vcnode")} == {"h1"}

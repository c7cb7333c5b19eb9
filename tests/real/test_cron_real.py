"""vc_cron.py on real QEMU: on-time start, pre-boot, HA restart of a killed guest, crash
recovery."""

import json
import os
import signal
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from realenv import RealEnv, libvirtd, real  # noqa: F401  (fixtures)
from test_cluster_real import EMPTY, assert_running, held, nodes_of


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def reserve_at(real, start, end, computes=1):
    r = real.ctl("reserve", "--start", iso(start), "--end", iso(end), "--gateways", "1",
                 "--computes", str(computes), "--memory", "128", "--disk", "1", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["rack"]


def transitions(db, rack):
    return [(e["to_state"], e["at"].replace(tzinfo=timezone.utc)) for e in db.query(
        "SELECT to_state, at FROM vcevent WHERE rack=%s AND from_state <> to_state ORDER BY id",
        (rack,))]


def test_on_time_start_within_a_second(real, db):
    now = datetime.now(timezone.utc)
    if now.second > 45:  # keep the start inside this tick's minute
        time.sleep(61 - now.second)
        now = datetime.now(timezone.utc)
    start = now.replace(microsecond=0) + timedelta(seconds=8)
    rack = reserve_at(real, start, start + timedelta(hours=1))
    r = real.cron()
    assert r.returncode == 0 and r.stdout == "", (r.stdout, r.stderr)
    tr = dict(transitions(db, rack))
    late = (tr["starting"] - start).total_seconds()
    up = (tr["running"] - start).total_seconds()
    print("on-time start: began %.2f s after its start time, running after %.2f s" % (late, up))
    assert 0 <= late < 1.0, late
    assert up < 15, up
    assert_running(real, db, rack)
    assert real.ctl("stop", str(rack)).returncode == 0
    assert real.traces() == EMPTY


@pytest.fixture
def real_preboot(libvirtd, migrated, db, tmp_path):
    env = RealEnv(str(tmp_path), migrated, "t" + uuid.uuid4().hex[:5], "10.213.0.0/16",
                  extra={"cron": {"preboot_minutes": "1"}})
    yield env
    env.cleanup()


def test_preboot_starts_before_the_start_time(real_preboot, db):
    real = real_preboot
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=40)
    rack = reserve_at(real, start, start + timedelta(hours=1))
    r = real.cron()                        # the pre-boot time (start - 1 min) has passed
    assert r.returncode == 0 and r.stdout == "", (r.stdout, r.stderr)
    tr = dict(transitions(db, rack))
    early = (start - tr["starting"]).total_seconds()
    assert early > 30, early               # began at once, ~40 s before the start
    assert_running(real, db, rack)
    shown = json.loads(real.ctl("show", str(rack), "--json").stdout)
    assert shown["start"] == iso(start) and shown["state"] == "running"   # window unchanged
    assert any(e["reason"].startswith("pre-boot: starting") for e in shown["events"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        got = json.loads(real.ctl("show", str(rack), "--json").stdout)
        if got["ready"]:
            break
        real.cron("--now", iso(datetime.now(timezone.utc)))  # the tick's readiness look
        time.sleep(1)
    ready_at = datetime.now(timezone.utc)
    print("pre-boot: began %.1f s before the start, ready %.1f s %s it"
          % (early, abs((ready_at - start).total_seconds()),
             "before" if ready_at < start else "after"))
    assert got["ready"]
    assert real.ctl("stop", str(rack)).returncode == 0
    assert real.traces() == EMPTY


def test_ha_restarts_killed_guest_same_address(real, db):
    now = datetime.now(timezone.utc)
    rack = reserve_at(real, now - timedelta(minutes=1), now + timedelta(hours=1))
    assert real.cron("--now", iso(now)).returncode == 0
    nodes = assert_running(real, db, rack)
    victim = nodes[1]
    dom = "%s-%s" % (real.prefix, victim["name"])
    with open("/run/libvirt/qemu/%s.pid" % dom) as f:
        pid = int(f.read().strip())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = json.loads(real.ctl("status", str(rack), "--json").stdout)
        if {n["name"]: n["libvirt"] for n in st}[victim["name"]] != "running":
            break
        time.sleep(0.2)
    else:
        raise AssertionError("libvirt still reports the killed guest running")
    # forget the first boot's console lines: what follows is the restarted guest's
    open(os.path.join(real.state, "console", dom + ".log"), "w").close()
    r = real.cron("--now", iso(now + timedelta(minutes=1)))
    assert r.returncode == 0, r.stderr
    ev = [e["reason"] for e in db.query("SELECT reason FROM vcevent WHERE rack=%s", (rack,))]
    assert "ha: restarted %s on h1 (was shutoff)" % victim["name"] in ev, ev
    # the restarted guest asked DHCP again and got the very same address and name
    assert real.wait_ip(victim["name"]) == (victim["ip"], victim["name"])
    assert nodes_of(db, rack)[1]["mac"] == victim["mac"]
    assert real.ctl("stop", str(rack)).returncode == 0
    assert real.traces() == EMPTY


def test_tick_killed_mid_start_and_mid_stop_converges(real, db):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rack = reserve_at(real, now - timedelta(minutes=1), now + timedelta(minutes=30))
    r = real.cron("--now", iso(now), env={"VC_CRASH_AFTER": "register"})
    assert r.returncode == -signal.SIGKILL
    assert json.loads(real.ctl("show", str(rack), "--json").stdout)["state"] == "starting"
    assert real.cron("--now", iso(now + timedelta(minutes=1))).returncode == 0
    assert_running(real, db, rack)
    end = now + timedelta(minutes=30)
    r = real.cron("--now", iso(end), env={"VC_CRASH_AFTER": "undefine"})
    assert r.returncode == -signal.SIGKILL
    assert json.loads(real.ctl("show", str(rack), "--json").stdout)["state"] == "stopping"
    assert real.cron("--now", iso(end + timedelta(minutes=1))).returncode == 0
    assert json.loads(real.ctl("show", str(rack), "--json").stdout)["state"] == "stopped"
    assert real.traces() == EMPTY
    assert held(db, rack) == {"vcalloc": 0, "vcnode": 0, "nodes": 0}

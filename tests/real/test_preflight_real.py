"""Pre-flight against a real iSCSI target host (the project's own sshd and tgtd from
tools/storage.sh, the target's host key pinned like an admin does) and the real local host
(qemu:///system: /proc/meminfo, the guest kernel/initrd and base image on disk), through the
programs a user and cron run: the booking's pre-flight finds nothing; with the target's sshd
stopped, ``vc_ctl.py preflight`` and the tick ``[cron] preflight_minutes`` before the start both
report the target by name, before the start, and ``show`` shows it; nothing else changes."""

import json
import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from realenv import RealEnv
from test_cluster_storage_real import ok, svc  # noqa: F401  (fixture: sshd + tgtd)


@pytest.fixture
def env(migrated, db, tmp_path, svc):
    e = RealEnv(str(tmp_path), migrated, "p" + uuid.uuid4().hex[:5], "10.217.0.0/16", extra={
        "storage": {"backing_dir": svc.backing, "tgt_control_port": str(svc.control),
                    "iqn_prefix": "iqn.2026-11.vc.p%s" % uuid.uuid4().hex[:6]},
        "host:h1": {"memory_mb": "1024"},
        "cron": {"preflight_minutes": "15"}})
    r = ok(e.ctl("target", "key"))
    svc.tool("authorize", os.path.join(e.state, "ssh", "id_ed25519.pub"))
    ok(e.ctl("target", "add", "demo", "--address", "127.0.0.1", "--port", str(svc.ssh_port),
             "--iscsi-port", str(svc.iscsi_port)))
    ok(e.ctl("target", "trust", "demo", "--fingerprint", svc.fingerprint))
    assert r.stdout.strip()
    yield e
    e.cleanup()


def test_preflight_reports_the_stopped_target_sshd_before_the_start(env, svc, db):
    r = ok(env.ctl("reserve", "--start", "now+1h", "--end", "now+3h", "--computes", "1",
                   "--memory", "128", "--disk", "1", "--iscsi", "/data:demo:1", "--json"))
    booked = json.loads(r.stdout)
    rack = booked["rack"]
    # the booking's own pre-flight reached the target with the pinned key: nothing wrong
    assert booked["preflight"]["trigger"] == "booking"
    assert booked["preflight"]["problems"] == [], booked["preflight"]
    # nothing was made on the target by checking (at most its private backing directory)
    assert not os.path.isdir(svc.backing) or os.listdir(svc.backing) == []
    assert ok(env.ctl("preflight", str(rack))).stdout == "rack %d: pre-flight ok\n" % rack

    svc.tool("stop", "sshd")
    try:
        r = env.ctl("preflight", str(rack), "--json")
        assert r.returncode == 1, (r.stdout, r.stderr)
        got = json.loads(r.stdout)
        assert [(p["kind"], p["where"]) for p in got["problems"]] == [("target", "demo")], got
        assert "connection refused" in got["problems"][0]["detail"]

        # the tick, 15 minutes before the start, runs it once and records it on the reservation
        start = datetime.fromisoformat(booked["start"].replace("Z", "+00:00"))
        at = (start - timedelta(minutes=15)).astimezone(timezone.utc)
        r = env.cron("--now", at.strftime("%Y-%m-%dT%H:%M:%SZ"))
        assert r.returncode == 0, (r.stdout, r.stderr)
        shown = json.loads(ok(env.ctl("show", str(rack), "--json")).stdout)
        assert shown["state"] == "reserved"                 # checked, not acted on
        assert shown["start"] == booked["start"] and shown["end"] == booked["end"]
        pf = shown["preflight"]
        assert pf["trigger"] == "tick"
        assert [(p["kind"], p["where"]) for p in pf["problems"]] == [("target", "demo")]
        text = ok(env.ctl("show", str(rack))).stdout
        assert "problem target demo:" in text and "connection refused" in text
        tick_row = db.query("SELECT tick_at FROM vcpreflight WHERE rack = %s", (rack,))[0]
        assert tick_row["tick_at"] is not None
    finally:
        svc.tool("start", "sshd")
    # the target answers again: the next manual check is clean
    assert ok(env.ctl("preflight", str(rack))).stdout == "rack %d: pre-flight ok\n" % rack

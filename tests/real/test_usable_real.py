"""A cluster its owner can use, proved the way the owner meets it: on real QEMU, sshd and tgtd,
the owner logs in with ``ssh`` and their own key to the gateway's *public* address, reaches the
computes by name from the gateway, writes a file on a compute under the volume's mount point
and finds it on the gateway's disk, and after stop → reopen → start the file is still there
(the LUN kept it). A reboot inside a guest brings the same domain back with no HA event."""

import json
import os
import subprocess
import time
import uuid

import pytest

from realenv import PUBLIC_PREFIX, RealEnv, libvirtd, virsh  # noqa: F401  (fixture)
from test_cluster_real import EMPTY
from test_cluster_storage_real import ok, svc  # noqa: F401  (fixture)


@pytest.fixture
def env(libvirtd, migrated, db, tmp_path, svc):  # noqa: F811
    e = RealEnv(str(tmp_path), migrated, "u" + uuid.uuid4().hex[:5], "10.217.0.0/16", extra={
        "storage": {"backing_dir": svc.backing, "tgt_control_port": str(svc.control),
                    "iqn_prefix": "iqn.2026-11.vc.u%s" % uuid.uuid4().hex[:6]},
        "virt": {"ready_timeout": "120"}})
    with_target_and_owner_key(e, svc, tmp_path)
    yield e
    e.cleanup()


def with_target_and_owner_key(e, svc, tmp_path):
    """The target "demo" registered and trusted for ``e``, and the owner's own key pair (as
    on their laptop) at ``e.key``."""
    ok(e.ctl("target", "key"))
    svc.tool("authorize", os.path.join(e.state, "ssh", "id_ed25519.pub"))
    ok(e.ctl("target", "add", "demo", "--address", "127.0.0.1", "--port", str(svc.ssh_port),
             "--iscsi-port", str(svc.iscsi_port)))
    ok(e.ctl("target", "trust", "demo", "--fingerprint", svc.fingerprint))
    e.key = os.path.join(str(tmp_path), "id_owner")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bob@laptop", "-f",
                    e.key], check=True)


def ssh(key, ip, *cmd, timeout=60):
    return subprocess.run(
        ["ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o",
         "ConnectTimeout=10", "root@" + ip] + list(cmd),
        capture_output=True, text=True, timeout=timeout)


def until(fn, timeout=90, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = fn()
        if got:
            return got
        time.sleep(1)
    raise AssertionError("%s not met in %ds" % (what, timeout))


def test_owner_logs_in_and_uses_the_cluster(env, db):
    ok(env.ctl("key", "add", "--owner", "bob", env.key + ".pub"))
    r = ok(env.ctl("reserve", "--owner", "bob", "--start", "now", "--end", "now+2h",
                   "--computes", "2", "--memory", "128", "--disk", "1",
                   "--iscsi", "/data:demo:1", "--json"))
    rack = json.loads(r.stdout)["rack"]
    ok(env.ctl("start", str(rack), "--wait-ready"))
    shown = json.loads(ok(env.ctl("show", str(rack), "--json")).stdout)
    assert shown["ready"] is True, shown
    assert all(n["readiness"] == "up" for n in shown["nodes"]), shown["nodes"]
    gw = next(n for n in shown["nodes"] if n["appliance"] == "gateway")
    c0 = "compute-%d-0" % rack
    assert gw["public_ip"].startswith(PUBLIC_PREFIX)
    assert any("root@%s" % gw["public_ip"] in line for line in shown["login"]), shown["login"]

    # the owner's key, the gateway's public address
    r = ssh(env.key, gw["public_ip"], "hostname")
    assert r.returncode == 0 and r.stdout.strip() == gw["name"], r.stderr
    # root on the gateway reaches a compute by name (the cluster's own key pair)
    r = ssh(env.key, gw["public_ip"], "ssh", c0, "hostname")
    assert r.returncode == 0 and r.stdout.strip() == c0, (r.stdout, r.stderr)
    # a file written on a compute under the mount point is on the gateway's disk
    r = until(lambda: ssh(env.key, gw["public_ip"], "ssh", c0,
                          "'grep -q \" /data nfs\" /proc/mounts && echo hello-%d > /data/f && "
                          "sync && echo ok'" % rack).stdout.strip() == "ok",
              what="NFS mount on %s" % c0)
    r = ssh(env.key, gw["public_ip"], "grep ' /data ext4' /proc/mounts && cat /data/f")
    assert r.returncode == 0 and "hello-%d" % rack in r.stdout, (r.stdout, r.stderr)

    # the private segment is not the public one: the compute has no public address
    r = ssh(env.key, gw["public_ip"], "ssh", c0, "ip -o -4 addr")
    assert PUBLIC_PREFIX not in r.stdout

    # stop → reopen → start: the LUN kept the file
    ok(env.ctl("stop", str(rack)))
    assert env.traces() == EMPTY
    assert not os.path.exists(os.path.join(env.state, "keys", "rack-%d" % rack))
    ok(env.ctl("extend", str(rack), "--end", "now+1h"))
    ok(env.ctl("start", str(rack), "--wait-ready"))
    gw2 = next(n for n in json.loads(ok(env.ctl("show", str(rack), "--json")).stdout)["nodes"]
               if n["appliance"] == "gateway")
    r = until(lambda: ssh(env.key, gw2["public_ip"], "cat /data/f").stdout,
              what="the file after the restart")
    assert "hello-%d" % rack in r

    # a reboot inside a guest: the same domain comes back, no HA event
    dom = "%s-%s" % (env.prefix, c0)
    before = virsh("domuuid", dom).stdout.strip()
    ok(ssh(env.key, gw2["public_ip"], "ssh", c0, "touch /tmp/before-reboot"))
    ssh(env.key, gw2["public_ip"], "ssh", c0, "reboot", timeout=30)
    # the marker lives in RAM: once the guest answers without it, it has rebooted
    until(lambda: ssh(env.key, gw2["public_ip"], "ssh", c0, "test -e /tmp/before-reboot")
          .returncode == 1, what="%s back after its reboot" % c0, timeout=120)
    assert virsh("domuuid", dom).stdout.strip() == before
    assert virsh("domstate", dom).stdout.strip() == "running"
    ok(env.cron())
    events = [e["reason"] for e in db.query("SELECT reason FROM vcevent WHERE rack=%s",
                                             (rack,))]
    assert not [e for e in events if e.startswith("ha:")], events

    ok(env.ctl("stop", str(rack)))
    assert env.traces() == EMPTY

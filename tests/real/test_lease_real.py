"""The lease inside a real cluster: two clusters on real QEMU (the fast guest), the lease
service (sbin/vc_metad.py) as its own process. In a guest of each, ``vc-lease`` prints that
cluster's end; ``vc-lease extend 30m`` moves it; an extension another booking blocks is refused
with the longest possible offer; another cluster's token is refused."""

import json
import os
import signal
import socket
import subprocess
import time
import uuid

import pytest

from realenv import ROOT, RealEnv, libvirtd  # noqa: F401  (fixture)
from test_usable_real import ssh
from test_cluster_storage_real import ok
from vc.db import aware_utc


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


@pytest.fixture
def env(libvirtd, migrated, db, tmp_path):  # noqa: F811
    port = free_port()
    e = RealEnv(str(tmp_path), migrated, "l" + uuid.uuid4().hex[:5], "10.219.0.0/16", extra={
        "host:h1": {"memory_mb": "1024"}, "notify": {"metad_port": str(port)},
        "virt": {"ready_timeout": "120"}})
    e.key = os.path.join(str(tmp_path), "id_owner")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", e.key], check=True)
    log = open(os.path.join(str(tmp_path), "metad.out"), "w")
    e.metad = subprocess.Popen([os.path.join(ROOT, "sbin", "vc_metad.py")], stdout=log,
                               stderr=subprocess.STDOUT, env=dict(os.environ, VC_CONFIG=e.conf))
    yield e
    e.metad.send_signal(signal.SIGTERM)
    e.metad.wait(10)
    e.cleanup()


def end_of(db, rack):
    return aware_utc(db.query("SELECT end_at FROM vcregist WHERE rack=%s", (rack,))[0]["end_at"])


def boot(env, end):
    r = ok(env.ctl("reserve", "--owner", "bob", "--start", "now", "--end", end, "--computes",
                   "0", "--memory", "256", "--disk", "1", "--json"))
    return json.loads(r.stdout)["rack"]


def test_vc_lease_in_two_real_clusters(env, db):
    ok(env.ctl("key", "add", "--owner", "bob", env.key + ".pub"))
    a, b = boot(env, "now+1h"), boot(env, "now+3h")
    t0 = time.monotonic()
    procs = [subprocess.Popen(["/usr/bin/python3", os.path.join(ROOT, "sbin", "vc_ctl.py"),
                               "start", str(r), "--wait-ready"], env=dict(os.environ,
                              VC_CONFIG=env.conf), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in (a, b)]
    for p in procs:
        out = p.communicate(timeout=240)[0]
        assert p.returncode == 0, out
    boot_s = time.monotonic() - t0
    gw = {}
    for r in (a, b):
        shown = json.loads(ok(env.ctl("show", str(r), "--json")).stdout)
        gw[r] = next(n for n in shown["nodes"] if n["appliance"] == "gateway")["public_ip"]

    def lease(r, *args, token=None):
        pre = "VC_LEASE_TOKEN=%s " % token if token else ""
        return ssh(env.key, gw[r], pre + "/usr/local/bin/vc-lease " + " ".join(args))

    end_a = end_of(db, a)
    r = lease(a)
    assert r.returncode == 0 and "rack %d" % a in r.stdout, (r.stdout, r.stderr)
    assert end_a.strftime("%Y-%m-%d %H:%M") in r.stdout, r.stdout
    r = lease(b, "--json")
    assert json.loads(r.stdout)["rack"] == b, r.stdout
    # the token is root's only, mode 0600
    assert ssh(env.key, gw[a], "stat -c %a /etc/vc/lease.token").stdout.strip() == "600"

    r = lease(a, "extend", "30m")
    assert r.returncode == 0 and "now ends" in r.stdout, (r.stdout, r.stderr)
    assert end_of(db, a) == end_a.replace(microsecond=0) + (end_of(db, a) - end_a.replace(
        microsecond=0)) and (end_of(db, a) - end_a).total_seconds() == pytest.approx(1800, abs=1)

    # another booking blocks: 768 MB from a's end + 15 min (b's 256 runs on; the host has 1024)
    from datetime import timedelta

    new_a = end_of(db, a)
    blk_start = new_a + timedelta(minutes=15)
    blocker = json.loads(ok(env.ctl(
        "reserve", "--owner", "carol", "--start", blk_start.isoformat(), "--end",
        (blk_start + timedelta(hours=1)).isoformat(), "--computes", "0", "--memory", "768",
        "--json")).stdout)["rack"]
    r = lease(a, "extend", "1h")
    assert r.returncode == 1 and "refused" in r.stdout and "--longest" in r.stdout, r.stdout
    assert "reservation %d" % blocker in r.stdout, r.stdout
    assert end_of(db, a) == new_a
    r = lease(a, "extend", "--longest", "1h")
    assert r.returncode == 0 and "less than asked" in r.stdout, r.stdout
    assert end_of(db, a) == blk_start

    # b's token, used from a's gateway: refused, nothing changed
    with open(os.path.join(env.state, "keys", "rack-%d" % b, "lease.token")) as f:
        tok_b = f.read().strip()
    before = (end_of(db, a), end_of(db, b))
    r = lease(a, "extend", "10m", token=tok_b)
    assert r.returncode == 1 and "wrong lease token" in r.stdout, r.stdout
    assert (end_of(db, a), end_of(db, b)) == before
    # a forged token of the right shape from b: refused too
    r = lease(b, "extend", "10m", token="A" * 43)
    assert r.returncode == 1 and (end_of(db, a), end_of(db, b)) == before
    print("two clusters booted and ready in %.1f s" % boot_s)
    for r in (a, b):
        ok(env.ctl("stop", str(r)))

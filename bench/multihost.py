#!/usr/bin/env python3
"""Several physical hosts.

1. Real (root libvirtd + one namespace host from ``tools/host.sh``, ``qemu+ssh://``): a
   1 gateway + 7 compute cluster started on one host vs spread over two (``vc_ctl.py start``
   wall time to all domains running, and to every node answering SSH); the ratio.
2. Real failover: 1+3 over the two hosts, the namespace host crashes (``tools/host.sh kill``),
   ``sbin/vc_cron.py`` ticks until its nodes run on the other host: ticks and seconds; the host
   comes back, one tick fences it.
3. Scale on libvirt's test driver: 64 hosts, 1,000 running VMs (125 clusters of 1+7, their
   domains defined and running on 64 test-driver connections), 10,000 reservations: the idle
   tick (in process: the due queries + the health check of every running node), one
   admission, one start's placement (``addresses.preview``).

Needs the project's services (``make core``). Throw-away database, state and namespace host.

    .venv/bin/python bench/multihost.py [--skip-real] [--skip-scale] [--spread-only]
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from conftest import BASE_CONF, VAR, db_env, write_conf  # noqa: E402
from vc import config as vconfig  # noqa: E402
from vc import remote  # noqa: E402
from vc.db import Database, naive_utc  # noqa: E402

CRON = os.path.join(ROOT, "sbin", "vc_cron.py")
CTL = os.path.join(ROOT, "sbin", "vc_ctl.py")
HOST_SH = os.path.join(ROOT, "tools", "host.sh")
TESTNODE = "test://" + os.path.join(ROOT, "tests", "data", "testnode.xml")


def newdb(env):
    name = "vctest_bench_%s" % uuid.uuid4().hex[:8]
    subprocess.run(["mariadb", "--no-defaults", "-S", env["VC_DB_SOCKET"], "-u", "root", "-e",
                    "CREATE DATABASE `%s`" % name], check=True)
    return name


def dropdb(env, name):
    subprocess.run(["mariadb", "--no-defaults", "-S", env["VC_DB_SOCKET"], "-u", "root", "-e",
                    "DROP DATABASE IF EXISTS `%s`" % name])


def conf(env, name, tmp, hosts, prefix):
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    data["database"] = {"unix_socket": env["VC_DB_SOCKET"], "user": env["VC_DB_USER"],
                        "password": env["VC_DB_PASSWORD"], "name": name}
    data.pop("host:h1")
    data.update(hosts)
    data["addresses"]["private_pool"] = "10.242.0.0/16"
    data["addresses"]["public_pool"] = "198.18.77.10-198.18.77.250"
    data["limits"].update({"max_nodes": "16", "max_vcpus": "4"})
    data["network"] = {"public_network": prefix + "pub", "isolation": "vxlan"}
    data["site"] = {"timezone": "UTC", "state_dir": os.path.join(tmp, "state"),
                    "log_file": os.path.join(tmp, "vc.log")}
    guest = os.path.join(VAR, "guest")
    data["virt"] = {"name_prefix": prefix, "kernel": os.path.join(guest, "vmlinux"),
                    "initrd": os.path.join(guest, "initrd.img"), "ready_timeout": "120"}
    path = os.path.join(tmp, "vc.conf")
    write_conf(path, data)
    return path


def sh(argv, env=None, check=True, timeout=600):
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode:
        raise SystemExit("%s failed: %s %s" % (argv[:3], r.stdout[-500:], r.stderr[-1500:]))
    return r


def real(env, spread_only=False):
    tmp = "/tmp/vc-bench-mh-%s" % uuid.uuid4().hex[:6]
    name, prefix = newdb(env), "b" + uuid.uuid4().hex[:4]
    hname, net = prefix + "h", random.randint(20, 219)
    henv = dict(os.environ, VC_VAR=tmp, VC_HOST_NET=str(net),
                VC_HOST_KEY=os.path.join(tmp, "state", "ssh", "id_ed25519"))
    os.makedirs(os.path.join(tmp, "state", "images"))
    made_pub = False
    try:
        virsh = ["virsh", "-q", "-c", "qemu:///system"]
        # its own public network (a shared one may vanish when another run ends)
        with open(os.path.join(tmp, "pub.xml"), "w") as f:
            f.write("<network><name>%spub</name><bridge name='%spb0' stp='off'/>"
                    "<ip address='198.18.77.1' prefix='24'/></network>" % (prefix, prefix))
        sh(virsh + ["net-create", os.path.join(tmp, "pub.xml")])
        made_pub = True
        sh(["qemu-img", "create", "-q", "-f", "qcow2",
            os.path.join(tmp, "state", "images", "base.qcow2"), "64M"])
        ip, peer = "10.230.%d.2" % net, "10.230.%d.1" % net
        uri = "qemu+ssh://root@%s/system?keyfile=%s&no_tty=1" % (ip, henv["VC_HOST_KEY"])
        one = {"host:h1": {"uri": "qemu:///system", "memory_mb": "4096", "vcpus": "16"}}
        two = {"host:h1": {"uri": "qemu:///system", "memory_mb": "640", "vcpus": "16",
                           "underlay_ip": peer},
               "host:h2": {"uri": uri, "memory_mb": "640", "vcpus": "16", "underlay_ip": ip}}
        path = conf(env, name, tmp, one, prefix)
        e = dict(os.environ, VC_CONFIG=path)
        sh(["/usr/bin/python3", CTL, "db", "upgrade"], e)
        sh(["/usr/bin/python3", CTL, "target", "key"], e)
        sh(["bash", HOST_SH, "up", hname], henv)
        # a fresh libvirtd probes QEMU's capabilities at its first domain define (~4 s here);
        # a real host's daemon has them cached: probe once, outside the measured starts
        t = time.monotonic()
        sh(["virsh", "-q", "-c", uri, "domcapabilities"], henv)
        print("fresh namespace host: QEMU capabilities probe %.1f s (not counted)"
              % (time.monotonic() - t))
        figures = {}
        for label, hosts in (("1 host", one), ("2 hosts", two)):
            conf(env, name, tmp, hosts, prefix)
            rack = json.loads(sh(["/usr/bin/python3", CTL, "reserve", "--start", "now", "--end",
                                  "now+1h", "--computes", "7", "--memory", "128", "--disk",
                                  "1", "--json"], e).stdout)["rack"]
            t = time.monotonic()
            sh(["/usr/bin/python3", CTL, "start", str(rack)], e)
            running = time.monotonic() - t
            sh(["/usr/bin/python3", CTL, "start", str(rack), "--wait-ready"], e)
            ready = time.monotonic() - t
            used = {n["host"] for n in json.loads(sh(["/usr/bin/python3", CTL, "show",
                                                      str(rack), "--json"], e).stdout)["nodes"]}
            sh(["/usr/bin/python3", CTL, "stop", str(rack)], e)
            figures[label] = (running, ready)
            print("1+7 start on %s (%s): all running %.1f s, all answering SSH %.1f s"
                  % (label, ",".join(sorted(used)), running, ready))
        print("ratio 2 hosts / 1 host: running %.2f, ready %.2f" % (
            figures["2 hosts"][0] / figures["1 host"][0],
            figures["2 hosts"][1] / figures["1 host"][1]))

        if spread_only:
            return
        # failover: h1 has room for everything
        two["host:h1"]["memory_mb"] = "2048"
        two["host:h2"]["memory_mb"] = "2048"
        conf(env, name, tmp, two, prefix)
        rack = json.loads(sh(["/usr/bin/python3", CTL, "reserve", "--start", "now", "--end",
                              "now+1h", "--computes", "3", "--memory", "128", "--disk", "1",
                              "--json"], e).stdout)["rack"]
        sh(["/usr/bin/python3", CTL, "start", str(rack), "--wait-ready"], e)
        sh(["bash", HOST_SH, "kill", hname], henv)
        t, ticks = time.monotonic(), 0
        while True:
            ticks += 1
            sh(["/usr/bin/python3", CRON], e, check=False)
            nodes = json.loads(sh(["/usr/bin/python3", CTL, "show", str(rack), "--json"],
                                  e).stdout)["nodes"]
            if all(n["host"] == "h1" and n["state"] == "running" for n in nodes):
                break
            if ticks > 5:
                raise SystemExit("not re-placed after 5 ticks: %s" % nodes)
        moved = time.monotonic() - t
        sh(["/usr/bin/python3", CTL, "start", str(rack), "--wait-ready"], e)
        answering = time.monotonic() - t
        print("failover (host crash -> its nodes running on the other host): %d tick(s), "
              "%.1f s; answering SSH again after %.1f s (ticks run back to back here; cron runs "
              "one a minute, so add up to 60 s)" % (ticks, moved, answering))
        sh(["bash", HOST_SH, "up", hname], henv)
        t = time.monotonic()
        sh(["/usr/bin/python3", CRON], e)
        print("host back: one tick fenced it in %.1f s" % (time.monotonic() - t))
        sh(["/usr/bin/python3", CTL, "stop", str(rack)], e)
    finally:
        if made_pub:
            sh(["virsh", "-q", "-c", "qemu:///system", "net-destroy", prefix + "pub"],
               check=False)
        sh(["bash", HOST_SH, "down", hname], henv, check=False)
        dropdb(env, name)
        for ln in sh(["ip", "-o", "link"], check=False).stdout.splitlines():
            dev = ln.split(":")[1].strip().split("@")[0]
            if dev.startswith(prefix):
                sh(["ip", "link", "del", dev], check=False)
        remote.close_ssh_mux(remote.ssh_mux_dir(os.path.join(tmp, "state")))
        subprocess.run(["rm", "-rf", tmp])


def scale(env):
    from vc import addresses, reservations as R, virt
    from vc import ctl as vctl
    from vc.scheduler import Scheduler
    from test_ctl import Recorder

    tmp = "/tmp/vc-bench-mhs-%s" % uuid.uuid4().hex[:6]
    os.makedirs(os.path.join(tmp, "state"))
    name = newdb(env)
    try:
        hosts = {"host:h%02d" % i: {"uri": TESTNODE, "memory_mb": "262144", "vcpus": "512"}
                 for i in range(64)}
        path = conf(env, name, tmp, hosts, "vs")
        cfg = vconfig.load(path)
        db = Database(cfg)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        db.upgrade(now)
        names = sorted(h.name for h in cfg.hosts)
        conns = {h: virt.Host(TESTNODE, name=h) for h in names}
        rng = random.Random(1)

        def fill(cur):
            regs, res, nodes, alloc = [], [], [], []
            for rack in range(1, 10001):
                if rack <= 125:             # running now: 125 clusters of 1+7 = 1,000 VMs
                    s, e, st = now - timedelta(hours=1), now + timedelta(hours=5), "running"
                else:
                    s = now + timedelta(hours=2, minutes=rng.randrange(365 * 24 * 60))
                    e, st = s + timedelta(hours=rng.randrange(1, 49)), "reserved"
                regs.append((rack, "u", naive_utc(s), naive_utc(e), st, naive_utc(now),
                             naive_utc(now)))
                res += [(rack, "gateway", 1, 256, 1, 1), (rack, "compute", 7, 256, 1, 1)]
                if st == "running":
                    alloc += [("subnet", "10.%d.%d.0/24" % (100 + rack // 256, rack % 256),
                               rack), ("isolation", str(100 + rack), rack)]
                    for i in range(8):
                        app, rank = ("gateway", 0) if i == 0 else ("compute", i - 1)
                        n = (rack - 1) * 8 + i
                        nodes.append((rack, app, rank, "%s-%d-%d" % (app, rack, rank),
                                      "52:54:01:%02x:%02x:%02x" % (n >> 16, (n >> 8) & 255,
                                                                   n & 255),
                                      "10.1.%d.%d" % (n // 250, n % 250 + 2),
                                      names[n % 64], "running", "up", naive_utc(now)))
            cur.executemany("INSERT INTO vcregist (rack, owner, start_at, end_at, state, "
                            "created_at, updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s)", regs)
            cur.executemany("INSERT INTO vcresource (rack, appliance, count, memory_mb, "
                            "disk_gb, vcpus) VALUES (%s,%s,%s,%s,%s,%s)", res)
            cur.executemany("INSERT INTO vcalloc (kind, value, rack, created_at) VALUES "
                            "(%s,%s,%s,NOW())", alloc)
            cur.executemany("INSERT INTO vcnode (rack, appliance, `rank`, name, mac, ip, host, "
                            "state, readiness, updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,"
                            "%s)", nodes)
            return nodes

        nodes = db.transaction(fill)
        t = time.perf_counter()
        for n in nodes:                     # the 1,000 domains, running on their hosts
            c = conns[n[6]].conn
            c.createXML("<domain type='test'><name>vs-%s</name><memory>262144</memory>"
                        "<os><type>hvm</type></os></domain>" % n[3], 0)
        print("scale: 64 hosts, %d running VMs defined on the test driver in %.1f s, 10,000 "
              "reservations" % (len(nodes), time.perf_counter() - t))
        ctl = vctl.Ctl(cfg, db, open_host=lambda h, uri: conns[h], execute=Recorder(),
                       clock=lambda: now, actor="bench")
        s = Scheduler(cfg, db, ctl, clock=lambda: now, sleep=lambda x: None, lookahead=False)
        if os.environ.get("VC_PROFILE"):
            import cProfile
            import pstats
            cProfile.runctx("s.run_once(now)", globals(), locals(), "/tmp/vcmh.prof")
            pstats.Stats("/tmp/vcmh.prof").sort_stats("cumulative").print_stats(25)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            acts = s.run_once(now)
            times.append(time.perf_counter() - t)
            assert not [a for a in acts if a.verb == "heal"], acts[:3]
        print("idle tick (due queries + health check of 1,000 running VMs on 64 hosts): "
              "median %.2f s" % statistics.median(times))
        times = []
        for i in range(5):
            start = now + timedelta(days=30 + i)
            t = time.perf_counter()
            R.create(cfg, db, {"owner": "bob", "start": start.isoformat(),
                               "end": (start + timedelta(hours=4)).isoformat(),
                               "gateways": "1", "computes": "7", "memory_mb": "256"}, now)
            times.append(time.perf_counter() - t)
        print("one admission (1+7 among 10,000 reservations, 64 hosts): median %.0f ms"
              % (statistics.median(times) * 1000))
        rack = R.create(cfg, db, {"owner": "bob", "start": now.isoformat(),
                                  "end": (now + timedelta(hours=1)).isoformat(),
                                  "gateways": "1", "computes": "7", "memory_mb": "256"}, now)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            plan = db.transaction(lambda cur: addresses.preview(
                cfg, cur, rack, R._resources(cur, rack)))
            times.append(time.perf_counter() - t)
        print("one start's placement (1+7 over 64 hosts with 1,000 VMs placed): median %.1f ms,"
              " spread over %d hosts" % (statistics.median(times) * 1000,
                                         len({n.host for n in plan.nodes})))
    finally:
        dropdb(env, name)
        subprocess.run(["rm", "-rf", tmp])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--spread-only", action="store_true",
                    help="the real part's 1-host vs 2-host start only (no failover)")
    args = ap.parse_args()
    env = db_env()
    if not args.skip_real:
        real(env, args.spread_only)
    if not args.skip_scale:
        scale(env)


if __name__ == "__main__":
    main()

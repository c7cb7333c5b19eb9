#!/usr/bin/env python3
"""The lease around the cluster: readiness at the start time, and the lease service's speed.

1. Readiness lateness on real QEMU: a 1 gateway + 1 compute reservation (the test guest, direct
   kernel boot) is started by the tick's own code (:meth:`vc.scheduler.Scheduler.run_once`) at
   its start time (no pre-boot) or ``--lead`` seconds before it (pre-boot, admitted as the tick
   does it: ``ctl.start(rack, preboot=True)``); then every node is probed (SSH banner,
   :func:`vc.ready.observe`, every 0.1 s) until it is up. Lateness = when the last node's
   banner was first seen minus the start time (negative: ready before the start).
   p50 / max over ``--runs`` starts each way.
   ``[cron] preboot_minutes`` is minutes; the bench uses a lead of seconds (the same code path,
   ``Scheduler.preboot``) so that its runtime stays reasonable.
2. The lease service (:mod:`vc.metad`) on loopback, in front of the last cluster of part 1 (kept
   running): ``GET /lease`` answer time (p50 / p99 over ``--requests`` sequential requests) and
   requests/s with 8 concurrent clients. The loopback source addresses are mapped to the
   cluster's gateway address and ``.1``, then resolved by the real query
   (:func:`vc.metad.cluster_of`), so the database lookup is in the figure.

Needs ``make core`` (MariaDB, libvirtd, the test guest) and the demo's public network
``vc-public`` (``tools/public-net.sh start``). Throw-away database and state directory; the
domains it makes are named ``vl<random>-...`` and removed at the end.

    .venv/bin/python bench/lease.py [--runs 10] [--lead 30] [--requests 2000]
"""

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from conftest import BASE_CONF, VAR, db_env, write_conf  # noqa: E402
from vc import config as vconfig  # noqa: E402
from vc import metad, ready, reservations  # noqa: E402
from vc.db import Database, aware_utc  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def make_config(tmp, sock, env, name):
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    data["database"] = {"unix_socket": sock, "user": env["VC_DB_USER"],
                        "password": env["VC_DB_PASSWORD"], "name": name}
    data["host:h1"] = {"uri": "qemu:///system", "memory_mb": "4096", "vcpus": "8"}
    data["addresses"]["private_pool"] = "10.216.0.0/16"
    data["network"] = {"public_network": "vc-public", "isolation": "none"}
    data["site"] = {"timezone": "UTC", "state_dir": os.path.join(tmp, "state"),
                    "log_file": os.path.join(tmp, "vc.log")}
    guest = os.path.join(VAR, "guest")
    data["virt"] = {"name_prefix": "vl" + uuid.uuid4().hex[:4],
                    "kernel": os.path.join(guest, "vmlinux"),
                    "initrd": os.path.join(guest, "initrd.img"), "ready_timeout": "120"}
    conf = os.path.join(tmp, "vc.conf")
    write_conf(conf, data)
    return vconfig.load(conf)


def one_start(cfg, db, lead: float):
    """Book a 1+1 cluster, start it as the tick would (``lead`` s early when > 0), wait until
    every node is up: (rack, lateness in s of the last node's up_at against the start)."""
    from vc.ctl import Ctl
    from vc.scheduler import Scheduler

    now = datetime.now(timezone.utc)
    start = (now + timedelta(seconds=lead + 3)).replace(microsecond=0)
    rack = reservations.create(cfg, db, {
        "owner": "bench", "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(), "gateways": "1", "computes": "1",
        "memory_mb": "128", "disk_gb": "1"}, now)
    ctl = Ctl(cfg, db, actor="bench", progress=lambda m: None)
    s = Scheduler(cfg, db, ctl, lookahead=False, dry_run=False)
    s.preboot = timedelta(seconds=lead)
    act_at = start - s.preboot
    time.sleep(max(0.0, (act_at - datetime.now(timezone.utc)).total_seconds()))
    acts = [a for a in s.run_once(datetime.now(timezone.utc)) if a.rack == rack]
    assert acts and acts[0].ok and acts[0].verb == ("preboot" if lead else "start"), acts
    first = {}  # ip -> when its banner was first seen (up_at in the database is whole seconds)

    def probe(ip):
        ok = ready.ssh_answers(ip, 22, 0.5)
        if ok:
            first.setdefault(ip, datetime.now(timezone.utc))
        return ok

    got = ready.observe(ctl, rack, wait=120, poll=0.1, probe=probe)
    assert ready.summary(got) == "ready", got
    ups = [first.get(r["ip"]) or aware_utc(r["up_at"]) for r in ready.nodes(db, rack)]
    return rack, ctl, (max(ups) - start).total_seconds()


def bench_real(cfg, db, runs, lead):
    res = {}
    last = None
    for mode, ld in (("without pre-boot", 0.0), ("with pre-boot (%g s lead)" % lead, lead)):
        late = []
        for i in range(runs):
            rack, ctl, x = one_start(cfg, db, ld)
            late.append(x)
            keep = mode.startswith("with") and i == runs - 1
            if keep:
                last = (rack, ctl)
            else:
                ctl.stop(rack, "bench")
        res[mode] = late
        print("readiness lateness at the start, 1+1 on real QEMU, %s: p50 %+.2f s, max %+.2f s "
              "(%d starts; negative = ready before the start)"
              % (mode, statistics.median(late), max(late), len(late)), flush=True)
    return last


def bench_metad(cfg, db, rack, requests):
    row = db.query("SELECT ip FROM vcnode WHERE rack = %s AND appliance = 'gateway'",
                   (rack,))[0]
    from vc import addresses

    plan = db.transaction(lambda cur: addresses.load(cur, rack))
    ip, dot1 = row["ip"], plan.bridge_ip
    assert metad.cluster_of(db, ip, dot1)["rack"] == rack

    def resolve(src, local):  # loopback stands for the node's address and its cluster's .1
        return metad.cluster_of(db, ip, dot1) if src.startswith("127.") else None

    srv = metad.make_server(cfg, db, "127.0.0.1", 0, resolve=resolve)
    metad.serve_in_thread(srv)
    port = srv.server_address[1]

    def get(conn):
        conn.request("GET", "/lease")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, body

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        times = []
        for _ in range(requests):
            t = time.perf_counter()
            get(conn)
            times.append(time.perf_counter() - t)
        conn.close()
        print("lease service GET /lease on loopback (keep-alive, real cluster lookup): p50 "
              "%.2f ms, p99 %.2f ms, max %.2f ms over %d requests"
              % (pct(times, 50) * 1e3, pct(times, 99) * 1e3, max(times) * 1e3, requests))
        clients, per = 8, max(1, requests // 8)
        errors = []

        def client():
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                for _ in range(per):
                    get(c)
                c.close()
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        ths = [threading.Thread(target=client) for _ in range(clients)]
        t = time.perf_counter()
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        dt = time.perf_counter() - t
        assert not errors, errors[:3]
        print("lease service, %d concurrent clients: %.0f requests/s (%d requests in %.2f s)"
              % (clients, clients * per / dt, clients * per, dt))
    finally:
        srv.shutdown()
        srv.server_close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="starts each way (default 10)")
    ap.add_argument("--lead", type=float, default=30.0,
                    help="pre-boot lead in seconds (default 30)")
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    if args.runs < 1 or args.requests < 1 or args.lead <= 0:
        ap.error("--runs, --requests and --lead must be positive")
    env = db_env()
    sock = env["VC_DB_SOCKET"]
    name = "vctest_bench_%s" % uuid.uuid4().hex[:8]
    tmp = "/tmp/vc-bench-lease-%s" % uuid.uuid4().hex[:6]
    os.makedirs(os.path.join(tmp, "state", "images"))
    subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-e",
                    "CREATE DATABASE `%s`" % name], check=True)
    cfg = None
    try:
        cfg = make_config(tmp, sock, env, name)
        db = Database(cfg)
        db.upgrade(datetime.now(timezone.utc))
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                        cfg.appliance("gateway").image, "64M"], check=True)
        rack, ctl = bench_real(cfg, db, args.runs, args.lead)
        bench_metad(cfg, db, rack, args.requests)
    finally:
        if cfg is not None:  # every cluster it started, also after a failure
            from vc.ctl import Ctl

            ctl = Ctl(cfg, Database(cfg), actor="bench", progress=lambda m: None)
            for r in ctl.db.query("SELECT rack FROM vcregist WHERE state IN ('starting', "
                                  "'running', 'failed')"):
                try:
                    ctl.stop(r["rack"], "bench")
                except Exception as e:  # pragma: no cover
                    print("cleanup: rack %d: %s" % (r["rack"], e), file=sys.stderr)
        subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-e",
                        "DROP DATABASE IF EXISTS `%s`" % name])
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()

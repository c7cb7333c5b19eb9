#!/usr/bin/env python3
"""Two frontends on Galera: what it costs and how fast it recovers.

Starts its own 3-node Galera cluster (tools/galera.sh, var/galera-bench, SQL ports 3327-3329)
and stops it at the end; the single-MariaDB figures use the project's private MariaDB
(``make services`` first). Each in a throw-away database. Prints:

1. admission latency: the median and p95 of ``reservations.create`` (one connection per
   transaction, as the CLI and the pages run it; the admission row written, overlap query,
   placement, inserts, commit) on the single MariaDB and on one Galera node, and the ratio;
2. the 16-way race for the last slot, spread over the 3 nodes: admitted per round (must be 1),
   transaction retries per booking and the time until all 16 have their answer;
3. takeover: a frontend holding a rack lease (``[site] lease_seconds``, renewed every third) is
   SIGKILLed; the time until the other frontend's poll (every 0.1 s) takes the lease.

    .venv/bin/python bench/galera.py [--runs 200] [--rounds 5] [--lease 6] [--kills 3]
"""

import argparse
import os
import signal
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

from conftest import BASE_CONF, NOW, VAR, db_env, make_cfg, write_conf  # noqa: E402
from vc import dblease  # noqa: E402
from vc import reservations as R  # noqa: E402
from vc.db import Database  # noqa: E402
from vc.errors import CapacityError  # noqa: E402

GDIR = os.path.join(VAR, "galera-bench")
PORT, GPORT = 3327, 4597
NODES = ["127.0.0.1:%d" % (PORT + i) for i in range(3)]
T0 = datetime(2027, 3, 1, tzinfo=timezone.utc)


def galera_sh(*args):
    env = dict(os.environ, VC_GALERA_DIR=GDIR, VC_GALERA_PORT=str(PORT),
               VC_GALERA_GPORT=str(GPORT))
    r = subprocess.run(["bash", os.path.join(ROOT, "tools", "galera.sh")] + list(args),
                       env=env, capture_output=True, text=True, timeout=300)
    if r.returncode and args[0] != "down":
        sys.exit("tools/galera.sh %s failed:\n%s" % (" ".join(args), r.stderr[-3000:]))
    return r


def sql(sock, stmt):
    subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-e", stmt],
                   check=True, capture_output=True)


def cfg_for(db, host=None):
    """A config for database ``db`` ({user, password, name, socket}) on ``host`` (Galera)."""
    o = {"database": {"user": db["user"], "password": db["password"], "name": db["name"],
                      "unix_socket": None if host else db["socket"], "host": host}}
    o["host:h1"] = {"uri": "qemu:///system", "memory_mb": "4096", "vcpus": "16"}
    o["limits"] = {"max_memory_mb": "4096"}
    return make_cfg(o)


def fields(k, memory="128", computes="0"):
    s = T0 + timedelta(hours=3 * k)
    return {"owner": "bob", "start": s.isoformat(), "end": (s + timedelta(hours=2)).isoformat(),
            "gateways": "1", "computes": computes, "memory_mb": memory}


def latency(cfg, runs):
    db = Database(cfg)
    db.upgrade(NOW)
    out = []
    for k in range(runs):
        t = time.perf_counter()
        R.create(cfg, db, fields(k), NOW)
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.95) - 1]


def race(cfgs, k, n=16):
    barrier = threading.Barrier(n)
    kinds = [None] * n
    dbs = [Database(cfgs[i % len(cfgs)]) for i in range(n)]
    done = [0.0] * n

    def worker(i):
        barrier.wait()
        t = time.perf_counter()
        try:
            R.create(cfgs[i % len(cfgs)], dbs[i], fields(k, "1024", "2"), NOW)
            kinds[i] = "ok"
        except CapacityError:
            kinds[i] = "refused"
        except Exception as e:
            kinds[i] = "error: %r" % e
        done[i] = time.perf_counter() - t

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return kinds.count("ok"), sum(d.retries for d in dbs), max(done) * 1000, kinds


def holder_process(cfg_path, name, ttl):
    """A frontend (its own process) that takes the lease, renews it and waits to be killed."""
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from vc import config, dblease\nfrom vc.db import Database\n"
            "cfg = config.load(%r)\n"
            "lease = dblease.Lease(Database(cfg), %r, 'fe-a', %r)\n"
            "assert lease.try_take(); lease.start_renewing()\n"
            "print('held', flush=True)\ntime.sleep(600)\n" % (ROOT, cfg_path, name, ttl))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def takeover(db, cfg_path, ttl, kills):
    out = []
    for i in range(kills):
        name = "bench-%s" % uuid.uuid4().hex[:8]
        p = holder_process(cfg_path, name, ttl)
        time.sleep(ttl / 3 * (i % 3) / 2 + 0.2)   # die at different points of the renewal cycle
        t = time.monotonic()
        p.send_signal(signal.SIGKILL)
        p.wait()
        taker = dblease.Lease(db, name, "fe-b", ttl)
        while not taker.try_take():
            time.sleep(0.1)
        out.append(time.monotonic() - t)
        taker.release()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--lease", type=int, default=6)
    ap.add_argument("--kills", type=int, default=3)
    args = ap.parse_args()

    env = db_env()
    single = {"user": env["VC_DB_USER"], "password": env["VC_DB_PASSWORD"],
              "socket": env["VC_DB_SOCKET"], "name": "vctest_bench_%s" % uuid.uuid4().hex[:8]}
    sql(single["socket"], "CREATE DATABASE `%s`" % single["name"])
    galera_sh("down")
    t = time.monotonic()
    galera_sh("up", "--fresh")
    up = time.monotonic() - t
    genv = dict(line.split("=", 1) for line in
                open(os.path.join(GDIR, "galera.env")).read().split() if "=" in line)
    g = {"user": genv["VC_GALERA_USER"], "password": genv["VC_GALERA_PASSWORD"],
         "socket": None, "name": "vctest_bench_%s" % uuid.uuid4().hex[:8]}
    sql(os.path.join(GDIR, "n1", "mysqld.sock"), "CREATE DATABASE `%s`" % g["name"])
    try:
        print("galera: 3 nodes on loopback Synced in %.1f s" % up)
        m1, p1 = latency(cfg_for(single), args.runs)
        g_cfgs = [cfg_for(g, h) for h in NODES]
        m3, p3 = latency(g_cfgs[0], args.runs)
        print("admission latency (create, %d runs): single MariaDB median %.2f ms p95 %.2f ms; "
              "Galera node 1 median %.2f ms p95 %.2f ms; ratio %.1fx (median)"
              % (args.runs, m1, p1, m3, p3, m3 / m1))
        total_retries, worst = 0, 0.0
        for k in range(args.rounds):
            ok, retries, ms, kinds = race(g_cfgs, 1000 + k)
            if ok != 1:
                sys.exit("race round %d: %d admitted: %s" % (k, ok, kinds))
            total_retries += retries
            worst = max(worst, ms)
            print("race round %d: 16 bookings over 3 nodes, 1 admitted, %d retries (%.2f per "
                  "booking), all answered in %.0f ms" % (k, retries, retries / 16, ms))
        print("race: %d rounds, %.2f retries per booking on average, slowest answer %.0f ms"
              % (args.rounds, total_retries / (16.0 * args.rounds), worst))
        # the lease holder is its own process on node 1; the taker polls on node 2
        path = os.path.join(GDIR, "bench-a.conf")
        data = {k: dict(v) for k, v in BASE_CONF.items()}
        data["database"] = {"host": NODES[0], "user": g["user"], "password": g["password"],
                            "name": g["name"]}
        write_conf(path, data)
        times = takeover(Database(g_cfgs[1]), path, args.lease, args.kills)
        print("takeover after a frontend dies (lease %d s, renewed every %.1f s): %s s "
              "(max %.1f s)" % (args.lease, args.lease / 3, ", ".join("%.1f" % x for x in times),
                                max(times)))
    finally:
        sql(single["socket"], "DROP DATABASE IF EXISTS `%s`" % single["name"])
        galera_sh("down")


if __name__ == "__main__":
    main()

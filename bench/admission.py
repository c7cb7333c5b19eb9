#!/usr/bin/env python3
"""Time to admit one more reservation beside N existing ones spread over a year.

Runs against the project's private MariaDB (``make services`` first) in a throw-away database.
For N = 1,000 and 10,000 it prints the median (of 50) time of a full ``reservations.create``
(admission lock, overlap query, placement sweep, inserts, commit) and of the admission check
alone, with the number of reservations that overlap the new window, and the ratios 10k/1k.

    .venv/bin/python bench/admission.py [--runs 50]
"""

import argparse
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

from conftest import db_env, make_cfg  # noqa: E402
from vc import reservations as R  # noqa: E402
from vc.db import Database, naive_utc  # noqa: E402

YEAR0 = datetime(2027, 1, 1, tzinfo=timezone.utc)
HOSTS = {"host:h%d" % i: {"uri": "qemu:///system", "memory_mb": "65536", "vcpus": "64"}
         for i in range(8)}


def fill(db, n, rng):
    """Insert n reservations (1 gateway + 0..6 computes, 1..48 h) uniformly over 2027."""

    def run(cur):
        regs, res = [], []
        for rack in range(1, n + 1):
            start = YEAR0 + timedelta(minutes=rng.randrange(365 * 24 * 60))
            end = start + timedelta(hours=rng.randrange(1, 49))
            regs.append((rack, "u%d" % (rack % 50), naive_utc(start), naive_utc(end),
                         naive_utc(start), naive_utc(start)))
            mem = rng.choice([512, 1024, 2048, 4096])
            res.append((rack, "gateway", 1, mem, 10, 1))
            res.append((rack, "compute", rng.randrange(0, 7), mem, 10, 1))
        cur.executemany("INSERT INTO vcregist (rack, owner, start_at, end_at, created_at, "
                        "updated_at) VALUES (%s, %s, %s, %s, %s, %s)", regs)
        cur.executemany("INSERT INTO vcresource (rack, appliance, count, memory_mb, disk_gb, "
                        "vcpus) VALUES (%s, %s, %s, %s, %s, %s)", res)
        cur.execute("UPDATE vccounter SET value = %s WHERE name = 'longest_seconds'", (48 * 3600,))

    db.transaction(run)


def measure(cfg, db, runs, rng):
    now = YEAR0 - timedelta(days=1)
    full, check, overlaps = [], [], []
    for _ in range(runs):
        start = YEAR0 + timedelta(days=rng.randrange(20, 340), hours=rng.randrange(24))
        end = start + timedelta(hours=24)
        f = {"owner": "bench", "start": start.isoformat(), "end": end.isoformat(),
             "gateways": "1", "computes": "4", "memory_mb": "1024"}
        req = R.validate(cfg, f, now)

        def only_check(cur, req=req):
            R._lock_admission(cur)
            t = time.perf_counter()
            R.admit(cfg, cur, req.start, req.end, req.resources, now)
            check.append(time.perf_counter() - t)
            overlaps.append(len(R.overlapping(cur, req.start, req.end)))

        db.transaction(only_check)
        t = time.perf_counter()
        rack = R.create(cfg, db, f, now)
        full.append(time.perf_counter() - t)
        db.transaction(lambda cur, rack=rack: cur.execute("DELETE FROM vcregist WHERE rack = %s",
                                                          (rack,)))
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    return ms(full), ms(check), statistics.median(overlaps)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    env = db_env()
    results = {}
    for n in (1000, 10000):
        name = "vctest_bench_%s" % uuid.uuid4().hex[:8]
        sock = env["VC_DB_SOCKET"]
        subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-e",
                        "CREATE DATABASE `%s`" % name], check=True)
        try:
            over = {"database": {"unix_socket": sock, "user": env["VC_DB_USER"],
                                 "password": env["VC_DB_PASSWORD"], "name": name},
                    "limits": {"max_nodes": "16"},
                    "addresses": {"public_pool": "198.18.0.0/22"}}
            over.update(HOSTS)
            cfg = make_cfg(over)
            db = Database(cfg)
            db.upgrade(YEAR0)
            rng = random.Random(n)
            t = time.perf_counter()
            fill(db, n, rng)
            filled = time.perf_counter() - t
            full, check, ov = measure(cfg, db, args.runs, rng)
            results[n] = (full, check, ov)
            print("N=%6d  overlapping=%5.1f  create median %6.2f ms  admission check median "
                  "%6.2f ms  (fill %.1f s)" % (n, ov, full, check, filled))
        finally:
            subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-e",
                            "DROP DATABASE IF EXISTS `%s`" % name])
    (f1, c1, o1), (f10, c10, o10) = results[1000], results[10000]
    print("ratio 10k/1k: overlapping x%.1f, create x%.2f, admission check x%.2f"
          % (o10 / max(o1, 1), f10 / f1, c10 / c1))
    print("target: create < 20 ms at 10k -> %s" % ("met" if f10 < 20 else "NOT met"))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The cost of ``vc_vlan.py add|del`` with the vxlan backend: a cluster over 1, 2 and 4 hosts.

The hosts are network namespaces on a private underlay (tests/real/netns.py), so a "remote"
command costs what a local ``ip``/``bridge`` costs; over SSH add one round trip per command (the
table shows how many commands each host runs). For each host count: ``add`` on fresh hosts,
``add`` again (nothing to do: only the queries), ``del``; median (and min-max) of ``--runs``, both
with the hosts handled in parallel (VC's default) and one after the other.

Needs root. Everything it makes is named with a random prefix and removed at the end.

    .venv/bin/python bench/network.py [--runs 5] [--hosts 1,2,4]
"""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "real"))

import netns  # noqa: E402
from vc.isolation import ClusterSegment, VxlanBackend  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def fmt(samples):
    ms = [s * 1000 for s in samples]
    return "%7.1f (%5.1f-%5.1f)" % (statistics.median(ms), min(ms), max(ms))


def bench(lab, n, runs, parallel, vni):
    hosts = [lab.hosts["h%d" % i] for i in range(1, n + 1)]
    seg = ClusterSegment(rack=1, isolation_id=vni, bridge=lab.prefix + "br", hosts=hosts)
    be = VxlanBackend(parallel=parallel)
    add, readd, delete, cmds = [], [], [], None
    for _ in range(runs):
        t, done = timed(lambda: be.add(seg))
        add.append(t)
        cmds = len(done) // n
        t, again = timed(lambda: be.add(seg))
        assert again == [], again
        readd.append(t)
        t, gone = timed(lambda: be.delete(seg))
        assert len(gone) == 2 * n, gone
        delete.append(t)
    return add, readd, delete, cmds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hosts", default="1,2,4")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/network.py needs root (network namespaces)")
    counts = [int(x) for x in args.hosts.split(",")]
    lab = netns.Lab()
    try:
        for i in range(1, max(counts) + 1):
            lab.host("h%d" % i, forwarding=False)
        print("vxlan add/del, %d runs, times in ms: median (min-max); commands = changing "
              "commands per host (plus 1-2 queries)" % args.runs)
        print("%-5s %-8s %-22s %-22s %-22s %s" % ("hosts", "mode", "add", "add again (no-op)",
                                                 "del", "commands"))
        for n in counts:
            for parallel in (True, False):
                if n == 1 and not parallel:
                    continue
                add, readd, delete, cmds = bench(lab, n, args.runs, parallel, 200000 + n)
                print("%-5d %-8s %-22s %-22s %-22s %d add, 2 del" % (
                    n, "parallel" if parallel else "serial", fmt(add), fmt(readd), fmt(delete),
                    cmds))
    finally:
        left = lab.close()
    print("cleaned up: %d namespaces" % len(left))


if __name__ == "__main__":
    main()

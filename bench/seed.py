#!/usr/bin/env python3
"""Time to render one node's cloud-init seed (meta-data, network-config, user-data) and to
write it as the ``cidata`` ISO (pycdlib), for a gateway and a compute; median of many runs.

    .venv/bin/python bench/seed.py [--runs 200] [--dir /tmp]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from test_seed import compute, gateway  # noqa: E402  (the golden seeds' inputs)
from vc import seed  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    args = ap.parse_args()
    path = os.path.join(args.dir, "vc-bench-seed-%d.iso" % os.getpid())
    try:
        for label, make in (("gateway", gateway), ("compute", compute)):
            seed.write_iso(path, seed.render(make()))  # imports, first-use costs
            render, iso = [], []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                files = seed.render(make())
                t1 = time.perf_counter()
                seed.write_iso(path, files)
                iso.append(time.perf_counter() - t1)
                render.append(t1 - t0)
            print("%-8s render %.2f ms, ISO %.2f ms (median of %d), %d bytes" % (
                label, statistics.median(render) * 1000, statistics.median(iso) * 1000,
                args.runs, os.path.getsize(path)))
    finally:
        if os.path.exists(path):
            os.unlink(path)


if __name__ == "__main__":
    main()

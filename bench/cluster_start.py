#!/usr/bin/env python3
"""Wall time of ``vc_ctl start`` for 1 gateway + 1, 4 and 8 computes.

- real QEMU (qemu:///system, the test guest from var/guest reading its cloud-init seed),
  computes booted in parallel and serially: time to all domains running, to all guests
  addressed (their console prints the address VC gave them) and to all nodes **ready** (their
  SSH server answers, vc.ready); the ratio t(8)/t(1);
- the floor: bare libvirt defining and starting the same domains (the XML VC made, its network,
  fresh overlays, the same seed files) in parallel, one connection per thread — the ratio of
  ``vc_ctl start`` (all running) to it;
- libvirt's test driver (no guest, no qemu-img): VC's own cost per node.

Needs the project's services (``make services``) and the demo's public network (the gateways'
second NIC; ``tools/public-net.sh start``). Uses a throw-away database and name prefix.

    .venv/bin/python bench/cluster_start.py [--sizes 1,4,8] [--repeat 3] [--skip-serial]
        [--skip-test-driver]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from conftest import VAR, db_env, make_cfg  # noqa: E402
from vc import ctl as vctl  # noqa: E402
from vc import designer, network, ready  # noqa: E402
from vc import reservations as R  # noqa: E402
from vc import timeutil  # noqa: E402
from vc.db import Database  # noqa: E402

GUEST = os.path.join(VAR, "guest")
TESTNODE = "test://" + os.path.join(ROOT, "tests", "data", "testnode.xml")
IP_RE = re.compile(r"VC-IP eth0 (\S+) hostname=(\S+)")


def fake_exec(argv):
    if argv[:2] == ["qemu-img", "info"]:
        return json.dumps({"format": "qcow2"})
    return ""


def setup(dbname, state, real, parallel):
    env = db_env()
    over = {"database": {"unix_socket": env["VC_DB_SOCKET"], "user": env["VC_DB_USER"],
                         "password": env["VC_DB_PASSWORD"], "name": dbname},
            "host:h1": {"uri": "qemu:///system" if real else TESTNODE, "memory_mb": "4096",
                        "vcpus": "32"},
            "addresses": {"private_pool": "10.214.0.0/16"},
            "limits": {"max_nodes": "16", "max_gateways": "1"},
            "site": {"state_dir": state, "timezone": "UTC"},
            "network": {"public_network": "vc-public" if real else "bridge:vbpub0"},
            "virt": {"name_prefix": "vb" + uuid.uuid4().hex[:4], "boot_parallel": str(parallel),
                     "shutdown_timeout": "20"}}
    if real:
        over["virt"].update(kernel=os.path.join(GUEST, "vmlinux"),
                            initrd=os.path.join(GUEST, "initrd.img"))
    cfg = make_cfg(over)
    image = cfg.appliance("gateway").image
    os.makedirs(os.path.dirname(image), exist_ok=True)
    if real and not os.path.exists(image):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "64M"], check=True)
    return cfg


def one(cfg, db, computes, real):
    now = timeutil.utcnow()
    rack = R.create(cfg, db, {"owner": "bench", "start": "now", "end": "now+1h",
                              "gateways": "1", "computes": str(computes),
                              "memory_mb": "128", "disk_gb": "1"}, now)
    c = vctl.Ctl(cfg, db, execute=None if real else fake_exec, actor="bench")
    t0 = time.perf_counter()
    c.start(rack)
    t_run = time.perf_counter() - t0
    t_addr = t_ready = saved = None
    if real:
        names = [n["name"] for n in db.query("SELECT name FROM vcnode WHERE rack=%s", (rack,))]
        pending, up = set(names), set()
        deadline = time.monotonic() + 300
        while (pending or len(up) < len(names)) and time.monotonic() < deadline:
            for n in list(pending):
                try:
                    if IP_RE.search(open(designer.console_path(cfg, n), errors="replace").read()):
                        pending.discard(n)
                except FileNotFoundError:
                    pass
            if len(up) < len(names):
                got = ready.observe(c, rack, probe=lambda ip: ready.ssh_answers(ip, 22, 0.3))
                up = {k for k, v in got.items() if v == "up"}
                if len(up) == len(names) and t_ready is None:
                    t_ready = time.perf_counter() - t0
            time.sleep(0.05)
        t_addr = time.perf_counter() - t0 if not pending else float("nan")
        t_ready = t_ready if t_ready is not None else float("nan")
        saved = save_cluster(cfg, c, rack, names)
    t1 = time.perf_counter()
    c.stop(rack)
    t_stop = time.perf_counter() - t1
    return t_run, t_addr, t_stop, t_ready, saved if real else None


def settle(seconds=3.0):
    """Before each timed start: no guest of ours still exiting, then a pause, so that VC and
    the floor each begin on the same quiet machine (a start right after 8 guests were torn
    down measured up to 1.4x slower than the same start after a pause)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and subprocess.run(
            ["pgrep", "-f", "qemu-system.*-name guest=vb"], capture_output=True).returncode == 0:
        time.sleep(0.2)
    time.sleep(seconds)


def samples(cfg, db, computes, real, repeat):
    """``repeat`` samples of ``(vc start, addressed, stop, ready, floor)``; VC and the floor
    take turns going first (the floor replays the cluster VC made in the first sample)."""
    out, saved = [], None
    for i in range(repeat):
        floor = None
        if real and saved is not None and i % 2:
            settle()
            floor = bare_libvirt(cfg, saved)
        if real:
            settle()
        t_run, t_addr, t_stop, t_ready, made = one(cfg, db, computes, real)
        saved = saved or made
        if real and floor is None:
            settle()
            floor = bare_libvirt(cfg, saved)
        out.append((t_run, t_addr, t_stop, t_ready, floor))
    return out


def save_cluster(cfg, c, rack, names):
    """What bare libvirt needs to start the same cluster: the domain and network XML VC made,
    each node's base image and size, and copies of the seeds."""
    host = c.host(cfg.hosts[0].name)
    keep = os.path.join(cfg.site.state_dir, "floor")
    os.makedirs(keep, exist_ok=True)
    nodes = []
    for n in names:
        dom = host.conn.lookupByName(designer.domain_name(cfg, n))
        seed = designer.seed_path(cfg, n)
        shutil.copy(seed, os.path.join(keep, os.path.basename(seed)))
        app = "gateway" if n.startswith("gateway") else "compute"
        nodes.append((dom.XMLDesc(2), designer.disk_path(cfg, n), seed,
                      cfg.appliance(app).image))
    net = host.conn.networkLookupByName(network.names(cfg, rack)[0]).XMLDesc(0)
    return {"nodes": nodes, "net": net, "keep": keep}


def bare_libvirt(cfg, saved):
    """The floor: define and start the same network and domains with libvirt alone, disks
    created with qemu-img, the domains in parallel on one connection per thread."""
    import libvirt

    conn = libvirt.open("qemu:///system")
    t0 = time.perf_counter()
    net = conn.networkDefineXML(saved["net"])
    net.create()
    for _, disk, seed, base in saved["nodes"]:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base,
                        disk, "1G"], check=True)
        shutil.copy(os.path.join(saved["keep"], os.path.basename(seed)), seed)

    def boot(xml):
        c = libvirt.open("qemu:///system")
        d = c.defineXML(xml)
        d.create()
        while d.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
            time.sleep(0.01)
        c.close()

    threads = [threading.Thread(target=boot, args=(x,)) for x, _, _, _ in saved["nodes"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    for x, disk, seed, _ in saved["nodes"]:
        import xml.etree.ElementTree as ET

        d = conn.lookupByName(ET.fromstring(x).findtext("name"))
        d.destroy()
        d.undefine()
        for f in (disk, seed):
            os.unlink(f)
    net.destroy()
    net.undefine()
    conn.close()
    return took


def median(xs):
    xs = sorted(x for x in xs if x == x)  # NaN (not reached) left out
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,4,8")
    ap.add_argument("--repeat", type=int, default=3,
                    help="samples per size (medians are printed; ratios are of medians)")
    ap.add_argument("--skip-serial", action="store_true")
    ap.add_argument("--skip-test-driver", action="store_true")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    env = db_env()
    dbname = "vctest_bench_%s" % uuid.uuid4().hex[:8]
    sock = env["VC_DB_SOCKET"]
    subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-e",
                    "CREATE DATABASE `%s`" % dbname], check=True)
    state = "/tmp/vc-bench-%s" % uuid.uuid4().hex[:6]
    try:
        results = {}
        modes = [] if args.skip_test_driver else [("test driver", False, 8)]
        modes.append(("real QEMU, parallel", True, 8))
        if not args.skip_serial:
            modes.append(("real QEMU, serial", True, 1))
        for label, real, par in modes:
            cfg = setup(dbname, state, real, par)
            db = Database(cfg)
            db.upgrade(timeutil.utcnow())
            for n in sizes:
                got = samples(cfg, db, n, real, args.repeat)
                r = tuple(median([s[k] for s in got]) if got[0][k] is not None else None
                          for k in range(5))
                results[(label, n)] = r
                extra = ""
                if real:
                    extra = (", all addressed %6.2f s, all ready (SSH) %6.2f s; bare libvirt "
                             "%5.2f s: vc_ctl start / bare x%.2f" % (r[1], r[3], r[4],
                                                                      r[0] / r[4]))
                    extra += " [samples: %s]" % ", ".join(
                        "%.2f/%.2f" % (s[0], s[4]) for s in got)
                print("%-22s 1+%d computes: all running %6.2f s%s, stop %5.2f s" % (
                    label, n, r[0], extra, r[2]), flush=True)
        lo, hi = min(sizes), max(sizes)
        for label, real, _ in modes:
            a, b = results[(label, lo)], results[(label, hi)]
            line = "%-22s t(%d)/t(%d): running x%.2f" % (label, hi, lo, b[0] / a[0])
            if real:
                line += ", addressed x%.2f, ready x%.2f" % (b[1] / a[1], b[3] / a[3])
            print(line)
        if not args.skip_test_driver:
            per_node = [results[("test driver", n)][0] / (n + 1) for n in sizes]
            print("VC overhead per node (test driver): %.1f ms (max over sizes)" %
                  (max(per_node) * 1000))
        if not args.skip_serial:
            for n in sizes:
                s, p = results[("real QEMU, serial", n)], results[("real QEMU, parallel", n)]
                print("serial/parallel 1+%d: running x%.2f, addressed x%.2f"
                      % (n, s[0] / p[0], s[1] / p[1]))
    finally:
        subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-e",
                        "DROP DATABASE IF EXISTS `%s`" % dbname])
        subprocess.run(["rm", "-rf", state])


if __name__ == "__main__":
    main()

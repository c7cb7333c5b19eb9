#!/usr/bin/env python3
"""Making N iSCSI volumes (1 GB each, 1, 4, 16) on a target host over SSH: batched over one
connection (what VC does: one probe exec + one script exec, whatever N) against one new SSH
connection per command.

Starts its own target host with tools/storage.sh (sshd + tgtd on 127.0.0.1, free ports, a
throw-away VC_VAR) and stops it at the end. Measured twice: with the demo target host's lean
remote shell (sshd sets SHLVL=1, so bash skips root's ~/.bashrc) and with root's ~/.bashrc run
for every command, as a target host with a heavy ~/.bashrc would (VC_SSH_LEAN_SHELL=0).
Goal: batched, 4 volumes, under 0.5 s (connection included).

    .venv/bin/python bench/storage.py [--runs 3] [--single-runs 1] [--sizes 1,4,16] [--lean-only]
"""

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vc import iscsi, remote  # noqa: E402

TOOL = os.path.join(ROOT, "tools", "storage.sh")
PREFIX = "iqn.2026-11.vc.bench%d" % random.randrange(10 ** 6)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_control_port():
    while True:
        n = random.randrange(1000, 30000)
        if not any(os.path.exists("/var/run/tgtd/socket.%d%s" % (n, x)) for x in ("", ".lock")):
            return n


def tool(env, *args):
    r = subprocess.run(["bash", TOOL] + list(args), env=env, capture_output=True, text=True,
                       timeout=600)
    if r.returncode:
        sys.exit("tools/storage.sh %s failed: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout.strip()


class PerCommandSSH(remote.Executor):
    """The unbatched way: every command on a new SSH connection of its own."""

    def __init__(self, target, key):
        self.target, self.key, self.name = target, key, target.name
        self.is_target = True
        self.connects = 0

    def _run(self, argv):
        with remote.SSHExecutor(self.target, self.key) as ex:
            self.connects += 1
            return ex.run(argv)


def specs(be, n, run):
    out = []
    for i in range(n):
        mount = "/vol%d" % i
        name = iscsi.volume_name(900 + run, mount)
        out.append(iscsi.VolumeSpec(iscsi.iqn_for(PREFIX, 900 + run, mount),
                                    be.backing_for(name), 1))
    return out


def cleanup(local_be, vols):
    for v in vols:
        local_be.remove_volume(v.iqn, v.backing)


def measure(target, key, backing, control, sizes, runs, single_runs):
    local = iscsi.TgtBackend(remote.LocalExecutor("cleanup", is_target=True), backing,
                             control_port=control)
    rows = []
    # the cost of one connection and of one empty exec on it (paramiko imported beforehand)
    import paramiko  # noqa: F401

    t0 = time.perf_counter()
    ex = remote.SSHExecutor(target, key)
    ex.run(["true"])
    first = time.perf_counter() - t0
    execs = []
    for _ in range(5):
        t0 = time.perf_counter()
        ex.run(["true"])
        execs.append(time.perf_counter() - t0)
    ex.close()
    base = (first - statistics.median(execs), statistics.median(execs))
    run_id = 0
    for n in sizes:
        batched, single, conns = [], [], 0
        for i in range(runs):
            run_id += 1
            t0 = time.perf_counter()
            with remote.SSHExecutor(target, key) as ex:
                be = iscsi.TgtBackend(ex, backing, control_port=control)
                vols = specs(be, n, run_id)
                changed = be.ensure_volumes(vols, ["127.0.0.1"])
            batched.append(time.perf_counter() - t0)
            assert all(changed.values()) and len(local.show()) == n
            cleanup(local, vols)
            if i >= single_runs:
                continue
            run_id += 1
            pc = PerCommandSSH(target, key)
            be = iscsi.TgtBackend(pc, backing, control_port=control)
            vols = specs(be, n, run_id)
            t0 = time.perf_counter()
            changed = be.ensure_volumes(vols, ["127.0.0.1"])
            single.append(time.perf_counter() - t0)
            assert all(changed.values()) and len(local.show()) == n
            conns = pc.connects
            cleanup(local, vols)
        rows.append((n, statistics.median(batched), statistics.median(single), conns))
    return base, rows


def report(title, base, rows):
    print("\n%s" % title)
    print("  one SSH connect + auth: %.0f ms; one exec on it: %.0f ms" % (base[0] * 1000,
                                                                            base[1] * 1000))
    print("  %8s  %22s  %28s  %6s" % ("volumes", "batched, 1 conn (s)", "1 conn per command (s)",
                                      "ratio"))
    for n, b, s, conns in rows:
        print("  %8d  %22.3f  %18.3f (%3d conn)  %5.1fx" % (n, b, s, conns, s / b))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="batched: median of this many (3)")
    ap.add_argument("--single-runs", type=int, default=1,
                    help="one connection per command: median of this many (1; it is slow)")
    ap.add_argument("--sizes", default="1,4,16")
    ap.add_argument("--lean-only", action="store_true", help="skip the ~/.bashrc measurement")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]

    tmp = tempfile.mkdtemp(prefix="vc-bench-storage-")
    ports = {"lean": free_port(), "bashrc": free_port()}
    control = free_control_port()
    env = dict(os.environ, VC_VAR=os.path.join(tmp, "lean"), VC_SSH_PORT=str(ports["lean"]),
               VC_ISCSI_PORT=str(free_port()), VC_TGT_CONTROL=str(control))
    env_rc = dict(env, VC_VAR=os.path.join(tmp, "bashrc"), VC_SSH_PORT=str(ports["bashrc"]),
                  VC_SSH_LEAN_SHELL="0")
    key, _ = remote.frontend_key(os.path.join(tmp, "state"))
    backing = os.path.join(tmp, "lean", "storage", "backing")
    started = []
    try:
        fp = tool(env, "start").splitlines()[-1]
        started.append(env)
        tool(env, "authorize", key + ".pub")
        if not args.lean_only:
            fp_rc = tool(env_rc, "start", "sshd").splitlines()[-1]
            started.append(env_rc)
            tool(env_rc, "authorize", key + ".pub")
        print("storage bench: 1 GB volumes, tgtd control socket %d, batched median of %d, "
              "load average %.1f" % (control, args.runs, os.getloadavg()[0]))
        target = remote.Target("bench", "127.0.0.1", ports["lean"], fingerprint=fp)
        base, rows = measure(target, key, backing, control, sizes, args.runs, args.single_runs)
        report("lean remote shell (the demo target host: sshd SetEnv SHLVL=1)", base, rows)
        goal = dict((r[0], r[1]) for r in rows).get(4)
        if not args.lean_only:
            target = remote.Target("bench", "127.0.0.1", ports["bashrc"], fingerprint=fp_rc)
            base, rows = measure(target, key, backing, control, sizes, args.runs,
                                 args.single_runs)
            report("root's ~/.bashrc run for every exec (pyenv init on this machine)", base, rows)
        if goal is not None:
            print("\ngoal: batched, 4 volumes < 0.500 s: %.3f s %s"
                  % (goal, "OK" if goal < 0.5 else "MISSED"))
    finally:
        for e in reversed(started):
            subprocess.run(["bash", TOOL, "stop"], env=e, capture_output=True, timeout=120)
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()

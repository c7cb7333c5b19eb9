"""Two frontends on one 3-node Galera cluster (tools/galera.sh), real libvirtd + QEMU.

The cluster is started once for this module (~10 s) on its own ports and datadirs
(var/galera-test, SQL 127.0.0.1:3317-3319) and stopped at the end. When it cannot start the
tests FAIL: nothing here passes by skipping. Two frontends: each its own config, state dir and
frontend id, frontend A on node 1 (then node 3), frontend B on node 2 (then node 3), both on the
one libvirt host qemu:///system with one disk_dir (the shared path on the hypervisor host).
"""

import dataclasses
import glob
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from conftest import NOW, ROOT, TABLES, VAR
from realenv import RealEnv, libvirtd, virsh  # noqa: F401  (fixture)
from vc import config as vconfig
from vc import dblease
from vc import reservations as R
from vc.db import Database
from vc.errors import CapacityError

GALERA = os.path.join(ROOT, "tools", "galera.sh")
GDIR = os.path.join(VAR, "galera-test")
PORT, GPORT = 3317, 4577                 # not the demo's 3307/4567
NODES = ["127.0.0.1:%d" % (PORT + i) for i in range(3)]
POOL = "10.215.0.0/16"
VENV_PY = os.path.join(ROOT, ".venv", "bin", "python3")
CTL = os.path.join(ROOT, "sbin", "vc_ctl.py")
EMPTY = {"domains": [], "networks": [], "bridges": [], "disks": []}
LEASE_SECONDS = 6


def galera_sh(*args, timeout=300):
    env = dict(os.environ, VC_GALERA_DIR=GDIR, VC_GALERA_PORT=str(PORT),
               VC_GALERA_GPORT=str(GPORT))
    return subprocess.run(["bash", GALERA] + list(args), env=env, capture_output=True,
                          text=True, timeout=timeout)


def root_sql(node, sql):
    return subprocess.run(["mariadb", "--no-defaults", "-S",
                           os.path.join(GDIR, "n%d" % node, "mysqld.sock"), "-u", "root", "-N",
                           "-B", "-e", sql], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def galera():
    galera_sh("down")
    t0 = time.monotonic()
    r = galera_sh("up", "--fresh")
    if r.returncode:
        galera_sh("down")
        pytest.fail("the Galera test bed did not start (tools/galera.sh up): %s"
                    % (r.stderr[-3000:]))
    up = time.monotonic() - t0
    env = dict(line.split("=", 1) for line in open(os.path.join(GDIR, "galera.env")).read()
               .split() if "=" in line)
    name = "vctest_%s" % uuid.uuid4().hex[:10]
    r = root_sql(1, "CREATE DATABASE `%s` CHARACTER SET utf8mb4" % name)
    assert r.returncode == 0, r.stderr
    info = {"socket": "", "user": env["VC_GALERA_USER"], "password": env["VC_GALERA_PASSWORD"],
            "name": name, "up_seconds": up}
    print("galera: 3 nodes Synced in %.1f s" % up)
    yield info
    root_sql(1, "DROP DATABASE IF EXISTS `%s`" % name)
    galera_sh("down")


class Frontend(RealEnv):
    """One frontend: RealEnv's configuration on the Galera nodes ``hosts``, with its own
    state dir and frontend id and the shared disk/console/image paths."""

    def __init__(self, tmp, g, fid, hosts, prefix, shared):
        self.shared, self.fid = shared, fid
        extra = {
            "database": {"unix_socket": "", "host": ", ".join(hosts), "user": g["user"],
                         "password": g["password"], "name": g["name"]},
            "site": {"frontend_id": fid, "lease_seconds": str(LEASE_SECONDS)},
            "virt": {"disk_dir": os.path.join(shared, "disks"),
                     "console_dir": os.path.join(shared, "console"),
                     "gateway_image": os.path.join(shared, "base.qcow2"),
                     "compute_image": os.path.join(shared, "base.qcow2")}}
        os.makedirs(tmp, exist_ok=True)
        super().__init__(tmp, g, prefix, POOL, extra)

    def console(self, node):
        p = os.path.join(self.shared, "console", "%s-%s.log" % (self.prefix, node))
        try:
            with open(p, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def traces(self):
        out = super().traces()
        d = os.path.join(self.shared, "disks")
        out["disks"] = sorted(os.listdir(d)) if os.path.isdir(d) else []
        return out

    def cfg(self, host=None):
        """This frontend's configuration (optionally on another node)."""
        cfg = vconfig.load(self.conf)
        if host:
            cfg = dataclasses.replace(cfg, database=dataclasses.replace(cfg.database, host=host))
        return cfg

    def logtext(self):
        try:
            return open(self.log).read()
        except FileNotFoundError:
            return ""

    def cron_path(self):
        return os.path.join(ROOT, "sbin", "vc_cron.py")

    def popen(self, prog, *args, env=None):
        e = dict(os.environ, VC_CONFIG=self.conf)
        e.update(env or {})
        return subprocess.Popen(["/usr/bin/python3", prog] + list(args), env=e,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def two(libvirtd, galera, tmp_path):  # noqa: F811
    """Frontends A (node 1, then 3) and B (node 2, then 3), the database emptied first."""
    prefix = "g" + uuid.uuid4().hex[:5]
    shared = str(tmp_path / "hypervisor")
    os.makedirs(shared)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                    os.path.join(shared, "base.qcow2"), "64M"], check=True)
    a = Frontend(str(tmp_path / "a"), galera, "fe-a", [NODES[0], NODES[2]], prefix, shared)
    b = Frontend(str(tmp_path / "b"), galera, "fe-b", [NODES[1], NODES[2]], prefix, shared)
    db = Database(a.cfg())
    if db.schema_version() == 0:
        db.upgrade(NOW)

    def wipe(cur):
        for t in TABLES + ("vclease",):
            cur.execute("DELETE FROM %s" % t)
        cur.execute("UPDATE vccounter SET value = 0")

    db.transaction(wipe)
    yield a, b, db
    a.cleanup()


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def transitions(db, rack):
    return [e["to_state"] for e in db.query(
        "SELECT to_state FROM vcevent WHERE rack=%s AND to_state IS NOT NULL AND "
        "(from_state IS NULL OR from_state <> to_state) ORDER BY id", (rack,))]


def domains_of(prefix, rack):
    return sorted(d for d in virsh("list", "--all", "--name").stdout.split()
                  if d.startswith(prefix + "-") and ("-%d-" % rack) in d)


def count_on_every_node(db_cfgs, sql, args=()):
    return [Database(c).query(sql, args)[0]["n"] for c in db_cfgs]


# ---------------------------------------------------------------------- admission
# a CLI process that has imported everything, then waits for the start line: 16 of them
# reach the database within a few milliseconds of each other (the real sbin/vc_ctl.py runs)
RACER = r"""
import os, runpy, sys, time
sys.path.insert(0, %(root)r)
import pymysql, vc.cmd.vc_ctl, vc.reservations, vc.config  # noqa
go = sys.argv[1]
open(go + ".ready.%%d" %% os.getpid(), "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
sys.argv = [%(ctl)r] + sys.argv[2:]
runpy.run_path(%(ctl)r, run_name="__main__")
""" % {"root": ROOT, "ctl": CTL}


def cli_race(confs, argv, tmp, n=16):
    go = os.path.join(tmp, "go-%s" % uuid.uuid4().hex[:6])
    procs = [subprocess.Popen([VENV_PY, "-c", RACER, go] + argv,
                              env=dict(os.environ, VC_CONFIG=confs[i % len(confs)]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    deadline = time.monotonic() + 120
    while len(glob.glob(go + ".ready.*")) < n:
        assert time.monotonic() < deadline, "racers not ready"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.02)
    open(go, "w").close()
    return [(p.wait(120), *p.communicate()) for p in procs]


def test_last_slot_16_clis_over_3_nodes_exactly_one(two, tmp_path):
    a, b, db = two
    # A's CLI on node 1, B's on node 2, A's again with its database on node 3
    a3 = str(tmp_path / "a" / "vc-node3.conf")
    with open(a.conf) as f, open(a3, "w") as g:
        g.write(f.read().replace("host = %s, %s" % (NODES[0], NODES[2]),
                                 "host = %s" % NODES[2]))
    confs = [a.conf, b.conf, a3]
    cfgs = [a.cfg(NODES[0]), a.cfg(NODES[1]), a.cfg(NODES[2])]
    base = datetime.now(timezone.utc).replace(microsecond=0, second=0) + timedelta(days=2)
    for rnd in range(5):
        start = base + timedelta(hours=3 * rnd)
        # h1 has 4096 MB: each asks for 3 x 1024 MB, so only one fits
        out = cli_race(confs, ["reserve", "--start", iso(start),
                               "--end", iso(start + timedelta(hours=2)), "--gateways", "1",
                               "--computes", "2", "--memory", "1024", "--disk", "1"],
                       str(tmp_path))
        ok = [o for o in out if o[0] == 0]
        refused = [o for o in out if o[0] != 0]
        assert len(ok) == 1, out
        assert ok[0][1].startswith("reserved rack "), ok
        assert len(refused) == 15 and all(
            "refused: not enough memory" in o[2] for o in refused), refused
        n = count_on_every_node(cfgs, "SELECT COUNT(*) AS n FROM vcregist WHERE start_at = %s",
                                (start.replace(tzinfo=None),))
        assert n == [1, 1, 1], (rnd, n)
    retries = sum(f.logtext().count("transaction retry") for f in (a, b))
    print("16 CLIs x 5 rounds over 3 nodes: 1 admitted per round, %d transaction retries"
          % retries)


def thread_race(cfgs, fields, now, n=16):
    barrier = threading.Barrier(n)
    out = [None] * n
    dbs = [Database(cfgs[i % len(cfgs)]) for i in range(n)]

    def worker(i):
        barrier.wait()
        try:
            out[i] = ("ok", R.create(cfgs[i % len(cfgs)], dbs[i], dict(fields), now))
        except CapacityError as e:
            out[i] = ("refused", str(e))
        except Exception as e:  # a deadlock that reached us, a lost connection ...
            out[i] = ("error", repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out, sum(d.retries for d in dbs)


def test_admission_writes_its_counter_row_or_galera_overbooks(two, monkeypatch):
    """The same 16-way race in threads (released by one barrier), each on a connection to
    one of the 3 nodes: with the counter row written exactly one is admitted, every round;
    the old "SELECT … FOR UPDATE the counter, count, insert" admits more than one."""
    a, b, db = two
    cfgs = [a.cfg(NODES[i]) for i in range(3)]
    now = datetime.now(timezone.utc)
    base = now.replace(microsecond=0, second=0) + timedelta(days=5)

    def fields(k):
        s = base + timedelta(hours=3 * k)
        return {"owner": "bob", "start": iso(s), "end": iso(s + timedelta(hours=2)),
                "gateways": "1", "computes": "2", "memory_mb": "1024"}

    for rnd in range(5):
        out, retries = thread_race(cfgs, fields(rnd), now)
        kinds = [o[0] for o in out]
        assert kinds.count("ok") == 1 and kinds.count("refused") == 15, out
        print("round %d: 1 admitted, %d retries" % (rnd, retries))

    def select_for_update_only(cur):   # the pattern before issue 15
        cur.execute("SELECT value FROM vccounter WHERE name = 'admission' FOR UPDATE")
        cur.fetchone()

    monkeypatch.setattr(R, "_lock_admission", select_for_update_only)
    admitted = []
    for rnd in range(5, 8):
        out, _ = thread_race(cfgs, fields(rnd), now)
        admitted.append([o[0] for o in out].count("ok"))
    print("without writing the counter row: admitted %s for the last slot" % admitted)
    assert max(admitted) > 1, admitted


# ---------------------------------------------------------------------- the two ticks
def test_both_ticks_on_a_clock_start_and_stop_each_cluster_once(two):
    """Both frontends' ticks run at every minute of a schedule (``--now``), one a second
    after the other, the first alternating: each cluster is started exactly once and
    stopped exactly once, one domain per node; each cluster is started by one frontend and
    stopped by the other."""
    a, b, db = two
    base = datetime.now(timezone.utc).replace(microsecond=0, second=0) + timedelta(minutes=10)
    m = timedelta(minutes=1)

    def reserve(fe, start, end):
        r = fe.ctl("reserve", "--start", iso(start), "--end", iso(end), "--gateways", "1",
                   "--computes", "1", "--memory", "128", "--disk", "1", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["rack"]

    r1 = reserve(a, base + 1 * m, base + 4 * m)   # started at minute 1 (B first), stopped at 4 (A)
    r2 = reserve(b, base + 2 * m, base + 5 * m)   # started at minute 2 (A first), stopped at 5 (B)
    for k in range(7):
        first, second = (a, b) if k % 2 == 0 else (b, a)
        p1 = first.popen(first.cron_path(), "--now", iso(base + k * m))
        time.sleep(1.0)
        p2 = second.popen(second.cron_path(), "--now", iso(base + k * m))
        for p in (p1, p2):
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, (k, out, err, first.logtext()[-3000:],
                                       second.logtext()[-3000:])
        if k == 3:
            for rack in (r1, r2):
                names = ["%s-%s" % (a.prefix, n["name"]) for n in db.query(
                    "SELECT name FROM vcnode WHERE rack=%s ORDER BY id", (rack,))]
                assert domains_of(a.prefix, rack) == sorted(names) and len(names) == 2
                st = json.loads(b.ctl("status", str(rack), "--json").stdout)
                assert [n["libvirt"] for n in st] == ["running", "running"], st
    for rack in (r1, r2):
        assert transitions(db, rack) == ["reserved", "starting", "running", "stopping",
                                         "stopped"], (rack, transitions(db, rack))
        assert domains_of(a.prefix, rack) == []
    assert a.traces() == EMPTY
    # who did what (each frontend's own log)
    la, lb = a.logtext(), b.logtext()
    assert "rack %d: start (start reached)" % r1 in lb and "rack %d: stop (end reached)" % r1 in la
    assert "rack %d: start (start reached)" % r2 in la and "rack %d: stop (end reached)" % r2 in lb
    assert "rack %d: start (" % r1 not in la and "rack %d: start (" % r2 not in lb
    # while one frontend started a cluster, the other's tick found the tick lease taken
    assert "the tick of frontend fe-b" in la and "the tick of frontend fe-a" in lb


# ---------------------------------------------------------------------- a frontend dies
def test_frontend_killed_mid_start_other_finishes_after_lease_expiry(two):
    """Frontend A SIGKILLs itself after the seed step (VC_CRASH_AFTER): its rack lease is
    not renewed any more, B's tick is refused until the lease expires and then finishes the
    start: the same addresses and disks (not made again), one domain per node, every seed
    rewritten with B's cluster key pair; B then stops it and nothing is left anywhere but A's
    own files of the start it died in (see README "Two frontends")."""
    a, b, db = two
    r = a.ctl("reserve", "--start", "now-1m", "--end", "now+30m", "--gateways", "1",
              "--computes", "1", "--memory", "128", "--disk", "1", "--json")
    assert r.returncode == 0, r.stderr
    rack = json.loads(r.stdout)["rack"]
    r = a.ctl("start", str(rack), env={"VC_CRASH_AFTER": "seed"})
    died = time.monotonic()
    assert r.returncode == -signal.SIGKILL, (r.stdout, r.stderr)
    assert R.get(db, rack)["state"] == "starting"
    lease = dblease.Lease(db, dblease.rack_name(rack), "x", 1).current()
    assert lease["holder"] == "fe-a"
    nodes = db.query("SELECT name, mac, ip FROM vcnode WHERE rack=%s ORDER BY id", (rack,))
    disk_dir = os.path.join(a.shared, "disks")
    disks = {f: os.stat(os.path.join(disk_dir, f)).st_ino for f in os.listdir(disk_dir)
             if f.endswith(".qcow2")}
    assert len(disks) == 2 and domains_of(a.prefix, rack) == []
    a_pub = open(os.path.join(a.state, "keys", "rack-%d" % rack, "id_ed25519.pub")).read()

    # B's tick, every second, until the cluster runs
    refused, took = 0, None
    while time.monotonic() - died < 60:
        r = b.cron("--now", iso(datetime.now(timezone.utc)))
        if R.get(db, rack)["state"] == "running":
            took = time.monotonic() - died
            break
        assert "is being started or stopped by frontend fe-a" in b.logtext(), b.logtext()[-2000:]
        refused += 1
        time.sleep(1)
    assert took is not None, (r.stdout, r.stderr, b.logtext()[-3000:])
    print("takeover: B finished A's start %.1f s after A died (lease %d s, %d ticks refused)"
          % (took, LEASE_SECONDS, refused))
    assert took >= LEASE_SECONDS - 1.5 and refused >= 1
    # nothing duplicated: the allocation, the disks, one domain per node
    assert db.query("SELECT name, mac, ip FROM vcnode WHERE rack=%s ORDER BY id",
                    (rack,)) == nodes
    assert {f: os.stat(os.path.join(disk_dir, f)).st_ino for f in os.listdir(disk_dir)
            if f.endswith(".qcow2")} == disks
    assert domains_of(a.prefix, rack) == sorted("%s-%s" % (a.prefix, n["name"]) for n in nodes)
    assert transitions(db, rack) == ["reserved", "starting", "running"]
    for n in nodes:
        assert b.wait_ip(n["name"]) == (n["ip"], n["name"])
    # B made its own cluster key pair and rewrote every seed with it before any node booted
    b_pub = open(os.path.join(b.state, "keys", "rack-%d" % rack, "id_ed25519.pub")).read()
    assert a_pub != b_pub
    for seed in glob.glob(os.path.join(disk_dir, "*-%d-*.seed.iso" % rack)):
        data = open(seed, "rb").read()
        assert b_pub.split()[1].encode() in data and a_pub.split()[1].encode() not in data
    # B stops it: nothing left on the host, in the shared disk dir or in the database
    r = b.ctl("stop", str(rack))
    assert r.returncode == 0, r.stderr
    assert a.traces() == EMPTY
    assert db.query("SELECT (SELECT COUNT(*) FROM vcalloc WHERE rack=%s) + (SELECT COUNT(*) "
                    "FROM vcnode WHERE rack=%s) AS n", (rack, rack))[0]["n"] == 0
    assert dblease.Lease(db, dblease.rack_name(rack), "x", 1).current()["holder"] is None
    # what A's start left in A's own state dir (nothing reads it; README "Two frontends")
    left = sorted(os.path.relpath(p, a.state) for p in
                  glob.glob(os.path.join(a.state, "keys", "*")) +
                  glob.glob(os.path.join(a.state, "dumps", "*")))
    assert left == ["dumps/rack-%d.dump" % rack, "keys/rack-%d" % rack], left


# ---------------------------------------------------------------------- a Galera node dies
def test_galera_node_killed_both_frontends_keep_working(two):
    """SIGKILL node 2 (frontend B's): A goes on on node 1; B's commands and B's long-lived
    connections move to node 3 (its next [database] host), B's lease is renewed there; node 2
    rejoins by IST and sees everything written meanwhile."""
    a, b, db = two
    cfg_b = b.cfg()
    dbb = Database(cfg_b)
    assert dbb.query("SELECT @@port AS p")[0]["p"] == PORT + 1
    lease = dblease.Lease(dbb, "test-galera-kill", "fe-b", 30)
    assert lease.try_take()
    lease.start_renewing(interval=0.5)
    try:
        t0 = time.monotonic()
        r = galera_sh("kill", "2")
        assert r.returncode == 0, r.stderr

        def reserve(fe, k):
            s = datetime.now(timezone.utc) + timedelta(days=3, hours=k)
            return fe.ctl("reserve", "--start", iso(s), "--end", iso(s + timedelta(hours=1)),
                          "--gateways", "1", "--computes", "0", "--memory", "128", "--json")

        ra = reserve(a, 1)
        rb = reserve(b, 2)
        first = time.monotonic() - t0
        assert ra.returncode == 0, ra.stderr
        assert rb.returncode == 0, rb.stderr
        assert "does not answer" in b.logtext()
        # B's long-lived Database reconnects to node 3
        assert dbb.query("SELECT @@port AS p")[0]["p"] == PORT + 2 and dbb.failovers >= 1
        beats = dbb.query("SELECT beats FROM vclease WHERE name='test-galera-kill'")[0]["beats"]
        time.sleep(1.5)
        assert not lease.lost
        assert dbb.query("SELECT beats FROM vclease WHERE name='test-galera-kill'")[0][
            "beats"] > beats
        t1 = time.monotonic()
        r = galera_sh("start", "2")
        rejoin = time.monotonic() - t1
        assert r.returncode == 0, r.stderr
        print("node 2 killed: both frontends booked within %.1f s; node 2 rejoined by IST in "
              "%.1f s" % (first, rejoin))
        # node 2 has what was written while it was down; B's next command uses it again
        racks = sorted(json.loads(x.stdout)["rack"] for x in (ra, rb))
        n2 = Database(b.cfg(NODES[1]))
        assert sorted(r["rack"] for r in n2.query("SELECT rack FROM vcregist")) == racks
        listed = json.loads(b.ctl("list", "--json").stdout)
        assert sorted(r["rack"] for r in listed) == racks
    finally:
        lease.release()
        if not os.path.exists(os.path.join(GDIR, "n2", "mysqld.pid")):
            galera_sh("start", "2")

"""Live migration for real: a 1+2 cluster spread over the root libvirtd (h1) and a namespace
libvirtd (h2, ``tools/host.sh``); ``host drain h2 --migrate`` moves h2's nodes to h1 while they
run. Proof that it was *live*: a process started on each moved node before (seen from the
gateway over ssh) still runs after, with the same PID, the same kernel boot id and an uptime
that went on counting. Then back: the computes move to h2, the gateway cannot (its public
network is on h1 only) and stays running on h1, nothing of it on h2. Both hosts share this
machine's filesystem: the overlay stays where it is (``VIR_MIGRATE_UNSAFE``, see
vc/migrate.py)."""

import json
import time

from test_cluster_storage_real import ok
from test_multihost_real import nodes, nothing_left, start_spread, two  # noqa: F401 (fixture)
from test_usable_real import ssh

from realenv import libvirtd, virsh  # noqa: F401  (fixture)


def probe(env, gw_ip, node, pid):
    """(boot id, uptime seconds, the command line of process ``pid``) on ``node``, asked from
    the gateway (the test guest is busybox: no pgrep, no nohup)."""
    r = ssh(env.key, gw_ip, "ssh", node, "'cat /proc/sys/kernel/random/boot_id; "
            "cut -d\" \" -f1 /proc/uptime; tr \"\\000\" \" \" </proc/%s/cmdline'" % pid)
    assert r.returncode == 0, (node, r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    return lines[0], float(lines[1]), lines[2].strip()


def times(res, names):
    return ", ".join("%s %.1f s (migration %.1f s)" % (n, res[n]["seconds"],
                                                       res[n]["migration_seconds"])
                     for n in names)


def test_drain_migrate_moves_running_nodes_live(two, db):  # noqa: F811
    env, h2 = two, two.h2
    rack, on2, before = start_spread(env)
    gw = next(n for n in nodes(env, rack) if n["appliance"] == "gateway")
    assert gw["host"] == "h1"
    seen, pids = {}, {}
    for n in on2:     # a process of the guest's own, to be found again after the move
        r = ssh(env.key, gw["public_ip"], "ssh", n,
                "'sleep 86399 </dev/null >/dev/null 2>&1 & echo $!'")
        assert r.returncode == 0, r.stderr
        pids[n] = int(r.stdout.split()[-1])
        seen[n] = probe(env, gw["public_ip"], n, pids[n])
        assert seen[n][2] == "sleep 86399", seen[n]
    t0 = time.monotonic()
    r = ok(env.ctl("host", "drain", "h2", "--migrate", "--json"))
    took = time.monotonic() - t0
    got = json.loads(r.stdout)["migrate"]
    assert got["failed"] == 0 and got["kept"] == [], got
    res = {x["node"]: x for x in got["results"]}
    assert sorted(res) == sorted(on2), res
    assert all(x["ok"] and x["source"] == "h2" and x["target"] == "h1"
               and x["storage"] == "shared" for x in res.values()), res
    # nothing of the cluster on h2 any more: no domain (running or defined), no network
    assert h2.traces(env.prefix)["domains"] == [], h2.virsh("list", "--all").stdout
    assert h2.traces(env.prefix)["networks"] == []
    assert not [x for x in h2.links() if x.startswith(env.prefix + "vx")], h2.links()
    ns = nodes(env, rack)
    assert {n["name"]: (n["mac"], n["ip"]) for n in ns} == before
    assert all(n["host"] == "h1" for n in ns), ns
    for n in on2:
        dom = "%s-%s" % (env.prefix, n)
        assert virsh("domstate", dom).stdout.strip() == "running"
        # persistent on h1 (PERSIST_DEST), not a transient copy
        assert "yes" in virsh("dominfo", dom).stdout.split("Persistent:")[1].split("\n")[0]
        boot, up, cmd = probe(env, gw["public_ip"], n, pids[n])
        assert boot == seen[n][0], "rebooted: %s" % n
        assert cmd == "sleep 86399", (n, pids[n], cmd)   # the same process, still running
        assert up > seen[n][1], (n, up, seen[n])
    events = [e["reason"] for e in db.query("SELECT reason FROM vcevent WHERE rack=%s ORDER BY "
                                             "id", (rack,))]
    for n in on2:
        assert any(e.startswith("migrate: %s migrated from h2 to h1 in " % n) for e in events)
    shown = ok(env.ctl("show", str(rack))).stdout
    for n in on2:
        assert any(ln.split()[1] == n and " h1 " in ln for ln in shown.splitlines()
                   if ln.startswith("node ")), shown
    print("\nhost drain h2 --migrate: %d node(s) in %.1f s; per node: %s" % (
        len(on2), took, times(res, on2)))

    # back the other way (root libvirtd -> namespace host, tcp://<h2's underlay address>): the
    # computes move; the gateway cannot (its public network exists on h1 only): it stays on
    # h1, running, nothing of it defined on h2, and the command says so and exits 1
    ok(env.ctl("host", "enable", "h2"))
    cps = [n["name"] for n in ns if n["appliance"] == "compute"]
    for n in cps:
        r = ssh(env.key, gw["public_ip"], "ssh", n,
                "'sleep 86399 </dev/null >/dev/null 2>&1 & echo $!'")
        assert r.returncode == 0, r.stderr
        pids[n] = int(r.stdout.split()[-1])
        seen[n] = probe(env, gw["public_ip"], n, pids[n])
    r = env.ctl("host", "drain", "h1", "--migrate", "--json")
    assert r.returncode == 1, (r.stdout, r.stderr)
    got = json.loads(r.stdout)["migrate"]
    res = {x["node"]: x for x in got["results"]}
    assert got["failed"] == 1 and not res[gw["name"]]["ok"], got
    assert "network" in res[gw["name"]]["error"].lower(), res[gw["name"]]
    assert all(res[n]["ok"] and res[n]["target"] == "h2" for n in cps), res
    gdom = "%s-%s" % (env.prefix, gw["name"])
    assert virsh("domstate", gdom).stdout.strip() == "running"
    assert h2.virsh("domstate", gdom).returncode != 0        # not defined there
    assert sorted(h2.traces(env.prefix)["domains"]) == sorted(
        "%s-%s" % (env.prefix, n) for n in cps)
    assert {n["name"]: n["host"] for n in nodes(env, rack)} == dict(
        {n: "h2" for n in cps}, **{gw["name"]: "h1"})
    for n in cps:
        boot, up, cmd = probe(env, gw["public_ip"], n, pids[n])
        assert (boot, cmd) == (seen[n][0], "sleep 86399") and up > seen[n][1], (n, cmd)
    print("back to h2: %s; gateway refused: %s" % (times(res, cps), res[gw["name"]]["error"]))
    ok(env.ctl("host", "enable", "h1"))
    ok(env.ctl("stop", str(rack)))
    nothing_left(env, rack)

"""vc_ctl start/stop on real libvirtd + QEMU guests: every guest reports exactly the address and
host name VC gave it; stop leaves nothing; a SIGKILL after any step is repaired by a rerun."""

import json
import signal

import pytest

from realenv import libvirtd, real  # noqa: F401  (fixtures)
from vc import ctl as vctl

EMPTY = {"domains": [], "networks": [], "bridges": [], "disks": []}


def reserve(real, gateways=1, computes=2):
    r = real.ctl("reserve", "--start", "now-1m", "--end", "now+2h", "--gateways", str(gateways),
                 "--computes", str(computes), "--memory", "128", "--disk", "1", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["rack"]


def nodes_of(db, rack):
    return db.query("SELECT name, mac, ip FROM vcnode WHERE rack=%s ORDER BY id", (rack,))


def held(db, rack):
    return {t: db.query("SELECT COUNT(*) AS n FROM %s WHERE %s=%%s" % (t, col), (rack,))[0]["n"]
            for t, col in (("vcalloc", "rack"), ("vcnode", "rack"), ("nodes", "Rack"))}


def assert_running(real, db, rack):
    st = json.loads(real.ctl("status", str(rack), "--json").stdout)
    assert st and all(n["libvirt"] == "running" for n in st), st
    nodes = nodes_of(db, rack)
    for n in nodes:
        assert real.wait_ip(n["name"]) == (n["ip"], n["name"])
    return nodes


def test_start_boots_exact_addresses_and_stop_leaves_nothing(real, db):
    rack = reserve(real)
    r = real.ctl("start", str(rack))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "rack %d running" % rack
    nodes = assert_running(real, db, rack)
    assert [n["name"] for n in nodes] == ["gateway-%d-0" % rack, "compute-%d-0" % rack,
                                          "compute-%d-1" % rack]
    dump = real.ctl("dump", str(rack)).stdout
    assert len(dump.splitlines()) == 3 and all(n["mac"] in dump for n in nodes)
    tr = real.traces()
    assert len(tr["domains"]) == 3 and len(tr["networks"]) == 1 and len(tr["bridges"]) == 1

    r = real.ctl("stop", str(rack))
    assert r.returncode == 0, r.stderr
    assert real.traces() == EMPTY
    assert held(db, rack) == {"vcalloc": 0, "vcnode": 0, "nodes": 0}
    # the guests went down by ACPI, not by the destroy fallback
    assert "ignored ACPI shutdown" not in open(real.log).read()


def test_two_clusters_at_once_disjoint(real, db):
    a, b = reserve(real, computes=1), reserve(real, computes=0)
    for rack in (a, b):
        assert real.ctl("start", str(rack)).returncode == 0
    na, nb = assert_running(real, db, a), assert_running(real, db, b)
    sa = {n["ip"].rsplit(".", 1)[0] for n in na}
    sb = {n["ip"].rsplit(".", 1)[0] for n in nb}
    assert len(sa) == 1 and len(sb) == 1 and sa != sb
    assert not {n["mac"] for n in na} & {n["mac"] for n in nb}
    for rack in (a, b):
        assert real.ctl("stop", str(rack)).returncode == 0
    assert real.traces() == EMPTY


@pytest.mark.parametrize("i", range(len(vctl.START_STEPS)))
def test_sigkill_after_each_step_then_rerun(real, db, i):
    """Kill start after step i and stop after step i (mod), rerun each: same end state."""
    rack = reserve(real, computes=1)
    step = vctl.START_STEPS[i]
    r = real.ctl("start", str(rack), env={"VC_CRASH_AFTER": step})
    assert r.returncode == -signal.SIGKILL, (step, r.returncode, r.stderr)
    assert json.loads(real.ctl("show", str(rack), "--json").stdout)["state"] == "starting"
    r = real.ctl("start", str(rack))
    assert r.returncode == 0, r.stderr
    nodes = assert_running(real, db, rack)
    assert len(nodes) == 2 and len(real.traces()["domains"]) == 2

    stop_step = vctl.STOP_STEPS[i % len(vctl.STOP_STEPS)]
    r = real.ctl("stop", str(rack), env={"VC_CRASH_AFTER": stop_step})
    assert r.returncode == -signal.SIGKILL, (stop_step, r.returncode, r.stderr)
    r = real.ctl("stop", str(rack))
    assert r.returncode == 0, r.stderr
    assert json.loads(real.ctl("show", str(rack), "--json").stdout)["state"] == "stopped"
    assert real.traces() == EMPTY
    assert held(db, rack) == {"vcalloc": 0, "vcnode": 0, "nodes": 0}

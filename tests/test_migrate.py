"""``host drain NAME --migrate`` on libvirt's test driver (which cannot migrate: an injected
``migrate`` moves the definition from one test host to the other), the real MariaDB: the
placement, the DB and events after success only, a failed node left where it was, the source's
network and segment cleanup, and the refusals (unknown host, no answer, no room)."""

import io
import json

import pytest

from conftest import NOW
from test_ctl import make, reserve  # noqa: F401  (fixture)
from vc import designer, hosts, migrate, virt
from vc.cmd import Context, vc_ctl
from vc.errors import HypervisorError, NotFound, VcError


class FakeMigrate:
    """Moves a domain between two test-driver hosts as a migration would (defined + running
    there, gone here); ``fail``: node domains whose migration fails, nothing moved."""

    def __init__(self, fail=()):
        self.calls, self.fail = [], set(fail)

    def __call__(self, src, dst, dom, uri, flags, timeout):
        self.calls.append((src.name, dst.name, dom, uri, flags))
        if dom in self.fail:
            raise HypervisorError(host=src.name, op="migrate domain %s to %s" % (dom, dst.name),
                                  detail="simulated: connection refused")
        xml = src.conn.lookupByName(dom).XMLDesc(virt.XML_INACTIVE)
        dst.conn.defineXML(xml)
        dst.start(dom)
        src.destroy(dom)
        src.undefine(dom)


def where(db, rack):
    return {r["name"]: r["host"] for r in db.query("SELECT name, host FROM vcnode WHERE rack = "
                                                   "%s", (rack,))}


def events(db, rack):
    return [e["reason"] for e in db.query("SELECT reason FROM vcevent WHERE rack = %s ORDER BY "
                                          "id", (rack,))]


def spread(make, db, h2_mem="4096", computes=2, **over):  # noqa: F811
    h1 = dict({"underlay_ip": "192.168.250.1"}, **over.pop("host:h1", {}))
    cfg, c, _ = make(nhosts=2, **{"host:h1": h1, "host:h2": {"underlay_ip": "192.168.250.2",
                                                             "memory_mb": h2_mem}}, **over)
    rack = reserve(cfg, db, computes=computes)
    c.start(rack)
    on = where(db, rack)
    assert set(on.values()) == {"h1", "h2"}, on
    return cfg, c, rack, on


def test_drain_migrate_moves_every_running_node_and_cleans_the_source(make, db):  # noqa: F811
    cfg, c, rack, before = spread(make, db)
    on2 = sorted(n for n, h in before.items() if h == "h2")
    net = "vt-net%d" % rack
    assert c.host("h2").network_exists(net)
    hosts.drain(cfg, db, "h2", NOW)
    fake = FakeMigrate()
    r = migrate.off_host(c, "h2", migrate=fake)
    assert r["failed"] == 0 and r["skipped"] == [] and r["kept"] == []
    assert sorted(x["node"] for x in r["results"]) == on2
    assert all(x["ok"] and x["target"] == "h1" and x["storage"] == "shared"
               and x["seconds"] is not None for x in r["results"]), r
    # libvirt's call: live, persistent there, undefined here, UNSAFE (one shared file), to h1's
    # underlay address
    want = (virt.MIGRATE_LIVE | virt.MIGRATE_PERSIST_DEST | virt.MIGRATE_UNDEFINE_SOURCE
            | virt.MIGRATE_UNSAFE)
    assert [(s, d, uri, f) for s, d, _, uri, f in fake.calls] == \
        [("h2", "h1", "tcp://192.168.250.1", want)] * len(on2)
    assert set(where(db, rack).values()) == {"h1"}
    for n in on2:
        dom = designer.domain_name(cfg, n)
        assert c.host("h1").state(dom) == "running" and c.host("h2").state(dom) == "absent"
    ev = events(db, rack)
    for n in on2:
        assert any(e.startswith("migrate: %s migrated from h2 to h1 in " % n) for e in ev), ev
    # the moved nodes' DHCP entries are on h1's network; h2 carries nothing of the cluster
    macs = {h.mac for h in c.host("h1").dhcp_hosts(net)}
    assert {n["mac"] for n in db.query("SELECT mac FROM vcnode WHERE rack=%s", (rack,))} <= macs
    assert not c.host("h2").network_exists(net)
    assert any("no node left on h2" in e for e in ev), ev
    # nothing left to move: a second run is a no-op
    assert migrate.off_host(c, "h2", migrate=fake)["results"] == []
    c.stop(rack)
    assert c.host("h1").list_domains("vt-") == [] and not c.host("h1").network_exists(net)


def test_a_failed_migration_leaves_the_node_running_where_it_was(make, db, monkeypatch):  # noqa
    cfg, c, rack, before = spread(make, db, computes=3)
    on2 = sorted(n for n, h in before.items() if h == "h2")
    assert len(on2) >= 2, before
    bad = designer.domain_name(cfg, on2[0])
    fake = FakeMigrate(fail={bad})
    monkeypatch.setattr(migrate, "libvirt_migrate", fake)
    monkeypatch.setattr(Context, "ctl", lambda self, **kw: c)
    out = io.StringIO()
    assert vc_ctl.run(["host", "drain", "h2", "--migrate", "--json"], cfg=cfg, uid=0, out=out,
                      now=NOW) == 1
    got = json.loads(out.getvalue())["migrate"]
    res = {x["node"]: x for x in got["results"]}
    assert got["failed"] == 1
    assert not res[on2[0]]["ok"] and "connection refused" in res[on2[0]]["error"]
    assert all(res[n]["ok"] for n in on2[1:]), res
    # the failed one: still on h2 (DB and libvirt), running, nothing of it on h1
    assert where(db, rack)[on2[0]] == "h2"
    assert c.host("h2").state(bad) == "running" and c.host("h1").state(bad) == "absent"
    assert any("not migrated from h2 to h1, still running on h2" in e
               for e in events(db, rack))
    # a node of the cluster remains on h2: its network stays there
    assert c.host("h2").network_exists("vt-net%d" % rack)
    # the text says which and why
    out = io.StringIO()
    fake.fail = {bad}
    assert vc_ctl.run(["host", "drain", "h2", "--migrate"], cfg=cfg, uid=0, out=out,
                      now=NOW) == 1
    assert "NOT migrated: rack %d %s stays on h2 (to h1): " % (rack, on2[0]) in out.getvalue()
    # the drain stays; the next try moves it
    fake.fail = set()
    out = io.StringIO()
    assert vc_ctl.run(["host", "drain", "h2", "--migrate"], cfg=cfg, uid=0, out=out,
                      now=NOW) == 0
    assert "migrated: rack %d %s h2 -> h1 in " % (rack, on2[0]) in out.getvalue()
    assert set(where(db, rack).values()) == {"h1"}
    c.stop(rack)


def test_a_migration_leaving_a_definition_behind_is_undone(make, db):  # noqa: F811
    """libvirt failing after it defined the domain on the destination: it is removed there."""
    cfg, c, rack, before = spread(make, db)
    n = next(n for n, h in before.items() if h == "h2")
    dom = designer.domain_name(cfg, n)

    def half(src, dst, d, uri, flags, timeout):
        dst.conn.defineXML(src.conn.lookupByName(d).XMLDesc(virt.XML_INACTIVE))
        raise HypervisorError(host=src.name, op="migrate", detail="simulated: job aborted")

    r = migrate.off_host(c, "h2", migrate=half)
    assert r["failed"] == 1 and c.host("h1").state(dom) == "absent"
    assert c.host("h2").state(dom) == "running" and where(db, rack)[n] == "h2"
    c.stop(rack)


def test_without_shared_storage_the_overlay_is_copied_not_unsafe(make, db, monkeypatch):  # noqa
    cfg, c, rack, before = spread(make, db)
    n = next(n for n, h in before.items() if h == "h2")
    monkeypatch.setattr(migrate, "shared_disk_dir", lambda ctl, a, b: False)
    made = []
    monkeypatch.setattr(migrate, "_copy_storage", lambda ctl, node, s, t: made.append(
        (node.name, s, t)) or [])
    removed = []
    monkeypatch.setattr(migrate, "_remove_files", lambda ctl, h, dom: removed.append((h, dom)))
    fake = FakeMigrate()
    r = migrate.off_host(c, "h2", migrate=fake)
    assert r["failed"] == 0 and r["results"][0]["storage"] == "copied"
    flags = fake.calls[0][4]
    assert flags & virt.MIGRATE_NON_SHARED_INC and not flags & virt.MIGRATE_UNSAFE
    assert made == [(n, "h2", "h1")]
    assert removed == [("h2", designer.domain_name(cfg, n))]
    c.stop(rack)


def test_refusals_leave_everything_but_the_drain_flag(make, db, monkeypatch):  # noqa: F811
    # h1 has 2 vCPUs, both used by the cluster's own nodes there
    cfg, c, rack, before = spread(make, db, **{"host:h1": {"vcpus": "2"}})
    assert list(before.values()).count("h1") == 2, before
    monkeypatch.setattr(Context, "ctl", lambda self, **kw: c)
    fake = FakeMigrate()
    monkeypatch.setattr(migrate, "libvirt_migrate", fake)
    # unknown host: nothing at all
    with pytest.raises(NotFound, match="no host 'h9'"):
        vc_ctl.run(["host", "drain", "h9", "--migrate"], cfg=cfg, uid=0, out=io.StringIO(),
                   now=NOW)
    assert not db.query("SELECT name FROM vchost WHERE name = 'h9'")
    # no room on h1: refused before anything moves
    with pytest.raises(VcError, match=r"host h2 drained, nothing migrated: no other enabled "
                                      r"host that answers has room for \S+ of rack %d .*it "
                                      r"stays drained" % rack):
        vc_ctl.run(["host", "drain", "h2", "--migrate"], cfg=cfg, uid=0, out=io.StringIO(),
                   now=NOW)
    assert fake.calls == [] and where(db, rack) == before
    assert next(h for h in hosts.list_hosts(cfg, db) if h["name"] == "h2")["drained"]
    # the host does not answer
    monkeypatch.setattr(c.ha, "reachable", lambda name: name != "h2")
    with pytest.raises(VcError, match="host h2 does not answer: nothing migrated"):
        migrate.off_host(c, "h2", migrate=fake)
    assert fake.calls == [] and where(db, rack) == before
    # a drained or unreachable other host is no destination either
    monkeypatch.setattr(c.ha, "reachable", lambda name: name != "h1")
    with pytest.raises(VcError, match="has room for"):
        migrate.off_host(c, "h2", migrate=fake)
    monkeypatch.undo()
    c.stop(rack)


def test_placement_counts_earlier_moves_across_clusters(make, db):  # noqa: F811
    """Two clusters on h2 and room on h1 for only the first: refused, nothing moved."""
    cfg, c, _ = make(nhosts=2, **{"host:h1": {"memory_mb": "400"},
                                  "host:h2": {"memory_mb": "4096"}})
    hosts.drain(cfg, db, "h1", NOW)
    a, b = reserve(cfg, db, computes=0), reserve(cfg, db, computes=0)
    c.start(a)
    c.start(b)
    hosts.enable(cfg, db, "h1", NOW)
    hosts.drain(cfg, db, "h2", NOW)
    todo = {a: ["gateway-%d-0" % a], b: ["gateway-%d-0" % b]}
    got = migrate.plan_moves(c, "h2", {a: todo[a]}, lambda h: True)
    assert got == {(a, "gateway-%d-0" % a): "h1"}
    with pytest.raises(VcError, match="has room for gateway-%d-0 of rack %d" % (b, b)):
        migrate.plan_moves(c, "h2", todo, lambda h: True)
    c.stop(a)
    c.stop(b)


def test_stopped_domains_are_skipped_not_moved(make, db):  # noqa: F811
    cfg, c, rack, before = spread(make, db)
    n = next(n for n, h in before.items() if h == "h2")
    c.host("h2").destroy(designer.domain_name(cfg, n))
    fake = FakeMigrate()
    r = migrate.off_host(c, "h2", migrate=fake)
    assert fake.calls == [] and r["skipped"] == [
        {"rack": rack, "node": n, "why": "its domain is shutoff on h2: left there"}]
    assert where(db, rack) == before
    c.stop(rack)


# -- VXLAN: the segment follows the nodes ----------------------------------------------------

def vxlan_hosts():
    """host_exec for two hosts whose kernels already carry the cluster's VXLAN port (as
    after its start), with the other host in its flood list."""
    calls, state = {}, {}

    def host_exec(name):
        def run(argv):
            calls.setdefault(name, []).append(list(argv))
            if argv[:2] == ["bridge", "-j"]:
                return json.dumps([{"mac": "00:00:00:00:00:00", "dst": d}
                                   for d in state.get(name, {}).get("fdb", [])])
            if "-j" in argv:
                return json.dumps(state.get(name, {}).get("links", []))
            return ""
        return run

    return host_exec, calls, state


def test_vxlan_source_port_removed_and_the_floods_to_it_stopped(make, db):  # noqa: F811
    host_exec, calls, state = vxlan_hosts()
    cfg, c, rack, before = spread(make, db, host_exec=host_exec, network={"isolation": "vxlan"})
    assert before["gateway-%d-0" % rack] == "h1"
    vni = db.query("SELECT value FROM vcalloc WHERE kind='isolation' AND rack=%s",
                   (rack,))[0]["value"]
    port = "vtvx%s" % vni
    for h, peer in (("h1", "192.168.250.2"), ("h2", "192.168.250.1")):
        state[h] = {"links": [{"ifname": port, "group": "30307", "master": "vtbr%d" % rack,
                               "mtu": 1450, "up": True, "linkinfo": {
                                   "info_kind": "vxlan", "info_data": {
                                       "id": int(vni), "port": 4789,
                                       "local": "192.168.250.%s" % h[1]}}}],
                    "fdb": [peer]}
    calls.clear()
    r = migrate.off_host(c, "h2", migrate=FakeMigrate())
    assert r["failed"] == 0 and r["kept"] == [], r
    assert ["ip", "link", "del", "dev", port] in calls["h2"], calls["h2"]
    assert ["bridge", "fdb", "del", "00:00:00:00:00:00", "dev", port, "dst",
            "192.168.250.2"] in calls["h1"], calls["h1"]
    assert not c.host("h2").network_exists("vt-net%d" % rack)
    c.stop(rack)


def test_vxlan_dhcp_server_network_kept_when_no_other_can_serve(make, db):  # noqa: F811
    """The gateway on h2 (h2's network has the .1 and dnsmasq, h1's is a bare bridge): after
    the move h2's network is kept, and the result says so."""
    host_exec, calls, state = vxlan_hosts()
    cfg, c, rack, before = spread(make, db, h2_mem="4300", host_exec=host_exec,
                                  network={"isolation": "vxlan"})
    assert before["gateway-%d-0" % rack] == "h2", before
    net = "vt-net%d" % rack
    assert c.host("h1").network_address(net) is None
    assert c.host("h2").network_address(net) == "10.200.0.1"
    r = migrate.off_host(c, "h2", migrate=FakeMigrate())
    assert r["failed"] == 0 and set(where(db, rack).values()) == {"h1"}
    assert len(r["kept"]) == 1 and "serves the cluster's DHCP" in r["kept"][0], r
    assert c.host("h2").network_exists(net)
    c.stop(rack)
    assert not c.host("h2").network_exists(net)

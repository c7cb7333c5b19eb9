"""vc.ctl start/stop on libvirt's test driver (one test:///<file> host per configured host, fresh
per test) with a recording command executor, against the real MariaDB."""

import json
import os
import re

import pytest

from conftest import NOW, ROOT, assert_golden, count_rows, db_overrides, make_cfg
from vc import ctl as vctl
from vc import designer, readout
from vc import reservations as R
from vc import virt
from vc.errors import VcError

TESTNODE = "test://" + os.path.join(ROOT, "tests", "data", "testnode.xml")


class Recorder:
    """The command executor: records argv, answers qemu-img like the real one would."""

    def __init__(self, fail_on=None):
        self.calls, self.fail_on = [], fail_on

    def __call__(self, argv):
        self.calls.append(list(argv))
        if self.fail_on and self.fail_on in argv:
            raise virt.CommandError(argv, 1, "simulated failure")
        if argv[:2] == ["qemu-img", "info"]:
            return json.dumps({"format": "qcow2"})
        if argv[:2] == ["qemu-img", "create"]:
            open(argv[-2], "w").close()
        return ""


@pytest.fixture
def make(migrated, db, tmp_path):
    """make(nhosts=1, **overrides) -> (cfg, Ctl, recorder)"""

    def build(nhosts=1, fail_on=None, host_exec=None, **over):
        o = db_overrides(migrated)
        o["host:h1"] = None
        for i in range(nhosts):
            o["host:h%d" % (i + 1)] = {"uri": TESTNODE, "memory_mb": "4096", "vcpus": "8"}
        o["site"] = {"state_dir": str(tmp_path / "state"), "timezone": "UTC"}
        o["virt"] = {"name_prefix": "vt", "boot_timeout": "5", "shutdown_timeout": "1"}
        o["network"] = {"isolation": "none"}
        for k, v in over.items():
            o.setdefault(k, {}).update(v)
        cfg = make_cfg(o)
        rec = Recorder(fail_on)
        return cfg, vctl.Ctl(cfg, db, execute=rec, clock=lambda: NOW, actor="test",
                             host_exec=host_exec), rec

    return build


def reserve(cfg, db, gateways=1, computes=2, **kw):
    f = {"owner": "bob", "start": "2026-11-30T23:00Z", "end": "2026-12-01T05:00Z",
         "gateways": str(gateways), "computes": str(computes), "memory_mb": "256"}
    f.update(kw)
    return R.create(cfg, db, f, NOW)


def test_start_allocates_registers_and_boots(make, db):
    cfg, c, rec = make()
    rack = reserve(cfg, db)
    out = c.start(rack)
    assert out["state"] == "running" and out["changed"]
    assert R.get(db, rack)["state"] == "running"

    nodes = db.query("SELECT name, appliance, `rank`, mac, ip, public_ip, host, state FROM vcnode "
                     "ORDER BY id")
    assert [(n["name"], n["ip"], n["host"], n["state"]) for n in nodes] == [
        ("gateway-%d-0" % rack, "10.200.0.2", "h1", "running"),
        ("compute-%d-0" % rack, "10.200.0.3", "h1", "running"),
        ("compute-%d-1" % rack, "10.200.0.4", "h1", "running")]
    assert [n["mac"] for n in nodes] == ["52:54:00:00:00:01", "52:54:00:00:00:02",
                                         "52:54:00:00:00:03"]
    assert nodes[0]["public_ip"] == "198.51.100.10" and nodes[1]["public_ip"] is None
    kinds = sorted((a["kind"], a["value"]) for a in db.query("SELECT kind, value FROM vcalloc"))
    assert ("subnet", "10.200.0.0/24") in kinds and ("isolation", "100") in kinds
    # subnet + isolation, a MAC and an IP per node, the gateway's public IP and public NIC MAC
    assert len(kinds) == 2 + 3 * 2 + 1 + 1
    assert ("mac", "52:54:00:00:00:04") in kinds
    assert db.query("SELECT public_mac FROM vcnode WHERE appliance = 'gateway'")[0][
        "public_mac"] == "52:54:00:00:00:04"

    # the dump, exactly in the insert-ethers --dump format
    dump = open(designer.dump_path(cfg, rack)).read()
    assert dump.splitlines()[1] == (
        'insert-ethers --hostname="compute-%d-0" --rack=%d --rank=0 --cpus=1 '
        '--appliance="Compute" --mac="52:54:00:00:00:02" --device="eth0" '
        '--module="virtio_net" --ipaddr="10.200.0.3" --netmask="255.255.255.0" '
        '--norestart --batch' % (rack, rack))
    assert readout.dump(c, rack) == dump

    # builtin registrar: Rocks rows, DHCP entries in the cluster network, hosts file
    rows = db.query("SELECT n.Name, n.Rack, n.Rank, m.Name AS app, w.MAC, w.IP FROM nodes n JOIN "
                    "memberships m ON m.ID = n.Membership JOIN networks w ON w.Node = n.ID "
                    "ORDER BY w.IP")
    assert [(r["Name"], r["app"], r["IP"]) for r in rows] == [
        ("gateway-%d-0" % rack, "Gateway", "10.200.0.2"),
        ("compute-%d-0" % rack, "Compute", "10.200.0.3"),
        ("compute-%d-1" % rack, "Compute", "10.200.0.4")]
    h = c.host("h1")
    dhcp = sorted((d.mac, d.ip, d.name) for d in h.dhcp_hosts("vt-net%d" % rack))
    assert dhcp == sorted((n["mac"], n["ip"], n["name"]) for n in nodes)
    hosts = open(cfg.register.hosts_file).read()
    assert "10.200.0.3\tcompute-%d-0" % rack in hosts

    # disks: one qcow2 overlay per node over the appliance image, sized from the reservation
    # (the nodes' overlays are made in parallel: in any order)
    creates = sorted((a for a in rec.calls if a[:2] == ["qemu-img", "create"]),
                     key=lambda a: "gateway" not in a[8])
    assert creates[0] == ["qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b",
                          cfg.virt.gateway_image,
                          designer.disk_path(cfg, "gateway-%d-0" % rack), "5G"]
    assert len(creates) == 3
    assert sorted(h.list_domains("vt-")) == sorted("vt-" + n["name"] for n in nodes)
    assert all(h.state("vt-" + n["name"]) == "running" for n in nodes)

    steps = [e["reason"] for e in db.query("SELECT reason FROM vcevent WHERE rack=%s ORDER BY id",
                                           (rack,))]
    for s in vctl.START_STEPS:
        assert sum(r.startswith("start: %s done" % s) for r in steps) == 1, (s, steps)

    # replay: a second start changes nothing
    assert c.start(rack)["changed"] is False


def test_stop_leaves_nothing(make, db):
    cfg, c, rec = make()
    rack = reserve(cfg, db)
    c.start(rack)
    other = reserve(cfg, db, computes=0)   # another cluster's rows must survive
    c.start(other)
    out = c.stop(rack)
    assert out["state"] == "stopped"
    r = R.get(db, rack)
    assert r["state"] == "stopped" and r["end"] == NOW
    h = c.host("h1")
    assert all(("-%d-" % rack) not in d for d in h.list_domains("vt-"))
    assert "vt-net%d" % rack not in h.list_networks("vt-")
    assert "vt-net%d" % other in h.list_networks("vt-")
    assert db.query("SELECT COUNT(*) AS n FROM vcalloc WHERE rack=%s", (rack,))[0]["n"] == 0
    assert db.query("SELECT COUNT(*) AS n FROM vcnode WHERE rack=%s", (rack,))[0]["n"] == 0
    assert db.query("SELECT COUNT(*) AS n FROM nodes WHERE Rack=%s", (rack,))[0]["n"] == 0
    assert db.query("SELECT COUNT(*) AS n FROM nodes WHERE Rack=%s", (other,))[0]["n"] == 1
    # the other cluster's disk and seed stay; this one's are gone, and its key pair
    assert sorted(os.listdir(cfg.virt.disk_dir)) == ["vt-gateway-%d-0.qcow2" % other,
                                                     "vt-gateway-%d-0.seed.iso" % other]
    assert not os.path.exists(designer.key_dir(cfg, rack))
    assert os.path.exists(designer.key_dir(cfg, other))
    assert "rack %d" % rack not in open(cfg.register.hosts_file).read()
    assert not os.path.exists(designer.dump_path(cfg, rack))
    # stopping again is a no-op that still succeeds
    assert c.stop(rack)["state"] == "stopped"
    c.stop(other)
    assert db.query("SELECT COUNT(*) AS n FROM vcalloc")[0]["n"] == 0
    assert os.listdir(cfg.virt.disk_dir) == []


def test_two_clusters_disjoint(make, db):
    cfg, c, _ = make()
    a, b = reserve(cfg, db), reserve(cfg, db)
    c.start(a)
    c.start(b)
    na = db.query("SELECT mac, ip, public_ip FROM vcnode WHERE rack=%s", (a,))
    nb = db.query("SELECT mac, ip, public_ip FROM vcnode WHERE rack=%s", (b,))
    for key in ("mac", "ip"):
        assert not {n[key] for n in na} & {n[key] for n in nb}
    assert {n["ip"].rsplit(".", 1)[0] for n in na} == {"10.200.0"}
    assert {n["ip"].rsplit(".", 1)[0] for n in nb} == {"10.200.1"}
    iso = db.query("SELECT rack, value FROM vcalloc WHERE kind='isolation' ORDER BY rack")
    assert [i["value"] for i in iso] == ["100", "101"]
    # after a stop, the next cluster reuses the subnet but never a MAC
    c.stop(a)
    d = reserve(cfg, db)
    c.start(d)
    nd = db.query("SELECT mac, ip FROM vcnode WHERE rack=%s", (d,))
    assert {n["ip"].rsplit(".", 1)[0] for n in nd} == {"10.200.0"}
    assert not {n["mac"] for n in nd} & {n["mac"] for n in na}


def test_placement_spreads_over_four_hosts(make, db):
    cfg, c, _ = make(nhosts=4)
    rack = reserve(cfg, db, computes=7, memory_mb="1024")
    c.start(rack)
    per = {}
    for n in db.query("SELECT host FROM vcnode WHERE rack=%s", (rack,)):
        per[n["host"]] = per.get(n["host"], 0) + 1
    assert per == {"h1": 2, "h2": 2, "h3": 2, "h4": 2}
    for h in ("h1", "h2", "h3", "h4"):
        assert len(c.host(h).list_domains("vt-")) == 2
        assert c.host(h).network_exists("vt-net%d" % rack)
    # a second cluster goes where memory is free
    r2 = reserve(cfg, db, computes=3, memory_mb="1024")
    c.start(r2)
    per2 = sorted(n["host"] for n in db.query("SELECT host FROM vcnode WHERE rack=%s", (r2,)))
    assert per2 == ["h1", "h2", "h3", "h4"]
    c.stop(rack)
    for h in ("h1", "h2", "h3", "h4"):
        assert not [d for d in c.host(h).list_domains("vt-") if "-%d-" % rack in d]


def test_failed_step_leaves_failed_then_retry_and_stop(make, db):
    cfg, c, rec = make(fail_on="create")
    rack = reserve(cfg, db)
    with pytest.raises(vctl.ClusterError, match="start failed at step disks"):
        c.start(rack)
    r = R.get(db, rack)
    assert r["state"] == "failed" and "simulated failure" in r["error"]
    # fixed: start again continues from where it stopped
    rec.fail_on = None
    assert c.start(rack)["state"] == "running"
    assert R.get(db, rack)["error"] is None
    events = [e["reason"] for e in R.get(db, rack)["events"]]
    assert any(e.startswith("retry start after: start failed at step disks") for e in events)
    c.stop(rack)
    assert count_rows(db)["vcalloc"] == 0


def test_failed_cluster_can_be_stopped_and_deleted(make, db):
    cfg, c, rec = make(fail_on="create")
    rack = reserve(cfg, db)
    with pytest.raises(vctl.ClusterError):
        c.start(rack)
    # a failed cluster holds resources: delete waits for the stop, which then deletes it
    assert R.delete(cfg, db, rack, NOW, "bob") == "failed"
    assert c.stop(rack)["state"] == "deleted"
    assert count_rows(db)["vcregist"] == 0 and count_rows(db)["vcalloc"] == 0
    assert c.host("h1").list_networks("vt-") == []


def test_forced_early_start_needs_capacity(make, db):
    cfg, c, _ = make()
    later = reserve(cfg, db, start="2026-12-01T02:00Z", end="2026-12-01T04:00Z")
    c.start(later)
    assert R.get(db, later)["start"] == NOW
    # a cluster booked after another must not be forced on while the other holds the capacity
    r1 = reserve(cfg, db, start="2026-12-01T05:00Z", end="2026-12-01T06:00Z", computes=5,
                 memory_mb="256")
    with pytest.raises(VcError, match="refused: not enough"):
        c.start(r1)
    assert R.get(db, r1)["state"] == "reserved"


def test_stop_before_the_start_cancels(make, db):
    cfg, c, _ = make()
    rack = reserve(cfg, db, start="2026-12-01T03:00Z", end="2026-12-01T05:00Z")
    assert c.stop(rack) == {"rack": rack, "state": "stopped", "changed": True}
    r = R.get(db, rack)
    assert r["state"] == "stopped" and r["start"] == NOW and r["end"] == NOW
    assert count_rows(db)["vcalloc"] == 0


def test_ended_and_invalid_starts(make, db):
    cfg, c, _ = make()
    rack = reserve(cfg, db)
    R.stop_now(cfg, db, rack, NOW, "bob")
    with pytest.raises(VcError, match="is stopped: cannot start"):
        c.start(rack)
    with pytest.raises(VcError, match="no such reservation"):
        c.start(9999)


def test_dry_run_changes_nothing(make, db):
    cfg, c, rec = make()
    rack = reserve(cfg, db)
    before = count_rows(db)
    plan, xmls = readout.plan_preview(c, rack)
    assert [n.ip for n in plan.nodes] == ["10.200.0.2", "10.200.0.3", "10.200.0.4"]
    assert len(xmls) == 3 and "<domain type=\"qemu\">" in xmls[0].replace("'", '"')
    assert count_rows(db) == before and rec.calls == []
    assert c.host("h1").list_domains("vt-") == []


def test_domain_xml_golden(make, db):
    """The gateway of a cluster with a (ready) iSCSI volume: COW disk, the LUN as a network
    disk, one NIC, the context on the kernel command line."""
    cfg, c, _ = make(virt={"kernel": "/guest/vmlinux", "initrd": "/guest/initrd.img"})

    def target(cur):
        cur.execute("INSERT INTO vciscsitarget (name, address, created_at) VALUES "
                    "('t1', '192.0.2.7', '2026-01-01')")

    db.transaction(target)
    rack = reserve(cfg, db, volumes=["/data:t1:10"])
    db.transaction(lambda cur: cur.execute(
        "UPDATE vciscsi SET iqn = 'iqn.2026-11.vc.frontend:rackR.data', lun = 1, "
        "state = 'ready' WHERE rack = %s", (rack,)))
    plan, xmls = readout.plan_preview(c, rack)
    out = {}
    for name, x in (("ctl-gateway.xml", xmls[0]), ("ctl-compute.xml", xmls[1])):
        out[name] = re.sub(r"(?<=[-=\"a-z])(?<!=-)%d(?=[-\" ])" % rack, "R",
                           x.replace(cfg.site.state_dir, "/STATE"))
    for name, text in out.items():
        assert_golden(name, text)
    assert "vc.nfs_mount=10.200.0.2:/data:/data" in out["ctl-compute.xml"]
    assert "protocol=\"iscsi\"" in out["ctl-gateway.xml"]
    assert "protocol" not in out["ctl-compute.xml"]


def test_rocks_registrar_commands(make, db):
    cfg, c, rec = make(register={"registrar": "rocks"})
    rack = reserve(cfg, db, computes=1)
    c.start(rack)
    ie = [a for a in rec.calls if a[0] == "/opt/rocks/sbin/insert-ethers"]
    assert [a[1] for a in ie] == ['--hostname=gateway-%d-0' % rack,
                                  '--hostname=compute-%d-0' % rack, "--update"]
    assert ie[1] == ["/opt/rocks/sbin/insert-ethers", "--hostname=compute-%d-0" % rack,
                     "--rack=%d" % rack, "--rank=0", "--cpus=1", "--appliance=Compute",
                     "--mac=52:54:00:00:00:02", "--device=eth0", "--module=virtio_net",
                     "--ipaddr=10.200.0.3", "--netmask=255.255.255.0", "--norestart", "--batch"]
    rec.calls.clear()
    c.stop(rack)
    ie = [a[1:] for a in rec.calls if a[0] == "/opt/rocks/sbin/insert-ethers"]
    assert ie == [["--remove", "gateway-%d-0" % rack], ["--remove", "compute-%d-0" % rack],
                  ["--update"]]


def test_status_reports_libvirt_state(make, db):
    cfg, c, _ = make()
    rack = reserve(cfg, db, computes=1)
    c.start(rack)
    c.host("h1").destroy("vt-compute-%d-0" % rack)
    st = {r["name"]: r["libvirt"] for r in readout.status(c, rack)}
    assert st == {"gateway-%d-0" % rack: "running", "compute-%d-0" % rack: "shutoff"}


def test_vxlan_segment_over_hosts_one_dhcp_server(make, db):
    """Two hosts joined by VXLAN: the isolation backend runs on each host's executor, only the
    gateway's host serves DHCP (and has .1), the other gets a bare bridge; stop removes it."""
    calls, links = {}, {}

    def host_exec(name):
        def run(argv):
            calls.setdefault(name, []).append(argv)
            return json.dumps(links.get(name, [])) if "-j" in argv else ""
        return run

    cfg, c, _ = make(nhosts=2, host_exec=host_exec, network={"isolation": "vxlan"},
                     **{"host:h1": {"underlay_ip": "192.168.250.1"},
                        "host:h2": {"underlay_ip": "192.168.250.2"}})
    rack = reserve(cfg, db, computes=1, memory_mb="2048")
    c.start(rack)
    hosts = {r["name"]: r["host"] for r in db.query("SELECT name, host FROM vcnode")}
    assert sorted(hosts.values()) == ["h1", "h2"]
    gw_host = hosts["gateway-%d-0" % rack]
    other = ({"h1", "h2"} - {gw_host}).pop()
    vni = db.query("SELECT value FROM vcalloc WHERE kind='isolation'")[0]["value"]
    for h, peer in (("h1", "192.168.250.2"), ("h2", "192.168.250.1")):
        flat = [" ".join(a) for a in calls[h]]
        assert any("type vxlan id %s" % vni in a and "vtvx%s" % vni in a for a in flat), flat
        assert any("fdb append 00:00:00:00:00:00 dev vtvx%s dst %s" % (vni, peer) in a
                   for a in flat), flat
    net = "vt-net%d" % rack
    assert len(c.host(gw_host).dhcp_hosts(net)) == 2
    assert c.host(other).dhcp_hosts(net) == []
    xml = c.host(other).conn.networkLookupByName(net).XMLDesc(0)
    assert "<ip" not in xml and "<mtu size='1450'/>" in xml
    # what the hosts now show (VC's VXLAN port, in VC's link group, on the cluster bridge)
    for h in ("h1", "h2"):
        links[h] = [{"ifname": "vtvx%s" % vni, "group": "30307", "master": "vtbr%d" % rack,
                     "mtu": 1450, "linkinfo": {"info_kind": "vxlan"}}]
    calls.clear()
    c.stop(rack)
    for h in ("h1", "h2"):
        assert ["ip", "link", "del", "dev", "vtvx%s" % vni] in calls[h], calls[h]


ISOLATION = {
    "none": {"network": {"isolation": "none"}},
    "vxlan": {"network": {"isolation": "vxlan"}, "host:h1": {"underlay_ip": "192.0.2.1"},
              "host:h2": {"underlay_ip": "192.0.2.2"}},
    "8021q": {"network": {"isolation": "8021q", "trunk_nic": "eth1"}},
    "ovs": {"network": {"isolation": "ovs", "ovs_bridge": "br-vc"}},
}


@pytest.mark.parametrize("registrar", ["builtin", "rocks"])
@pytest.mark.parametrize("isolation", sorted(ISOLATION))
@pytest.mark.parametrize("storage", ["tgt", "targetcli"])
def test_start_and_stop_with_every_backend(make, db, storage, isolation, registrar):
    """Every backend the configuration can name is built by the factories a start uses and runs
    a whole start and stop (test driver; recording executors for the target and the hosts).
    ``[storage] backend = targetcli`` once failed here with a TypeError (``control_port``)."""
    from fakes import RecordingExecutor
    from test_isolation import FakeHost, FakeOvsHost

    targets, hosts, rack = [], {}, None

    def host_exec(name):
        if name not in hosts:
            # the host's trunk NIC and the cluster bridge its libvirt network made
            links = {"eth1": FakeHost._link("eth1", None, up=True),
                     "vtbr%d" % rack: FakeHost._link("vtbr%d" % rack, "bridge", up=True)}
            hosts[name] = FakeOvsHost(name, links=links, bridges=("br-vc",)) \
                if isolation == "ovs" else FakeHost(name, links=links)
        return hosts[name]

    def target_exec(t):
        targets.append(RecordingExecutor(t.name, is_target=True, outputs={
            ("df",): "  Avail\n%d\n" % (100 * 1024 ** 3)}))
        return targets[-1]

    over = {"storage": {"backend": storage}, "register": {"registrar": registrar,
                                                          "insert_ethers": "/x/insert-ethers"}}
    for section, kv in ISOLATION[isolation].items():
        over.setdefault(section, {}).update(kv)
    if isolation != "none":
        over["addresses"] = {"isolation_ids": "100-200"}
    # ovs across hosts is proved for real (tests/real/test_ovs_real.py); on two test-driver
    # hosts its second host's domain is intermittently "not found" right after define (NOTES)
    nhosts = 1 if isolation == "ovs" else 2
    if storage == "targetcli":  # LIO ACLs name initiators by IQN
        for i in range(nhosts):
            over.setdefault("host:h%d" % (i + 1), {})["initiator"] = "iqn.2026-11.vc.test:h%d" % (
                i + 1)
    cfg, _, rec = make(nhosts=nhosts, **over)
    c = vctl.Ctl(cfg, db, execute=rec, clock=lambda: NOW, actor="test", target_exec=target_exec,
                 host_exec=host_exec)
    db.transaction(lambda cur: cur.execute(
        "INSERT INTO vciscsitarget (name, address, host_key_fingerprint, created_at) VALUES "
        "('t1', '192.0.2.7', 'SHA256:x', '2026-01-01')"))
    rack = reserve(cfg, db, computes=3, memory_mb="1024", volumes=["/data:t1:2"])
    assert c.start(rack)["state"] == "running"
    assert R.get(db, rack)["state"] == "running"
    assert db.query("SELECT state FROM vciscsi WHERE rack=%s", (rack,))[0]["state"] == "ready"
    cmds = [" ".join(a) for t in targets for a in t.calls]
    assert any(("tgtadm" if storage == "tgt" else "targetcli") in x for x in cmds), cmds
    if isolation == "vxlan":
        # the cluster spans both hosts: each got its VXLAN port
        assert all(any("vxlan" in " ".join(a) for a in h.calls) for h in hosts.values())
    assert {n["host"] for n in db.query("SELECT host FROM vcnode WHERE rack=%s", (rack,))} == {
        "h1", "h2"}.intersection("h%d" % (i + 1) for i in range(nhosts))
    if registrar == "rocks":
        assert any(a[0] == "/x/insert-ethers" for a in rec.calls)
    assert c.stop(rack)["state"] == "stopped"
    assert db.query("SELECT COUNT(*) AS n FROM vcnode WHERE rack=%s", (rack,))[0]["n"] == 0


def test_readiness_booting_up_late(make, db):
    """A node is booting until its guest answers (the probe), up after, late past
    ready_timeout (with an event); the cluster is ready when every node is up."""
    from datetime import timedelta

    from vc import ready

    clock = [NOW]
    cfg, _, rec = make(virt={"ready_timeout": "60"})
    answering = set()
    c = vctl.Ctl(cfg, db, execute=rec, clock=lambda: clock[0], actor="test",
                 probe=lambda ip: ip in answering)
    rack = reserve(cfg, db)
    c.start(rack)
    assert set(ready.observe(c, rack).values()) == {"booting"}
    assert R.get(db, rack)["ready"] is False
    answering.update({"10.200.0.2", "10.200.0.3"})
    with pytest.raises(VcError, match=r"not ready: booting: compute-%d-1" % rack):
        c.wait_ready(rack, timeout=0.2)
    clock[0] = NOW + timedelta(seconds=61)
    got = ready.observe(c, rack)
    assert got == {"gateway-%d-0" % rack: "up", "compute-%d-0" % rack: "up",
                   "compute-%d-1" % rack: "late"}
    assert ready.summary(got) == "late: compute-%d-1" % rack
    assert any("ready: compute-%d-1 not up within 60s" % rack in e["reason"]
               for e in R.get(db, rack)["events"])
    answering.add("10.200.0.4")
    assert set(c.wait_ready(rack, timeout=1).values()) == {"up"}
    assert R.get(db, rack)["ready"] is True


def test_seed_of_each_node(make, db):
    """Every node's seed holds its name, addresses and root's keys (the owner's and the
    cluster's); the gateway also the cluster's private key and its public NIC."""
    from vc import keys, seed, sshkeys

    cfg, c, _ = make()
    _, owner_key = sshkeys.cluster_keypair("bob@laptop")
    keys.add(db, "bob", owner_key)
    rack = reserve(cfg, db, computes=1)
    c.start(rack)
    gw = seed.read_iso(designer.seed_path(cfg, "gateway-%d-0" % rack))
    cp = seed.read_iso(designer.seed_path(cfg, "compute-%d-0" % rack))
    assert "local-hostname: gateway-%d-0" % rack in gw["meta-data"]
    assert owner_key in gw["user-data"] and owner_key in cp["user-data"]
    assert "BEGIN OPENSSH PRIVATE KEY" in gw["user-data"]
    assert "PRIVATE KEY" not in cp["user-data"]
    assert "198.51.100.10/24" in gw["network-config"] and "eth1" not in cp["network-config"]
    assert "10.200.0.3 compute-%d-0" % rack in gw["user-data"].replace(".vc.internal", "")
    pub = open(os.path.join(designer.key_dir(cfg, rack), "id_ed25519.pub")).read().strip()
    assert pub in cp["user-data"]
    assert os.stat(designer.key_dir(cfg, rack)).st_mode & 0o777 == 0o700
    # a resumed start keeps the cluster's key pair
    c.start(rack)
    assert open(os.path.join(designer.key_dir(cfg, rack), "id_ed25519.pub")).read().strip() == pub


def test_stop_while_the_rack_is_busy_is_recorded(make, db, monkeypatch):
    """A stop asked for while another process works on the rack is not lost: the reservation
    ends now at once (the tick stops the cluster when it is due), and the stop is carried out
    here as soon as the lock frees within ``wait``."""
    import threading

    cfg, c, _ = make()
    rack = reserve(cfg, db)
    c.start(rack)
    hold = vctl.Ctl(cfg, db, clock=lambda: NOW, actor="other")
    with hold.locked(rack):
        with pytest.raises(vctl.RackBusy):
            c.stop(rack)                                   # wait=0: refused, nothing recorded
        assert R.get(db, rack)["end"] > NOW
        out = c.stop(rack, "stop by root", wait=0.3)      # busy throughout: recorded
        assert out["state"] == "stop recorded"
        assert R.get(db, rack)["end"] == NOW and R.get(db, rack)["state"] == "running"
    # the lock frees while a stop waits: it is carried out
    lk = hold.locked(rack)
    lk.__enter__()
    threading.Timer(0.5, lambda: lk.__exit__(None, None, None)).start()
    assert c.stop(rack, "stop by root", wait=10)["state"] == "stopped"


def test_cluster_key_pair_is_the_databases(make, db):
    """A frontend that finishes another's start (its state_dir does not have the pair) uses the
    pair in the database: a gateway booted by the first still reaches computes booted by the
    second. The private half is sealed there; the stop removes it."""
    import shutil

    from vc import steps

    cfg, c, _ = make()
    rack = reserve(cfg, db, computes=1)
    c.start(rack)
    pub = open(os.path.join(designer.key_dir(cfg, rack), "id_ed25519.pub")).read().strip()
    row = db.query("SELECT public_key, private_sealed FROM vcclusterkey WHERE rack=%s",
                   (rack,))[0]
    assert row["public_key"] == pub and row["private_sealed"].startswith("fernet:")
    assert "PRIVATE KEY" not in row["private_sealed"]
    shutil.rmtree(designer.key_dir(cfg, rack))        # "the other frontend's" state_dir
    assert steps.cluster_key(cfg, rack, db)[1] == pub
    c.stop(rack)
    assert db.query("SELECT COUNT(*) AS n FROM vcclusterkey")[0]["n"] == 0

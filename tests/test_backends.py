"""Every configurable backend, made by the factories a start uses (``make_target_backend``,
``make_isolation``, ``make_registrar``) from a parsed configuration, runs its main verbs against
tests/fakes.py's recording executor: a backend the configuration can name but the factory cannot
build (``[storage] backend = targetcli`` once raised ``TypeError``: ``control_port``) fails here.
"""

import json
from types import SimpleNamespace

import pytest

from conftest import make_cfg
from fakes import RecordingDhcp, RecordingExecutor
from vc.domainxml import InterfaceSpec, IscsiDiskSpec
from vc.iscsi import TargetcliBackend, TgtBackend, make_target_backend
from vc.isolation import OvsInterfaceSpec, make_isolation
from vc.register import BuiltinRegistrar, NodeEntry, RocksRegistrar, make_registrar

GIB = 1024 ** 3
KVM1 = "iqn.2008-11.org.linux-kvm:h1"
IQN = "iqn.2026-11.vc.frontend:rack3.data"
PLAN = SimpleNamespace(rack=3, isolation_id=1003)
HOST = {"uri": "test:///default", "memory_mb": "4096", "vcpus": "8"}


# -- iSCSI target backends --------------------------------------------------------------------

STORE = {
    "file": dict(backing="/srv/vc/vt-rack3-data.img",
                 probe=[["mkdir", "-p", "-m", "700", "/srv/vc"], ["chmod", "700", "/srv/vc"],
                        ["df", "-B1", "--output=avail", "/srv/vc"],
                        ["find", "/srv/vc", "-maxdepth", "1", "-type", "f", "-printf",
                         "%s %m %p\\n"]],
                 grow=["truncate", "-s", ">%d" % (2 * GIB), "/srv/vc/vt-rack3-data.img"],
                 private=[["chmod", "600", "/srv/vc/vt-rack3-data.img"]],
                 listing=("find",), remove=["rm", "-f", "--", "/srv/vc/vt-rack3-data.img"]),
    "lvm": dict(backing="/dev/vg0/vt-rack3-data",
                probe=[["vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_free",
                        "vg0"],
                       ["lvs", "--noheadings", "--units", "b", "--nosuffix", "--separator", " ",
                        "-o", "lv_name,lv_size", "vg0"]],
                grow=["lvcreate", "-y", "-n", "vt-rack3-data", "-L", "%db" % (2 * GIB), "vg0"],
                private=[],
                listing=("lvs",), remove=["lvremove", "-y", "/dev/vg0/vt-rack3-data"]),
}


def target_host():
    """A target host with 100 GiB free and nothing on it yet."""
    return RecordingExecutor("t1", is_target=True, outputs={
        ("df",): "  Avail\n%d\n" % (100 * GIB), ("vgs",): "  %d\n" % (100 * GIB)})


def tgtadm(*args):
    return ["tgtadm", "-C", "7", "--lld", "iscsi"] + [str(a) for a in args]


@pytest.mark.parametrize("backing", ["file", "lvm"])
@pytest.mark.parametrize("backend", ["tgt", "targetcli"])
def test_target_backend(backend, backing):
    st = STORE[backing]
    cfg = make_cfg({"storage": {"backend": backend, "backing": backing, "backing_dir": "/srv/vc",
                                "volume_group": "vg0", "tgt_control_port": "7"},
                    "virt": {"name_prefix": "vt"}})
    ex = target_host()
    be = make_target_backend(cfg, ex)
    assert type(be) is {"tgt": TgtBackend, "targetcli": TargetcliBackend}[backend]
    spec = be.volume_spec(3, "/data", 2)
    assert (spec.iqn, spec.backing, spec.size_gb) == (IQN, st["backing"], 2)

    assert be.ensure_volumes([spec], [KVM1]) == {IQN: True}
    if backend == "tgt":
        show = tgtadm("--mode", "target", "--op", "show")
        state = [show, tgtadm("--mode", "account", "--op", "show")]
        changes = [st["grow"]] + st["private"] + [
                   tgtadm("--mode", "target", "--op", "new", "--tid", 1, "--targetname", IQN),
                   tgtadm("--mode", "logicalunit", "--op", "new", "--tid", 1, "--lun", 1,
                          "--backing-store", st["backing"]),
                   tgtadm("--mode", "target", "--op", "bind", "--tid", 1, "--initiator-name",
                          KVM1)]
    else:
        kind = "fileio" if backing == "file" else "block"
        show = ["targetcli", "ls", "/"]
        state = [show]
        create = (["name=vt-rack3-data", "file_or_dev=" + st["backing"], "write_back=false"]
                  if backing == "file" else ["name=vt-rack3-data", "dev=" + st["backing"]])
        tpg = "/iscsi/%s/tpg1" % IQN
        changes = [st["grow"]] + st["private"] + [
                   ["targetcli", "/backstores/" + kind, "create"] + create,
                   ["targetcli", "/iscsi", "create", IQN],
                   ["targetcli", tpg + "/luns", "create", "/backstores/%s/vt-rack3-data" % kind],
                   ["targetcli", tpg + "/acls", "create", KVM1], ["targetcli", "saveconfig"]]
        assert not any(c[0] == "tgtadm" or "-C" in c for c in ex.calls)
    assert ex.scripts == [st["probe"] + state, changes]  # two execs: probe, batched change

    ex.scripts.clear()
    assert be.show() == ({} if backend == "tgt" else {"backstores": {}, "targets": {}})
    assert ex.scripts == [[show]]

    # the volume's backing store exists now (the listing shows it): remove deletes it
    size = "%d 600 %s\n" % (2 * GIB, st["backing"]) if backing == "file" else \
        "  vt-rack3-data %d\n" % (2 * GIB)
    ex.outputs[st["listing"]] = size
    ex.scripts.clear()
    assert be.remove_volume(spec.iqn, spec.backing) is True
    assert ex.scripts[1] == [st["remove"]] + ([["targetcli", "saveconfig"]]
                                              if backend == "targetcli" else [])

    row = {"iqn": IQN, "address": "192.0.2.7", "iscsi_port": 3261, "lun": be.lun}
    disk = be.disk_spec(row, "vdb")
    assert disk == IscsiDiskSpec(IQN, "192.0.2.7", 3261, be.lun, target="vdb")
    assert "protocol='iscsi'" in disk.to_xml().replace('"', "'")
    # with CHAP credentials: the user, and the libvirt secret named by the IQN
    disk = be.disk_spec(dict(row, chap_user="vc-0123456789ab", chap_secret="fernet:x"), "vdb")
    assert disk == IscsiDiskSpec(IQN, "192.0.2.7", 3261, be.lun, target="vdb",
                                 auth_user="vc-0123456789ab", secret_usage=IQN)
    assert "fernet" not in disk.to_xml()


# -- isolation backends -----------------------------------------------------------------------

LINKS = ["ip", "-d", "-j", "link", "show"]


def ours(port, kind):
    """``ip -d -j link show`` after VC's add: the cluster bridge and its uplink port."""
    return json.dumps([
        {"ifname": port, "group": "30307", "master": "vtbr3", "linkinfo": {"info_kind": kind}},
        {"ifname": "vtbr3", "group": "30307", "linkinfo": {"info_kind": "bridge"}}])


def physical_host(name):
    """A host with only its trunk NIC eth1, answering as iproute2 and ovs-vsctl do."""
    return RecordingExecutor(name, outputs={
        tuple(LINKS): json.dumps([{"ifname": "eth1", "mtu": 1500, "flags": ["UP"]}]),
        ("bridge", "-j", "fdb", "show"): "[]"})


@pytest.mark.parametrize("kind", ["vxlan", "8021q", "none"])
def test_isolation_backend(kind):
    cfg = make_cfg({"network": {"isolation": kind, "trunk_nic": "eth1", "ovs_bridge": "br-vc"},
                    "virt": {"name_prefix": "vt"},
                    "host:h1": dict(HOST, underlay_ip="192.168.250.1"),
                    "host:h2": dict(HOST, underlay_ip="192.168.250.2")})
    be = make_isolation(cfg)
    hosts = {}
    seg = be.segment(cfg, PLAN, ["h1", "h2"], lambda n: hosts.setdefault(n, physical_host(n)))
    nic = be.interface_spec("52:54:00:00:03:01", "vt-net3", seg)
    if kind == "none":
        assert seg is None and be.delete_hosts(cfg) == [] and hosts == {}
        assert nic == InterfaceSpec(mac="52:54:00:00:03:01", network="vt-net3")
        return
    assert [h.name for h in seg.hosts] == ["h1", "h2"] and seg.bridge == "vtbr3"
    assert [h.name for h in be.delete_hosts(cfg)] == ["h1", "h2"]
    done = be.add(seg)
    h1 = hosts["h1"].calls
    if kind == "vxlan":
        assert be.mtu(seg) == 1450
        assert ["ip", "link", "add", "name", "vtvx1003", "group", "30307", "mtu", "1450", "type",
                "vxlan", "id", "1003", "local", "192.168.250.1", "dstport", "4789"] in h1
        assert ["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vtvx1003", "dst",
                "192.168.250.2"] in h1
    elif kind == "8021q":
        assert be.mtu(seg) is None
        assert ["ip", "link", "add", "link", "eth1", "name", "eth1.1003", "group", "30307",
                "type", "vlan", "id", "1003"] in h1
    else:
        raise AssertionError("ovs runs in test_ovs_backend")
    assert ["ip", "link", "add", "name", "vtbr3", "group", "30307", "type", "bridge"] in h1
    assert nic == InterfaceSpec(mac="52:54:00:00:03:01", network="vt-net3")
    assert len(done) == 2 * len(h1[1:])  # every change, on both hosts
    # what add made, as the hosts now show it, is what delete removes
    port = "vtvx1003" if kind == "vxlan" else "eth1.1003"
    for h in hosts.values():
        h.outputs[tuple(LINKS)] = ours(port, "vxlan" if kind == "vxlan" else "vlan")
    assert be.delete(seg) == ["%s: ip link del dev %s" % (h, d) for h in ("h1", "h2")
                              for d in (port, "vtbr3")]


# -- registrars -------------------------------------------------------------------------------

ENTRIES = [NodeEntry(hostname="gateway-3-0", rack=3, rank=0, cpus=1, appliance="Gateway",
                     mac="52:54:00:00:03:01", module="virtio_net", ipaddr="10.200.3.2",
                     netmask="255.255.255.0"),
           NodeEntry(hostname="compute-3-0", rack=3, rank=0, cpus=1, appliance="Compute",
                     mac="52:54:00:00:03:02", module="virtio_net", ipaddr="10.200.3.3",
                     netmask="255.255.255.0")]


@pytest.mark.parametrize("kind", ["builtin", "rocks"])
def test_registrar(kind, db, tmp_path):
    cfg = make_cfg({"register": {"registrar": kind}, "site": {"state_dir": str(tmp_path)}})
    ex, dhcp = RecordingExecutor("frontend"), RecordingDhcp()
    r = make_registrar(cfg, db=db, dhcp=dhcp, execute=ex)
    names = ["gateway-3-0", "compute-3-0"]
    assert r.register(ENTRIES, "vt-net3") == names
    assert r.register(ENTRIES, "vt-net3") == []  # a replay changes nothing
    if kind == "builtin":
        assert isinstance(r, BuiltinRegistrar) and r.dump_argv0 == "insert-ethers"
        assert ex.calls == [] and [c[:3] for c in dhcp.calls] == [
            ("add", "vt-net3", e.mac) for e in ENTRIES] * 2
        with open(tmp_path / "hosts") as f:
            assert f.read() == ("# vc rack 3 begin\n10.200.3.2\tgateway-3-0\n"
                                "10.200.3.3\tcompute-3-0\n# vc rack 3 end\n")
    else:
        argv0 = "/opt/rocks/sbin/insert-ethers"
        assert isinstance(r, RocksRegistrar) and r.dump_argv0 == argv0
        assert [c[:2] for c in ex.calls] == [[argv0, "--hostname=gateway-3-0"],
                                             [argv0, "--hostname=compute-3-0"],
                                             [argv0, "--update"]]
        assert dhcp.calls == [] and (tmp_path / "rocks-applied.json").exists()
    ex.calls.clear()
    assert r.unregister(ENTRIES, "vt-net3") == names
    if kind == "builtin":
        assert [c[0] for c in dhcp.calls[-2:]] == ["remove", "remove"] and dhcp.hosts == {}
        assert (tmp_path / "hosts").read_text() == ""
    else:
        assert ex.calls == [[argv0, "--remove", "gateway-3-0"],
                            [argv0, "--remove", "compute-3-0"], [argv0, "--update"]]


def test_ovs_backend():
    """ovs, made by the same factory: the cluster's DHCP port on its VLAN (on the DHCP host),
    a second add changes nothing, delete removes exactly what add made."""
    from test_isolation import FakeHost, FakeOvsHost

    cfg = make_cfg({"network": {"isolation": "ovs", "ovs_bridge": "br-vc"},
                    "virt": {"name_prefix": "vt"}, "host:h1": HOST})
    be = make_isolation(cfg)
    plan = SimpleNamespace(rack=3, isolation_id=1003, nodes=[SimpleNamespace(
        host="h1", mac="52:54:00:00:03:01", appliance="gateway", name="gateway-3-0")])
    host = FakeOvsHost("h1", links={"vtbr3": FakeHost._link("vtbr3", "bridge", up=True)},
                       bridges=("br-vc",))
    before = host.state()
    seg = be.segment(cfg, plan, ["h1"], lambda n: host)
    nic = be.interface_spec("52:54:00:00:03:01", "vt-net3", seg)
    assert isinstance(nic, OvsInterfaceSpec) and nic.vlan == 1003 and nic.bridge == "br-vc"
    done = be.add(seg)
    assert any("ovs-vsctl" in d for d in done), done
    assert host.ports["vtv1003"]["tag"] == 1003
    assert be.add(seg) == []
    assert be.delete(seg)
    assert host.state()[0].keys() == before[0].keys() and "vtv1003" not in host.ports

"""``[network] isolation = ovs`` for real: tools/ovs.sh's Open vSwitch (userspace datapath), QEMU
guests started by ``vc_ctl``, and namespace hosts that each run an OVS of their own.

**One host** (the root namespace; the OVS tools/ovs.sh starts on /var/run/openvswitch/db.sock,
the one libvirt uses; a per-run OVS bridge): clusters A and B (a gateway and a compute each,
/24 subnets of one pool, seed addresses, dropbear on 22) started with ``vc_ctl start
--wait-ready``, plus namespace "nodes" that are access ports of the same OVS bridge. It shows:
each cluster is a VLAN (every guest port and the DHCP access port tagged with its isolation id,
no Linux bridge of a cluster but its libvirt network's); the nodes of a cluster reach each other
by ping and TCP (ssh and ``nc`` from inside the guests; TCP to port 22 from the host through
the cluster's ``.1`` and from a namespace in the VLAN); the other cluster is unreachable even
from an address in the same subnet (inside B's gateway and from a namespace port in B's VLAN);
DHCP is served on the VLAN only; a frame hand-tagged with A's VLAN id sent from a B port is
dropped; ``vc_vlan.py del`` cuts a running cluster off and ``add`` restores it (both idempotent);
``stop`` leaves no port of the cluster in OVS; a start and a stop killed after each of their
steps in turn are finished by the next run.

**Two namespace hosts**, each with its own ovsdb-server + ovs-vswitchd (separate run dirs) and
OVS bridges, "nodes" that are namespaces on access ports, the clusters' DHCP servers a bridge +
dnsmasq standing in for the libvirt network: one cluster spans both hosts and works (ping, TCP,
DHCP from the other host, the 1446-byte MTU under VXLAN), the other (identical subnet, spanning
the same hosts) stays isolated; for both ``[network] ovs_transport`` values (``vxlan``: VC's
tunnels; ``trunk``: a veth "switch" between the hosts' trunk ports). Plus ``add``/``delete``
killed after each command on real OVS instances, finished by a rerun.

Needs root, libvirtd, the guest (var/guest) and Open vSwitch (tools/ovs.sh installs and starts
it): without them the tests FAIL, never skip. Everything is named with per-run prefixes and
removed at the end, also on failure.
"""

import dataclasses
import ipaddress
import json
import os
import random
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import netns
from conftest import ROOT, TABLES, db_overrides, make_cfg
from realenv import GUEST, RealEnv, virsh
from vc import addresses
from vc import steps as vsteps
from vc.db import Database
from vc.isolation import OVS_KEY, ClusterSegment, OvsBackend, guard_table
from test_usable_real import ssh  # noqa: E402  (the owner's ssh helper)

OVS_SH = os.path.join(ROOT, "tools", "ovs.sh")
VLAN = os.path.join(ROOT, "sbin", "vc_vlan.py")
EMPTY = {"domains": [], "networks": [], "bridges": [], "disks": []}


def _require():
    if os.geteuid() != 0:
        pytest.fail("the Open vSwitch tests need root")
    for tool in ("ip", "busybox", "ssh", "ssh-keygen", "dnsmasq"):
        if not shutil.which(tool):
            pytest.fail("%s is not installed" % tool)
    r = subprocess.run(["bash", OVS_SH, "start"], capture_output=True, text=True, timeout=300)
    if r.returncode:
        pytest.fail("tools/ovs.sh start failed: Open vSwitch cannot run here:\n%s" % r.stderr)
    for tool in ("ovs-vsctl", "ethtool"):
        if not shutil.which(tool):
            pytest.fail("%s is not installed (tools/ovs.sh installs it)" % tool)


def vsctl(*args):
    r = subprocess.run(["ovs-vsctl", "--timeout=30"] + list(args), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def ovs_ports(bridge, host_vsctl=vsctl):
    """{port: {"tag", "trunks", "ids", "mac", "type", "options"}} of one OVS bridge."""
    names = host_vsctl("list-ports", bridge).split()
    out = {}
    for name in names:
        port = json.loads(host_vsctl("--format=json", "--data=json", "--columns=tag,trunks,"
                                     "external_ids", "list", "Port", name))["data"][0]
        iface = json.loads(host_vsctl("--format=json", "--data=json", "--columns=type,options,"
                                      "external_ids", "list", "Interface", name))["data"][0]
        out[name] = {"tag": None if port[0] == ["set", []] else port[0],
                     "trunks": [] if port[1] == ["set", []] else
                     (port[1][1] if isinstance(port[1], list) else [port[1]]),
                     "ids": dict(port[2][1]), "mac": dict(iface[2][1]).get("attached-mac"),
                     "type": iface[0], "options": dict(iface[1][1])}
    return out



def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r


def banner(ip, port=22, timeout=3.0):
    """The first bytes of a TCP server at ip:port, from the root namespace ("" = none)."""
    import socket

    try:
        with socket.create_connection((ip, port), timeout=timeout) as c:
            c.settimeout(timeout)
            return c.recv(64).decode("ascii", "replace").strip()
    except OSError:
        return ""


##################
# One host       #
##################


class OneHost:
    """Clusters A and B on this host's OVS, namespace nodes on the same bridge."""

    def __init__(self, tmp, migrated):
        self.prefix = "o" + uuid.uuid4().hex[:5]
        self.br = self.prefix + "ovs"
        vsctl("add-br", self.br, "--", "set", "bridge", self.br, "datapath_type=netdev")
        self.lab = None
        # the gateways' public network: this run's own (the shared one belongs to other runs)
        self.pub = self.prefix + "pub"
        pub = ipaddress.ip_network(netns.free_subnet(
            ["10.220.%d.0/24" % i for i in random.sample(range(256), 32)]))
        path = os.path.join(tmp, "pub.xml")
        with open(path, "w") as f:
            f.write("<network><name>%s</name><bridge name='%spb' stp='off'/><ip address='%s' "
                    "prefix='24'/></network>" % (self.pub, self.prefix, pub.network_address + 1))
        for args in (("net-define", path), ("net-start", self.pub)):
            r = virsh(*args)
            assert r.returncode == 0, r.stderr
        self.env = RealEnv(tmp, migrated, self.prefix, "10.219.0.0/16", extra={
            "network": {"isolation": "ovs", "ovs_bridge": self.br, "public_network": self.pub},
            "addresses": {"public_pool": "%s-%s" % (pub.network_address + 10,
                                                    pub.network_address + 250)},
            "virt": {"ready_timeout": "120"}})
        self.db = Database(make_cfg(db_overrides(migrated)))

        def wipe(cur):
            for t in TABLES:
                cur.execute("DELETE FROM %s" % t)
            cur.execute("UPDATE vccounter SET value = 0")

        self.db.transaction(wipe)
        self.key = os.path.join(tmp, "id_owner")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bob@laptop", "-f",
                        self.key], check=True)
        ok(self.env.ctl("key", "add", "--owner", "bob", self.key + ".pub"))

    def reserve(self, computes=1):
        r = ok(self.env.ctl("reserve", "--owner", "bob", "--start", "now", "--end", "now+2h",
                            "--computes", str(computes), "--memory", "128", "--disk", "1",
                            "--json"))
        return json.loads(r.stdout)["rack"]

    def plan(self, rack):
        return self.db.transaction(lambda cur: addresses.load(cur, rack))

    def build(self):
        self.a, self.b = self.reserve(), self.reserve()
        t0 = time.monotonic()
        with ThreadPoolExecutor(2) as ex:
            for r in ex.map(lambda rack: self.env.ctl("start", str(rack), "--wait-ready"),
                            (self.a, self.b)):
                ok(r)
        self.start_s = time.monotonic() - t0
        self.pa, self.pb = self.plan(self.a), self.plan(self.b)
        self.shown = {rack: json.loads(ok(self.env.ctl("show", str(rack), "--json")).stdout)
                      for rack in (self.a, self.b)}
        self.gw = {rack: next(n for n in self.shown[rack]["nodes"]
                              if n["appliance"] == "gateway") for rack in (self.a, self.b)}
        self.cp = {rack: next(n for n in self.shown[rack]["nodes"]
                              if n["appliance"] == "compute") for rack in (self.a, self.b)}
        # namespace "nodes" on the same OVS bridge: na, na2 in A's VLAN with addresses of A's
        # subnet; nb in B's VLAN with an address of A's subnet too
        sub = self.pa.subnet
        self.ip = lambda n: str(sub.network_address + n)
        self.lab = netns.Lab()
        # (their ports are named like VC's guest taps, <prefix>-..., so they are guests to the
        # host: its guard keeps its own stack off them)
        va, vb = self.pa.isolation_id, self.pb.isolation_id
        for name, vid, n in (("na", va, 200), ("na2", va, 201), ("nb", vb, 202)):
            self.lab.ovs_node(name, None, self.br, vid, "%s/%d" % (self.ip(n), sub.prefixlen),
                              port="%s-%s" % (self.prefix, name))
        self.dhcp_mac = "52:54:00:%02x:%02x:%02x" % tuple(random.randrange(256)
                                                          for _ in range(3))
        for name, vid in (("da", va), ("db", vb)):
            self.lab.ovs_node(name, None, self.br, vid, mac=self.dhcp_mac,
                              port="%s-%s" % (self.prefix, name))

    def gw_ssh(self, rack, *cmd, timeout=60):
        return ssh(self.key, self.gw[rack]["public_ip"], *cmd, timeout=timeout)

    def vlan(self, action, rack):
        e = dict(os.environ, VC_CONFIG=self.env.conf)
        r = ok(subprocess.run(["/usr/bin/python3", VLAN, action, str(rack), "--json"], env=e,
                              capture_output=True, text=True, timeout=120))
        return json.loads(r.stdout)["commands"]

    def close(self):
        for rack in (getattr(self, "a", None), getattr(self, "b", None)):
            if rack is not None:
                self.env.ctl("stop", str(rack))
        self.env.cleanup()
        virsh("net-destroy", self.pub)
        virsh("net-undefine", self.pub)
        if self.lab is not None:
            self.lab.close()
        for name in vsctl("list-ports", self.br).split():
            vsctl("--if-exists", "del-port", self.br, name)
        vsctl("--if-exists", "del-br", self.br)
        for name in netns.links(None):
            if name.startswith(self.prefix):
                netns.sh(["ip", "link", "del", "dev", name], check=False)
        for family in ("inet", "arp"):  # VC's guard for this prefix (it stays on a real host)
            netns.sh(["nft", "delete", "table", family, guard_table(self.prefix)], check=False)


@pytest.fixture(scope="module")
def one(migrated, tmp_path_factory):
    _require()
    r = virsh("uri")
    if r.returncode:
        pytest.fail("libvirtd does not answer on qemu:///system (tools/virt.sh start): %s"
                    % r.stderr.strip())
    for f in ("vmlinux", "initrd.img"):
        if not os.path.exists(os.path.join(GUEST, f)):
            pytest.fail("test guest missing: %s (tools/make-guest.sh var/guest)"
                        % os.path.join(GUEST, f))
    tmp = str(tmp_path_factory.mktemp("ovs"))
    os.chmod(tmp, 0o755)
    w = None
    try:
        w = OneHost(tmp, migrated)
        w.build()
    except Exception:
        if w is not None:
            w.close()
        raise
    yield w
    w.close()


def test_each_cluster_is_a_vlan_of_the_one_ovs_bridge(one):
    ports = ovs_ports(one.br)
    assert one.pa.subnet.prefixlen == one.pb.subnet.prefixlen == 24
    assert one.pa.isolation_id != one.pb.isolation_id
    for plan in (one.pa, one.pb):
        vid, bridge = plan.isolation_id, "%sbr%d" % (one.prefix, plan.rack)
        # every guest's tap: one access port in the cluster's VLAN
        for n in plan.nodes:
            mine = [p for p in ports.values() if p["mac"] == n.mac]
            assert [(p["tag"], p["trunks"]) for p in mine] == [(vid, [])], (n.name, ports)
        # named by VC (<prefix>-<MAC>: the host's guard keeps its own stack off them)
        for n in plan.nodes:
            name = "%s-%s" % (one.prefix, n.mac.replace(":", "")[-6:])
            assert ports[name]["mac"] == n.mac
        # the DHCP access port: VC's veth to the libvirt network's bridge
        dport = "%sv%d" % (one.prefix, vid)
        assert ports[dport]["tag"] == vid and ports[dport]["ids"] == {OVS_KEY: bridge}
        links = netns.links(None)
        assert links[dport + "b"]["master"] == bridge
        assert links[dport + "b"]["mtu"] == links[bridge]["mtu"] == 1500
        # VC's ports of the cluster: only that one (no tunnel on one host)
        assert [k for k, p in ports.items() if p["ids"].get(OVS_KEY) == bridge] == [dport]
    # one libvirt network (bridge) per cluster, and no other Linux bridge of theirs
    tr = one.env.traces()
    assert len(tr["networks"]) == 2 and len(tr["bridges"]) == 2 and len(tr["domains"]) == 4
    assert one.start_s < 120


def test_nodes_reach_each_other_by_ping_and_tcp(one):
    for rack, plan in ((one.a, one.pa), (one.b, one.pb)):
        for n in plan.nodes:  # the guests report the addresses VC gave them
            assert one.env.wait_ip(n.name) == (n.ip, n.name)
        cp = one.cp[rack]
        # TCP between the guests: root on the gateway logs in to the compute over the VLAN
        r = one.gw_ssh(rack, "ssh", cp["name"], "hostname")
        assert r.returncode == 0 and r.stdout.strip() == cp["name"], (r.stdout, r.stderr)
        r = one.gw_ssh(rack, "ping -c 2 -W 2 %s >/dev/null && echo ok; echo | nc -w 3 %s 22 "
                       "| head -c 16" % (cp["ip"], cp["ip"]))
        assert r.stdout.split() == ["ok", "SSH-2.0-dropbear"], (r.stdout, r.stderr)
        # TCP from the host (the cluster's .1, through the veth into the VLAN)
        for n in plan.nodes:
            assert banner(n.ip).startswith("SSH-2.0-dropbear"), n.name
    # and from a namespace port in A's VLAN
    gwa = one.gw[one.a]["ip"]
    assert one.lab.ping("na", gwa) and one.lab.banner("na", gwa).startswith("SSH-2.0-dropbear")


def test_other_cluster_unreachable_even_from_its_own_subnet(one):
    gwa, cpa = one.gw[one.a]["ip"], one.cp[one.a]["ip"]
    # a port in B's VLAN with an address in A's subnet: nothing of A answers
    with ThreadPoolExecutor(5) as ex:
        pings = ex.map(lambda ip: one.lab.ping("nb", ip, count=2),
                       (gwa, cpa, str(one.pa.bridge_ip)))
        banners = ex.map(lambda ip: one.lab.banner("nb", ip, timeout=2), (gwa, cpa))
        assert list(pings) == [False] * 3 and list(banners) == [""] * 2
    # not even an ARP answer from A's nodes, nor from A's bridge (the host itself may answer
    # for its address on B's own bridge, as every Linux host does for any of its addresses;
    # what nb then sends it is answered into A's VLAN, never back to B)
    assert one.lab.neigh("nb", gwa) is None and one.lab.neigh("nb", cpa) is None
    a_bridge = netns.links(None)["%sbr%d" % (one.prefix, one.a)]["address"]
    assert one.lab.neigh("nb", str(one.pa.bridge_ip)) != a_bridge
    # inside B's gateway, with a second address in A's subnet: its own compute yes, A no
    extra = "%s/%d" % (one.ip(203), one.pa.subnet.prefixlen)
    r = one.gw_ssh(one.b, "ip addr add %s dev eth0; "
                          "ping -c 2 -W 2 %s >/dev/null && echo own-ok; "
                          "ping -c 2 -W 1 %s >/dev/null && echo a-ping; "
                          "echo | nc -w 3 %s 22 | head -c 16; echo; "
                          "ip addr del %s dev eth0" % (extra, one.cp[one.b]["ip"], cpa, cpa,
                                                       extra))
    assert r.stdout.split() == ["own-ok"], (r.stdout, r.stderr)
    # and the same port in A's VLAN does reach A (the check above can fail)
    assert one.lab.ping("na", cpa) and one.lab.banner("na", cpa).startswith("SSH-2.0")


def test_dhcp_is_served_on_the_vlan_only(one):
    net = "%s-net%d" % (one.prefix, one.a)
    entry = "<host mac='%s' ip='%s'/>" % (one.dhcp_mac, one.ip(210))
    r = virsh("net-update", net, "add", "ip-dhcp-host", entry, "--live")
    assert r.returncode == 0, r.stderr
    try:
        assert one.lab.dhcp("db") is None  # B's VLAN: A's dnsmasq never hears it
        assert one.lab.dhcp("da") == one.ip(210)  # A's VLAN: its lease, through the veth
    finally:
        virsh("net-update", net, "delete", "ip-dhcp-host", entry, "--live")


def test_frame_hand_tagged_with_the_other_vlan_is_dropped(one):
    va, vb = one.pa.isolation_id, one.pb.isolation_id
    src = "02:00:00:%02x:%02x:%02x" % tuple(random.randrange(256) for _ in range(3))
    # control: the listener in A's VLAN sees an untagged frame sent from A's VLAN
    assert one.lab.frames_seen("na", "na2", netns.ether_frame(src)) >= 1
    # from B's port, tagged with A's VLAN id: dropped (an access port drops tagged frames)
    assert one.lab.frames_seen("na", "nb", netns.ether_frame(src, vid=va)) == 0
    # and the reverse, tagged with B's id from A's port
    assert one.lab.frames_seen("nb", "na", netns.ether_frame(src, vid=vb)) == 0


def test_vc_vlan_del_cuts_a_running_cluster_off_and_add_restores_it(one):
    a, cpa, gwa = one.a, one.cp[one.a], one.gw[one.a]
    did = one.vlan("del", a)
    vid = one.pa.isolation_id
    assert len(did) == 4, did  # two guest ports, the DHCP access port, the veth
    assert one.vlan("del", a) == []
    ports = ovs_ports(one.br)
    assert not [p for p in ports.values() if p["mac"] in {n.mac for n in one.pa.nodes}]
    assert "%sv%d" % (one.prefix, vid) not in ports
    # cut off: from the host, from a port in its VLAN, and between its own nodes
    with ThreadPoolExecutor(3) as ex:
        host = ex.submit(banner, gwa["ip"], timeout=2)
        port = ex.submit(one.lab.ping, "na", gwa["ip"], count=2)
        r = one.gw_ssh(a, "ping -c 2 -W 1 %s >/dev/null && echo reached; echo | nc -w 2 %s 22 "
                          "| head -c 16" % (cpa["ip"], cpa["ip"]))
        assert host.result() == "" and port.result() is False
    assert r.returncode in (0, 1) and r.stdout.strip() == "", (r.stdout, r.stderr)
    # the other cluster is untouched
    assert banner(one.gw[one.b]["ip"]).startswith("SSH-2.0-dropbear")

    did = one.vlan("add", a)
    assert len(did) == 9, did  # veth: add, 2 x set, ethtool, 2 x up; OVS: 3 ports
    assert one.vlan("add", a) == []
    r = one.gw_ssh(a, "ssh", cpa["name"], "hostname")
    assert r.returncode == 0 and r.stdout.strip() == cpa["name"], (r.stdout, r.stderr)
    assert banner(gwa["ip"]).startswith("SSH-2.0-dropbear")
    assert one.lab.ping("na", gwa["ip"])


def assert_nothing_of(one, plan):
    bridge = "%sbr%d" % (one.prefix, plan.rack)
    ports = ovs_ports(one.br)
    left = [k for k, p in ports.items() if p["ids"].get(OVS_KEY) == bridge
            or p["mac"] in {n.mac for n in plan.nodes}]
    assert left == [], ports
    # the only ports left are the namespace nodes' (and the bridge's own internal port)
    assert all(k in ["%s-%s" % (one.prefix, n) for n in ("na", "na2", "nb", "da", "db")]
               or k == one.br for k in ports), ports
    assert not [n for n in netns.links(None) if n.startswith("%sv" % one.prefix)]
    assert vsctl("list-br").split().count(one.br) == 1
    assert not [b for b in vsctl("list-br").split() if b.startswith(one.prefix)
                and b != one.br]


def test_stop_leaves_nothing_of_the_clusters_in_ovs(one):
    with ThreadPoolExecutor(2) as ex:
        for r in ex.map(lambda rack: one.env.ctl("stop", str(rack)), (one.a, one.b)):
            ok(r)
    for plan in (one.pa, one.pb):
        assert_nothing_of(one, plan)
    assert one.env.traces() == EMPTY
    one.a = one.b = None


def test_start_and_stop_killed_after_each_step_are_finished_by_the_next_run(one):
    """Each run is killed one step later than the one before (vc.steps.START, then STOP), so
    every step's crash is followed by a run that repeats the steps before it on what the crash
    left; the last run finishes."""
    rack = one.reserve(computes=0)
    one.c = rack
    for step in [s.name for s in vsteps.START]:
        r = one.env.ctl("start", str(rack), env={"VC_CRASH_AFTER": step})
        assert r.returncode == -9, (step, r.returncode, r.stderr)
    ok(one.env.ctl("start", str(rack), "--wait-ready"))
    plan = one.plan(rack)
    (gw,) = plan.nodes
    assert one.env.wait_ip(gw.name) == (gw.ip, gw.name)
    assert banner(gw.ip).startswith("SSH-2.0-dropbear")
    ports = ovs_ports(one.br)
    assert [p["tag"] for p in ports.values() if p["mac"] == gw.mac] == [plan.isolation_id]
    bridge = "%sbr%d" % (one.prefix, rack)
    assert [k for k, p in ports.items() if p["ids"].get(OVS_KEY) == bridge] == [
        "%sv%d" % (one.prefix, plan.isolation_id)]
    for step in [s.name for s in vsteps.STOP]:
        r = one.env.ctl("stop", str(rack), env={"VC_CRASH_AFTER": step})
        assert r.returncode == -9, (step, r.returncode, r.stderr)
    ok(one.env.ctl("stop", str(rack)))
    assert_nothing_of(one, plan)
    assert one.env.traces() == EMPTY


##################
# Two hosts      #
##################


class TwoHosts:
    """Namespace hosts h1, h2, each with its own OVS: bridge ``brv`` (VXLAN transport; the
    underlay address on OVS bridge ``phy``) and ``brt`` (trunk transport: a veth "switch"
    ``trk`` between the hosts is a trunk port of it on both)."""

    def __init__(self):
        self.lab = netns.Lab()
        self.p = self.lab.prefix
        self.h1, self.h2 = self.lab.host("h1", forwarding=True), self.lab.host("h2")
        for h in ("h1", "h2"):
            self.lab.ovs(h, bridges=("brv", "brt"), phy=True)
        self.lab.trunk("h1", "h2")
        for h in ("h1", "h2"):
            self.lab.vsctl(h, "add-port", "brt", "trk")
        self._thirds = random.sample(range(256), 8)

    def subnet(self):
        """A new /24 for each test (the clusters of one test share it: identical subnets)."""
        return ipaddress.ip_network("10.78.%d.0/24" % self._thirds.pop())

    def vsctl_of(self, host):
        return lambda *a: self.lab.vsctl(host, *a)


@pytest.fixture(scope="module")
def two():
    _require()
    w = None
    try:
        w = TwoHosts()
    except Exception:
        if w is not None:
            w.lab.close()
        raise
    yield w
    w.lab.close()
    assert netns.cleanup(w.p) == []


def mac():
    return "52:54:00:%02x:%02x:%02x" % tuple(random.randrange(256) for _ in range(3))


@pytest.mark.parametrize("transport", ["vxlan", "trunk"])
def test_one_cluster_spans_two_hosts_the_other_stays_isolated(two, transport):
    sub = two.subnet()
    lab, ip, t = two.lab, (lambda n: str(sub.network_address + n)), transport[0]
    br = "brv" if transport == "vxlan" else "brt"
    be = OvsBackend(br, transport=transport, trunk_nic="trk", name_prefix=two.p)
    va, vb = random.sample(range(100, 4000), 2)
    hosts = [two.h1, two.h2]
    seg_a = ClusterSegment(rack=1, isolation_id=va, bridge=two.p + t + "A", hosts=hosts,
                           port="%sv%d" % (two.p, va), dhcp_host="h1")
    seg_b = ClusterSegment(rack=2, isolation_id=vb, bridge=two.p + t + "B", hosts=hosts,
                           port="%sv%d" % (two.p, vb), dhcp_host="h2")
    mtu = be.mtu(seg_a)
    assert mtu == (1446 if transport == "vxlan" else None)
    a2_mac, b1_mac, b2_mac = mac(), mac(), mac()
    # each cluster's "libvirt network" on its DHCP host: identical subnets and .1; A's dnsmasq
    # also knows b2's MAC (it must not hear it), B's serves b1
    lab.dhcp_server("h1", seg_a.bridge, ip(1) + "/24", [(a2_mac, ip(22)), (b2_mac, ip(42))],
                    mtu=mtu)
    lab.dhcp_server("h2", seg_b.bridge, ip(1) + "/24", [(b1_mac, ip(41))], mtu=mtu)
    added = be.add(seg_a) + be.add(seg_b)
    assert len([c for c in added if "add-port" in c]) == (6 if transport == "vxlan" else 2)
    assert be.add(seg_a) == [] and be.add(seg_b) == []
    # the guests' side, as libvirt makes it: access ports in the cluster's VLAN; where VC's
    # guests compute their own checksums (tunnelled), so do these
    csum = not be.tunnelled(seg_a)
    cidr = lambda n: "%s/24" % ip(n)  # noqa: E731
    for name, host, vid, kw in (("a1", "h1", va, {"cidr": cidr(21)}), ("a2", "h2", va,
                                                                         {"mac": a2_mac}),
                                ("b1", "h1", vb, {"mac": b1_mac}), ("b2", "h2", vb,
                                                                    {"mac": b2_mac})):
        lab.ovs_node(name + t, host, br, vid, mtu=mtu, csum_offload=csum,
                     port="%s-%s%s" % (two.p, name, t), **kw)

    # DHCP across the hosts: a2@h2 from A's server on h1, b1@h1 from B's on h2; b2 not from A
    with ThreadPoolExecutor(3) as ex:
        leases = list(ex.map(lab.dhcp, ["a2" + t, "b1" + t, "b2" + t]))
    assert leases == [ip(22), ip(41), None]
    for node, n in (("a2", 22), ("b1", 41), ("b2", 42)):
        netns.sh(netns.in_ns(lab.node_ns[node + t], ["ip", "addr", "add", cidr(n), "dev",
                                                     "eth0"]))
    checks = [("a1", ip(22), True), ("a2", ip(21), True), ("a2", ip(1), True),
              ("b1", ip(42), True), ("b2", ip(41), True), ("b1", ip(1), True),
              ("a1", ip(41), False), ("b1", ip(21), False),  # same host, same subnet
              ("a1", ip(42), False), ("b2", ip(21), False), ("a2", ip(41), False)]
    with ThreadPoolExecutor(len(checks)) as ex:
        got = list(ex.map(lambda c: lab.ping(c[0] + t, c[1], count=2), checks))
    assert [c for c, g in zip(checks, got) if g != c[2]] == []
    # each cluster's .1 is its own DHCP host's, although both hosts have that address (the
    # other host's stack does not answer on the guests' ports)
    mac_of = lambda h, dev: netns.links(two.lab.host_ns[h])[dev]["address"]  # noqa: E731
    assert lab.neigh("a2" + t, ip(1)) == mac_of("h1", seg_a.bridge)
    assert lab.neigh("b1" + t, ip(1)) == mac_of("h2", seg_b.bridge)
    # TCP across the hosts, full-size segments (MTU accounted for); not to the other cluster
    size = 8 << 20
    assert lab.tcp("a1" + t, "a2" + t, ip(22), size=size)[0] == size
    assert lab.tcp("b2" + t, "b1" + t, ip(41), size=size)[0] == size
    assert lab.tcp("b1" + t, "a2" + t, ip(22), size=1 << 16, timeout=3)[0] == 0
    if mtu:
        assert lab.ping("a1" + t, ip(22), size=mtu - 28)

    ports1 = ovs_ports(br, two.vsctl_of("h1"))
    if transport == "vxlan":
        tun = "%sv%d-%s" % (two.p, va, two.h2.underlay_ip)
        assert ports1[tun]["trunks"] == [va] and ports1[tun]["tag"] is None
        assert ports1[tun]["options"] == {"remote_ip": two.h2.underlay_ip, "key": str(va),
                                          "local_ip": two.h1.underlay_ip}
    else:
        assert not [p for p in ports1.values() if p["type"] == "vxlan"]
    assert ports1[seg_a.port]["tag"] == va and seg_b.port not in ports1

    done = be.delete(seg_a) + be.delete(seg_b)
    assert be.delete(seg_a) == [] and be.delete(seg_b) == []
    assert len(done) == (8 if transport == "vxlan" else 4)
    for h in ("h1", "h2"):
        ports = ovs_ports(br, two.vsctl_of(h))
        assert not [k for k, p in ports.items() if OVS_KEY in p["ids"]], (h, ports)
        links = netns.links(two.lab.host_ns[h])
        assert seg_a.port not in links and seg_b.port not in links
    # the DHCP host's address is gone from the VLAN; across hosts only the trunk still joins
    assert not lab.ping("a2" + t, ip(1), count=1)
    assert lab.ping("a1" + t, ip(22), count=1) == (transport == "trunk")


class CrashAt:
    """An executor that dies after its ``k``-th changing command (a SIGKILL between two)."""

    def __init__(self, execute, k):
        self.execute, self.k, self.n = execute, k, 0

    def __call__(self, argv):
        reading = (argv[:3] == ["ip", "-d", "-j"] or argv[:2] == ["ethtool", "-k"]
                   or argv[:3] == ["nft", "list", "tables"] or "--format=json" in argv)
        out = self.execute(argv)
        if not reading:
            self.n += 1
            if self.n == self.k:
                raise RuntimeError("crash after %s" % argv)
        return out


def test_add_and_delete_killed_after_each_command_are_finished_by_a_rerun(two):
    lab = two.lab
    be = OvsBackend("brv", transport="vxlan", parallel=False)
    vid = random.randrange(100, 4000)
    bridge = two.p + "cr"
    lab.dhcp_server("h1", bridge, "10.79.0.1/24", [])
    seg = ClusterSegment(rack=9, isolation_id=vid, bridge=bridge, hosts=[two.h1, two.h2],
                         port="%sv%d" % (two.p, vid), dhcp_host="h1")
    ns = lab.host_ns["h1"]
    be.add(seg)  # the hosts' guard (it stays) and a first round
    be.delete(seg)

    def snapshot():
        ports = {k: v for k, v in ovs_ports("brv", two.vsctl_of("h1")).items()
                 if k.startswith(seg.port)}
        keep = ("group", "ifalias", "mtu", "master", "inet6_addr_gen_mode", "operstate")
        links = {n: tuple(d.get(k) for k in keep) for n, d in netns.links(ns).items()
                 if n.startswith(seg.port)}
        tx = netns.sh(netns.in_ns(ns, ["ethtool", "-k", seg.port + "b"]), check=False)
        return ports, links, "tx-checksumming: off" in tx.stdout

    pristine = snapshot()
    n = len([c for c in be.add(seg) if c.startswith("h1:")])
    done = snapshot()
    assert done[2] and len(done[0]) == 2 and len(done[1]) == 2
    be.delete(seg)
    assert snapshot() == pristine
    h1 = two.h1
    for k in range(1, n + 1):
        seg.hosts[0] = dataclasses.replace(h1, execute=CrashAt(h1.execute, k))
        with pytest.raises(RuntimeError, match="crash after"):
            be.add(seg)
        seg.hosts[0] = h1
        again = [c for c in be.add(seg) if c.startswith("h1:")]
        assert len(again) <= n - k, (k, again)
        assert snapshot() == done, "add crashed after command %d" % k
        be.delete(seg)
        assert snapshot() == pristine
    be.add(seg)
    m = len([c for c in be.delete(seg) if c.startswith("h1:")])
    be.add(seg)
    for j in range(1, m + 1):
        seg.hosts[0] = dataclasses.replace(h1, execute=CrashAt(h1.execute, j))
        with pytest.raises(RuntimeError, match="crash after"):
            be.delete(seg)
        seg.hosts[0] = h1
        be.delete(seg)
        assert snapshot() == pristine, "delete crashed after command %d" % j
        be.add(seg)
        assert snapshot() == done
    be.delete(seg)
    assert snapshot() == pristine

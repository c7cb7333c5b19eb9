"""The ``vxlan`` isolation backend for real: namespaces as hosts, a QEMU guest, ping.

Topology (every name starts with a per-run prefix ``P``; addresses exist only inside the
namespaces and bridges made here):

- underlay: a switch namespace; two namespace hosts ``h1``, ``h2`` and the root namespace
  (``local``, where libvirtd runs the guest) on a private /24 no route of the machine covers;
- clusters A and B with IDENTICAL subnets (10.77.S.0/24) and VNIs, VC's ``add`` on all 3 hosts;
- on ``local``, cluster A's bridge is a libvirt network with the subnet's .1 and dnsmasq (the
  cluster's one DHCP server), cluster B's is a libvirt network without any address; on ``h1``
  and ``h2`` VC creates both bridges itself;
- nodes: a TCG guest ``g`` in A on ``local`` (DHCP .11) and namespaces a1@h1 .21, a2@h2 .22,
  b0@local .31, b1@h1 .41, b2@h2 .42. The namespace hosts forward IPv4.

It shows: same cluster across hosts reachable; the other cluster unreachable both ways, on the
same and on other hosts, even through a forwarding host; one DHCP server serving the cluster
across hosts but not the other cluster; the MTU; idempotent ``add``; and after ``delete`` no
VXLAN link, VC bridge or FDB entry of ours anywhere.

Needs root, libvirtd (``tools/virt.sh start``) and the guest (``tools/make-guest.sh var/guest``);
without them the tests FAIL, never skip. Everything is removed in the fixture's finalizer, also on
failure.
"""

import dataclasses
import ipaddress
import os
import random
import re
import shutil
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest

import netns
from vc.domainxml import DhcpHost, DomainSpec, InterfaceSpec, NetworkSpec
from vc.isolation import LINK_GROUP, ClusterSegment, VxlanBackend
from vc.virt import Host

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUEST_DIR = os.path.abspath(os.environ.get("VC_GUEST_DIR", os.path.join(ROOT, "var", "guest")))
URI = os.environ.get("VC_TEST_LIBVIRT_URI", "qemu:///system")
BOOT_TIMEOUT = 150.0
GUEST_MAC = "52:54:00:7e:00:11"
A1_MAC, B1_MAC = "52:54:00:7e:00:21", "52:54:00:7e:00:41"


def _require():
    if os.geteuid() != 0:
        pytest.fail("the isolation tests need root (network namespaces, bridges, VXLAN)")
    for tool in ("ip", "bridge", "busybox", "sysctl"):
        if not shutil.which(tool):
            pytest.fail("%s is not installed" % tool)
    for f in ("vmlinux", "initrd.img"):
        if not os.path.exists(os.path.join(GUEST_DIR, f)):
            pytest.fail("test guest missing: %s (run tools/make-guest.sh var/guest)"
                        % os.path.join(GUEST_DIR, f))


class World:
    """Everything the module's tests share (built once: the guest boot takes seconds)."""

    def __init__(self, tmp):
        self.lab = netns.Lab(underlay=netns.free_subnet(netns.ROOT_UNDERLAYS))
        p = self.lab.prefix
        self.prefix = p
        self.host = Host(URI, name="local")
        self.net_a, self.net_b = p + "-netA", p + "-netB"
        self.dom = p + "-g"
        self.console = os.path.join(tmp, "g.console.log")
        self.subnet = ipaddress.ip_network(netns.free_subnet(
            ["10.77.%d.0/24" % i for i in random.sample(range(256), 32)]))
        self.ip = lambda n: str(self.subnet.network_address + n)
        vni = random.randrange(100000, 999000)
        self.backend = VxlanBackend()
        self.seg_a = self.seg_b = None
        self.vni_a, self.vni_b = vni, vni + 1
        self.added = {}

    def build(self):
        lab, p, ip = self.lab, self.prefix, self.ip
        local, h1, h2 = lab.root_host("local"), lab.host("h1"), lab.host("h2")
        hosts = [local, h1, h2]
        # A's one DHCP server on the local host; the namespace a1 and b1 MACs are reserved too:
        # a1 must get its lease across the VXLAN, b1 must not reach the server at all
        self.host.ensure_network(NetworkSpec(
            name=self.net_a, bridge=p + "brA", address=ip(1), prefix=24, mtu=1450,
            hosts=[DhcpHost(GUEST_MAC, ip(11), "g"), DhcpHost(A1_MAC, ip(21), "a1"),
                   DhcpHost(B1_MAC, ip(41), "b1")]))
        # B on this host: a libvirt network without any address (no dnsmasq, no host presence),
        # what a host that is not the cluster's DHCP host gets; NetworkSpec needs an address
        net = ET.Element("network")
        ET.SubElement(net, "name").text = self.net_b
        ET.SubElement(net, "bridge", name=p + "brB", stp="off", delay="0")
        ET.SubElement(net, "mtu", size="1450")
        lnet = self.host.conn.networkDefineXML(ET.tostring(net, encoding="unicode"))
        lnet.create()

        self.seg_a = ClusterSegment(rack=1, isolation_id=self.vni_a, bridge=p + "brA",
                                    hosts=hosts)
        self.seg_b = ClusterSegment(rack=2, isolation_id=self.vni_b, bridge=p + "brB",
                                    hosts=hosts)
        self.added["A"] = self.backend.add(self.seg_a)
        self.added["B"] = self.backend.add(self.seg_b)

        lab.node("a1", "h1", p + "brA", ip(21) + "/24", mac=A1_MAC, mtu=1450)
        lab.node("a2", "h2", p + "brA", ip(22) + "/24", mtu=1450)
        lab.node("b0", "local", p + "brB", ip(31) + "/24", mtu=1450)
        lab.node("b1", "h1", p + "brB", ip(41) + "/24", mac=B1_MAC, mtu=1450)
        lab.node("b2", "h2", p + "brB", ip(42) + "/24", mtu=1450)

        pings = ",".join([ip(21), ip(22), ip(41), ip(31)])
        self.host.define(DomainSpec(
            name=self.dom, memory_mb=128, vcpus=1, kernel=os.path.join(GUEST_DIR, "vmlinux"),
            initrd=os.path.join(GUEST_DIR, "initrd.img"),
            cmdline="console=ttyS0 panic=-1 quiet vc.ping=" + pings,
            interfaces=[InterfaceSpec(GUEST_MAC, network=self.net_a)],
            console_log=self.console))
        self.host.start(self.dom)

    def console_text(self):
        try:
            with open(self.console, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_console(self, pattern, timeout=BOOT_TIMEOUT):
        rx = re.compile(pattern, re.M)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = self.console_text()
            if rx.search(text):
                return text
            if self.host.state(self.dom) != "running":
                break
            time.sleep(0.2)
        raise AssertionError("guest console has no %r after %.0f s:\n%s"
                             % (pattern, timeout, self.console_text()[-2000:]))

    def close(self):
        errors = []
        for fn in (lambda: self.host.destroy(self.dom), lambda: self.host.undefine(self.dom),
                   lambda: self.host.remove_network(self.net_a),
                   lambda: self.host.remove_network(self.net_b)):
            try:
                fn()
            except Exception as e:  # keep cleaning up
                errors.append(e)
        # the VXLAN ports in the root namespace carry no prefix: remove ours by name + group
        root_links = netns.links(None)
        for vni in (self.vni_a, self.vni_b):
            link = root_links.get("vx%d" % vni)
            if link and str(link.get("group")) == str(LINK_GROUP):
                netns.sh(["ip", "link", "del", "dev", "vx%d" % vni], check=False)
        self.lab.close()
        self.host.close()
        leftovers = netns.cleanup(self.prefix)
        assert not leftovers, "left over after cleanup: %s" % leftovers
        if errors:
            raise errors[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    _require()
    tmp = str(tmp_path_factory.mktemp("isolation"))
    os.chmod(tmp, 0o755)  # libvirt's QEMU writes the console log there
    w = None
    try:
        w = World(tmp)
        w.build()
    except Exception:
        if w is not None:
            w.close()
        raise
    yield w
    w.close()


def matrix(lab, checks):
    """Run ``(node, ip, expected)`` pings in parallel; returns the mismatches."""
    with ThreadPoolExecutor(max_workers=len(checks)) as ex:
        got = list(ex.map(lambda c: lab.ping(c[0], c[1]), checks))
    return ["%s -> %s: %s, expected %s" % (n, ip, "ok" if g else "fail", "ok" if e else "fail")
            for (n, ip, e), g in zip(checks, got) if g != e]


def test_add_made_the_segments(world):
    p = world.prefix
    # namespace hosts: VC made both bridges; local host: A and B are libvirt's
    for ns in (world.lab.host_ns["h1"], world.lab.host_ns["h2"]):
        links = netns.links(ns)
        for br, vni in ((p + "brA", world.vni_a), (p + "brB", world.vni_b)):
            assert links[br]["group"] == str(LINK_GROUP)
            assert links[br]["mtu"] == 1450
            assert links[br].get("inet6_addr_gen_mode") == "none"
            vx = links["vx%d" % vni]
            assert vx["master"] == br and vx["mtu"] == 1450
            assert vx["linkinfo"]["info_data"]["id"] == vni
    root = netns.links(None)
    assert root[p + "brA"]["group"] == "default"  # libvirt's, not marked as VC's
    assert root["vx%d" % world.vni_a]["master"] == p + "brA"
    assert root["vx%d" % world.vni_b]["master"] == p + "brB"
    # one flood entry per peer: local -> h1, h2 (learnt unicast entries carry a dst too)
    dsts = sorted(e["dst"] for e in netns.fdb(None) if e.get("ifname") == "vx%d" % world.vni_a
                  and e.get("mac") == "00:00:00:00:00:00")
    assert dsts == sorted([world.lab.hosts["h1"].underlay_ip, world.lab.hosts["h2"].underlay_ip])


def test_add_again_changes_nothing(world):
    assert world.backend.add(world.seg_a) == []
    assert world.backend.add(world.seg_b) == []


def test_same_cluster_reachable_other_cluster_not(world):
    ip = world.ip
    checks = [
        ("a1", ip(22), True), ("a2", ip(21), True),  # A across hosts h1 <-> h2
        ("b1", ip(42), True), ("b2", ip(41), True),  # B across hosts
        ("b0", ip(41), True), ("b1", ip(31), True),  # B local <-> h1
        ("a1", ip(41), False), ("b1", ip(21), False),  # same host h1, same subnet
        ("a1", ip(42), False), ("b2", ip(21), False),  # other host, both directions
        ("a2", ip(31), False), ("b0", ip(22), False),
        ("b1", ip(1), False), ("b2", ip(1), False),  # A's host address, through forwarding hosts
    ]
    assert matrix(world.lab, checks) == []


def test_mtu_is_accounted_for(world):
    # 1422 + 28 = 1450: a full-size frame of the segment crosses the VXLAN
    assert world.lab.ping("a1", world.ip(22), size=1422)


def test_one_dhcp_server_serves_the_cluster_across_hosts(world):
    with ThreadPoolExecutor(2) as ex:
        a1, b1 = ex.map(world.lab.dhcp, ["a1", "b1"])
    assert a1 == world.ip(21)  # from dnsmasq on the local host, over VXLAN
    assert b1 is None  # its MAC is reserved there too, but B's segment does not reach it


def test_qemu_guest(world):
    ip = world.ip
    text = world.wait_console(r"^VC-READY")
    assert "VC-IP eth0 %s " % ip(11) in text
    # libvirt gave the guest's tap the segment's MTU (the network's <mtu>, also the guest's)
    taps = [d for d in netns.links(None).values() if d.get("master") == world.prefix + "brA"
            and (d.get("linkinfo") or {}).get("info_kind") == "tun"]
    assert [t["mtu"] for t in taps] == [1450]
    results = dict(re.findall(r"^VC-PING (\S+) (ok|fail)", text, re.M))
    assert results == {ip(21): "ok", ip(22): "ok", ip(41): "fail", ip(31): "fail"}, text[-1500:]
    # and back to the guest from the namespaces
    assert matrix(world.lab, [("a1", ip(11), True), ("a2", ip(11), True),
                              ("b1", ip(11), False), ("b0", ip(11), False)]) == []


def test_delete_leaves_nothing(world):
    # the guest's pings are done (or it failed): delete under a running guest is fine too
    done = world.backend.delete(world.seg_a) + world.backend.delete(world.seg_b)
    assert len(done) == 2 + 2 * 2 + 2 * 2  # local: 2 ports; h1, h2: 2 ports + 2 bridges each
    assert world.backend.delete(world.seg_a) == [] and world.backend.delete(world.seg_b) == []
    underlay = {h.underlay_ip for h in world.lab.hosts.values()}
    ports = ("vx%d" % world.vni_a, "vx%d" % world.vni_b)
    for name, ns in world.lab.host_ns.items():
        links = netns.links(ns)
        # in the root namespace only ours: other work on the machine may have VXLAN links
        ours = [n for n, d in links.items() if (d.get("linkinfo") or {}).get("info_kind") == "vxlan"
                and (ns is not None or n in ports)]
        assert ours == [], "%s: VXLAN links left: %s" % (name, ours)
        marked = [n for n, d in links.items() if str(d.get("group")) == str(LINK_GROUP)]
        assert marked == [], "%s: VC links left: %s" % (name, marked)
        if ns is not None:
            assert world.prefix + "brA" not in links and world.prefix + "brB" not in links
        flood = [e for e in netns.fdb(ns) if e.get("dst") in underlay or e.get("ifname") in ports]
        assert flood == [], "%s: FDB entries left: %s" % (name, flood)
    # libvirt's bridges are not VC's to delete
    root = netns.links(None)
    assert world.prefix + "brA" in root and world.prefix + "brB" in root
    # and the segment is really gone: A across hosts no longer reachable
    assert matrix(world.lab, [("a1", world.ip(22), False)]) == []


class CrashAt:
    """An executor that dies at its ``k``-th changing command (after running it, like a SIGKILL
    between two commands)."""

    def __init__(self, execute, k):
        self.execute, self.k, self.n = execute, k, 0

    def __call__(self, argv):
        if argv[:3] in (["ip", "-d", "-j"], ["bridge", "-j", "fdb"]):
            return self.execute(argv)
        self.n += 1
        out = self.execute(argv)
        if self.n == self.k:
            raise RuntimeError("crash after %s" % argv)
        return out


def snapshot(ns):
    """What of a namespace host VC's add/del may touch, comparable between runs."""
    keep = ("ifname", "group", "ifalias", "mtu", "master", "inet6_addr_gen_mode")
    links = {n: tuple((k, d.get(k)) for k in keep) + (("up", "UP" in d["flags"]),)
             for n, d in netns.links(ns).items() if n not in ("lo", "und")}
    flood = sorted((e.get("ifname"), e["dst"]) for e in netns.fdb(ns)
                   if e.get("mac") == "00:00:00:00:00:00" and "dst" in e)
    return links, flood


def test_crash_at_every_point_on_a_real_kernel():
    """A real ``add``/``del`` killed after any command is finished by running it again."""
    _require()
    with netns.Lab() as lab:
        h1, h2 = lab.host("h1"), lab.host("h2")
        ns = lab.host_ns["h1"]
        be = VxlanBackend(parallel=False)
        seg = ClusterSegment(rack=5, isolation_id=random.randrange(100000, 999000),
                             bridge=lab.prefix + "br", hosts=[h1, h2])
        pristine = snapshot(ns)
        n = len([a for a in be.add(seg) if a.startswith("h1:")])
        done = snapshot(ns)
        be.delete(seg)
        assert snapshot(ns) == pristine
        for k in range(1, n + 1):
            seg.hosts[0] = dataclasses.replace(h1, execute=CrashAt(h1.execute, k))
            with pytest.raises(RuntimeError, match="crash after"):
                be.add(seg)
            seg.hosts[0] = h1
            assert len([a for a in be.add(seg) if a.startswith("h1:")]) == n - k
            assert snapshot(ns) == done, "add crashed after command %d" % k
            be.delete(seg)
            assert snapshot(ns) == pristine
        be.add(seg)
        for k in (1, 2):
            seg.hosts[0] = dataclasses.replace(h1, execute=CrashAt(h1.execute, k))
            with pytest.raises(RuntimeError, match="crash after"):
                be.delete(seg)
            seg.hosts[0] = h1
            be.delete(seg)
            assert snapshot(ns) == pristine, "delete crashed after command %d" % k
            be.add(seg)
        be.delete(seg)
        assert snapshot(ns) == pristine

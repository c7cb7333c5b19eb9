#!/usr/bin/env python3
"""The cost of ``vc_vlan.py add|del`` (vxlan and ovs backends) over 1, 2 and 4 hosts, and the data
plane of a cluster's segment: ping latency and TCP throughput node<->node, OVS against vxlan.

The hosts are network namespaces on a private underlay (tests/real/netns.py), so a "remote"
command costs what a local ``ip``/``bridge``/``ovs-vsctl`` costs; over SSH add one round trip
per command (the tables show how many commands each host runs). For each host count: ``add`` on
fresh hosts, ``add`` again (nothing to do: only the queries), ``del``; median (and min-max) of
``--runs``.

- ``vxlan``: both with the hosts handled in parallel (VC's default) and one after the other.
- ``ovs``: every namespace host runs its own ovsdb-server + ovs-vswitchd (tools/ovs.sh,
  userspace datapath), ``ovs_transport = vxlan``; the cluster's DHCP host (h1) has the cluster's
  bridge (what its libvirt network is), so ``add`` makes the veth + access port there and a
  tunnel per peer on every host.
- data plane: node namespaces on the cluster's segment, same host and across two hosts; ping
  (busybox, 20 x 0.2 s, avg) and one TCP stream (Python sockets, 64 MiB); OVS nodes across
  hosts compute their own checksums, as VC's guests do there.

Needs root. Everything it makes is named with a random prefix and removed at the end.

    .venv/bin/python bench/network.py [--runs 5] [--hosts 1,2,4] [--no-dataplane]
"""

import argparse
import os
import re
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "real"))

import netns  # noqa: E402
from vc.isolation import ClusterSegment, OvsBackend, VxlanBackend  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def fmt(samples):
    ms = [s * 1000 for s in samples]
    return "%7.1f (%5.1f-%5.1f)" % (statistics.median(ms), min(ms), max(ms))


def bench(lab, n, runs, parallel, vni):
    hosts = [lab.hosts["h%d" % i] for i in range(1, n + 1)]
    seg = ClusterSegment(rack=1, isolation_id=vni, bridge=lab.prefix + "br", hosts=hosts)
    be = VxlanBackend(parallel=parallel)
    add, readd, delete, cmds = [], [], [], None
    for _ in range(runs):
        t, done = timed(lambda: be.add(seg))
        add.append(t)
        cmds = len(done) // n
        t, again = timed(lambda: be.add(seg))
        assert again == [], again
        readd.append(t)
        t, gone = timed(lambda: be.delete(seg))
        assert len(gone) == 2 * n, gone
        delete.append(t)
    return add, readd, delete, cmds


def bench_ovs(lab, n, runs, vid):
    hosts = [lab.hosts["h%d" % i] for i in range(1, n + 1)]
    seg = ClusterSegment(rack=1, isolation_id=vid, bridge=lab.prefix + "br", hosts=hosts,
                         port="%sv%d" % (lab.prefix, vid), dhcp_host="h1")
    be = OvsBackend("brv", transport="vxlan", name_prefix=lab.prefix)
    be.add(seg)  # the hosts' guard table (made once per host, it stays)
    be.delete(seg)
    add, readd, delete, cmds = [], [], [], {}
    for _ in range(runs):
        t, done = timed(lambda: be.add(seg))
        add.append(t)
        cmds = {h.name: len([c for c in done if c.startswith(h.name + ":")]) for h in hosts}
        t, again = timed(lambda: be.add(seg))
        assert again == [], again
        readd.append(t)
        t, gone = timed(lambda: be.delete(seg))
        delete.append(t)
    return add, readd, delete, cmds


def ping_avg(lab, node, ip):
    """Average round trip in ms of 20 pings 0.2 s apart (None: no answer)."""
    r = netns.sh(netns.in_ns(lab.node_ns[node], ["busybox", "ping", "-c", "20", "-i", "0.2",
                                                 "-q", ip]), check=False)
    m = re.search(r"min/avg/max = [\d.]+/([\d.]+)/", r.stdout)
    return float(m.group(1)) if m else None


def dataplane(lab, kind, nodes):
    """[(path, ping ms, Gbit/s)] for the node pairs ``nodes``: {path: (src, dst, dst ip)}."""
    rows = []
    for path, (src, dst, ip) in nodes.items():
        lab.ping(src, ip, count=1)  # ARP and the datapath's flows in place first
        ms = ping_avg(lab, src, ip)
        size = 64 << 20
        got, secs = lab.tcp(src, dst, ip, size=size, timeout=60)
        assert got == size, (kind, path, got)
        rows.append((kind, path, ms, size * 8 / secs / 1e9))
    return rows


def vxlan_dataplane():
    with netns.Lab() as lab:
        hosts = [lab.host("h1", forwarding=False), lab.host("h2", forwarding=False)]
        seg = ClusterSegment(rack=1, isolation_id=300001, bridge=lab.prefix + "br",
                             hosts=hosts)
        VxlanBackend().add(seg)
        lab.node("a1", "h1", seg.bridge, "10.81.0.1/24", mtu=1450)
        lab.node("a2", "h1", seg.bridge, "10.81.0.2/24", mtu=1450)
        lab.node("a3", "h2", seg.bridge, "10.81.0.3/24", mtu=1450)
        return dataplane(lab, "vxlan", {"same host": ("a1", "a2", "10.81.0.2"),
                                        "across hosts": ("a1", "a3", "10.81.0.3")})


def ovs_dataplane():
    with netns.Lab() as lab:
        for h in ("h1", "h2"):
            lab.host(h, forwarding=False)
            lab.ovs(h, bridges=("brv",), phy=True)
        p = lab.prefix
        hosts = [lab.hosts["h1"], lab.hosts["h2"]]
        netns.sh(netns.in_ns(lab.host_ns["h1"], ["ip", "link", "add", p + "br", "type",
                                                 "bridge"]))
        one = ClusterSegment(rack=1, isolation_id=301, bridge=p + "br", hosts=hosts[:1],
                             port=p + "v301", dhcp_host="h1")
        two = ClusterSegment(rack=2, isolation_id=302, bridge=p + "br", hosts=hosts,
                             port=p + "v302", dhcp_host="h1")
        be = OvsBackend("brv", transport="vxlan", name_prefix=p)
        be.add(one)
        be.add(two)
        mtu = be.mtu(two)
        # one host: checksum offload on (the guests keep it); across hosts: off, as VC's
        for name, host, vid, ip, kw in (("a1", "h1", 301, 1, {}), ("a2", "h1", 301, 2, {}),
                                        ("b1", "h1", 302, 1, {"mtu": mtu, "csum_offload": False}),
                                        ("b3", "h2", 302, 3, {"mtu": mtu,
                                                              "csum_offload": False})):
            lab.ovs_node(name, host, "brv", vid, "10.82.0.%d/24" % ip,
                         port="%s-%s" % (p, name), **kw)
        return dataplane(lab, "ovs", {"same host": ("a1", "a2", "10.82.0.2"),
                                      "across hosts": ("b1", "b3", "10.82.0.3")})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hosts", default="1,2,4")
    ap.add_argument("--no-dataplane", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/network.py needs root (network namespaces)")
    counts = [int(x) for x in args.hosts.split(",")]
    lab = netns.Lab()
    try:
        for i in range(1, max(counts) + 1):
            lab.host("h%d" % i, forwarding=False)
        print("vxlan add/del, %d runs, times in ms: median (min-max); commands = changing "
              "commands per host (plus 1-2 queries)" % args.runs)
        print("%-5s %-8s %-22s %-22s %-22s %s" % ("hosts", "mode", "add", "add again (no-op)",
                                                 "del", "commands"))
        for n in counts:
            for parallel in (True, False):
                if n == 1 and not parallel:
                    continue
                add, readd, delete, cmds = bench(lab, n, args.runs, parallel, 200000 + n)
                print("%-5d %-8s %-22s %-22s %-22s %d add, 2 del" % (
                    n, "parallel" if parallel else "serial", fmt(add), fmt(readd), fmt(delete),
                    cmds))
    finally:
        left = lab.close()
    print("cleaned up: %d namespaces" % len(left))

    lab = netns.Lab()
    try:
        for i in range(1, max(counts) + 1):
            lab.host("h%d" % i, forwarding=False)
            lab.ovs("h%d" % i, bridges=("brv",), phy=True)
        netns.sh(netns.in_ns(lab.host_ns["h1"], ["ip", "link", "add", lab.prefix + "br",
                                                 "type", "bridge"]))
        print("\novs add/del (ovs_transport = vxlan, hosts in parallel), %d runs, times in ms; "
              "commands = changing commands on h1 (the DHCP host) / on each other host "
              "(plus 2-3 queries)" % args.runs)
        print("%-5s %-22s %-22s %-22s %s" % ("hosts", "add", "add again (no-op)", "del",
                                             "commands"))
        for n in counts:
            add, readd, delete, cmds = bench_ovs(lab, n, args.runs, 200 + n)
            print("%-5d %-22s %-22s %-22s %d / %d add" % (
                n, fmt(add), fmt(readd), fmt(delete), cmds["h1"], cmds.get("h2", 0)))
    finally:
        left = lab.close()
    print("cleaned up: %d (namespaces, OVS daemons)" % len(left))

    if args.no_dataplane:
        return
    rows = vxlan_dataplane() + ovs_dataplane()
    print("\ndata plane node<->node on one cluster segment (namespaces; ping: 20 x 0.2 s; TCP: "
          "one stream of 64 MiB, Python sockets)")
    print("%-6s %-13s %-12s %s" % ("kind", "path", "ping avg ms", "TCP Gbit/s"))
    for kind, path, ms, gbit in rows:
        print("%-6s %-13s %-12s %.2f" % (kind, path, "%.3f" % ms if ms else "-", gbit))


if __name__ == "__main__":
    main()

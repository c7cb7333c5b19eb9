"""Network-namespace "physical hosts" and "nodes" for the isolation tests and the benchmark.

A :class:`Lab` makes, under one random per-run prefix:

- a switch namespace ``<prefix>-sw`` with a bridge ``und``: the underlay between the hosts;
- host namespaces ``<prefix>-<name>``, each with a veth ``und`` into the switch and an address in
  a private /24 (:data:`UNDERLAY`), which exists only inside these namespaces;
- optionally the root namespace as one more host (:meth:`Lab.root_host`): a veth
  ``<prefix>u`` into the switch, the one address outside the namespaces, on a /24 no route of
  the machine already covers (so nothing can leak towards the machine's own networks);
- node namespaces ``<prefix>-<name>`` with an ``eth0`` whose peer ``<prefix>n<k>`` is a port of a
  host's cluster bridge.

Everything is removed by :meth:`Lab.close` (namespaces by prefix, root links by prefix), which is
safe to call twice and after a failure half way; :func:`cleanup` does the same for a prefix alone.
Hosts are :class:`vc.isolation.HostSide` objects whose executor runs ``ip -n <ns>`` /
``bridge -n <ns>`` (other programs through ``ip netns exec``).
"""

import ipaddress
import json
import os
import subprocess
import sys
import uuid
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from vc.isolation import HostSide  # noqa: E402
from vc.remote import CommandError, run_local  # noqa: E402

UNDERLAY = "192.168.250.0/24"
# candidates for an underlay that includes the root namespace
ROOT_UNDERLAYS = ["192.168.%d.0/24" % i for i in range(250, 240, -1)]


def sh(argv: List[str], check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and r.returncode:
        raise CommandError(argv, r.returncode, r.stderr)
    return r


def netns_execute(ns: Optional[str]):
    """An executor that runs argv in namespace ``ns`` (None: the root namespace)."""
    if ns is None:
        return run_local

    def execute(argv):
        if argv[0] in ("ip", "bridge"):
            return run_local([argv[0], "-n", ns] + list(argv[1:]))
        return run_local(["ip", "netns", "exec", ns] + list(argv))

    return execute


def in_ns(ns: Optional[str], argv: List[str]) -> List[str]:
    return list(argv) if ns is None else ["ip", "netns", "exec", ns] + list(argv)


def links(ns: Optional[str] = None) -> Dict[str, dict]:
    """``ip -d -j link show`` of a namespace: {name: entry}."""
    out = sh(in_ns(ns, ["ip", "-d", "-j", "link", "show"])).stdout
    return {d["ifname"]: d for d in json.loads(out or "[]")}


def fdb(ns: Optional[str] = None) -> List[dict]:
    return json.loads(sh(in_ns(ns, ["bridge", "-j", "fdb", "show"])).stdout or "[]")


def namespaces() -> List[str]:
    out = sh(["ip", "-j", "netns", "list"], check=False).stdout
    return [d["name"] for d in json.loads(out or "[]")]


def cleanup(prefix: str) -> List[str]:
    """Remove every namespace and root-namespace link named ``<prefix>...``. Returns them."""
    gone = []
    for ns in namespaces():
        if ns.startswith(prefix + "-"):
            sh(["ip", "netns", "del", ns], check=False)
            gone.append("netns " + ns)
    for name in links(None):
        if name.startswith(prefix):
            sh(["ip", "link", "del", "dev", name], check=False)
            gone.append("link " + name)
    return gone


def root_routes() -> List[ipaddress.IPv4Network]:
    out = sh(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout
    nets = []
    for r in json.loads(out or "[]"):
        dst = r.get("dst")
        if dst and dst != "default" and r.get("type", "unicast") in ("unicast", "local"):
            try:
                nets.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                pass
    return nets


def free_subnet(candidates: List[str]) -> str:
    """The first candidate no route of the root namespace overlaps."""
    used = root_routes()
    for c in candidates:
        net = ipaddress.ip_network(c)
        if not any(net.overlaps(u) for u in used):
            return c
    raise RuntimeError("no free private /24 among %s" % candidates)


class Lab:
    """One run's namespaces: see the module docstring.

    :param prefix: names start with it (default ``v`` + 5 random hex digits); it must leave
        room for the names of root-namespace links (``<prefix>n12``, 15 characters at most).
    :param underlay: the hosts' /24.
    """

    def __init__(self, prefix: Optional[str] = None, underlay: str = UNDERLAY):
        self.prefix = prefix or "v" + uuid.uuid4().hex[:5]
        self.net = ipaddress.ip_network(underlay)
        self.switch = self.prefix + "-sw"
        self.hosts: Dict[str, HostSide] = {}
        self.host_ns: Dict[str, Optional[str]] = {}
        self.node_ns: Dict[str, str] = {}
        self._n = 0
        self._ns(self.switch)
        sh(in_ns(self.switch, ["ip", "link", "add", "und", "type", "bridge"]))
        sh(in_ns(self.switch, ["ip", "link", "set", "dev", "und", "up"]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _ns(self, ns: str) -> str:
        sh(["ip", "netns", "add", ns])
        sh(["ip", "-n", ns, "link", "set", "dev", "lo", "up"])
        return ns

    def _addr(self) -> str:
        return str(self.net.network_address + len(self.hosts) + 1)

    def _uplink(self, ns: Optional[str], inside: str) -> str:
        """A veth from ``ns`` (None: root) into the switch, with the next underlay address."""
        port = "p%d" % len(self.hosts)
        head = ["ip", "link", "add", inside] + (["netns", ns] if ns else [])
        sh(head + ["type", "veth", "peer", "name", port, "netns", self.switch])
        sh(in_ns(self.switch, ["ip", "link", "set", "dev", port, "master", "und", "up"]))
        addr = self._addr()
        sh(in_ns(ns, ["ip", "addr", "add", "%s/%d" % (addr, self.net.prefixlen),
                      "dev", inside]))
        sh(in_ns(ns, ["ip", "link", "set", "dev", inside, "up"]))
        return addr

    def host(self, name: str, forwarding: bool = True) -> HostSide:
        """A namespace host on the underlay. With ``forwarding`` it routes IPv4 (so the tests
        show that a host cannot be a path between clusters even when it forwards)."""
        ns = self._ns("%s-%s" % (self.prefix, name))
        addr = self._uplink(ns, "und")
        if forwarding:
            sh(in_ns(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
        h = HostSide(name=name, execute=netns_execute(ns), underlay_ip=addr)
        self.hosts[name], self.host_ns[name] = h, ns
        return h

    def root_host(self, name: str = "local") -> HostSide:
        """The root namespace as a host: the one that runs libvirt's guests."""
        addr = self._uplink(None, self.prefix + "u")
        h = HostSide(name=name, execute=run_local, underlay_ip=addr)
        self.hosts[name], self.host_ns[name] = h, None
        return h

    def node(self, name: str, host: str, bridge: str, cidr: Optional[str] = None,
             mac: Optional[str] = None, mtu: Optional[int] = None) -> str:
        """A node namespace whose ``eth0`` is a port of ``bridge`` on ``host``."""
        ns = self._ns("%s-%s" % (self.prefix, name))
        self._n += 1
        hside = "%sn%d" % (self.prefix, self._n)
        hns = self.host_ns[host]
        head = ["ip", "link", "add", hside] + (["netns", hns] if hns else [])
        sh(head + ["type", "veth", "peer", "name", "eth0", "netns", ns])
        hopts = ["mtu", str(mtu)] if mtu else []
        sh(in_ns(hns, ["ip", "link", "set", "dev", hside, "master", bridge] + hopts + ["up"]))
        nopts = (["address", mac] if mac else []) + (["mtu", str(mtu)] if mtu else [])
        if nopts:
            sh(in_ns(ns, ["ip", "link", "set", "dev", "eth0"] + nopts))
        if cidr:
            sh(in_ns(ns, ["ip", "addr", "add", cidr, "dev", "eth0"]))
        sh(in_ns(ns, ["ip", "link", "set", "dev", "eth0", "up"]))
        self.node_ns[name] = ns
        return ns

    def ping(self, node: str, ip: str, count: int = 3, size: Optional[int] = None) -> bool:
        """Whether ``node`` gets any answer from ``ip`` (busybox ping: no iputils here)."""
        argv = ["busybox", "ping", "-c", str(count), "-W", "1", "-q"]
        if size:
            argv += ["-s", str(size)]
        return sh(in_ns(self.node_ns[node], argv + [ip]), check=False).returncode == 0

    def dhcp(self, node: str, tries: int = 3) -> Optional[str]:
        """The address a DHCP server on the node's segment offers it (None: no lease). The
        address is not configured (``-s /bin/true``)."""
        r = sh(in_ns(self.node_ns[node], ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f",
                                          "-t", str(tries), "-T", "1", "-s", "/bin/true"]),
               check=False)
        for line in (r.stdout + r.stderr).splitlines():
            if "lease of " in line and " obtained" in line:
                return line.split("lease of ", 1)[1].split()[0]
        return None

    def close(self) -> List[str]:
        return cleanup(self.prefix)

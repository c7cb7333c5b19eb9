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

- Open vSwitch (:meth:`Lab.ovs`): an ovsdb-server + ovs-vswitchd of its own inside a namespace
  host (``tools/ovs.sh`` with ``OVS_RUNDIR``/``VC_OVS_DIR`` under the lab's directory
  ``/tmp/vc-lab-<prefix>``), optionally with the host's underlay address on an OVS bridge ``phy``
  that holds ``und`` (OVS's userspace tunnels route through an OVS bridge); node namespaces on an
  OVS bridge as access ports (:meth:`Lab.ovs_node`), also on the root namespace's OVS;
- helpers that send traffic only between these namespaces: ping, DHCP, a TCP transfer, a TCP
  banner, hand-made Ethernet frames (:meth:`Lab.frames_seen`), a dnsmasq on a bridge.

Everything is removed by :meth:`Lab.close` (processes it started by their PID, the namespace
hosts' OVS by their pid files, namespaces by prefix, root links by prefix), which is safe to call
twice and after a failure half way; :func:`cleanup` does the same for a prefix alone.
Hosts are :class:`vc.isolation.HostSide` objects whose executor runs ``ip -n <ns>`` /
``bridge -n <ns>`` (other programs through ``ip netns exec``, with the host's OVS environment).
"""

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from vc.isolation import HostSide  # noqa: E402
from vc.remote import CommandError, run_local  # noqa: E402

OVS_SH = os.path.join(ROOT, "tools", "ovs.sh")
UNDERLAY = "192.168.250.0/24"
# candidates for an underlay that includes the root namespace
ROOT_UNDERLAYS = ["192.168.%d.0/24" % i for i in range(250, 240, -1)]


def sh(argv: List[str], check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and r.returncode:
        raise CommandError(argv, r.returncode, r.stderr)
    return r


def _env_argv(env: Optional[Dict[str, str]]) -> List[str]:
    return ["env"] + ["%s=%s" % kv for kv in sorted(env.items())] if env else []


def netns_execute(ns: Optional[str], env: Optional[Dict[str, str]] = None):
    """An executor that runs argv in namespace ``ns`` (None: the root namespace); programs other
    than ip/bridge get ``env`` (a namespace host's ``OVS_RUNDIR``)."""
    if ns is None and not env:
        return run_local

    def execute(argv):
        if argv[0] in ("ip", "bridge"):
            return run_local([argv[0]] + (["-n", ns] if ns else []) + list(argv[1:]))
        return run_local(in_ns(ns, _env_argv(env) + list(argv)))

    return execute


def in_ns(ns: Optional[str], argv: List[str]) -> List[str]:
    return list(argv) if ns is None else ["ip", "netns", "exec", ns] + list(argv)


def lab_dir(prefix: str) -> str:
    return os.path.join(tempfile.gettempdir(), "vc-lab-" + prefix)


def _kill(pid: int, comm: Optional[str] = None) -> None:
    """SIGTERM (then SIGKILL) one process this lab started, if it still is that program."""
    try:
        with open("/proc/%d/comm" % pid) as f:
            if comm and f.read().strip() != comm:
                return
    except OSError:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        for _ in range(100):
            if not os.path.exists("/proc/%d" % pid):
                return
            try:
                os.waitpid(pid, os.WNOHANG)  # our own child: reap it
            except ChildProcessError:
                pass
            time.sleep(0.02)


def stop_lab_daemons(prefix: str) -> List[str]:
    """Stop the OVS daemons and dnsmasqs of a lab by the pid files under its directory."""
    gone = []
    d = lab_dir(prefix)
    for host in sorted(os.listdir(d)) if os.path.isdir(d) else ():
        for comm in ("ovs-vswitchd", "ovsdb-server", "dnsmasq"):
            pf = os.path.join(d, host, comm + ".pid")
            try:
                with open(pf) as f:
                    pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                continue
            if pid:
                _kill(pid, comm)
                gone.append("%s %s %d" % (host, comm, pid))
            if os.path.exists(pf):
                os.unlink(pf)
    return gone


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
    """Stop the lab's daemons, remove every namespace and root-namespace link named
    ``<prefix>...`` and the lab's directory. Returns what was removed."""
    gone = ["process " + p for p in stop_lab_daemons(prefix)]
    if os.path.isdir(lab_dir(prefix)):
        shutil.rmtree(lab_dir(prefix), ignore_errors=True)
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
        self.ovs_env: Dict[Optional[str], Dict[str, str]] = {}  # host -> its OVS environment
        self._procs: List[subprocess.Popen] = []
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

    # -- Open vSwitch ------------------------------------------------------------------------

    def ovs(self, host: str, bridges: Tuple[str, ...] = (), phy: bool = False) -> HostSide:
        """An Open vSwitch of its own in namespace host ``host`` (``tools/ovs.sh start``, its
        database, sockets and pid files under the lab's directory) with ``bridges`` (userspace
        datapath). ``phy``: the host's underlay address moves from ``und`` onto OVS bridge
        ``phy`` holding ``und``, as OVS's userspace VXLAN needs. The host's executor gets the
        OVS environment."""
        d = os.path.join(lab_dir(self.prefix), host)
        env = {"OVS_RUNDIR": os.path.join(d, "run"), "VC_OVS_DIR": d}
        ns = self.host_ns[host]
        sh(in_ns(ns, _env_argv(env) + ["bash", OVS_SH, "start"]))
        self.ovs_env[host] = {"OVS_RUNDIR": env["OVS_RUNDIR"]}
        for br in bridges + (("phy",) if phy else ()):
            self.vsctl(host, "--may-exist", "add-br", br, "--", "set", "bridge", br,
                       "datapath_type=netdev")
        h = self.hosts[host]
        if phy:
            self.vsctl(host, "add-port", "phy", "und")
            sh(in_ns(ns, ["ip", "addr", "flush", "dev", "und"]))
            sh(in_ns(ns, ["ip", "addr", "add", "%s/%d" % (h.underlay_ip, self.net.prefixlen),
                          "dev", "phy"]))
            sh(in_ns(ns, ["ip", "link", "set", "dev", "phy", "up"]))
        h.execute = netns_execute(ns, self.ovs_env[host])
        return h

    def vsctl(self, host: Optional[str], *args) -> str:
        """``ovs-vsctl`` on ``host``'s OVS (None: the root namespace's, the system one)."""
        ns = self.host_ns.get(host) if host else None
        return sh(in_ns(ns, _env_argv(self.ovs_env.get(host)) + ["ovs-vsctl", "--timeout=30"]
                        + list(args))).stdout

    def ovs_node(self, name: str, host: Optional[str], bridge: str, tag: int,
                 cidr: Optional[str] = None, mac: Optional[str] = None,
                 mtu: Optional[int] = None, csum_offload: bool = True,
                 port: Optional[str] = None) -> str:
        """A node namespace whose ``eth0`` is an access port (VLAN ``tag``) of OVS bridge
        ``bridge`` on ``host`` (None: the root namespace), named ``port`` there (default
        ``<prefix>n<k>``; a name VC's guard matches makes it a guest's tap). ``csum_offload=
        False``: its eth0 computes its own checksums, as VC's guests do on a VLAN tunnelled
        between hosts."""
        ns = self._ns("%s-%s" % (self.prefix, name))
        self._n += 1
        hside = port or "%sn%d" % (self.prefix, self._n)
        hns = self.host_ns.get(host) if host else None
        head = ["ip", "link", "add", hside] + (["netns", hns] if hns else [])
        sh(head + ["type", "veth", "peer", "name", "eth0", "netns", ns])
        sh(in_ns(hns, ["ip", "link", "set", "dev", hside] + (["mtu", str(mtu)] if mtu else [])
                 + ["up"]))
        self.vsctl(host, "add-port", bridge, hside, "tag=%d" % tag)
        nopts = (["address", mac] if mac else []) + (["mtu", str(mtu)] if mtu else [])
        if nopts:
            sh(in_ns(ns, ["ip", "link", "set", "dev", "eth0"] + nopts))
        if not csum_offload:
            sh(in_ns(ns, ["ethtool", "-K", "eth0", "tx", "off"]))
        if cidr:
            sh(in_ns(ns, ["ip", "addr", "add", cidr, "dev", "eth0"]))
        sh(in_ns(ns, ["ip", "link", "set", "dev", "eth0", "up"]))
        self.node_ns[name] = ns
        return ns

    def trunk(self, a: str, b: str, name: str = "trk") -> None:
        """A veth between namespace hosts ``a`` and ``b`` (``name`` on both): a "switch" for
        802.1Q trunks (it carries every VLAN, tagged)."""
        sh(["ip", "link", "add", name, "netns", self.host_ns[a], "type", "veth", "peer",
            "name", name, "netns", self.host_ns[b]])
        for h in (a, b):
            sh(in_ns(self.host_ns[h], ["ip", "link", "set", "dev", name, "up"]))

    def dhcp_server(self, host: str, bridge: str, cidr: str, hosts: List[Tuple[str, str]],
                    mtu: Optional[int] = None) -> int:
        """What a libvirt network is on its host, in a namespace host: a Linux bridge with the
        host's address and a dnsmasq serving only ``hosts`` ([(mac, ip)], static entries).
        Returns dnsmasq's PID (stopped by :meth:`close`)."""
        ns = self.host_ns[host]
        sh(in_ns(ns, ["ip", "link", "add", bridge, "type", "bridge"]))
        if mtu:
            sh(in_ns(ns, ["ip", "link", "set", "dev", bridge, "mtu", str(mtu)]))
        sh(in_ns(ns, ["ip", "addr", "add", cidr, "dev", bridge]))
        sh(in_ns(ns, ["ip", "link", "set", "dev", bridge, "up"]))
        d = os.path.join(lab_dir(self.prefix), host)
        os.makedirs(d, exist_ok=True)
        net = ipaddress.ip_interface(cidr).network
        argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                "--user=root", "--bind-interfaces", "--interface=" + bridge,
                "--except-interface=lo", "--dhcp-range=%s,static" % net.network_address,
                "--dhcp-leasefile=" + os.path.join(d, "dnsmasq.leases"),
                "--pid-file=" + os.path.join(d, "dnsmasq.pid")]
        argv += ["--dhcp-host=%s,%s" % mi for mi in hosts]
        p = subprocess.Popen(in_ns(ns, argv), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._procs.append(p)
        for _ in range(100):
            if os.path.exists(os.path.join(d, "dnsmasq.pid")):
                break
            time.sleep(0.02)
        return p.pid

    # -- traffic between the lab's namespaces -------------------------------------------------

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

    def tcp(self, src: str, dst: str, ip: str, size: int = 4 << 20, port: int = 5001,
            timeout: float = 10.0) -> Tuple[int, float]:
        """Send ``size`` bytes over TCP from node ``src`` to a listener in node ``dst`` at
        ``ip``. Returns ``(bytes the listener received, seconds)``: (0, ...) when no connection."""
        srv = subprocess.Popen(in_ns(self.node_ns[dst], [sys.executable, "-c", _TCP_SERVER,
                                                         str(port), str(timeout)]),
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert srv.stdout.readline().strip() == "ready"
            t0 = time.monotonic()
            sh(in_ns(self.node_ns[src], [sys.executable, "-c", _TCP_CLIENT, ip, str(port),
                                         str(size), str(timeout)]), check=False)
            out, _ = srv.communicate(timeout=timeout + 5)
            return int(out.strip() or 0), time.monotonic() - t0
        finally:
            if srv.poll() is None:
                _kill(srv.pid)

    def neigh(self, node: str, ip: str) -> Optional[str]:
        """The MAC node ``node`` resolved ``ip`` to (None: no answer)."""
        out = sh(in_ns(self.node_ns[node], ["ip", "-j", "neigh", "show", ip])).stdout
        found = [d for d in json.loads(out or "[]") if "lladdr" in d]
        return found[0]["lladdr"] if found else None

    def banner(self, node: str, ip: str, port: int = 22, timeout: float = 3.0) -> str:
        """The first bytes a TCP server at ``ip:port`` sends to node ``node`` ("" when there is
        no connection)."""
        r = sh(in_ns(self.node_ns[node], [sys.executable, "-c", _BANNER, ip, str(port),
                                          str(timeout)]), check=False)
        return r.stdout.strip()

    def frames_seen(self, listener: str, sender: str, frame: bytes, count: int = 5,
                    seconds: float = 1.5) -> int:
        """How many copies of ``frame`` (matched by its source MAC and payload) node
        ``listener`` receives on its eth0 while node ``sender`` sends it ``count`` times raw."""
        cap = subprocess.Popen(in_ns(self.node_ns[listener], [
            sys.executable, "-c", _CAPTURE, "eth0", frame[6:12].hex(), frame[-16:].hex(),
            str(seconds)]), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert cap.stdout.readline().strip() == "ready"
            sh(in_ns(self.node_ns[sender], [sys.executable, "-c", _SEND, "eth0", frame.hex(),
                                            str(count)]))
            out, _ = cap.communicate(timeout=seconds + 5)
            return int(out.strip())
        finally:
            if cap.poll() is None:
                _kill(cap.pid)

    def close(self) -> List[str]:
        for p in self._procs:
            if p.poll() is None:
                _kill(p.pid)
        self._procs = []
        return cleanup(self.prefix)


def ether_frame(src_mac: str, vid: Optional[int] = None, payload: bytes = b"") -> bytes:
    """A broadcast Ethernet frame from ``src_mac`` (EtherType 0x88b5, local experimental),
    802.1Q-tagged with ``vid`` when given; the last 16 bytes are a random marker."""
    head = b"\xff" * 6 + bytes.fromhex(src_mac.replace(":", ""))
    if vid is not None:
        head += b"\x81\x00" + vid.to_bytes(2, "big")
    body = payload + uuid.uuid4().bytes
    return head + b"\x88\xb5" + b"\x00" * max(0, 46 - len(body)) + body


_TCP_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(1)
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
n = 0
try:
    c, _ = s.accept()
    c.settimeout(float(sys.argv[2]))
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        n += len(b)
except OSError:
    pass
print(n)
"""

_TCP_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
left, chunk = int(sys.argv[3]), b"x" * (1 << 16)
while left > 0:
    c.sendall(chunk[:left])
    left -= len(chunk)
c.shutdown(socket.SHUT_WR)
c.recv(1)
"""

_BANNER = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print(c.recv(64).decode("ascii", "replace"))
except OSError:
    pass
"""

_SEND = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for _ in range(int(sys.argv[3])):
    s.send(bytes.fromhex(sys.argv[2]))
    time.sleep(0.05)
"""

_CAPTURE = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.settimeout(0.1)
src, marker, end, n = bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3]), 0, 0
print("ready", flush=True)
end = time.time() + float(sys.argv[4])
while time.time() < end:
    try:
        f = s.recv(65535)
    except socket.timeout:
        continue
    if f[6:12] == src and marker in f:
        n += 1
print(n)
"""

"""Per-cluster L2 isolation on the physical hosts: the backends behind ``vc_vlan.py add|del``.

A cluster's nodes sit on one L2 segment of their own, spread over the physical hosts the cluster
uses. On each host the segment is a Linux bridge (the bridge of the cluster's libvirt network, or
one VC creates) plus one *uplink port* enslaved to it that carries the segment to the other hosts:

``vxlan`` (default)
    a VXLAN device ``vx<id>`` whose VNI is the cluster's isolation id, with unicast head-end
    replication (one all-zeros FDB entry per peer host, so no multicast underlay is needed) and
    MTU = underlay MTU - 50 (70 over IPv6), as is the bridge's.
``8021q``
    a VLAN sub-interface ``<trunk>.<id>`` of the host's trunk NIC (needs the 8021q module and a
    trunked switch port).
``ovs``
    no Linux bridge per cluster: the cluster is a VLAN of the host's Open vSwitch bridge. Each
    guest interface is an access port (``<virtualport type='openvswitch'/>``, ``<vlan><tag
    id=N/>``, :class:`OvsInterfaceSpec`; libvirt adds it when the guest starts); the cluster's
    libvirt network (DHCP, ``.1``) exists on its DHCP host only, joined to the VLAN by a veth
    pair; across hosts the switch carries the VLANs (trunk) or VC adds VXLAN ports between the
    OVS bridges (:class:`OvsBackend`).
``none``
    nothing: one host per cluster, each cluster on its own isolated libvirt network.

Isolation between clusters comes from the bridges being separate (one per cluster; no bridge VLAN
filtering is involved) and from the hosts having no L3 presence on the segments they did not
make a gateway for: a bridge VC creates gets no IPv4 address and no IPv6 link-local address
(``addrgenmode none``), so a host cannot route between two clusters' segments even with
``ip_forward`` on; libvirt's own bridges have the REJECT rules libvirt installs for isolated
networks.

Every command runs on its host through that host's injected executor (``execute(argv) ->
stdout``, raising :class:`vc.remote.CommandError`): :func:`vc.remote.executor_for_uri` gives a
local one here and ``ssh`` for remote hosts; the tests use ``ip -n <netns>`` and fakes. ``add``
and ``delete`` read the host's state first (``ip -d -j link show``, ``bridge -j fdb show``) and
run only what is missing (or left over), so both can be re-run after a crash between any two
commands. What VC created is recognised by the
link group :data:`LINK_GROUP`, which the kernel sets atomically with the link (an alias cannot
be: ``ip link add ... alias`` is ignored at creation), so ``delete`` removes exactly what ``add``
made and never a bridge libvirt owns. The alias ``vc:rack<N>`` is set too, for people.

Every backend implements :class:`IsolationBackend`: besides ``add`` and ``delete`` it decides
the cluster's segment from the configuration (``segment``: which hosts, which uplink port, or
nothing to join), which hosts ``delete`` must look at, the MTU of the cluster network and the
guests' NIC (``interface_spec``). :func:`make_isolation` is the one factory: nothing outside
this module looks at ``[network] isolation``.
"""

import abc
import ipaddress
import json
import logging
import shlex
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from vc import network
from vc.domainxml import InterfaceSpec
from vc.errors import ConfigError, VcError
from vc.remote import CommandError, Execute

LOG = logging.getLogger(__name__)

#: The link group of every link VC creates. Set by ``ip link add ... group`` in the same netlink
#: request that creates the link, so a crash can never leave an unmarked VC link behind.
LINK_GROUP = 30307  # 0x7663, "vc"
VXLAN_PORT = 4789  # IANA
#: Ethernet (14) + IPv4 (20) + UDP (8) + VXLAN (8); the IPv6 underlay adds 20 more.
VXLAN_OVERHEAD = {4: 50, 6: 70}
ALL_ZEROS_MAC = "00:00:00:00:00:00"
MAX_IFNAME = 15  # IFNAMSIZ - 1
KINDS = ("vxlan", "8021q", "ovs", "none")


class IsolationError(VcError):
    """A host's state does not allow the segment (a name clash, a missing NIC or bridge)."""

    msg_fmt = "host %(host)s: %(detail)s"


##################
# The model      #
##################


@dataclass
class HostSide:
    """One physical host as a backend sees it.

    :param name: how messages name the host (VC's ``[host:NAME]``).
    :param execute: runs an argv on that host and returns its stdout; raises
        :class:`vc.remote.CommandError` when the command fails (any
        :class:`vc.remote.Executor`, or a plain function).
    :param underlay_ip: the host's address on the network between the hosts (``vxlan``: the
        VXLAN source address and the other hosts' destination).
    :param trunk_nic: the trunk NIC of this host (``8021q``), overriding the backend's default.
    """

    name: str
    execute: Execute
    underlay_ip: Optional[str] = None
    trunk_nic: Optional[str] = None


@dataclass
class ClusterSegment:
    """A cluster's L2 segment over the hosts it uses.

    :param rack: the cluster (for the ``vc:rack<N>`` alias and messages).
    :param isolation_id: the VNI (``vxlan``) or VLAN id (``8021q``, ``ovs``).
    :param bridge: the cluster's bridge, the same name on every host. Where it exists it is used
        as it is (libvirt's network bridge) and kept by ``delete``; where it does not, VC creates
        it (pure L2, no address) and ``delete`` removes it.
    :param hosts: every host the segment spans. For ``delete``, pass every host that may carry
        it (all configured hosts): a host without it costs one query.
    :param mtu: the underlay's MTU; the segment's MTU is this minus the encapsulation overhead.
    :param port: the uplink port's name on every host (default ``vx<id>`` for VXLAN, ``<trunk
        nic>.<id>`` for 802.1Q; ``ovs``: the cluster's access port to its DHCP server, default
        ``v<id>``); at most 15 characters.
    :param macs: the MACs of the cluster's nodes (``ovs``: their ports are tagged by ``add`` and
        detached by ``delete``).
    :param dhcp_host: the host whose libvirt network has the cluster's ``.1`` and DHCP server
        (``ovs``: only there is that network joined to the cluster's VLAN).
    """

    rack: int
    isolation_id: int
    bridge: str
    hosts: List[HostSide] = field(default_factory=list)
    mtu: int = 1500
    port: Optional[str] = None
    macs: List[str] = field(default_factory=list)
    dhcp_host: Optional[str] = None

    def __post_init__(self):
        if not 0 < len(self.bridge) <= MAX_IFNAME:
            raise ValueError("bridge name %r is not 1-%d characters" % (self.bridge, MAX_IFNAME))
        if self.port is not None and not 0 < len(self.port) <= MAX_IFNAME:
            raise ValueError("port name %r is not 1-%d characters" % (self.port, MAX_IFNAME))
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise ValueError("rack %d: a host is listed twice: %s" % (self.rack, names))

    @property
    def alias(self) -> str:
        return "vc:rack%d" % self.rack


@dataclass
class Link:
    """The parts of one ``ip -d -j link show`` entry a backend looks at."""

    name: str
    kind: Optional[str]  # linkinfo.info_kind: bridge, vxlan, vlan, veth, ... (None: physical)
    group: str
    alias: Optional[str]
    mtu: int
    master: Optional[str]
    up: bool  # administratively up (IFF_UP), whatever the carrier
    addrgenmode: Optional[str]
    parent: Optional[str]  # the "link" of a VLAN device
    info: dict
    address: Optional[str] = None  # the MAC

    @classmethod
    def from_json(cls, d: dict) -> "Link":
        info = d.get("linkinfo") or {}
        return cls(name=d["ifname"], kind=info.get("info_kind"), group=str(d.get("group", "")),
                   alias=d.get("ifalias"), mtu=int(d.get("mtu", 0)), master=d.get("master"),
                   up="UP" in (d.get("flags") or ()), addrgenmode=d.get("inet6_addr_gen_mode"),
                   parent=d.get("link"), info=info.get("info_data") or {},
                   address=(d.get("address") or "").lower() or None)


def parse_links(out: str) -> Dict[str, Link]:
    """``ip -d -j link show`` output → ``{name: Link}``."""
    try:
        return {d["ifname"]: Link.from_json(d) for d in json.loads(out or "[]")}
    except (ValueError, KeyError, TypeError) as e:
        raise VcError("cannot parse 'ip -d -j link show' output: %r" % (out or "")[:200]) from e


def parse_fdb_dsts(out: str, mac: str = ALL_ZEROS_MAC) -> List[str]:
    """The ``dst`` of the VXLAN FDB entries for ``mac`` in ``bridge -j fdb show dev X`` output
    (the bridge's own entries for the port carry ``master`` and no ``dst``)."""
    try:
        entries = json.loads(out or "[]")
    except ValueError as e:
        raise VcError("cannot parse 'bridge -j fdb show' output: %r" % (out or "")[:200]) from e
    return [e["dst"] for e in entries if e.get("mac") == mac and "dst" in e]


def ip_version(address: str) -> int:
    return ipaddress.ip_address(address).version


def _same_ip(a: Optional[str], b: Optional[str]) -> bool:
    """Equal addresses however written (iproute2 prints IPv6 compressed)."""
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


##################
# The contract   #
##################


class IsolationBackend(abc.ABC):
    """What every ``[network] isolation`` backend does. Made by :func:`make_isolation`."""

    kind = "?"

    @abc.abstractmethod
    def add(self, seg: ClusterSegment, dry_run: bool = False) -> List[str]:
        """Put the segment in place on every host of ``seg`` (idempotent; repairs a partial one).

        :param dry_run: only read the hosts' state and return what would be run.
        :returns: the commands run (or to run), as ``"<host>: <command>"``; empty when every host
            was already as wanted.
        """

    @abc.abstractmethod
    def delete(self, seg: ClusterSegment, dry_run: bool = False) -> List[str]:
        """Remove what :meth:`add` made on every host of ``seg``.

        :returns: the commands run (or to run), as for :meth:`add`.
        """

    def mtu(self, seg: ClusterSegment) -> Optional[int]:
        """The MTU of the cluster's libvirt network (``<mtu size=.../>``, what the guests'
        interfaces use), or None: leave libvirt's default."""
        return None

    def interface_spec(self, mac: str, network_name: str,
                       seg: Optional[ClusterSegment]) -> InterfaceSpec:
        """A guest's NIC on the cluster segment: by default on the cluster's libvirt network.

        :param seg: the cluster's segment (None: nothing joins its hosts).
        """
        return InterfaceSpec(mac=mac, network=network_name)

    def segment(self, cfg, plan, host_names: Sequence[str],
                host_exec: Callable[[str], Execute]) -> Optional[ClusterSegment]:
        """The cluster's L2 segment over the configured hosts named ``host_names``, or None when
        there is nothing to join.

        :param plan: the cluster's :class:`vc.addresses.Plan` (``rack``, ``isolation_id``).
        :param host_exec: ``host_exec(host name) -> executor`` on that physical host.
        """
        return ClusterSegment(
            rack=plan.rack, isolation_id=plan.isolation_id,
            bridge=network.names(cfg, plan.rack)[1],
            hosts=[HostSide(h.name, host_exec(h.name), h.underlay_ip, h.trunk_nic)
                   for h in cfg.hosts if h.name in host_names],
            mtu=cfg.network.underlay_mtu, port=self.port_for(cfg, plan))

    def port_for(self, cfg, plan) -> Optional[str]:
        """The uplink port's name on every host (None: the backend's default)."""
        return None

    def network_hosts(self, plan, host_names: Sequence[str],
                      seg: Optional[ClusterSegment]) -> List[str]:
        """The hosts that get the cluster's libvirt network (its bridge; the ``.1`` and the DHCP
        server where :func:`vc.network.spec` puts them): by default every host it uses."""
        return list(host_names)

    def delete_hosts(self, cfg) -> list:
        """The configured hosts (``cfg.hosts`` entries) ``delete`` must look at: any of them may
        carry a piece of the segment after a crash."""
        return list(cfg.hosts)


##################
# Linux bridges  #
##################


class _PerHostBackend(IsolationBackend):
    """A backend that acts on every host of a segment through its executor: the hosts in
    parallel, the commands recorded as ``"<host>: <command>"``, the links VC makes marked with
    the link group."""

    def __init__(self, link_group: int = LINK_GROUP, parallel: bool = True):
        self.link_group = link_group
        self.parallel = parallel

    # -- the work on the hosts ---------------------------------------------------------------

    def _each_host(self, seg, fn) -> List[str]:
        """``fn(host)`` on every host (in threads: remote hosts are an SSH round trip per
        command); the actions in host order; the first error raised after all have finished."""
        if not self.parallel or len(seg.hosts) < 2:
            results = [fn(h) for h in seg.hosts]
        else:
            with ThreadPoolExecutor(max_workers=min(8, len(seg.hosts))) as ex:
                futures = [ex.submit(fn, h) for h in seg.hosts]
            errors = [f.exception() for f in futures if f.exception() is not None]
            for e in errors[1:]:
                LOG.error("rack %d: %s", seg.rack, e)
            if errors:
                raise errors[0]
            results = [f.result() for f in futures]
        return [a for r in results for a in r]

    def _ours(self, link: Link, seg: ClusterSegment) -> bool:
        return link.group == str(self.link_group) or link.alias == seg.alias

    def _links(self, host: HostSide) -> Dict[str, Link]:
        return parse_links(host.execute(["ip", "-d", "-j", "link", "show"]))

    def _run(self, host, argv, dry_run, done: List[str]) -> None:
        line = "%s: %s" % (host.name, shlex.join(argv))
        done.append(line)
        if dry_run:
            return
        LOG.info("%s", line)
        host.execute(argv)

    @staticmethod
    def _set(name: str, link: Optional[Link], want: Dict[str, object],
             fresh_mtu: Optional[int] = None) -> Optional[List[str]]:
        """One ``ip link set dev <name> ...`` for the attributes that differ, or None.

        :param link: the link as it was found, None when it has just been created (then it has
            the kernel's defaults and ``fresh_mtu``).
        :param want: addrgenmode, alias, mtu, master. Never ``up``: the kernel applies IPv6
            address generation after the flags of the same request, so ``up`` in this command
            would already have made a link-local address.
        """
        if link is None:
            have = {"addrgenmode": "eui64", "alias": None, "mtu": fresh_mtu, "master": None}
        else:
            have = {"addrgenmode": link.addrgenmode, "alias": link.alias, "mtu": link.mtu,
                    "master": link.master}
        args = []
        for key in ("addrgenmode", "alias", "mtu", "master"):
            if want.get(key) is not None and str(have[key]) != str(want[key]):
                args += [key, str(want[key])]
        return ["ip", "link", "set", "dev", name] + args if args else None


class _BridgedBackend(_PerHostBackend):
    """A per-cluster Linux bridge on each host plus one VC-made uplink port enslaved to it.

    Subclasses say what the port is (:meth:`port_name`, :meth:`_port_matches`,
    :meth:`_port_create`) and may add per-port state (:meth:`_port_extra`, the VXLAN FDB).
    """

    overhead = 0

    # -- the contract --------------------------------------------------------------------------

    def add(self, seg: ClusterSegment, dry_run: bool = False) -> List[str]:
        self._check(seg)
        return self._each_host(seg, lambda h: self._add_host(seg, h, dry_run))

    def delete(self, seg: ClusterSegment, dry_run: bool = False) -> List[str]:
        """Remove what :meth:`add` made on every host of ``seg``: the uplink port (its FDB goes
        with it) and the bridge if VC created it. A bridge VC did not create is left as it is.
        """
        return self._each_host(seg, lambda h: self._delete_host(seg, h, dry_run))

    def link_mtu(self, seg: ClusterSegment, host: Optional[HostSide] = None) -> int:
        """The MTU of the bridge and the uplink port: the underlay's minus the encapsulation."""
        return seg.mtu - self.overhead

    # -- to be defined by the subclasses -----------------------------------------------------

    def port_name(self, seg: ClusterSegment, host: HostSide) -> str:  # pragma: no cover
        raise NotImplementedError

    def _port_matches(self, seg, host, link: Link) -> bool:  # pragma: no cover
        raise NotImplementedError

    def _port_create(self, seg, host, name: str) -> List[str]:  # pragma: no cover
        raise NotImplementedError

    def _created_mtu(self, seg, host) -> Optional[int]:
        """The MTU a port has right after :meth:`_port_create` (None: unknown)."""
        return None

    def _port_extra(self, seg, host, name, exists: bool) -> List[List[str]]:
        """Commands after the port exists and before it is up (default: none)."""
        return []

    def _check(self, seg: ClusterSegment) -> None:
        """Configuration checks before anything runs on any host."""

    def _check_host(self, seg, host, links: Dict[str, Link]) -> None:
        """Per-host checks on the host's links before anything runs there."""

    def _add_host(self, seg: ClusterSegment, host: HostSide, dry_run: bool) -> List[str]:
        done: List[str] = []
        links = self._links(host)
        self._check_host(seg, host, links)
        mtu = self.link_mtu(seg, host)
        port = self.port_name(seg, host)

        # 1. the bridge: libvirt's as it is (only its MTU follows the segment), else ours
        br = links.get(seg.bridge)
        if br is not None and br.kind != "bridge":
            raise IsolationError(host=host.name, detail="%s exists and is not a bridge (%s)"
                                 % (seg.bridge, br.kind or "physical"))
        if br is None:
            self._run(host, ["ip", "link", "add", "name", seg.bridge, "group",
                             str(self.link_group), "type", "bridge"], dry_run, done)
        if br is None or self._ours(br, seg):
            want = {"addrgenmode": "none", "alias": seg.alias, "mtu": mtu}
        else:
            want = {"mtu": mtu}
        cmd = self._set(seg.bridge, br, want, fresh_mtu=1500)
        if cmd:
            self._run(host, cmd, dry_run, done)

        # 2. uplink ports of ours on this bridge that are not this segment's (a crashed run
        # with another isolation id): they would join two segments, remove them first
        for link in links.values():
            if (link.master == seg.bridge and link.name != port and self._ours(link, seg)
                    and link.kind in ("vxlan", "vlan")):
                self._run(host, ["ip", "link", "del", "dev", link.name], dry_run, done)

        # 3. the uplink port: recreated if its parameters changed (e.g. a new underlay address)
        link = links.get(port)
        if link is not None and not self._port_matches(seg, host, link):
            if not self._ours(link, seg):
                raise IsolationError(host=host.name, detail="%s exists and is not VC's %s port "
                                     "for rack %d" % (port, self.kind, seg.rack))
            self._run(host, ["ip", "link", "del", "dev", port], dry_run, done)
            link = None
        elif link is not None and not self._ours(link, seg):
            raise IsolationError(host=host.name, detail="%s exists but was not made by VC "
                                 "(link group %s, not %d)" % (port, link.group, self.link_group))
        if link is None:
            self._run(host, self._port_create(seg, host, port), dry_run, done)
        cmd = self._set(port, link, {"addrgenmode": "none", "alias": seg.alias, "mtu": mtu,
                                     "master": seg.bridge}, fresh_mtu=self._created_mtu(seg, host))
        if cmd:
            self._run(host, cmd, dry_run, done)
        for cmd in self._port_extra(seg, host, port, link is not None):
            self._run(host, cmd, dry_run, done)

        # 4. up: the port once it has its peers, the bridge last
        if link is None or not link.up:
            self._run(host, ["ip", "link", "set", "dev", port, "up"], dry_run, done)
        if br is None or not br.up:
            self._run(host, ["ip", "link", "set", "dev", seg.bridge, "up"], dry_run, done)
        return done

    def _delete_host(self, seg: ClusterSegment, host: HostSide, dry_run: bool) -> List[str]:
        done: List[str] = []
        links = self._links(host)
        port = self.port_name(seg, host)
        # the named port, and any other port of ours left on the bridge (see _add_host step 2)
        ports = [port] + sorted(n for n, lk in links.items() if lk.master == seg.bridge
                                and n != port and lk.kind in ("vxlan", "vlan"))
        for name in ports:
            link = links.get(name)
            if link is None:
                continue
            if self._ours(link, seg):
                # deleting the link drops its FDB entries (static and learnt) with it
                self._run(host, ["ip", "link", "del", "dev", name], dry_run, done)
            elif name == port:
                LOG.warning("host %s: %s was not made by VC (group %s): kept",
                            host.name, name, link.group)
        br = links.get(seg.bridge)
        if br is not None and br.kind == "bridge" and self._ours(br, seg):
            self._run(host, ["ip", "link", "del", "dev", seg.bridge], dry_run, done)
        return done


class VxlanBackend(_BridgedBackend):
    """``vxlan``: the bridges of a cluster joined by a VXLAN port whose VNI is the isolation id.

    Flooding (broadcast, unknown unicast, multicast) goes to every peer host by head-end
    replication through all-zeros FDB entries; unicast to a known MAC goes only to the host the
    VXLAN device learnt it from (``learning`` stays on: the underlay is the hosts' trusted
    network, and without learning every unicast frame would be flooded to all peers).

    :param port: the UDP port (4789 by default, ``[network] vxlan_port``).
    """

    kind = "vxlan"

    def __init__(self, port: int = VXLAN_PORT, **kw):
        super().__init__(**kw)
        self.udp_port = int(port)

    def port_name(self, seg, host=None) -> str:
        return seg.port or "vx%d" % seg.isolation_id

    def link_mtu(self, seg, host=None) -> int:
        hosts = [host] if host is not None else seg.hosts
        v6 = any(h.underlay_ip and ip_version(h.underlay_ip) == 6 for h in hosts)
        return seg.mtu - VXLAN_OVERHEAD[6 if v6 else 4]

    def mtu(self, seg) -> int:
        return self.link_mtu(seg)

    def segment(self, cfg, plan, host_names, host_exec):
        """None for one host without ``underlay_ip`` (its bridge is the whole segment); several
        hosts all need one."""
        cfgs = [h for h in cfg.hosts if h.name in host_names]
        if len(cfgs) == 1 and not cfgs[0].underlay_ip:
            return None
        missing = [h.name for h in cfgs if not h.underlay_ip]
        if missing:
            raise VcError("rack %d spans hosts %s: [host:%s] underlay_ip is needed to join them "
                          "with VXLAN" % (plan.rack, ", ".join(host_names), missing[0]))
        return super().segment(cfg, plan, host_names, host_exec)

    def port_for(self, cfg, plan) -> str:
        return "%svx%d" % (cfg.virt.name_prefix, plan.isolation_id)

    def delete_hosts(self, cfg) -> list:
        """Only hosts with ``underlay_ip`` can carry a VXLAN port."""
        return [h for h in cfg.hosts if h.underlay_ip]

    def _check(self, seg):
        if not 1 <= seg.isolation_id < 2 ** 24:
            raise VcError("rack %d: VNI %d is not in 1..16777215" % (seg.rack, seg.isolation_id))
        for h in seg.hosts:
            if not h.underlay_ip:
                raise VcError("rack %d: host %s has no underlay address for VXLAN"
                              % (seg.rack, h.name))
            ipaddress.ip_address(h.underlay_ip)
        if len({ip_version(h.underlay_ip) for h in seg.hosts}) > 1:
            raise VcError("rack %d: the hosts' underlay addresses mix IPv4 and IPv6" % seg.rack)

    def _port_matches(self, seg, host, link) -> bool:
        info = link.info
        local = info.get("local") or info.get("local6")
        return (link.kind == "vxlan" and info.get("id") == seg.isolation_id
                and info.get("port") == self.udp_port and _same_ip(local, host.underlay_ip))

    def _created_mtu(self, seg, host):
        return self.link_mtu(seg, host)

    def _port_create(self, seg, host, name):
        return ["ip", "link", "add", "name", name, "group", str(self.link_group),
                "mtu", str(self.link_mtu(seg, host)), "type", "vxlan", "id", str(seg.isolation_id),
                "local", host.underlay_ip, "dstport", str(self.udp_port)]

    def _port_extra(self, seg, host, name, exists):
        peers = [h.underlay_ip for h in seg.hosts if h is not host]
        have = parse_fdb_dsts(host.execute(["bridge", "-j", "fdb", "show", "dev", name])) \
            if exists else []
        cmds = [["bridge", "fdb", "append", ALL_ZEROS_MAC, "dev", name, "dst", p]
                for p in peers if not any(_same_ip(p, d) for d in have)]
        # a host that no longer carries the cluster (a node moved away) gets no more floods
        cmds += [["bridge", "fdb", "del", ALL_ZEROS_MAC, "dev", name, "dst", d]
                 for d in have if not any(_same_ip(p, d) for p in peers)]
        return cmds


class Dot1qBackend(_BridgedBackend):
    """``8021q``: the bridges of a cluster joined by a VLAN sub-interface of each host's trunk
    NIC (the switch ports must carry the VLANs tagged).

    :param trunk_nic: the trunk NIC (``[network] trunk_nic``); a host's ``trunk_nic`` overrides.
    """

    kind = "8021q"

    def __init__(self, trunk_nic: Optional[str] = None, **kw):
        super().__init__(**kw)
        self.trunk_nic = trunk_nic

    def nic(self, host: HostSide) -> str:
        nic = host.trunk_nic or self.trunk_nic
        if not nic:
            raise VcError("host %s: no trunk NIC configured for 802.1Q" % host.name)
        return nic

    def port_name(self, seg, host) -> str:
        if seg.port:
            return seg.port
        name = "%s.%d" % (self.nic(host), seg.isolation_id)
        # a long NIC name (enp129s0f1np1) leaves no room for ".4094" in 15 characters
        return name if len(name) <= MAX_IFNAME else "vlan%d" % seg.isolation_id

    def _check(self, seg):
        if not 1 <= seg.isolation_id <= 4094:
            raise VcError("rack %d: VLAN id %d is not in 1..4094" % (seg.rack, seg.isolation_id))
        for h in seg.hosts:
            self.nic(h)

    def _check_host(self, seg, host, links):
        if self.nic(host) not in links:
            raise IsolationError(host=host.name, detail="trunk NIC %s does not exist"
                                 % self.nic(host))

    def _port_matches(self, seg, host, link) -> bool:
        return (link.kind == "vlan" and link.info.get("id") == seg.isolation_id
                and link.parent == self.nic(host)
                and link.info.get("protocol", "802.1Q") == "802.1Q")

    def _port_create(self, seg, host, name):
        return ["ip", "link", "add", "link", self.nic(host), "name", name,
                "group", str(self.link_group), "type", "vlan", "id", str(seg.isolation_id)]


##################
# Open vSwitch   #
##################


def _sub(parent: ET.Element, tag: str, **attrs) -> ET.Element:
    return ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})


@dataclass
class OvsInterfaceSpec(InterfaceSpec):
    """A guest NIC on an Open vSwitch bridge, in the cluster's VLAN (an access port).

    ``InterfaceSpec(mac, bridge=<ovs bridge>)`` plus ``vlan``; it goes in
    ``DomainSpec.interfaces`` like any other interface. ``csum_offload=False`` makes the guest
    compute its own checksums (``<driver><host csum='off'/></driver>``: QEMU then offers it no
    checksum or segmentation offload): OVS's userspace datapath (3.1) drops packets that still
    need a checksum when it puts them into a tunnel.
    """

    vlan: Optional[int] = None
    csum_offload: bool = True
    #: the tap's name on the host (None: libvirt's vnetN)
    target: Optional[str] = None

    def __post_init__(self):
        super().__post_init__()
        if self.bridge is None:
            raise ValueError("interface %s: an Open vSwitch port needs bridge=" % self.mac)
        if self.vlan is None or not 1 <= int(self.vlan) <= 4094:
            raise ValueError("interface %s: VLAN tag %r is not in 1..4094" % (self.mac, self.vlan))
        self.vlan = int(self.vlan)

    def to_element(self) -> ET.Element:
        el = ET.Element("interface", {"type": "bridge"})
        _sub(el, "mac", address=self.mac)
        _sub(el, "source", bridge=self.bridge)
        _sub(el, "virtualport", type="openvswitch")
        _sub(_sub(el, "vlan"), "tag", id=self.vlan)
        if self.target:
            _sub(el, "target", dev=self.target)
        _sub(el, "model", type=self.model)
        if not self.csum_offload:
            _sub(_sub(el, "driver"), "host", csum="off")
        return el


def ovs_interface_xml(mac: str, vid: int, ovs_bridge: str, model: str = "virtio") -> str:
    """The ``<interface>`` of a guest NIC in VLAN ``vid`` of the OVS bridge ``ovs_bridge``."""
    return OvsInterfaceSpec(mac=mac, bridge=ovs_bridge, vlan=vid, model=model).to_xml()


#: ``[network] ovs_transport``: how a cluster's VLAN crosses hosts.
OVS_TRANSPORTS = ("vxlan", "trunk")
#: the 802.1Q tag a frame keeps inside a VXLAN tunnel between two OVS bridges
VLAN_TAG_LEN = 4
#: the ``external_ids`` key on every port VC adds to an OVS bridge (the cluster's DHCP access
#: port, its tunnels); the value is the cluster's network bridge name, unique per VC
#: installation (``name_prefix``) and rack
OVS_KEY = "vc-cluster"
#: the guest ports libvirt adds carry their guest's MAC in the interface's ``external_ids``
ATTACHED_MAC = "attached-mac"


@dataclass
class OvsPort:
    """One port of an OVS bridge as ``ovs-vsctl list Port`` / ``list Interface`` show it (a
    port with one interface of the same name: everything VC and libvirt add is one)."""

    name: str
    tag: Optional[int] = None
    trunks: List[int] = field(default_factory=list)
    external_ids: Dict[str, str] = field(default_factory=dict)
    type: str = ""
    options: Dict[str, str] = field(default_factory=dict)
    iface_ids: Dict[str, str] = field(default_factory=dict)  # the interface's external_ids

    def ours(self, seg: ClusterSegment) -> bool:
        return self.external_ids.get(OVS_KEY) == seg.bridge


def _ovs_set(v) -> list:
    """An OVSDB JSON set: ``["set", [...]]``, or the atom itself when it has one element."""
    if isinstance(v, list) and len(v) == 2 and v[0] == "set":
        return list(v[1])
    return [v]


def _ovs_map(v) -> Dict[str, str]:
    if isinstance(v, list) and len(v) == 2 and v[0] == "map":
        return {str(k): str(x) for k, x in v[1]}
    raise ValueError("not an OVSDB map: %r" % (v,))


def ovs_query(bridge: str, timeout: int = 30) -> List[str]:
    """One ``ovs-vsctl`` (one round trip) for what a backend reads of a host's OVS: the ports of
    ``bridge``, then every port's VLAN and ``external_ids``, every interface's type, options and
    ``external_ids`` (JSON)."""
    return ["ovs-vsctl", "--timeout=%d" % timeout, "--format=json", "--data=json",
            "--", "list-ports", bridge,
            "--", "--columns=name,tag,trunks,external_ids", "list", "Port",
            "--", "--columns=name,type,options,external_ids", "list", "Interface"]


def parse_ovs_state(out: str) -> Tuple[List[str], Dict[str, OvsPort]]:
    """:func:`ovs_query` output → ``(the bridge's port names, {name: OvsPort} of every port of
    every bridge)``."""
    names, tables = [], []
    try:
        for line in (out or "").splitlines():
            line = line.strip()
            if line.startswith("{"):
                tables.append(json.loads(line))
            elif line:
                names.append(line)
        if len(tables) != 2:
            raise ValueError("%d tables" % len(tables))
        rows = [[dict(zip(t["headings"], r)) for r in t["data"]] for t in tables]
        ports = {}
        for r in rows[0]:
            tag = _ovs_set(r["tag"])
            ports[r["name"]] = OvsPort(r["name"], tag=int(tag[0]) if tag else None,
                                       trunks=sorted(int(x) for x in _ovs_set(r["trunks"])),
                                       external_ids=_ovs_map(r["external_ids"]))
        for r in rows[1]:
            p = ports.get(r["name"])
            if p is not None:
                p.type, p.options = r["type"], _ovs_map(r["options"])
                p.iface_ids = _ovs_map(r["external_ids"])
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise VcError("cannot parse 'ovs-vsctl list' output (%s): %r" % (e, (out or "")[:200])) \
            from e
    return names, ports


def guard_table(name_prefix: str) -> str:
    """The nftables table (families ``inet`` and ``arp``) of :meth:`OvsBackend.guard`."""
    return "vc_%s" % name_prefix


def guard_rules(name_prefix: str) -> str:
    """One ``nft`` transaction: the host's own stack neither receives from nor sends to an
    interface named ``<prefix>-*`` (VC's guest taps), so only Open vSwitch handles what
    arrives there. OVS's userspace datapath reads those interfaces with packet sockets, which
    see every frame before netfilter does, while the host's stack would see them too: without
    this it answers ARP for all its addresses on every tap (every cluster's ``.1``) and accepts
    IP for them there, a path between VLANs through the host. On the kernel datapath the taps
    never reach the host's stack and the table matches nothing."""
    t, pat = guard_table(name_prefix), '"%s-*"' % name_prefix
    cmds = ["add table inet %s" % t]
    for chain, hook, match in (("input", "input", "iifname"), ("forward", "forward", "iifname"),
                               ("output", "output", "oifname")):
        cmds += ["add chain inet %s %s { type filter hook %s priority -300 ; policy accept ; }"
                 % (t, chain, hook), "add rule inet %s %s %s %s drop" % (t, chain, match, pat)]
    cmds.append("add table arp %s" % t)
    for chain, match in (("input", "iifname"), ("output", "oifname")):
        cmds += ["add chain arp %s %s { type filter hook %s priority -300 ; policy accept ; }"
                 % (t, chain, chain), "add rule arp %s %s %s %s drop" % (t, chain, match, pat)]
    return " ; ".join(cmds)


def tap_mac(mac: str) -> str:
    """The MAC libvirt gives a guest's tap on the host: the guest's with the first byte ``fe``
    (so that a bridge never takes the guest's address as its own)."""
    return "fe" + mac.lower()[2:]


class OvsBackend(_PerHostBackend):
    """``ovs``: one Open vSwitch bridge per host (``[network] ovs_bridge``, shared by all
    clusters); a cluster is the VLAN whose id is its isolation id.

    - **Nodes**: each guest NIC is an access port in the cluster's VLAN (libvirt adds it with the
      tag when the guest starts, :class:`OvsInterfaceSpec`). ``add`` tags every port of the
      cluster's MACs that exists (re-attaches a tap ``delete`` detached); ``delete`` detaches
      them: the guest keeps its tap, attached to nothing, so a running cluster is cut off.
    - **DHCP and the host's address**: the cluster's libvirt network on its DHCP host
      (:func:`vc.network.dhcp_host`: bridge, ``.1``, dnsmasq with the static host entries, as
      for every backend) is joined to the VLAN by a veth pair ``<port>`` (an access port of the
      OVS bridge, tag = VLAN id) / ``<port>b`` (a port of the libvirt bridge); no other host has
      a Linux bridge of the cluster (:meth:`network_hosts`).
    - **Across hosts** (``transport``): ``vxlan``: per cluster and peer host a VXLAN port
      ``<port>-<peer underlay ip>`` (``remote_ip`` = the peer, ``key`` = VLAN id) that is a trunk
      for the cluster's VLAN only (``trunks=[id]``: the tag travels inside; MTU = underlay - 50 -
      4; the guests then compute their own checksums: OVS 3.1's userspace datapath drops packets
      it should checksum when it tunnels them); ``trunk`` (the default): nothing per cluster,
      the hosts' OVS bridges share a switch through their trunk NIC (``trunk_nic``, checked to
      be a port of the bridge when set).
    - **The host's stack** is kept off the guests' taps (:func:`guard_rules`, made once per host
      by ``add``): the userspace datapath would otherwise let the host answer and accept
      traffic on every tap, a path between VLANs through the host.

    The OVS bridge itself, its datapath and the trunk NIC belong to the host: ``add`` checks the
    bridge exists and never changes it. VC's ports carry ``external_ids:vc-cluster=<cluster's
    bridge name>``, so ``delete`` finds exactly them, whatever their name. Each change is one
    ``ovs-vsctl`` call (one OVSDB transaction), so a crash leaves nothing half-made.

    :param ovs_bridge: the OVS bridge (``[network] ovs_bridge``).
    :param transport: ``trunk`` or ``vxlan`` (``[network] ovs_transport``).
    :param name_prefix: ``[virt] name_prefix``: the guests' tap names and the guard's table.
    :param trunk_nic: ``trunk``: the hosts' trunk NIC (a host's ``trunk_nic`` overrides it).
    :param udp_port: ``vxlan``: the tunnels' UDP port (``[network] vxlan_port``).
    """

    kind = "ovs"

    def __init__(self, ovs_bridge: str, transport: str = "trunk",
                 trunk_nic: Optional[str] = None, udp_port: int = VXLAN_PORT,
                 name_prefix: str = "vc", timeout: int = 30, **kw):
        super().__init__(**kw)
        if transport not in OVS_TRANSPORTS:
            raise ValueError("unknown OVS transport %r (one of %s)"
                             % (transport, ", ".join(OVS_TRANSPORTS)))
        self.ovs_bridge, self.transport, self.trunk_nic = ovs_bridge, transport, trunk_nic
        self.udp_port, self.timeout = int(udp_port), int(timeout)
        self.name_prefix = name_prefix

    def tap_name(self, mac: str) -> str:
        """A guest's tap on its host: ``<prefix>-<last 3 bytes of its MAC>`` (15 characters at
        most; VC's MACs are unique), the names :func:`guard_rules` matches."""
        return "%s-%s" % (self.name_prefix, mac.lower().replace(":", "")[-6:])

    # -- policy ----------------------------------------------------------------------------------

    def port_for(self, cfg, plan) -> str:
        return "%sv%d" % (cfg.virt.name_prefix, plan.isolation_id)

    def segment(self, cfg, plan, host_names, host_exec) -> ClusterSegment:
        """Every host the cluster uses (one host too: its VLAN is what isolates it), with the
        cluster's MACs and its DHCP host."""
        seg = super().segment(cfg, plan, host_names, host_exec)
        seg.macs = [n.mac for n in plan.nodes]
        seg.dhcp_host = network.dhcp_host(plan)
        return seg

    def network_hosts(self, plan, host_names, seg) -> List[str]:
        """Only the DHCP host needs the cluster's libvirt network (its ``.1`` and dnsmasq): the
        nodes are ports of the OVS bridge on every host."""
        dhcp = network.dhcp_host(plan)
        return [dhcp] if seg is not None and dhcp in host_names else list(host_names)

    def tunnelled(self, seg: ClusterSegment) -> bool:
        return self.transport == "vxlan" and len(seg.hosts) > 1

    def mtu(self, seg: ClusterSegment) -> Optional[int]:
        """``vxlan`` over several hosts: the underlay's MTU minus VXLAN and the inner tag (1446
        of 1500); else None (the underlay's own)."""
        if not self.tunnelled(seg):
            return None
        v6 = any(h.underlay_ip and ip_version(h.underlay_ip) == 6 for h in seg.hosts)
        return seg.mtu - VXLAN_OVERHEAD[6 if v6 else 4] - VLAN_TAG_LEN

    def dhcp_port(self, seg: ClusterSegment) -> str:
        """The OVS end of the veth pair to the cluster's libvirt bridge."""
        return seg.port or "v%d" % seg.isolation_id

    def dhcp_peer(self, seg: ClusterSegment) -> str:
        """The libvirt bridge's end of that veth pair."""
        return self.dhcp_port(seg) + "b"

    def tunnel_name(self, seg: ClusterSegment, peer: HostSide) -> str:
        return "%s-%s" % (self.dhcp_port(seg), peer.underlay_ip)

    def interface_spec(self, mac: str, network_name: str,
                       seg: Optional[ClusterSegment]) -> OvsInterfaceSpec:
        """An access port in the cluster's VLAN on the OVS bridge (not the libvirt network)."""
        if seg is None:
            raise ValueError("interface %s: an Open vSwitch port needs the cluster's segment "
                             "(its VLAN id)" % mac)
        return OvsInterfaceSpec(mac=mac, bridge=self.ovs_bridge, vlan=seg.isolation_id,
                                csum_offload=not self.tunnelled(seg), target=self.tap_name(mac))

    def interface_xml(self, mac: str, vid: int, ovs_bridge: Optional[str] = None) -> str:
        return ovs_interface_xml(mac, vid, ovs_bridge or self.ovs_bridge)

    # -- the contract ----------------------------------------------------------------------------

    def add(self, seg: ClusterSegment, dry_run: bool = False) -> List[str]:
        self._check(seg)
        return self._each_host(seg, lambda h: self._add_host(seg, h, dry_run))

    def delete(self, seg: ClusterSegment, dry_run: bool = False) -> List[str]:
        """Detach the cluster's node ports, remove its tunnels, its DHCP access port and veth
        pair on every host of ``seg``. Nothing else of the bridge is touched."""
        return self._each_host(seg, lambda h: self._delete_host(seg, h, dry_run))

    # -- the work --------------------------------------------------------------------------------

    def _vsctl(self, *args) -> List[str]:
        return ["ovs-vsctl", "--timeout=%d" % self.timeout] + list(args)

    def _check(self, seg: ClusterSegment) -> None:
        if not 1 <= seg.isolation_id <= 4094:
            raise VcError("rack %d: VLAN id %d is not in 1..4094" % (seg.rack, seg.isolation_id))
        if self.tunnelled(seg):
            for h in seg.hosts:
                if not h.underlay_ip:
                    raise VcError("rack %d: host %s has no underlay address for the VXLAN "
                                  "tunnels between the OVS bridges" % (seg.rack, h.name))
                ipaddress.ip_address(h.underlay_ip)
            if len({ip_version(h.underlay_ip) for h in seg.hosts}) > 1:
                raise VcError("rack %d: the hosts' underlay addresses mix IPv4 and IPv6"
                              % seg.rack)

    def _ovs(self, host: HostSide, missing_ok: bool = False):
        """``(names of the bridge's ports, {name: OvsPort})`` on ``host``."""
        try:
            return parse_ovs_state(host.execute(ovs_query(self.ovs_bridge, self.timeout)))
        except CommandError as e:
            if "no bridge named" in e.stderr:
                if missing_ok:
                    return [], {}
                raise IsolationError(host=host.name, detail="Open vSwitch bridge %s does not "
                                     "exist" % self.ovs_bridge) from e
            raise IsolationError(host=host.name, detail=str(e)) from e

    @staticmethod
    def _tx_csum_off(host: HostSide, name: str) -> bool:
        out = host.execute(["ethtool", "-k", name])
        return any(line.strip() == "tx-checksumming: off" for line in out.splitlines())

    def _tunnel_options(self, seg, host, peer) -> Dict[str, str]:
        opts = {"remote_ip": peer.underlay_ip, "key": str(seg.isolation_id)}
        if host.underlay_ip:
            opts["local_ip"] = host.underlay_ip
        if self.udp_port != VXLAN_PORT:
            opts["dst_port"] = str(self.udp_port)
        return opts

    def _node_ports(self, seg, links: Dict[str, Link], names, ports) -> Dict[str, str]:
        """``{port/tap name: guest MAC}`` of the cluster's guests on this host: libvirt's taps
        with a node's MAC (attached or not) and the bridge's ports that say they carry one."""
        macs = {m.lower() for m in seg.macs}
        taps = {tap_mac(m): m for m in macs}
        found = {lk.name: taps[lk.address] for lk in links.values()
                 if lk.kind == "tun" and lk.address in taps
                 and lk.master in (None, "ovs-system")}
        for n in names:
            mac = ports[n].iface_ids.get(ATTACHED_MAC, "").lower()
            if mac in macs and not ports[n].ours(seg):
                found.setdefault(n, mac)
        return found

    def _guard(self, host: HostSide, dry_run: bool, done: List[str]) -> None:
        """:func:`guard_rules` on ``host`` unless both its tables are there (they are made in
        one transaction; one alone was changed by someone else: made again)."""
        t = guard_table(self.name_prefix)
        tables = host.execute(["nft", "list", "tables"]).splitlines()
        have = {f for f in ("inet", "arp") if "table %s %s" % (f, t) in tables}
        if have == {"inet", "arp"}:
            return
        for family in sorted(have):
            self._run(host, ["nft", "delete table %s %s" % (family, t)], dry_run, done)
        self._run(host, ["nft", guard_rules(self.name_prefix)], dry_run, done)

    def _add_host(self, seg: ClusterSegment, host: HostSide, dry_run: bool) -> List[str]:
        done: List[str] = []
        names, ports = self._ovs(host)
        here = set(names)
        links = self._links(host)
        vid, br, key = seg.isolation_id, self.ovs_bridge, "external_ids:%s=%s" % (OVS_KEY,
                                                                                  seg.bridge)
        dhcp = seg.dhcp_host is not None and host.name == seg.dhcp_host
        port, peer = self.dhcp_port(seg), self.dhcp_peer(seg)
        tunnels = {self.tunnel_name(seg, p): p for p in seg.hosts
                   if p is not host} if self.tunnelled(seg) else {}
        want = set(tunnels) | ({port} if dhcp else set())

        # checks before any change
        if self.transport == "trunk" and len(seg.hosts) > 1:
            nic = host.trunk_nic or self.trunk_nic
            if nic and nic not in here:
                raise IsolationError(host=host.name, detail="trunk NIC %s is not a port of Open "
                                     "vSwitch bridge %s" % (nic, br))
        for name in want:
            p = ports.get(name)
            if p is not None and not p.ours(seg):
                raise IsolationError(host=host.name, detail="Open vSwitch port %s exists and is "
                                     "not VC's for rack %d" % (name, seg.rack))
        lbr = links.get(seg.bridge)
        if dhcp:
            if lbr is None or lbr.kind != "bridge":
                raise IsolationError(host=host.name, detail="the cluster's network bridge %s "
                                     "does not exist (its libvirt network starts first)"
                                     % seg.bridge)
            for name in (port, peer):
                lk = links.get(name)
                if lk is not None and (lk.kind != "veth" or not self._ours(lk, seg)):
                    raise IsolationError(host=host.name, detail="%s exists and is not VC's veth "
                                         "for rack %d" % (name, seg.rack))

        # 0. the host's stack kept off the guests' taps (per host, for all clusters: it stays)
        self._guard(host, dry_run, done)

        # 1. what a crashed or older run left: our ports not wanted here, veths of ours on the
        # cluster's bridge that are not this one (another VLAN id), the veth on a host that is
        # no longer the DHCP host
        for name in names:
            if ports[name].ours(seg) and name not in want:
                self._run(host, self._vsctl("--if-exists", "del-port", br, name), dry_run, done)
        stale = [lk.name for lk in links.values() if lk.kind == "veth" and self._ours(lk, seg)
                 and lk.master == seg.bridge and lk.name != peer and lk.parent != port]
        if not dhcp and port in links and self._ours(links[port], seg):
            stale.append(port)
        for name in stale:
            self._run(host, ["ip", "link", "del", "dev", name], dry_run, done)

        # 2. the DHCP host: the veth pair, one end on the libvirt bridge, the other a tagged
        # access port of the OVS bridge
        if dhcp:
            mtu = self.mtu(seg) or lbr.mtu
            lk, pk = links.get(port), links.get(peer)
            if lk is not None and (pk is None or lk.parent != peer):
                self._run(host, ["ip", "link", "del", "dev", port], dry_run, done)
                lk = pk = None
            elif lk is None and pk is not None:
                self._run(host, ["ip", "link", "del", "dev", peer], dry_run, done)
                pk = None
            if lk is None:
                self._run(host, ["ip", "link", "add", "name", port, "group", str(self.link_group),
                                 "mtu", str(mtu), "type", "veth", "peer", "name", peer, "group",
                                 str(self.link_group), "mtu", str(mtu)], dry_run, done)
            for name, link, extra in ((peer, pk, {"master": seg.bridge}), (port, lk, {})):
                cmd = self._set(name, link, dict({"addrgenmode": "none", "alias": seg.alias,
                                                  "mtu": mtu}, **extra), fresh_mtu=mtu)
                if cmd:
                    self._run(host, cmd, dry_run, done)
                # what the host sends the VLAN (DHCP replies, its .1) leaves with a full
                # checksum: OVS's userspace datapath drops packets that still need one when it
                # tunnels them, and without userspace TSO passes them on broken
                if name == peer and (link is None or not self._tx_csum_off(host, peer)):
                    self._run(host, ["ethtool", "-K", peer, "tx", "off"], dry_run, done)
                if link is None or not link.up:
                    self._run(host, ["ip", "link", "set", "dev", name, "up"], dry_run, done)
            p = ports.get(port)
            if p is None:
                self._run(host, self._vsctl("--may-exist", "add-port", br, port, "tag=%d" % vid,
                                            "--", "set", "Port", port, key), dry_run, done)
            elif port not in here or p.tag != vid or p.trunks:
                self._run(host, self._vsctl("--if-exists", "del-port", port, "--", "add-port",
                                            br, port, "tag=%d" % vid, "--", "set", "Port",
                                            port, key), dry_run, done)

        # 3. the tunnels to the other hosts: a trunk of this VLAN only
        for name, other in sorted(tunnels.items()):
            p, opts = ports.get(name), self._tunnel_options(seg, host, other)
            if (p is not None and name in here and p.type == "vxlan" and p.options == opts
                    and p.tag is None and p.trunks == [vid]):
                continue
            self._run(host, self._vsctl(
                *(["--if-exists", "del-port", name, "--"] if p is not None else []),
                "add-port", br, name, "trunks=%d" % vid, "--", "set", "Interface", name,
                "type=vxlan", *["options:%s=%s" % kv for kv in sorted(opts.items())],
                "--", "set", "Port", name, key), dry_run, done)

        # 4. the cluster's guests: every port of theirs tagged, detached taps attached again
        for name, mac in sorted(self._node_ports(seg, links, names, ports).items()):
            p = ports.get(name)
            if p is None:
                self._run(host, self._vsctl("--may-exist", "add-port", br, name, "tag=%d" % vid,
                                            "--", "set", "Interface", name,
                                            "external_ids:%s=%s" % (ATTACHED_MAC, mac)),
                          dry_run, done)
            elif name not in here:
                LOG.warning("host %s: %s (%s) is a port of another Open vSwitch bridge: left "
                            "alone", host.name, name, mac)
            elif p.tag != vid or p.trunks:
                self._run(host, self._vsctl("set", "Port", name, "tag=%d" % vid, "trunks=[]"),
                          dry_run, done)
        return done

    def _delete_host(self, seg: ClusterSegment, host: HostSide, dry_run: bool) -> List[str]:
        done: List[str] = []
        names, ports = self._ovs(host, missing_ok=True)
        links = self._links(host)
        mine = [n for n in names if ports[n].ours(seg)]
        nodes = [n for n in sorted(self._node_ports(seg, links, names, ports)) if n in names]
        for name in mine + nodes:
            self._run(host, self._vsctl("--if-exists", "del-port", self.ovs_bridge, name),
                      dry_run, done)
        port = self.dhcp_port(seg)
        veths = [port] if port in links and self._ours(links[port], seg) else []
        veths += [lk.name for lk in links.values() if lk.kind == "veth" and self._ours(lk, seg)
                  and lk.master == seg.bridge and lk.parent not in veths]
        for name in veths:  # deleting one end of a veth pair deletes both
            self._run(host, ["ip", "link", "del", "dev", name], dry_run, done)
        return done


class NullBackend(IsolationBackend):
    """``none``: no segment across hosts (a cluster stays on one host, on its own isolated
    libvirt network): no segment, no host to look at, ``add`` and ``delete`` do nothing."""

    kind = "none"

    def add(self, seg: ClusterSegment, dry_run: bool = False) -> List[str]:
        if len(seg.hosts) > 1:
            raise VcError("rack %d spans %d hosts, but [network] isolation = none cannot join "
                          "them" % (seg.rack, len(seg.hosts)))
        return []

    def delete(self, seg: ClusterSegment, dry_run: bool = False) -> List[str]:
        return []

    def segment(self, cfg, plan, host_names, host_exec) -> None:
        return None

    def delete_hosts(self, cfg) -> list:
        return []


##################
# The factory    #
##################


def make_isolation(cfg) -> IsolationBackend:
    """The backend of ``[network] isolation``, with what it reads from ``[network]``: ``vxlan``
    its UDP port, ``8021q`` the trunk NIC, ``ovs`` the Open vSwitch bridge.

    :raises ConfigError: an unknown kind, or a required key missing.
    """
    net = cfg.network
    if net.isolation == "vxlan":
        return VxlanBackend(port=net.vxlan_port)
    if net.isolation == "8021q":
        if not net.trunk_nic:
            raise ConfigError(cfg.path, "[network] trunk_nic", "required with isolation = 8021q")
        return Dot1qBackend(net.trunk_nic)
    if net.isolation == "ovs":
        if not net.ovs_bridge:
            raise ConfigError(cfg.path, "[network] ovs_bridge", "required with isolation = ovs")
        return OvsBackend(net.ovs_bridge, transport=net.ovs_transport, trunk_nic=net.trunk_nic,
                          udp_port=net.vxlan_port, name_prefix=cfg.virt.name_prefix)
    if net.isolation == "none":
        return NullBackend()
    raise ConfigError(cfg.path, "[network] isolation",
                      "unknown backend %r (one of %s)" % (net.isolation, ", ".join(KINDS)))

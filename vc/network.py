"""A cluster's network on each physical host it uses.

This issue's backend is one isolated libvirt network per cluster and host: its own bridge, the
cluster's subnet, the hosts' address ``.1`` and dnsmasq serving only the registered nodes (DHCP
host entries, no dynamic range, so an unregistered MAC gets no address). The isolation backends
(VXLAN, 802.1Q, Open vSwitch; ``vc_vlan.py``) plug in behind the same two calls.
"""

import logging

from vc.domainxml import DhcpHost, NetworkSpec

LOG = logging.getLogger(__name__)


def names(cfg, rack: int):
    """``(libvirt network name, bridge name)`` of a cluster (bridge names are at most 15 chars)."""
    return "%s-net%d" % (cfg.virt.name_prefix, rack), "%sbr%d" % (cfg.virt.name_prefix, rack)


def segmented(plan, joined: bool) -> bool:
    """Is the cluster one L2 segment over several hosts? ``joined``: the isolation backend
    joins the cluster's hosts into one segment (it returned a segment for them)."""
    return joined and len({n.host for n in plan.nodes}) > 1


def dhcp_host(plan) -> str:
    """The host whose network serves DHCP for the whole segment: the first gateway's."""
    return plan.nodes[0].host


def spec(cfg, plan, host_name=None, mtu=None, joined=False) -> NetworkSpec:
    """The network of a cluster on one host.

    Without a segment across hosts, every host's network has the ``.1`` address and serves its
    own nodes. With one, only :func:`dhcp_host` has an address and dnsmasq (for all nodes);
    the others get a bare bridge, so one DHCP server and one ``.1`` serve the segment.
    A network created now already carries its DHCP host entries: one define instead of one
    ``virNetworkUpdate`` (0.2 s, a dnsmasq reload) per node. The registrar then finds them in
    place; on a network that already exists it adds what is missing with ``virNetworkUpdate``."""
    net, bridge = names(cfg, plan.rack)
    if segmented(plan, joined):
        if host_name != dhcp_host(plan):
            return NetworkSpec(name=net, bridge=bridge, mtu=mtu)
        serve = plan.nodes
    else:
        serve = [n for n in plan.nodes if host_name is not None and n.host == host_name]
    hosts = [DhcpHost(n.mac, n.ip, n.name) for n in serve]
    return NetworkSpec(name=net, bridge=bridge, address=plan.bridge_ip,
                       prefix=plan.subnet.prefixlen, hosts=hosts, mtu=mtu)


class LibvirtNetworks:
    """Ensure/remove the cluster's libvirt network on one host."""

    def ensure(self, cfg, plan, host, mtu=None, joined=False) -> bool:
        return host.ensure_network(spec(cfg, plan, host.name, mtu, joined))

    def remove(self, cfg, rack: int, host) -> bool:
        return host.remove_network(names(cfg, rack)[0])


class DhcpRouter:
    """The registrar's DHCP seam: each node's host entry goes to the cluster network on the
    physical host the node is placed on (one segment over several hosts: the one DHCP server).

    :param host: ``host(name) -> vc.virt.Host``.
    :param joined: the isolation backend joins the cluster's hosts into one segment.
    """

    def __init__(self, host, plan, joined: bool, default_host: str):
        self.host, self.by_mac, self.default = host, {n.mac: n.host for n in plan.nodes}, \
            default_host
        self.only = dhcp_host(plan) if segmented(plan, joined) else None

    def _host(self, mac):
        return self.host(self.only or self.by_mac.get(mac) or self.default)

    def add_dhcp_host(self, network_name, mac, ip, name) -> bool:
        return self._host(mac).add_dhcp_host(network_name, DhcpHost(mac, ip, name))

    def remove_dhcp_host(self, network_name, mac, ip, name) -> bool:
        host = self._host(mac)
        if not host.network_exists(network_name):
            return False
        return host.remove_dhcp_host(network_name, DhcpHost(mac, ip, name))

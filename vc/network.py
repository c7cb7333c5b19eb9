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
    return "%s-net%d" % (cfg.name_prefix, rack), "%sbr%d" % (cfg.name_prefix, rack)


def spec(cfg, plan, host_name=None) -> NetworkSpec:
    """The network of a cluster on one host. A network created now already carries the DHCP
    host entries of the nodes placed on that host: one define instead of one
    ``virNetworkUpdate`` (0.2 s, a dnsmasq reload) per node. The registrar then finds them in
    place; on a network that already exists it adds what is missing with ``virNetworkUpdate``."""
    net, bridge = names(cfg, plan.rack)
    hosts = [DhcpHost(n.mac, n.ip, n.name) for n in plan.nodes
             if host_name is not None and n.host == host_name]
    return NetworkSpec(name=net, bridge=bridge, address=plan.bridge_ip,
                       prefix=plan.subnet.prefixlen, hosts=hosts)


class LibvirtNetworks:
    """Backend ``libvirt``: ensure/remove the cluster's libvirt network on one host."""

    def ensure(self, cfg, plan, host) -> bool:
        return host.ensure_network(spec(cfg, plan, host.name))

    def remove(self, cfg, rack: int, host) -> bool:
        return host.remove_network(names(cfg, rack)[0])

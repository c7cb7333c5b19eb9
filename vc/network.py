"""A cluster's network on each physical host it uses.

This issue's backend is one isolated libvirt network per cluster and host: its own bridge, the
cluster's subnet, the hosts' address ``.1`` and dnsmasq serving only the registered nodes (DHCP
host entries, no dynamic range, so an unregistered MAC gets no address). The isolation backends
(VXLAN, 802.1Q, Open vSwitch; ``vc_vlan.py``) plug in behind the same two calls.
"""

import logging

from vc.domainxml import NetworkSpec

LOG = logging.getLogger(__name__)


def names(cfg, rack: int):
    """``(libvirt network name, bridge name)`` of a cluster (bridge names are at most 15 chars)."""
    return "%s-net%d" % (cfg.name_prefix, rack), "%sbr%d" % (cfg.name_prefix, rack)


def spec(cfg, plan) -> NetworkSpec:
    net, bridge = names(cfg, plan.rack)
    return NetworkSpec(name=net, bridge=bridge, address=plan.bridge_ip,
                       prefix=plan.subnet.prefixlen)


class LibvirtNetworks:
    """Backend ``libvirt``: ensure/remove the cluster's libvirt network on one host."""

    def ensure(self, cfg, plan, host) -> bool:
        return host.ensure_network(spec(cfg, plan))

    def remove(self, cfg, rack: int, host) -> bool:
        return host.remove_network(names(cfg, rack)[0])

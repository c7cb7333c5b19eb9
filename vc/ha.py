"""High availability of running clusters: restart a node whose domain is not running, move a
node off a host that does not answer, and keep the hosts' reachability in ``vchost``.

The rule that keeps a node from ever running twice: a node is placed on another host only when
its own host is unreachable (and is marked so), or after its old domain was destroyed and
undefined there and is confirmed gone.
"""

import logging
from datetime import timedelta
from typing import List

from vc import addresses, admission, designer, network, steps
from vc.db import naive_utc
from vc.domainxml import DhcpHost
from vc.errors import VcError

LOG = logging.getLogger(__name__)


class Healer:
    """HA for one orchestrator (:class:`vc.ctl.Ctl`): its hosts, database, clock and actor."""

    def __init__(self, ctl):
        self.ctl = ctl

    def reachable(self, host_name) -> bool:
        """Can we talk to this host's libvirt at all? (Connecting is the probe.)"""
        try:
            _ = self.ctl.host(host_name).conn
            return True
        except VcError:
            return False

    def mark_host(self, name, reachable) -> None:
        """Record whether a configured host answers (``vchost.reachable``)."""
        h = next((h for h in self.ctl.cfg.hosts if h.name == name), None)
        if h is None:
            return
        now = naive_utc(self.ctl.clock())
        self.ctl.db.transaction(lambda cur: cur.execute(
            "INSERT INTO vchost (name, uri, memory_mb, vcpus, reachable, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
            "reachable = VALUES(reachable), updated_at = VALUES(updated_at)",
            (h.name, h.uri, h.memory_mb, h.vcpus, int(reachable), now)))

    def heal(self, rack: int, max_restarts: int = 3) -> List[str]:
        """Bring every node of a running cluster back to running, at most ``max_restarts``
        times per node and hour.

        :returns: what was done, one line per node acted on.
        """
        # fast path, without the rack's lock (two lease transactions): every node's domain
        # runs on a host that answers. Anything else is looked at again under the lock.
        plan = self.ctl.db.transaction(lambda cur: addresses.load(cur, rack))
        if plan is None or self._all_running(plan):
            return []
        with self.ctl.locked(rack):
            plan = self.ctl.db.transaction(lambda cur: addresses.load(cur, rack))
            if plan is None:
                return []
            down = {h for h in {n.host for n in plan.nodes} if not self.reachable(h)}
            for h in down:
                self.mark_host(h, False)
            done = [self._heal_node(plan, n, n.host in down, max_restarts) for n in plan.nodes]
            return [m for m in done if m]

    def _all_running(self, plan) -> bool:
        try:
            return all(self.ctl.host(n.host).state(designer.domain_name(self.ctl.cfg, n.name))
                       == "running" for n in plan.nodes)
        except VcError:
            return False

    def _restarts_last_hour(self, rack, name) -> int:
        since = naive_utc(self.ctl.clock()) - timedelta(hours=1)
        return self.ctl.db.query(
            "SELECT COUNT(*) AS n FROM vcevent WHERE rack = %s AND at > %s AND reason LIKE %s",
            (rack, since, "ha: restarted %s %%" % name))[0]["n"]

    def _heal_node(self, plan, node, host_down, max_restarts):
        ctl, dom = self.ctl, designer.domain_name(self.ctl.cfg, node.name)
        state = None if host_down else ctl.host(node.host).state(dom)
        if state == "running":
            return None
        n = self._restarts_last_hour(plan.rack, node.name)
        if n >= max_restarts:
            LOG.warning("rack %d: %s is %s but was restarted %d times in the last hour: "
                        "leaving it", plan.rack, node.name, state or "on a dead host", n)
            return None
        where = node.host
        if host_down:
            where = self._replace(plan, node)
        else:
            try:
                steps.boot(ctl, plan, node)
            except VcError as e:
                # the host refuses: make sure the old domain is gone, then move the node
                LOG.warning("rack %d: %s cannot start on %s (%s): moving it", plan.rack,
                            node.name, node.host, e)
                h = ctl.host(node.host)
                h.destroy(dom)
                h.undefine(dom)
                if h.state(dom) != "absent":
                    raise steps.ClusterError("%s: old domain on %s could not be removed; not "
                                             "moving it" % (node.name, node.host)) from e
                where = self._replace(plan, node)
        msg = "ha: restarted %s on %s (was %s)" % (node.name, where,
                                                   state or "on unreachable host %s" % node.host)
        ctl.event(plan.rack, msg)
        return msg

    def _replace(self, plan, node):
        """Move a node to another host with room: placement, network, DHCP, disk, boot."""
        ctl = self.ctl

        def pick(cur):
            free = addresses.host_free(ctl.cfg, cur, plan.rack,
                                       staying=[n for n in plan.nodes if n is not node])
            free.pop(node.host, None)
            target = admission.best_host(free, node.memory_mb, node.vcpus)
            if target is None:
                raise steps.ClusterError("no other host has room for %s (%d MB)" % (
                    node.name, node.memory_mb))
            # 'moving' until its boot there succeeds (steps.boot records it running): a boot that
            # fails leaves it so, not 'running' on a host where nothing runs
            cur.execute("UPDATE vcnode SET host = %s, state = 'moving', updated_at = %s WHERE "
                        "rack = %s AND name = %s", (target, naive_utc(ctl.clock()), plan.rack,
                                                    node.name))
            return target

        target = ctl.db.transaction(pick)
        node.host = target
        h = ctl.host(target)
        seg = ctl.segment(plan, sorted({n.host for n in plan.nodes}))
        ctl.networks.ensure(ctl.cfg, plan, h, joined=seg is not None)
        h.add_dhcp_host(network.names(ctl.cfg, plan.rack)[0], DhcpHost(node.mac, node.ip,
                                                                        node.name))
        # the segment over the hosts that answer (the lost one gets no more floods)
        live = [x for x in sorted({n.host for n in plan.nodes}) if self.reachable(x)]
        seg = ctl.segment(plan, live) if live else None
        if seg is not None:
            ctl.isolation.add(seg)
        steps.make_disk(ctl, node)            # on the new host (its old disk was on the lost one)
        self._seed(plan, node)
        steps.boot(ctl, plan, node)
        return target

    def _seed(self, plan, node) -> None:
        """The node's seed, written again on its new host (same name, MAC and address)."""
        from vc import keys, reservations, seed

        ctl = self.ctl
        owner = reservations.get(ctl.db, plan.rack)["owner"]
        seg = ctl.segment(plan, sorted({n.host for n in plan.nodes}))
        mtu = ctl.isolation.mtu(seg) if seg else None
        vols = [v for v in steps.volumes(ctl.db, plan.rack) if v["iqn"]]
        steps.put_seed(ctl, node, seed.render(designer.seed_input(
            ctl.cfg, plan, node, vols, keys.authorized_lines(ctl.db, owner),
            steps.cluster_key(ctl.cfg, plan.rack, ctl.db), mtu)))

    def fence(self, host_name) -> List[str]:
        """A host that answers again after it was marked unreachable: destroy and undefine
        every VC domain on it whose node now runs elsewhere (or whose cluster is gone), before
        anything could start it. Called by the tick *before* the host is marked reachable.

        :returns: one line per domain removed (also in each rack's event log).
        :raises VcError: a stale domain could not be removed (the host stays unreachable).
        """
        ctl = self.ctl
        h = ctl.host(host_name)
        prefix = ctl.cfg.virt.name_prefix + "-"
        where = {designer.domain_name(ctl.cfg, r["name"]): (r["rack"], r["host"])
                 for r in ctl.db.query("SELECT rack, name, host FROM vcnode")}
        done = []
        for dom in h.list_domains(prefix):
            rack, placed = where.get(dom, (None, None))
            if placed == host_name:
                continue                      # still this host's node: heal restarts it
            was = h.state(dom)
            h.destroy(dom)
            h.undefine(dom)
            if h.state(dom) != "absent":
                raise steps.ClusterError("fence: %s: stale domain %s could not be removed"
                                         % (host_name, dom))
            msg = "fence: %s back; stale %s (%s) destroyed and undefined there, it runs on %s" % (
                host_name, dom, was, placed or "no host (cluster gone)")
            LOG.warning("%s", msg)
            if rack is not None:
                ctl.event(rack, msg)
            done.append(msg)
        return done

"""Addresses and placement of a starting cluster: MACs, its private subnet and node IPs, public
gateway addresses, its isolation id, and the physical host of each node.

Everything is chosen and written in the transaction that moves the reservation to ``starting``.
Each allocation is a ``vcalloc`` row whose primary key ``(kind, value)`` makes it impossible for two
live clusters to share a MAC, an IP, a subnet or an isolation id; the rows (and the ``vcnode``
rows) are deleted when the cluster reaches ``stopped``. MACs come from a counter that only grows,
so a MAC is never handed out twice (DHCP servers remember leases).

The choosing itself (:func:`choose`) is a pure function of the configuration and what is taken,
so ``--dry-run`` shows the same plan a real start would make.
"""

import ipaddress
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Set

from vc import admission
from vc.db import naive_utc
from vc.errors import CapacityError, VcError

LOG = logging.getLogger(__name__)
MAC_MAX = 2 ** 24 - 1


@dataclass
class NodePlan:
    appliance: str
    rank: int
    name: str          # host name <membership lower-cased>-<rack>-<rank>
    memory_mb: int
    vcpus: int
    disk_gb: int
    mac: Optional[str] = None
    ip: Optional[str] = None
    public_ip: Optional[str] = None
    host: Optional[str] = None
    public_mac: Optional[str] = None   # a gateway's NIC on the public network
    id: Optional[int] = None           # the vcnode row (new at every start)


@dataclass
class Plan:
    rack: int
    subnet: ipaddress.IPv4Network
    isolation_id: int
    nodes: List[NodePlan]

    @property
    def bridge_ip(self) -> str:
        """The hosts' own address on the cluster network (DHCP server, first host address)."""
        return str(next(self.subnet.hosts()))

    @property
    def netmask(self) -> str:
        return str(self.subnet.netmask)


def hostname(cfg, appliance: str, rack: int, rank: int) -> str:
    return "%s-%d-%d" % (cfg.membership(appliance).lower(), rack, rank)


def node_plans(cfg, rack: int, resources) -> List[NodePlan]:
    """The nodes of a reservation, gateways first, each appliance ranked from 0."""
    out = []
    for app in ("gateway", "compute"):
        r = resources.get(app)
        for rank in range(r.count if r else 0):
            out.append(NodePlan(app, rank, hostname(cfg, app, rack, rank), r.memory_mb,
                                r.vcpus, r.disk_gb))
    return out


def mac(prefix: str, n: int) -> str:
    if not 1 <= n <= MAC_MAX:
        raise VcError("the MAC counter is exhausted for prefix %s" % prefix)
    return "%s:%02x:%02x:%02x" % (prefix, (n >> 16) & 255, (n >> 8) & 255, n & 255)


def choose(cfg, rack: int, nodes: List[NodePlan], taken: Dict[str, Set[str]],
           host_free: Dict[str, list], first_mac: int) -> Plan:
    """Pick everything for a cluster from what is free.

    :param taken: ``{kind: set of values}`` held by other clusters.
    :param host_free: ``{host: [free memory MB, free vcpus]}`` (updated in place).
    :param first_mac: counter value of the first MAC to hand out.
    :raises CapacityError: when a pool is exhausted or a node fits on no host.
    """
    pools = cfg.addresses
    subnet = next((s for s in pools.private_pool.subnets(new_prefix=pools.private_prefix)
                   if str(s) not in taken.get("subnet", ())), None)
    if subnet is None:
        raise CapacityError("no free private subnet in %s" % pools.private_pool)
    lo, hi = pools.isolation_ids
    used_iso = taken.get("isolation", set())
    iso = next((i for i in range(lo, hi + 1) if str(i) not in used_iso), None)
    if iso is None:
        raise CapacityError("no free isolation id in %d-%d" % (lo, hi))
    # .1 is the hosts' bridge address (and DHCP server); nodes from .2 on, gateways first
    addrs = list(subnet.hosts())[1:]
    if len(nodes) > len(addrs):
        raise CapacityError("%d nodes do not fit in %s" % (len(nodes), subnet))
    free_public = [str(p) for p in pools.public_pool if str(p) not in taken.get("public_ip", ())]
    for i, n in enumerate(nodes):
        n.mac = mac(pools.mac_prefix, first_mac + i)
        n.ip = str(addrs[i])
        if n.appliance == "gateway":
            if not free_public:
                raise CapacityError("no free public address for %s" % n.name)
            n.public_ip = free_public.pop(0)
    # the gateways' public NICs take the MACs after the private ones
    for i, n in enumerate(x for x in nodes if x.appliance == "gateway"):
        n.public_mac = mac(pools.mac_prefix, first_mac + len(nodes) + i)
    # placement: largest first, each on the host with the most free memory (spreads the cluster)
    for n in sorted(nodes, key=lambda n: (-n.memory_mb, -n.vcpus, n.appliance != "gateway",
                                          n.rank)):
        h = admission.best_host(host_free, n.memory_mb, n.vcpus)
        if h is None:
            raise CapacityError("node %s (%d MB, %d vcpus) fits on no physical host now"
                                % (n.name, n.memory_mb, n.vcpus))
        host_free[h][0] -= n.memory_mb
        host_free[h][1] -= n.vcpus
        n.host = h
    return Plan(rack, subnet, iso, nodes)


def mac_count(nodes) -> int:
    """MACs a cluster takes from the counter: one per node, one more per gateway."""
    return len(nodes) + sum(1 for n in nodes if n.appliance == "gateway")


def _taken(cur, rack) -> Dict[str, Set[str]]:
    cur.execute("SELECT kind, value FROM vcalloc WHERE rack <> %s", (rack,))
    out: Dict[str, Set[str]] = {}
    for r in cur.fetchall():
        out.setdefault(r["kind"], set()).add(r["value"])
    return out


def host_free(cfg, cur, rack, staying=()) -> Dict[str, list]:
    """Free memory/vcpus per usable host: configured capacity minus the nodes of other live
    clusters placed there, and minus ``staying`` (nodes of this rack that keep their host
    while others of it move: HA re-placement, migration)."""
    cur.execute("SELECT name FROM vchost WHERE enabled = 0 OR reachable = 0")
    unusable = {r["name"] for r in cur.fetchall()}
    free = {h.name: [h.memory_mb, h.vcpus] for h in cfg.hosts if h.name not in unusable}
    cur.execute("SELECT n.host, SUM(s.memory_mb) AS mem, SUM(s.vcpus) AS cpu FROM vcnode n "
                "JOIN vcresource s ON s.rack = n.rack AND s.appliance = n.appliance "
                "WHERE n.rack <> %s AND n.host IS NOT NULL GROUP BY n.host", (rack,))
    for r in cur.fetchall():
        if r["host"] in free:
            free[r["host"]][0] -= int(r["mem"])
            free[r["host"]][1] -= int(r["cpu"])
    for n in staying:
        if n.host in free:
            free[n.host][0] -= n.memory_mb
            free[n.host][1] -= n.vcpus
    return free


def load(cur, rack) -> Optional[Plan]:
    """The stored plan of a cluster, or None when nothing is allocated."""
    cur.execute("SELECT kind, value FROM vcalloc WHERE rack = %s AND kind IN "
                "('subnet', 'isolation')", (rack,))
    got = {r["kind"]: r["value"] for r in cur.fetchall()}
    if "subnet" not in got:
        return None
    cur.execute("SELECT n.*, s.memory_mb, s.vcpus, s.disk_gb FROM vcnode n JOIN vcresource s "
                "ON s.rack = n.rack AND s.appliance = n.appliance WHERE n.rack = %s "
                "ORDER BY n.appliance = 'compute', n.`rank`", (rack,))
    nodes = [NodePlan(r["appliance"], r["rank"], r["name"], r["memory_mb"], r["vcpus"],
                      r["disk_gb"], r["mac"], r["ip"], r["public_ip"], r["host"],
                      r["public_mac"], r["id"])
             for r in cur.fetchall()]
    return Plan(rack, ipaddress.IPv4Network(got["subnet"]), int(got["isolation"]), nodes)


def preview(cfg, cur, rack, resources) -> Plan:
    """What :func:`allocate` would choose now, writing nothing (for ``--dry-run``)."""
    existing = load(cur, rack)
    if existing:
        return existing
    cur.execute("SELECT value FROM vccounter WHERE name = 'mac'")
    next_mac = int(cur.fetchone()["value"]) + 1
    return choose(cfg, rack, node_plans(cfg, rack, resources), _taken(cur, rack),
                  host_free(cfg, cur, rack), next_mac)


def allocate(cfg, cur, rack, resources, now) -> Plan:
    """Allocate (or return the already allocated) plan of a cluster and write it: ``vcalloc``
    rows and one ``vcnode`` row per node. Runs in the caller's transaction, which holds the
    admission lock (so two starts cannot pick the same free values; the keys would refuse it)."""
    existing = load(cur, rack)
    if existing:
        return existing
    nodes = node_plans(cfg, rack, resources)
    cur.execute("UPDATE vccounter SET value = LAST_INSERT_ID(value + %s) WHERE name = 'mac'",
                (mac_count(nodes),))
    cur.execute("SELECT LAST_INSERT_ID() AS v")
    last = int(cur.fetchone()["v"])
    plan = choose(cfg, rack, nodes, _taken(cur, rack), host_free(cfg, cur, rack),
                  last - mac_count(nodes) + 1)
    n = naive_utc(now)
    rows = [("subnet", str(plan.subnet)), ("isolation", str(plan.isolation_id))]
    for node in plan.nodes:
        rows += [("mac", node.mac), ("private_ip", node.ip)]
        if node.public_ip:
            rows.append(("public_ip", node.public_ip))
        if node.public_mac:
            rows.append(("mac", node.public_mac))
    cur.executemany("INSERT INTO vcalloc (kind, value, rack, created_at) VALUES (%s, %s, %s, %s)",
                    [(k, v, rack, n) for k, v in rows])
    cur.executemany(
        "INSERT INTO vcnode (rack, appliance, `rank`, name, mac, ip, public_ip, public_mac, host, "
        "state, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'new', %s)",
        [(rack, x.appliance, x.rank, x.name, x.mac, x.ip, x.public_ip, x.public_mac, x.host, n)
         for x in plan.nodes])
    cur.execute("SELECT id, name FROM vcnode WHERE rack = %s", (rack,))
    ids = {r["name"]: r["id"] for r in cur.fetchall()}
    for x in plan.nodes:
        x.id = ids[x.name]
    LOG.info("rack %s: allocated %s, isolation %s, %d nodes", rack, plan.subnet,
             plan.isolation_id, len(plan.nodes))
    return plan


def release(cur, rack) -> int:
    """Free everything a cluster holds (its node rows and allocations). Returns rows removed."""
    cur.execute("DELETE FROM vcnode WHERE rack = %s", (rack,))
    n = cur.rowcount
    cur.execute("DELETE FROM vcalloc WHERE rack = %s", (rack,))
    return n + cur.rowcount

"""Live migration off a drained host: ``vc_ctl.py host drain NAME --migrate``.

After the drain (:func:`vc.hosts.drain`), every node whose domain runs on the host is moved,
one at a time, to another enabled host that answers and has room (HA re-placement's rule:
:func:`vc.admission.best_host` over :func:`vc.addresses.host_free`, this cluster's other nodes
counted), by a live migration driven from the frontend (``virDomainMigrate3`` on the two
connections; the stream goes from the source QEMU to ``tcp://<destination underlay_ip>``).

Per node, under its cluster's lock:

1. the cluster's network on the destination (as HA's ``_replace`` makes it), its segment over
   the hosts it spans during the move (VXLAN port + flood entries), its CHAP secrets;
2. storage: when both hosts see the same ``disk_dir`` (a marker file written through one host's
   executor is looked for through the other's — on this machine the namespace hosts share the
   frontend's filesystem) the overlay and the seed stay where they are and the migration is
   ``VIR_MIGRATE_UNSAFE`` (libvirt cannot tell that two daemons see one file and refuses a
   qcow2 without shared-storage proof; QEMU's image locking still forbids two writers). Where
   they do not, the overlay is made on the destination over the same base image, the seed ISO
   copied, and the migration is ``VIR_MIGRATE_NON_SHARED_INC`` (QEMU copies the overlay, the
   base image must exist there); the source's files are removed after a success;
3. ``LIVE | PERSIST_DEST | UNDEFINE_SOURCE``; only after it succeeded is ``vcnode.host``
   updated, and an event written ("migrate: ... from A to B in X s");
4. a failure leaves the node running where it was: a definition left on the destination is
   destroyed and undefined there (and files made there removed); the result says why.

Once no node of a cluster remains on the host, its segment piece and network there are
removed (what stop does for that host) — unless that network is the one serving the cluster's
DHCP and ``.1`` and no other host's network can (a bare bridge cannot be given an address while
guests use it): then it is kept until the stop, and the result says so.

Refusals before anything moves (the drain flag stays set; ``host enable NAME`` undoes it): the
host does not answer, or some running node has no room anywhere.
"""

import dataclasses
import logging
import os
import time
import uuid
from typing import Callable, Dict, List, Optional

from vc import addresses, admission, designer, disks, iscsi, network, steps, virt
from vc.db import naive_utc
from vc.domainxml import DhcpHost
from vc.errors import VcError

LOG = logging.getLogger(__name__)

#: seconds one node's migration may take before its job is aborted (rolled back)
TIMEOUT = 600

#: ``migrate(src Host, dst Host, domain, uri, flags, timeout)``: the default is libvirt's
Migrate = Callable[..., None]


def libvirt_migrate(src, dst, dom, uri, flags, timeout) -> None:
    src.migrate(dom, dst, uri, flags, timeout)


@dataclasses.dataclass
class Result:
    """One node's outcome (``host drain --migrate --json`` prints these)."""

    rack: int
    node: str
    source: str
    target: Optional[str] = None
    ok: bool = False
    seconds: Optional[float] = None    # in all: network, segment, storage, migration
    migration_seconds: Optional[float] = None   # libvirt's migration call alone
    storage: Optional[str] = None      # "shared" or "copied"
    error: Optional[str] = None


def shared_disk_dir(ctl, a: str, b: str) -> bool:
    """Do hosts ``a`` and ``b`` see one ``disk_dir``? Two local hosts: yes (one machine);
    else a marker file made through ``a``'s executor is looked for through ``b``'s."""
    cfg = ctl.cfg
    if not disks.is_remote(cfg, a) and not disks.is_remote(cfg, b):
        return True
    d = os.path.abspath(cfg.virt.disk_dir)
    marker = os.path.join(d, ".vc-shared-%s" % uuid.uuid4().hex[:12])
    ea, eb = ctl.host_exec(a), ctl.host_exec(b)
    ea(["sh", "-c", 'mkdir -p -m 700 "$1" && : > "$2"', "sh", d, marker])
    try:
        return eb(["sh", "-c", '[ -e "$1" ] && echo yes || echo no', "sh", marker]).strip() \
            == "yes"
    finally:
        ea(["rm", "-f", "--", marker])


def _running_nodes(ctl, name) -> Dict[int, List[str]]:
    """{rack: [node names]} of the nodes the database places on host ``name``."""
    out: Dict[int, List[str]] = {}
    for r in ctl.db.query("SELECT rack, name FROM vcnode WHERE host = %s ORDER BY rack, id",
                          (name,)):
        out.setdefault(int(r["rack"]), []).append(r["name"])
    return out


def plan_moves(ctl, source: str, todo: Dict[int, List[str]], reachable) -> Dict[tuple, str]:
    """Where each node goes: ``{(rack, node): target}``, the nodes placed one after another
    (each move counted on its target for the next). :raises VcError: a node without room."""
    planned: Dict[str, List[int]] = {}
    out: Dict[tuple, str] = {}
    for rack, names in sorted(todo.items()):
        def read(cur, rack=rack, names=names):
            plan = addresses.load(cur, rack)    # this cluster's nodes that stay count too
            return plan, addresses.host_free(ctl.cfg, cur, rack, staying=[
                n for n in plan.nodes if n.name not in names])

        plan, free = ctl.db.transaction(read)
        free.pop(source, None)
        for h in [h for h in free if not reachable(h)]:
            free.pop(h)
        for h, (mem, cpu) in planned.items():   # nodes of earlier clusters moved there
            if h in free:
                free[h][0] -= mem
                free[h][1] -= cpu
        for node in (n for n in plan.nodes if n.name in names):
            target = admission.best_host(free, node.memory_mb, node.vcpus)
            if target is None:
                raise VcError("no other enabled host that answers has room for %s of rack %d "
                              "(%d MB, %d vCPUs; free: %s)" % (
                                  node.name, rack, node.memory_mb, node.vcpus,
                                  ", ".join("%s %d MB/%d vCPUs" % (h, m, c)
                                            for h, (m, c) in sorted(free.items())) or "none"))
            free[target][0] -= node.memory_mb
            free[target][1] -= node.vcpus
            p = planned.setdefault(target, [0, 0])
            p[0] += node.memory_mb
            p[1] += node.vcpus
            out[(rack, node.name)] = target
    return out


def off_host(ctl, name: str, migrate: Optional[Migrate] = None,
             timeout: float = TIMEOUT) -> dict:
    """Live-migrate every running node of drained host ``name`` away (see the module).

    :returns: ``{"host", "results": [Result as dict], "skipped": [...], "kept": [...],
        "failed": n}``.
    :raises VcError: the host does not answer, or some running node has no room elsewhere
        (nothing moved).
    """
    migrate = migrate or libvirt_migrate
    cfg = ctl.cfg
    if not ctl.ha.reachable(name):
        raise VcError("host %s does not answer: nothing migrated (it stays drained; when the "
                      "tick marks it unreachable, HA re-places its nodes)" % name)
    src = ctl.host(name)
    placed = _running_nodes(ctl, name)
    todo: Dict[int, List[str]] = {}
    skipped = []
    for rack, names in placed.items():
        for n in names:
            st = src.state(designer.domain_name(cfg, n))
            if st == "running":
                todo.setdefault(rack, []).append(n)
            else:
                skipped.append({"rack": rack, "node": n, "why": "its domain is %s on %s: "
                                "left there" % (st, name)})
    seen: Dict[str, bool] = {}

    def reachable(h):
        if h not in seen:
            seen[h] = ctl.ha.reachable(h)
        return seen[h]

    where = plan_moves(ctl, name, todo, reachable)
    by_rack: Dict[int, list] = {}
    for (rack, n), target in where.items():    # in plan order: a cluster's gateways first
        by_rack.setdefault(rack, []).append((n, target))
    shared: Dict[str, bool] = {}
    results: List[Result] = []
    kept: List[str] = []
    for rack, moves in by_rack.items():
        try:
            with ctl.locked(rack):
                for n, target in moves:
                    if target not in shared:
                        shared[target] = shared_disk_dir(ctl, name, target)
                    results.append(_move(ctl, rack, n, name, target, shared[target], migrate,
                                         timeout))
                try:
                    note = _cleanup(ctl, rack, name)
                except VcError as e:
                    note = "rack %d: removing its network/segment on %s failed (stop removes " \
                           "them): %s" % (rack, name, e)
                    LOG.warning("%s", note)
                if note:
                    kept.append(note)
        except VcError as e:   # the rack's lock: a start or stop under way
            LOG.warning("rack %d: %s", rack, e)
            done = {r.node for r in results if r.rack == rack}
            results += [Result(rack, n, name, t, error=str(e)) for n, t in moves
                        if n not in done]
    failed = sum(1 for r in results if not r.ok)
    return {"host": name, "results": [dataclasses.asdict(r) for r in results],
            "skipped": skipped, "kept": kept, "failed": failed}


def _move(ctl, rack, name, source, target, shared, migrate, timeout) -> Result:
    cfg = ctl.cfg
    res = Result(rack, name, source, target, storage="shared" if shared else "copied")
    plan = ctl.db.transaction(lambda cur: addresses.load(cur, rack))
    node = next((n for n in plan.nodes if n.name == name), None)
    if node is None or node.host != source:
        res.error = "no longer on %s" % source
        return res
    dom = designer.domain_name(cfg, name)
    src, dst = ctl.host(source), ctl.host(target)
    made: List[str] = []
    t0 = time.monotonic()
    try:
        if dst.state(dom) != "absent":
            raise VcError("a domain %s already exists on %s" % (dom, target))
        _prepare(ctl, plan, node, source, target)
        flags = virt.MIGRATE_LIVE | virt.MIGRATE_PERSIST_DEST | virt.MIGRATE_UNDEFINE_SOURCE
        if shared:
            # the same overlay file is seen by both daemons (checked by shared_disk_dir): libvirt
            # cannot know it and calls the move "unsafe"; it is not (QEMU hands the image over
            # at the switch, and its image lock still forbids two writers)
            flags |= virt.MIGRATE_UNSAFE
        else:
            made = _copy_storage(ctl, node, source, target)
            flags |= virt.MIGRATE_NON_SHARED_INC
        ip = next((h.underlay_ip for h in cfg.hosts if h.name == target), None)
        uri = "tcp://%s" % (("[%s]" % ip) if ":" in ip else ip) if ip else None
        ctl.progress("rack %d: migrating %s from %s to %s (%s storage)" % (
            rack, name, source, target, res.storage))
        t1 = time.monotonic()
        migrate(src, dst, dom, uri, flags, timeout)
        res.migration_seconds = round(time.monotonic() - t1, 2)
    except Exception as e:
        res.error = str(e)
        if _where(src, dst, dom) == "target":
            LOG.warning("rack %d: %s: migration reported %s but the domain runs on %s only",
                        rack, name, e, target)
        else:
            _undo(ctl, rack, node, source, target, dom, made)
            LOG.warning("rack %d: %s stays on %s: %s", rack, name, source, e)
            ctl.event(rack, "migrate: %s not migrated from %s to %s, still running on %s: %s"
                      % (name, source, target, source, e))
            return res
    res.seconds = round(time.monotonic() - t0, 2)
    ctl.db.transaction(lambda cur: cur.execute(
        "UPDATE vcnode SET host = %s, updated_at = %s WHERE rack = %s AND name = %s AND "
        "host = %s", (target, naive_utc(ctl.clock()), rack, name, source)))
    res.ok = True
    if not shared:
        _remove_files(ctl, source, dom)
    msg = "migrate: %s migrated from %s to %s in %.1f s (live, %s storage)%s" % (
        name, source, target, res.seconds, res.storage,
        "; libvirt said: %s" % res.error if res.error else "")
    ctl.event(rack, msg)
    ctl.progress("rack %d: %s" % (rack, msg))
    return res


def _where(src, dst, dom) -> str:
    """After a failed migration: ``target`` if the domain runs there and not on the source."""
    def st(h):
        try:
            return h.state(dom)
        except VcError:
            return "unknown"
    return "target" if st(dst) == "running" and st(src) not in ("running", "paused") \
        else "source"


def _prepare(ctl, plan, node, source, target) -> None:
    """The cluster's network, segment and CHAP secrets on ``target`` for ``node`` (the plan
    as it will be, the source still counted while nodes may remain there)."""
    cfg = ctl.cfg
    moved = dataclasses.replace(plan, nodes=[
        dataclasses.replace(n, host=target) if n.name == node.name else n for n in plan.nodes])
    hosts = sorted({n.host for n in moved.nodes} | {source})
    seg = ctl.segment(moved, hosts)
    mtu = ctl.isolation.mtu(seg) if seg else None
    dst = ctl.host(target)
    net = network.names(cfg, plan.rack)[0]
    if target in ctl.isolation.network_hosts(moved, hosts, seg):
        ctl.networks.ensure(cfg, moved, dst, mtu, joined=seg is not None)
    if seg is not None:
        ctl.isolation.add(seg)
    if dst.network_address(net):       # it serves DHCP: the node's entry there too
        dst.add_dhcp_host(net, DhcpHost(node.mac, node.ip, node.name))
    vols = [v for v in steps.volumes(ctl.db, plan.rack) if v["iqn"]]
    for usage, secret in iscsi.libvirt_secrets(cfg, node.appliance, vols):
        dst.ensure_secret(usage, secret)


def _read_file(ctl, host, path) -> bytes:
    import base64

    if not disks.is_remote(ctl.cfg, host):
        with open(path, "rb") as f:
            return f.read()
    return base64.b64decode(ctl.host_exec(host)(["base64", "-w", "0", path]))


def _copy_storage(ctl, node, source, target) -> List[str]:
    """Not shared: the overlay made on ``target`` over the same base image (QEMU fills it
    during the migration) and the seed ISO copied. :returns: the files made there."""
    cfg = ctl.cfg
    disk, seed = designer.disk_path(cfg, node.name), designer.seed_path(cfg, node.name)
    made = []
    if steps.make_disk(ctl, dataclasses.replace(node, host=target)):
        made.append(disk)
    data = _read_file(ctl, source, seed)
    if disks.is_remote(cfg, target):
        disks.write_file_on(ctl.host_exec(target), seed, data)
    else:
        with open(os.open(seed, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(data)
    made.append(seed)
    return made


def _remove_files(ctl, host, dom) -> None:
    """The node's overlay, seed and console log on ``host`` (after it left, not shared)."""
    match = (lambda stem: stem == dom)
    try:
        for d in (ctl.cfg.virt.disk_dir, ctl.cfg.virt.console_dir):
            if disks.is_remote(ctl.cfg, host):
                disks.remove_matching_on(ctl.host_exec(host), d, match)
            else:
                disks.remove_matching(d, match)
    except (OSError, VcError) as e:
        LOG.warning("%s: the files of %s left after its migration could not be removed: %s",
                    host, dom, e)


def _undo(ctl, rack, node, source, target, dom, made) -> None:
    """A failed migration: whatever it left on ``target`` goes (the source copy is the live
    one), and the files made there."""
    dst = ctl.host(target)
    try:
        dst.destroy(dom)
        dst.undefine(dom)
        if made and disks.is_remote(ctl.cfg, target):
            ctl.host_exec(target)(["rm", "-f", "--"] + made)
        else:
            for f in made:
                disks.remove_disk(f)
    except (OSError, VcError) as e:
        LOG.error("rack %d: %s: cleaning %s after the failed migration: %s", rack, node.name,
                  target, e)


def _cleanup(ctl, rack, source) -> Optional[str]:
    """No node of the rack left on ``source``: its segment piece and network there go, as
    a stop removes them — unless that network is the only one that can serve DHCP and ``.1``.
    :returns: a note when something was kept."""
    cfg = ctl.cfg
    plan = ctl.db.transaction(lambda cur: addresses.load(cur, rack))
    if plan is None or any(n.host == source for n in plan.nodes):
        return None
    net = network.names(cfg, rack)[0]
    server = network.dhcp_host(plan)
    if not ctl.host(server).network_address(net) and \
            ctl.host(source).network_address(net):
        note = ("rack %d: the network %s on %s is kept: it serves the cluster's DHCP and %s, "
                "and %s's bridge has no address (removed when the cluster stops)"
                % (rack, net, source, plan.bridge_ip, server))
        ctl.event(rack, "migrate: " + note)
        return note
    hosts = sorted({n.host for n in plan.nodes})
    old = ctl.segment(plan, [source])
    if old is not None:
        ctl.isolation.delete(old)
    ctl.networks.remove(cfg, rack, ctl.host(source))
    seg = ctl.segment(plan, hosts)
    if seg is not None:
        ctl.isolation.add(seg)          # no more floods to the source
    ctl.event(rack, "migrate: no node left on %s: its network and segment there removed"
              % source)
    return None

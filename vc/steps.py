"""The start and stop steps of a cluster: each one small, idempotent object.

A step's ``run(r)`` acts on one :class:`Run` (the rack, its plan, the orchestrator's services)
and returns a short detail for its event. What exists is kept and what is gone counts as done, so
a run that died after any step is finished by running the list again. :data:`START` and
:data:`STOP` *are* the published step lists: the runner (:mod:`vc.ctl`), ``--dry-run`` and the
crash tests iterate them.
"""

import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Optional

from vc import addresses, designer, disks, iscsi, network, register, reservations, states, \
    timeutil
from vc.db import aware_utc, naive_utc
from vc.errors import InvalidTransition, VcError

LOG = logging.getLogger(__name__)


class ClusterError(VcError):
    """A start or stop step failed; the cluster is left ``failed`` with this message."""


@dataclass
class Run:
    """One start or stop of one rack."""

    ctl: object
    rack: int
    plan: Optional[addresses.Plan] = None
    resumed: bool = False
    result: Optional[dict] = None      # set by a step that ends the run early (nothing to do)
    preboot: bool = False              # the tick's pre-boot: early, the reserved start kept
    _vols: Optional[list] = field(default=None, repr=False)
    launching: list = field(default_factory=list, repr=False)  # boot_gateways' launch threads
    launched: set = field(default_factory=set, repr=False)     # ... and the names they started

    @property
    def cfg(self):
        return self.ctl.cfg

    def vols(self, refresh=False) -> List[dict]:
        """The cluster's attached volumes (read once per run; ``refresh`` after storage)."""
        if self._vols is None or refresh:
            self._vols = [v for v in volumes(self.ctl.db, self.rack) if v["iqn"]]
        return self._vols

    def hosts_used(self) -> List[str]:
        return sorted({n.host for n in self.plan.nodes})


class Step:
    """A step. ``records_failure``: a failure leaves the cluster ``failed`` with the error
    (the first start step runs in the transaction that moves the state; if it fails, nothing
    changed and the error is only raised)."""

    name = ""
    records_failure = True

    def run(self, r: Run) -> str:  # pragma: no cover - every step defines it
        raise NotImplementedError


def volumes(db, rack) -> List[dict]:
    """Every iSCSI volume of a reservation, with its target's address and pinned key."""
    return db.query(
        "SELECT v.id, v.mount_point, v.size_gb, v.appliance, v.iqn, v.lun, v.state, "
        "v.nfs_export, v.nfs_client_mount, v.chap_user, v.chap_secret, "
        "t.name AS target, t.address, t.port, "
        "t.ssh_user, t.iscsi_port, t.host_key_fingerprint FROM vciscsi v JOIN vciscsitarget "
        "t ON t.id = v.target_id WHERE v.rack = %s ORDER BY v.mount_point", (rack,))


##################
# Start          #
##################


class Allocate(Step):
    """``reserved|failed → starting`` with the allocation of MACs, IPs, subnet, public
    addresses, isolation id and the placement, in one transaction."""

    name = "allocate"
    records_failure = False

    def run(self, r):
        ctl, now = r.ctl, r.ctl.clock()

        def txn(cur):
            reservations._lock_admission(cur)
            row = states.lock(cur, r.rack)
            st = row["state"]
            if row["pending"] == "delete":
                raise InvalidTransition(rack=r.rack, state=st + " (delete pending)",
                                        action="start it")
            if st == states.RUNNING:
                return None, st
            if st not in (states.RESERVED, states.FAILED, states.STARTING):
                raise InvalidTransition(rack=r.rack, state=st, action="start it")
            start, end = aware_utc(row["start_at"]), aware_utc(row["end_at"])
            if end <= now:
                raise VcError("reservation %d ended at %s: nothing to start" % (
                    r.rack, timeutil.show(end, ctl.cfg.tzinfo())))
            res = reservations._resources(cur, r.rack)
            if start > now and st == states.RESERVED:
                # forced early: the time before the reserved start needs capacity too (a
                # starting/failed one before its start was pre-booted: admitted then)
                reservations.admit(ctl.cfg, cur, now, start, res, now, exclude_rack=r.rack)
                if r.preboot:
                    # pre-boot ([cron] preboot_minutes): ready at the start; the owner's
                    # window is unchanged
                    states.event(cur, r.rack, now, ctl.actor, "pre-boot: starting %d s before "
                                 "the start at %s" % ((start - now).total_seconds(),
                                                      timeutil.iso(start)))
                else:
                    cur.execute("UPDATE vcregist SET start_at = %s WHERE rack = %s",
                                (naive_utc(now), r.rack))
            if st != states.STARTING:
                states.transition(cur, row, states.STARTING, now, ctl.actor,
                                  "start" if st == states.RESERVED else "retry start after: %s"
                                  % (row["error"] or "failure"))
            return addresses.allocate(ctl.cfg, cur, r.rack, res, now), st

        r.plan, was = ctl.db.transaction(txn)
        if r.plan is None:
            r.result = {"rack": r.rack, "state": "running", "changed": False}
            return ""
        r.resumed = was == states.STARTING
        ctl.progress("rack %d: %s %s, %d nodes (%s)" % (
            r.rack, "resuming start" if r.resumed else "starting", r.plan.subnet,
            len(r.plan.nodes), ", ".join("%s@%s" % (n.name, n.host) for n in r.plan.nodes)))
        return "%s isolation %d" % (r.plan.subnet, r.plan.isolation_id)


class Dump(Step):
    """The insert-ethers dump of the cluster (rack = cluster number)."""

    name = "dump"

    def run(self, r):
        path = designer.dump_path(r.cfg, r.rack)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        register._atomic_write(path, dump_text(r.ctl, r.plan))
        return path


def dump_text(ctl, plan) -> str:
    return register.dump(designer.entries(ctl.cfg, plan), ctl.registrar(plan).dump_argv0)


class Network(Step):
    """The cluster network on each host it uses (DHCP host entries included); the isolation
    backend may need it on fewer hosts (``ovs``: only the DHCP host)."""

    name = "network"

    def run(self, r):
        from vc import hosts

        for h in r.hosts_used():   # each host answers and has the memory it is said to have
            hosts.check_capacity(r.ctl, h)
        seg = r.ctl.segment(r.plan, r.hosts_used())
        mtu = r.ctl.isolation.mtu(seg) if seg else None
        for h in r.ctl.isolation.network_hosts(r.plan, r.hosts_used(), seg):
            r.ctl.networks.ensure(r.cfg, r.plan, r.ctl.host(h), mtu, joined=seg is not None)
        return network.names(r.cfg, r.rack)[0]


class Isolation(Step):
    """``vc_vlan.py add``: the cluster's nodes on their own segment on every host."""

    name = "isolation"

    def run(self, r):
        did = vlan(r.ctl, r.rack, "add", plan=r.plan)
        return "%s, %d change(s)" % (r.cfg.network.isolation, len(did))


class Register(Step):
    name = "register"

    def run(self, r):
        added = r.ctl.registrar(r.plan).register(designer.entries(r.cfg, r.plan),
                                                 network.names(r.cfg, r.rack)[0])
        return "%d new" % len(added or [])


class Disks(Step):
    """A qcow2 overlay per node over its appliance's base image, sized as reserved; the nodes'
    overlays in parallel (each is two or three short ``qemu-img``/``chmod`` runs)."""

    name = "disks"

    def run(self, r):
        disks.private_dir(r.cfg.virt.disk_dir)     # 700: the nodes' data and consoles
        disks.private_dir(r.cfg.virt.console_dir)
        parallel(lambda n: make_disk(r.ctl, n), r.plan.nodes, r.cfg.virt.boot_parallel)
        return ""


def make_disk(ctl, n) -> bool:
    """The node's overlay, made on the host that runs it (a remote host: through its
    executor, over the SSH trust libvirt's transport uses)."""
    path, base = designer.disk_path(ctl.cfg, n.name), ctl.cfg.appliance(n.appliance).image
    if disks.is_remote(ctl.cfg, n.host):
        return disks.create_cow_disk_on(ctl.host_exec(n.host), path, base, n.disk_gb,
                                        ctl.cfg.virt.console_dir)
    return disks.create_cow_disk(path, base, n.disk_gb, ctl.execute)


def put_seed(ctl, n, files) -> None:
    """Write the node's seed image on the host that runs it (remote: its bytes over stdin)."""
    from vc import seed

    path = designer.seed_path(ctl.cfg, n.name)
    if disks.is_remote(ctl.cfg, n.host):
        disks.write_file_on(ctl.host_exec(n.host), path, seed.iso_bytes(files))
    else:
        seed.write_iso(path, files)


class Storage(Step):
    """Every iSCSI volume created (or found) on its target and admitted to the gateways'
    hosts; what exists is kept (its data survives stops)."""

    name = "storage"

    def run(self, r):
        vols = volumes(r.ctl.db, r.rack)
        by_target = {}
        for v in vols:
            by_target.setdefault(v["target"], []).append(v)
        with r.ctl.target_pool() as pool:
            for name, vs in by_target.items():
                be = r.ctl.target_backend(pool, vs[0])
                chap = iscsi.chap_credentials(r.ctl.db, r.cfg, vs)  # CHAP: made/stored once
                specs = [iscsi.VolumeSpec(
                    iscsi.iqn_for(r.cfg.storage.iqn_prefix, r.rack, v["mount_point"]),
                    be.backing_for(iscsi.volume_name(r.rack, v["mount_point"],
                                                     r.cfg.virt.name_prefix)), v["size_gb"],
                    chap=chap[v["id"]])
                    for v in vs]
                be.ensure_volumes(specs, designer.initiators(r.cfg, r.plan))
                for v, sp in zip(vs, specs):
                    r.ctl.db.transaction(lambda cur, v=v, sp=sp, lun=be.lun: cur.execute(
                        "UPDATE vciscsi SET iqn = %s, lun = %s, state = 'ready' WHERE id = %s",
                        (sp.iqn, lun, v["id"])))
                r.ctl.progress("rack %d: %d volume(s) ready on %s" % (r.rack, len(vs), name))
        r.vols(refresh=True)
        return "%d volume(s)" % len(vols)


class Seed(Step):
    """Each node's cloud-init NoCloud seed (``vc.seed``): names, addresses, root's keys (the
    owner's and the cluster's own pair), the storage role. Rewritten on every run (2–3 ms a
    node), so a resumed start carries the owner's current keys."""

    name = "seed"

    def run(self, r):
        from vc import keys, seed

        ctl, cfg = r.ctl, r.cfg
        owner = reservations.get(ctl.db, r.rack)["owner"]
        owner_keys = keys.authorized_lines(ctl.db, owner)
        pair = cluster_key(cfg, r.rack, ctl.db)
        from vc import metad  # the lease token: made once per start, in every node's seed

        token = metad.ensure_token(cfg, ctl.db, r.rack, ctl.clock())
        seg = ctl.segment(r.plan, r.hosts_used())
        mtu = ctl.isolation.mtu(seg) if seg else None
        for n in r.plan.nodes:
            put_seed(ctl, n, seed.render(designer.seed_input(cfg, r.plan, n, r.vols(),
                                                             owner_keys, pair, mtu, token)))
        if not owner_keys:
            ctl.progress("rack %d: warning: %s has no SSH key: nobody can log in (vc_ctl.py "
                         "key add)" % (r.rack, owner))
        return "%d seed(s), %d key(s) of %s" % (len(r.plan.nodes), len(owner_keys), owner)


def cluster_key(cfg, rack, db=None):
    """The cluster's own key pair ``(private OpenSSH text, public line)``, made at its first
    start and kept until its stop. With ``db`` the pair is the database's (``vcclusterkey``,
    the private half sealed with the frontends' key): a resumed start, on this frontend or on
    another that took the rack's lease over, uses the same pair. A copy goes to
    ``state_dir/keys/rack-N`` (0600 in 0700) for root on the frontend."""
    from vc import sshkeys

    d = designer.key_dir(cfg, rack)
    priv, pub = os.path.join(d, "id_ed25519"), os.path.join(d, "id_ed25519.pub")
    pair = None
    if db is not None:
        def read(cur):
            cur.execute("SELECT public_key, private_sealed FROM vcclusterkey WHERE rack = %s",
                        (rack,))
            return cur.fetchone()

        row = db.transaction(read)
        if row is None:
            text, line = sshkeys.cluster_keypair("vc-cluster-%d" % rack)
            sealed = iscsi.seal(cfg.site.state_dir, text)
            # INSERT IGNORE: of two frontends making it at once, the first one's pair counts
            db.transaction(lambda cur: cur.execute(
                "INSERT IGNORE INTO vcclusterkey (rack, public_key, private_sealed, created_at) "
                "VALUES (%s, %s, %s, UTC_TIMESTAMP())", (rack, line, sealed)))
            row = db.transaction(read)
        try:
            pair = iscsi.unseal(cfg.site.state_dir, row["private_sealed"]), row["public_key"]
        except ValueError as e:
            # sealed by a frontend whose key this one lacks (state_dir/chap/key is to be shared
            # by the frontends): a new pair, and every seed is rewritten with it before a boot
            LOG.warning("rack %d: the cluster's key pair in the database: %s; making a new one",
                        rack, e)
            text, line = sshkeys.cluster_keypair("vc-cluster-%d" % rack)
            db.transaction(lambda cur: cur.execute(
                "UPDATE vcclusterkey SET public_key = %s, private_sealed = %s WHERE rack = %s",
                (line, iscsi.seal(cfg.site.state_dir, text), rack)))
            pair = text, line
    elif os.path.exists(priv) and os.path.exists(pub):
        with open(priv) as f, open(pub) as g:
            return f.read(), g.read().strip()
    text, line = pair or sshkeys.cluster_keypair("vc-cluster-%d" % rack)
    os.makedirs(d, mode=0o700, exist_ok=True)
    for path, data in ((pub, line + "\n"), (priv, text)):
        tmp = path + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(data)
        os.replace(tmp, path)
    return text, line


class BootGateways(Step):
    """The gateways (the virtual frontend before its nodes) are defined and launched first,
    each in a thread of its own: launching a QEMU domain takes libvirt 0.3-0.5 s, and the next
    step launches the computes meanwhile, as bare libvirt would launch them all at once."""

    name = "boot_gateways"

    def run(self, r):
        gws = [n for n in r.plan.nodes if n.appliance == designer.GATEWAY]
        vols = r.vols()
        for n in gws:
            t = threading.Thread(target=_launch, args=(r, n, vols), daemon=True)
            t.start()
            r.launching.append(t)
        return ", ".join(n.name for n in gws) + " launching"


def _launch(r, node, vols) -> None:
    """Define and start one gateway without waiting; a failure is only logged: the next step
    boots it again (define, start, wait, one retry) and raises what still fails."""
    try:
        boot(r.ctl, r.plan, node, True, vols, wait=False)
        r.launched.add(node.name)
    except Exception as e:
        LOG.warning("rack %d: launching %s failed (boot_computes retries it): %s", r.rack,
                    node.name, e)


class BootComputes(Step):
    """All computes in parallel, each on a libvirt connection of its own; then every node of
    the cluster (the gateways too) is waited for until it runs."""

    name = "boot_computes"

    def run(self, r):
        cps = [n for n in r.plan.nodes if n.appliance != designer.GATEWAY]
        try:
            parallel(lambda n: boot(r.ctl, r.plan, n, True, r.vols()), cps,
                     r.cfg.virt.boot_parallel)
        finally:
            for t in r.launching:        # the gateways' launches (boot_gateways)
                t.join()
        # a launch that failed is retried here: boot() defines again and waits (and retries)
        del r.launching[:]
        for n in r.plan.nodes:
            if n.appliance == designer.GATEWAY:
                boot(r.ctl, r.plan, n, vols=r.vols(), launched=n.name in r.launched)
        return "%d computes" % len(cps)


def parallel(fn, items, workers) -> None:
    """``fn(item)`` for every item in a thread pool; the first error is raised after all ran."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as ex:
        errors = [f.exception() for f in [ex.submit(fn, i) for i in items]]
    errors = [e for e in errors if e]
    if errors:
        raise errors[0]


def node_spec(ctl, plan, node, vols):
    """The node's domain spec, with the isolation backend's NIC."""
    seg = ctl.segment(plan, sorted({n.host for n in plan.nodes}))
    nic = ctl.isolation.interface_spec(node.mac, network.names(ctl.cfg, plan.rack)[0], seg)
    return designer.domain_spec(ctl.cfg, plan, node, vols, nic,
                                seed=designer.seed_path(ctl.cfg, node.name))


def boot(ctl, plan, node, own_connection=False, vols=None, wait=True, launched=False) -> None:
    """Define and start one node; wait until it runs (one retry: destroy, start again).

    :param vols: the cluster's attached volumes (None: read them).
    :param own_connection: use a connection of its own (parallel boots: libvirtd serves at
        most ``max_client_requests`` (5) calls of one connection at a time).
    :param wait: False: define and start it only (a later ``boot`` waits and retries).
    :param launched: it was defined and started (``wait=False``) already: wait only.
    """
    if vols is None:
        vols = [v for v in volumes(ctl.db, plan.rack) if v["iqn"]]
    shared = ctl.host(node.host)
    if own_connection and not getattr(shared, "state_per_connection", False):
        host = ctl.open_host(node.host, shared.uri)
        try:
            return _boot_on(ctl, host, plan, node, vols, wait, launched)
        finally:
            host.close()
    return _boot_on(ctl, shared, plan, node, vols, wait, launched)


def _boot_on(ctl, host, plan, node, vols, wait=True, launched=False):
    spec = node_spec(ctl, plan, node, vols)
    timeout = ctl.cfg.virt.boot_timeout
    if not launched:
        # the CHAP secrets its iSCSI disks name, on its host before the domain that names them
        for usage, secret in iscsi.libvirt_secrets(ctl.cfg, node.appliance, vols):
            host.ensure_secret(usage, secret)
        host.launch(spec)
    if not wait:
        return
    for attempt in (1, 2):
        if attempt == 2:
            host.destroy(spec.name)
            host.start(spec.name)
        if host.wait_state(spec.name, "running", timeout):
            set_node(ctl, plan.rack, node.name, "running", booted=True)
            ctl.progress("rack %d: %s running on %s (%s, %s)" % (
                plan.rack, node.name, node.host, node.mac, node.ip))
            return
        LOG.warning("rack %d: %s not running after %ss (attempt %d)", plan.rack, node.name,
                    timeout, attempt)
    raise ClusterError("%s did not reach running on %s within %ds (twice)" % (
        node.name, node.host, timeout))


def set_node(ctl, rack, name, state, booted=False) -> None:
    """Record a node's domain state; ``booted``: its guest (re)starts booting now."""
    now = naive_utc(ctl.clock())
    ctl.db.transaction(lambda cur: cur.execute(
        "UPDATE vcnode SET state = %s, updated_at = %s" + (
            ", readiness = 'booting', booted_at = %s, up_at = NULL" if booted else "") +
        " WHERE rack = %s AND name = %s",
        (state, now) + ((now,) if booted else ()) + (rack, name)))


START: List[Step] = [Allocate(), Dump(), Network(), Isolation(), Register(), Disks(), Storage(),
                     Seed(), BootGateways(), BootComputes()]


##################
# Stop           #
##################


def end_now(ctl, rack, reason) -> None:
    """End the reservation now without touching its cluster (the tick stops it once it is
    due): a stop asked for while another process works on the rack."""
    now = ctl.clock()

    def txn(cur):
        row = states.lock(cur, rack)
        from vc import notify  # the owner is told (vc.notify)
        notify.early_end(cur, row, now, ctl.actor, "stop requested")
        if aware_utc(row["end_at"]) > now:
            cur.execute("UPDATE vcregist SET start_at = LEAST(start_at, %s), end_at = %s "
                        "WHERE rack = %s", (naive_utc(now), naive_utc(now), rack))
        states.event(cur, rack, now, ctl.actor, reason, row["state"], row["state"])

    ctl.db.transaction(txn)


def begin_stop(ctl, rack, reason):
    """End the reservation now (a forced stop, or the tick would start it again; one that has
    not begun ends before it began: an empty window) and move to ``stopping``, in one
    transaction. :returns: ``(state it was in or "cancelled", pending request)``."""
    now = ctl.clock()

    def txn(cur):
        row = states.lock(cur, rack)
        st = row["state"]
        if aware_utc(row["end_at"]) > now:
            cur.execute("UPDATE vcregist SET start_at = LEAST(start_at, %s), end_at = %s "
                        "WHERE rack = %s", (naive_utc(now), naive_utc(now), rack))
        if st == states.RESERVED:
            states.transition(cur, row, states.STOPPED, now, ctl.actor,
                              "stopped before it started")
            return "cancelled", row["pending"]
        if st in (states.RUNNING, states.STARTING, states.FAILED):
            states.transition(cur, row, states.STOPPING, now, ctl.actor, reason)
        elif st not in (states.STOPPING, states.STOPPED):
            raise InvalidTransition(rack=rack, state=st, action="stop it")
        return st, row["pending"]

    return ctl.db.transaction(txn)


class Shutdown(Step):
    """ACPI shutdown of every domain of the rack in parallel, wait up to shutdown_timeout,
    then destroy what still runs. Domains are found by name on every host too: a crash
    between define and the database write leaves nothing behind."""

    name = "shutdown"

    def run(self, r):
        ctl, wait = r.ctl, r.cfg.virt.shutdown_timeout
        r.doms = find_domains(ctl, r.rack, r.plan)

        def one(hd):
            h, d = hd
            st = h.state(d)
            if st in ("running", "paused", "other"):
                h.shutdown(d)
                if not h.wait_state(d, "shutoff", wait):
                    LOG.warning("rack %d: %s ignored ACPI shutdown for %ss: destroying",
                                r.rack, d, wait)
                    h.destroy(d)
            elif st != "absent":
                h.destroy(d)
            ctl.progress("rack %d: %s off" % (r.rack, d))

        parallel(one, r.doms, 32)
        return "%d domains" % len(r.doms)


def find_domains(ctl, rack, plan=None):
    """[(host, domain name)] of every domain on every host whose name says it is this rack's
    (a host that does not answer and holds none of its nodes is skipped: :func:`_answers`)."""
    rx = designer.rack_re(ctl.cfg, rack)
    plan = plan or ctl.db.transaction(lambda cur: addresses.load(cur, rack))
    return [(host, d) for host in (ctl.host(h.name) for h in ctl.cfg.hosts
                                   if _answers(ctl, h.name, plan))
            for d in host.list_domains(ctl.cfg.virt.name_prefix + "-") if rx.match(d)]


class Undefine(Step):
    """Every domain of the rack, then the CHAP secrets of its volumes on every host."""

    name = "undefine"

    def run(self, r):
        for h, d in getattr(r, "doms", None) or find_domains(r.ctl, r.rack, r.plan):
            h.undefine(d)
        for h in (r.ctl.host(x.name) for x in r.cfg.hosts if _answers(r.ctl, x.name, r.plan)):
            for usage in h.list_secrets(iscsi.rack_secret_prefix(r.cfg, r.rack)):
                h.remove_secret(usage)
        return ""


class RemoveDisks(Step):
    """The nodes' disks, seeds and console logs (also any file a crash left under the rack's
    name) and the cluster's key pair."""

    name = "disks"

    def run(self, r):
        cfg, rx = r.cfg, designer.rack_re(r.cfg, r.rack)
        for d in (cfg.virt.disk_dir, cfg.virt.console_dir):
            disks.remove_matching(d, rx.match)
        # and on every remote host (its disks, seeds and consoles are there)
        gone = 0
        for h in cfg.hosts:
            if disks.is_remote(cfg, h.name) and _answers(r.ctl, h.name, r.plan):
                for d in (cfg.virt.disk_dir, cfg.virt.console_dir):
                    gone += len(disks.remove_matching_on(r.ctl.host_exec(h.name), d, rx.match))
        shutil.rmtree(designer.key_dir(cfg, r.rack), ignore_errors=True)
        r.ctl.db.transaction(lambda cur: cur.execute(
            "DELETE FROM vcclusterkey WHERE rack = %s", (r.rack,)))
        return "%d file(s) on remote hosts" % gone if gone else ""


def _answers(ctl, host_name, plan) -> bool:
    """May a stop skip this host? Only when it does not answer and holds no node of the plan
    (nothing of the rack can be there: a node is defined only on its recorded host; a host
    that lost nodes to failover is fenced by the tick when it returns)."""
    seen = ctl.__dict__.setdefault("_answering", {})   # one connection attempt per run
    if host_name not in seen:
        seen[host_name] = ctl.ha.reachable(host_name)
    if seen[host_name]:
        return True
    booted = [r["name"] for r in ctl.db.query(
        "SELECT name FROM vcnode WHERE rack = %s AND host = %s AND (state <> 'new' OR "
        "booted_at IS NOT NULL)", (plan.rack, host_name))] if plan is not None else []
    if booted:
        raise ClusterError("host %s does not answer and runs %s: cannot remove them there" % (
            host_name, ", ".join(booted)))
    LOG.warning("host %s does not answer and no node of this rack was booted there: skipped",
                host_name)
    return False


class Unregister(Step):
    name = "unregister"

    def run(self, r):
        if r.plan:
            plan = _answering_plan(r)
            r.ctl.registrar(plan).unregister(designer.entries(r.cfg, plan),
                                             network.names(r.cfg, r.rack)[0])
        return ""


def _answering_plan(r):
    """The plan with nodes on a skippable host (:func:`_answers`: down, nothing booted there)
    pointed at a host that answers, so that removing their DHCP entries does not need it."""
    import dataclasses

    skip = {h for h in r.hosts_used() if not _answers(r.ctl, h, r.plan)}
    alive = next((h.name for h in r.cfg.hosts if h.name not in skip
                  and _answers(r.ctl, h.name, r.plan)), None) if skip else None
    if not alive:
        return r.plan
    return dataclasses.replace(r.plan, nodes=[
        dataclasses.replace(n, host=alive) if n.host in skip else n for n in r.plan.nodes])


class RemoveIsolation(Step):
    name = "isolation"

    def run(self, r):
        vlan(r.ctl, r.rack, "del", plan=r.plan)
        return ""


class RemoveNetwork(Step):
    name = "network"

    def run(self, r):
        for h in r.cfg.hosts:
            if _answers(r.ctl, h.name, r.plan):
                r.ctl.networks.remove(r.cfg, r.rack, r.ctl.host(h.name))
        return ""


class Release(Step):
    """Release the addresses, ``→ stopped``, remove the dump."""

    name = "release"

    def run(self, r):
        ctl = r.ctl

        def txn(cur):
            row = states.lock(cur, r.rack)
            addresses.release(cur, r.rack)
            if row["state"] != states.STOPPED:
                if row["state"] == states.FAILED:  # a failed stop being retried
                    states.transition(cur, row, states.STOPPING, ctl.clock(), ctl.actor,
                                      "retry stop")
                states.transition(cur, row, states.STOPPED, ctl.clock(), ctl.actor,
                                  "all nodes removed, addresses released")

        ctl.db.transaction(txn)
        path = designer.dump_path(r.cfg, r.rack)
        if os.path.exists(path):
            os.unlink(path)
        return ""


STOP: List[Step] = [Shutdown(), Undefine(), RemoveDisks(), Unregister(), RemoveIsolation(),
                    RemoveNetwork(), Release()]


##################
# Shared pieces  #
##################


def vlan(ctl, rack: int, action: str, dry_run: bool = False, plan=None) -> List[str]:
    """``vc_vlan.py add|del``: put the cluster's nodes on their isolated segment on every host
    they use, or remove exactly that. ``del`` looks at every configured host the isolation
    backend may have used (a crash may have left a piece anywhere). Idempotent.

    The cluster's storage path needs nothing here: QEMU on the gateway's host is the iSCSI
    initiator, over the hosts' own network, and the target's ACL admits only those hosts.
    """
    if plan is None:
        plan = ctl.db.transaction(lambda cur: addresses.load(cur, rack))
    if plan is None:
        reservations.get(ctl.db, rack)
        if action == "add":
            raise VcError("rack %d has no addresses (not started)" % rack)
        return []
    if action == "add":
        seg = ctl.segment(plan, sorted({n.host for n in plan.nodes}))
        return ctl.isolation.add(seg, dry_run) if seg else []
    hosts = [h.name for h in ctl.isolation.delete_hosts(ctl.cfg)
             if dry_run or _answers(ctl, h.name, plan)]
    seg = ctl.segment(plan, hosts) if hosts else None
    return ctl.isolation.delete(seg, dry_run) if seg else []


def remove_storage(ctl, rack) -> int:
    """Delete the LUNs and backing storage of a reservation being deleted."""
    vols = [v for v in volumes(ctl.db, rack) if v["iqn"]]
    if not vols:
        return 0
    with ctl.target_pool() as pool:
        for v in vols:
            be = ctl.target_backend(pool, v)
            be.remove_volume(v["iqn"], be.backing_for(iscsi.volume_name(
                rack, v["mount_point"], ctl.cfg.virt.name_prefix)))
            ctl.db.transaction(lambda cur, v=v: cur.execute(
                "UPDATE vciscsi SET iqn = NULL, lun = NULL, state = 'removed' WHERE id = %s",
                (v["id"],)))
    return len(vols)

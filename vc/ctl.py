"""Start and stop a virtual cluster: the orchestrator behind ``vc_ctl.py start|stop`` and the tick.

A start or a stop is a list of steps. Each step is idempotent (what exists is kept, what is gone
counts as done), writes one event when it completes, and the reservation's state says which list
is under way (``starting`` / ``stopping``). So a run that dies at any point — an exception, a
SIGKILL, a host reboot — is finished by running the same command again, and ``stop`` cleans up
from any point. A failing step leaves the cluster ``failed`` with the error on the reservation.

Start (the original order, see README): allocate addresses and place the nodes (one transaction
with the move to ``starting``) → write the insert-ethers dump → create the cluster network on each
host it uses → register the dump (rows, DHCP host entries, hosts file) → copy-on-write disks →
boot the gateway(s), then all computes in parallel → ``running``.

Stop: ACPI shutdown of all nodes in parallel → wait → destroy what still runs → undefine →
remove disks and console logs → unregister → remove the networks → release the addresses →
``stopped`` (then deleted, when a delete was requested).
"""

import fcntl
import logging
import os
import re
import signal
import threading
from datetime import timedelta
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional

from vc import addresses, network, register, reservations, states, timeutil
from vc.db import aware_utc, naive_utc
from vc.domainxml import DhcpHost, DiskSpec, DomainSpec, InterfaceSpec, IscsiDiskSpec
from vc.errors import InvalidTransition, VcError

LOG = logging.getLogger(__name__)

START_STEPS = ("allocate", "dump", "network", "isolation", "register", "disks", "storage",
               "boot_gateways", "boot_computes")
STOP_STEPS = ("shutdown", "undefine", "disks", "unregister", "isolation", "network", "release")


def _open_libvirt_host(name, uri):
    from vc import virt

    return virt.Host(uri, name=name)


class ClusterError(VcError):
    """A start or stop step failed; the cluster is left ``failed`` with this message."""


class DhcpRouter:
    """The registrar's DHCP seam: each node's host entry goes to the cluster network on the
    physical host the node is placed on."""

    def __init__(self, ctl, plan):
        self.ctl, self.by_mac = ctl, {n.mac: n.host for n in plan.nodes}
        # one segment over several hosts: one DHCP server (the first gateway's host) for all
        self.only = network.dhcp_host(plan) if network.segmented(ctl.cfg, plan) else None

    def _host(self, mac):
        return self.ctl.host(self.only or self.by_mac.get(mac) or self.ctl.cfg.hosts[0].name)

    def add_dhcp_host(self, network_name, mac, ip, name) -> bool:
        return self._host(mac).add_dhcp_host(network_name, DhcpHost(mac, ip, name))

    def remove_dhcp_host(self, network_name, mac, ip, name) -> bool:
        host = self._host(mac)
        if not host.network_exists(network_name):
            return False
        return host.remove_dhcp_host(network_name, DhcpHost(mac, ip, name))


class Ctl:
    """Orchestrates one cluster at a time.

    :param cfg: the configuration.
    :param db: a :class:`vc.db.Database`.
    :param open_host: ``open_host(name, uri) -> vc.virt.Host`` (tests pass test-driver hosts).
    :param execute: ``execute(argv) -> str`` for local commands (qemu-img; insert-ethers).
    :param clock: returns the current aware UTC time.
    :param progress: ``progress(message)``, called once per node and step.
    :param actor: who is acting, for the event log.
    """

    def __init__(self, cfg, db, open_host=None, execute=None, clock=timeutil.utcnow,
                 progress: Optional[Callable[[str], None]] = None, actor="vc_ctl", networks=None,
                 registrar=None, target_exec=None, host_exec=None):
        self.cfg, self.db = cfg, db
        # libvirt is imported only when a host is first used (an idle tick never needs it)
        self._open_host = open_host or _open_libvirt_host
        self._execute = execute
        self.clock = clock
        self.progress = progress or (lambda msg: LOG.info("%s", msg))
        self.actor = actor
        self.networks = networks or network.LibvirtNetworks()
        self._registrar = registrar
        # target_exec(Target) / host_exec(host name) -> executor: tests record commands with them
        self._target_exec = target_exec
        self._host_exec = host_exec
        self._hosts: Dict[str, object] = {}
        self._hosts_lock = threading.Lock()
        # test hook: die (SIGKILL) right after this step, to prove crash recovery
        self.crash_after = os.environ.get("VC_CRASH_AFTER")

    # ---------------------------------------------------------------- plumbing
    @property
    def execute(self):
        if self._execute is None:
            from vc import virt

            self._execute = virt.run_local
        return self._execute

    def host(self, name):
        with self._hosts_lock:
            if name not in self._hosts:
                uri = next((h.uri for h in self.cfg.hosts if h.name == name), None)
                if uri is None:
                    raise ClusterError("node placed on host %r, which is not configured" % name)
                self._hosts[name] = self._open_host(name, uri)
            return self._hosts[name]

    def registrar(self, plan=None):
        if self._registrar is not None:
            return self._registrar
        if self.cfg.registrar == "rocks":
            return register.RocksRegistrar(
                self.execute, self.cfg.insert_ethers,
                applied_path=os.path.join(self.cfg.state_dir, "rocks-applied.json"))
        return register.BuiltinRegistrar(self.db, DhcpRouter(self, plan), self.cfg.hosts_file)

    def domain_name(self, node_name: str) -> str:
        return "%s-%s" % (self.cfg.name_prefix, node_name)

    def _rack_re(self, rack):
        return re.compile(r"^%s-[a-z0-9]+-%d-\d+$" % (re.escape(self.cfg.name_prefix), rack))

    def disk_path(self, node_name):
        return os.path.join(self.cfg.disk_dir, self.domain_name(node_name) + ".qcow2")

    def console_path(self, node_name):
        return os.path.join(self.cfg.console_dir, self.domain_name(node_name) + ".log")

    def dump_path(self, rack):
        return os.path.join(self.cfg.state_dir, "dumps", "rack-%d.dump" % rack)

    def _lock(self, rack):
        """An exclusive per-rack lock file: one process works on a cluster at a time."""
        d = os.path.join(self.cfg.state_dir, "locks")
        os.makedirs(d, exist_ok=True)
        f = open(os.path.join(d, "rack-%d.lock" % rack), "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise VcError("rack %d is being started or stopped by another process" % rack) \
                from None
        return f

    def _event(self, rack, reason):
        """One event row that records the state the reservation is in (unchanged)."""

        def run(cur):
            cur.execute("SELECT state FROM vcregist WHERE rack = %s", (rack,))
            row = cur.fetchone()
            st = row["state"] if row else None
            states.event(cur, rack, self.clock(), self.actor, reason, st, st)

        self.db.transaction(run)

    def _step_done(self, rack, kind, step, detail=""):
        self._event(rack, "%s: %s done%s" % (kind, step, (": " + detail) if detail else ""))
        if self.crash_after == step:  # pragma: no cover - exercised through a subprocess
            LOG.warning("VC_CRASH_AFTER=%s: killing myself", step)
            os.kill(os.getpid(), signal.SIGKILL)

    def _fail(self, rack, kind, step, err):
        msg = "%s failed at step %s: %s" % (kind, step, err)
        now = self.clock()

        def run(cur):
            row = states.lock(cur, rack)
            if row["state"] in (states.STARTING, states.STOPPING, states.DELETING):
                states.transition(cur, row, states.FAILED, now, self.actor, msg, error=msg)

        self.db.transaction(run)
        return ClusterError(msg)

    # ---------------------------------------------------------------- isolation
    def isolation(self):
        from vc import isolation

        return isolation.backend_for(self.cfg.isolation, self.cfg.path,
                                     port=self.cfg.vxlan_port, trunk_nic=self.cfg.trunk_nic,
                                     ovs_bridge=self.cfg.ovs_bridge)

    def host_exec(self, name):
        """How to run a command on a physical host (injectable for tests)."""
        if self._host_exec:
            return self._host_exec(name)
        from vc import virt

        uri = next(h.uri for h in self.cfg.hosts if h.name == name)
        return virt.host_executor(uri)

    def segment(self, plan, host_names):
        """The cluster's L2 segment over ``host_names``, or None when there is nothing to join:
        ``isolation = none``, or a single host without an underlay address (its bridge is the
        whole segment)."""
        from vc import isolation

        if self.cfg.isolation == "none":
            return None
        cfgs = [h for h in self.cfg.hosts if h.name in host_names]
        if self.cfg.isolation == "vxlan":
            if len(cfgs) == 1 and not cfgs[0].underlay_ip:
                return None
            missing = [h.name for h in cfgs if not h.underlay_ip]
            if missing:
                raise ClusterError("rack %d spans hosts %s: [host:%s] underlay_ip is needed to "
                                   "join them with VXLAN" % (plan.rack, ", ".join(host_names),
                                                             missing[0]))
        return isolation.ClusterSegment(
            rack=plan.rack, isolation_id=plan.isolation_id,
            bridge=network.names(self.cfg, plan.rack)[1],
            hosts=[isolation.HostSide(h.name, self.host_exec(h.name), h.underlay_ip,
                                      h.trunk_nic) for h in cfgs],
            mtu=self.cfg.underlay_mtu,
            port=("%svx%d" % (self.cfg.name_prefix, plan.isolation_id)
                  if self.cfg.isolation == "vxlan" else None))

    def vlan(self, rack: int, action: str, dry_run: bool = False) -> List[str]:
        """``vc_vlan.py add|del``: put the cluster's nodes on their isolated segment on every host
        they use, or remove exactly that. ``del`` looks at every configured host that can carry
        a segment (a crash may have left a piece anywhere). Idempotent.

        The cluster's storage path needs nothing here: QEMU on the gateway's host is the iSCSI
        initiator, over the hosts' own network, and the target's ACL admits only those hosts.
        """
        plan = self.db.transaction(lambda cur: addresses.load(cur, rack))
        if plan is None:
            reservations.get(self.db, rack)
            if action == "add":
                raise VcError("rack %d has no addresses (not started)" % rack)
            return []
        if action == "add":
            seg = self.segment(plan, sorted({n.host for n in plan.nodes}))
            return self.isolation().add(seg, dry_run) if seg else []
        if self.cfg.isolation == "none":
            return []
        hosts = [h.name for h in self.cfg.hosts
                 if h.underlay_ip or self.cfg.isolation != "vxlan"]
        seg = self.segment(plan, hosts) if hosts else None
        return self.isolation().delete(seg, dry_run) if seg else []

    def _mtu(self, plan):
        seg = self.segment(plan, sorted({n.host for n in plan.nodes}))
        return self.isolation().mtu(seg) if seg and self.cfg.isolation == "vxlan" else None

    # ---------------------------------------------------------------- storage
    def volumes(self, rack) -> List[dict]:
        return self.db.query(
            "SELECT v.id, v.mount_point, v.size_gb, v.appliance, v.iqn, v.lun, v.state, "
            "v.nfs_export, v.nfs_client_mount, t.name AS target, t.address, t.port, "
            "t.ssh_user, t.iscsi_port, t.host_key_fingerprint FROM vciscsi v JOIN vciscsitarget "
            "t ON t.id = v.target_id WHERE v.rack = %s ORDER BY v.mount_point", (rack,))

    def _storage_pool(self):
        from vc import storage

        key, _ = storage.frontend_key(self.cfg.state_dir)
        return storage.SSHPool(key, connect_timeout=self.cfg.ssh_connect_timeout,
                               command_timeout=self.cfg.ssh_command_timeout)

    def _target_backend(self, pool, v):
        from vc import storage

        t = storage.Target(v["target"], v["address"], v["port"], v["ssh_user"], v["iscsi_port"],
                           v["host_key_fingerprint"])
        ex = self._target_exec(t) if self._target_exec else pool.get(t)
        return t, storage.backend_for(self.cfg.storage_backend, ex,
                                      backing_dir=self.cfg.storage_backing_dir,
                                      backing=self.cfg.storage_backing,
                                      vg=self.cfg.storage_vg,
                                      control_port=self.cfg.tgt_control_port)

    def initiators(self, plan) -> List[str]:
        """Who may log in to the cluster's LUNs: the hypervisor hosts of its gateways (QEMU's
        own initiator runs there)."""
        out = []
        for n in plan.nodes:
            if n.appliance == "gateway":
                h = next(h for h in self.cfg.hosts if h.name == n.host)
                ini = h.initiator or h.underlay_ip or "127.0.0.1"
                if ini not in out:
                    out.append(ini)
        return out

    def ensure_storage(self, plan) -> int:
        """Create (or find) every volume of the cluster on its target; what exists is kept (its
        data survives stops). Returns the number of volumes."""
        from vc import storage

        vols = self.volumes(plan.rack)
        if not vols:
            return 0
        by_target: Dict[str, list] = {}
        for v in vols:
            by_target.setdefault(v["target"], []).append(v)
        pool = self._storage_pool()
        try:
            for name, vs in by_target.items():
                _, be = self._target_backend(pool, vs[0])
                specs = []
                for v in vs:
                    iqn = storage.iqn_for(self.cfg.iqn_prefix, plan.rack, v["mount_point"])
                    specs.append(storage.VolumeSpec(iqn, be.backing_for(storage.volume_name(
                        plan.rack, v["mount_point"], self.cfg.name_prefix)), v["size_gb"]))
                be.ensure_volumes(specs, self.initiators(plan))
                for v, sp in zip(vs, specs):
                    self.db.transaction(lambda cur, v=v, sp=sp, lun=be.lun: cur.execute(
                        "UPDATE vciscsi SET iqn = %s, lun = %s, state = 'ready' WHERE id = %s",
                        (sp.iqn, lun, v["id"])))
                self.progress("rack %d: %d volume(s) ready on %s" % (plan.rack, len(vs), name))
        finally:
            pool.close()
        return len(vols)

    def remove_storage(self, rack) -> int:
        """Delete the LUNs and backing storage of a reservation being deleted."""
        from vc import storage

        vols = [v for v in self.volumes(rack) if v["iqn"]]
        if not vols:
            return 0
        pool = self._storage_pool()
        try:
            for v in vols:
                _, be = self._target_backend(pool, v)
                be.remove_volume(v["iqn"], be.backing_for(storage.volume_name(
                    rack, v["mount_point"], self.cfg.name_prefix)))
                self.db.transaction(lambda cur, v=v: cur.execute(
                    "UPDATE vciscsi SET iqn = NULL, lun = NULL, state = 'removed' WHERE id = %s",
                    (v["id"],)))
        finally:
            pool.close()
        return len(vols)

    def context(self, plan, node, vols) -> str:
        """Kernel command-line keys that tell a guest its role and its storage: the gateway
        mounts its LUNs and exports them over NFS to the cluster subnet; the computes mount
        them from the gateway."""
        keys = ["vc.rack=%d" % plan.rack, "vc.role=%s" % node.appliance]
        gw = next((n for n in plan.nodes if n.appliance == "gateway"), None)
        for i, v in enumerate(vols):
            export = v["nfs_export"] or v["mount_point"]
            if node.appliance == v["appliance"]:
                keys.append("vc.mount=/dev/vd%s:%s" % (chr(ord("b") + i), v["mount_point"]))
                keys.append("vc.nfs_export=%s:%s" % (export, plan.subnet))
            elif gw is not None:
                keys.append("vc.nfs_mount=%s:%s:%s" % (gw.ip, export,
                                                       v["nfs_client_mount"] or v["mount_point"]))
        return " ".join(keys)

    # ---------------------------------------------------------------- XML
    def domain_spec(self, plan, node, vols=None) -> DomainSpec:
        """A node's domain: its COW disk, the cluster's iSCSI LUNs when it is the appliance
        that mounts them (the gateway), one NIC on the cluster network, the context on the
        kernel command line (direct kernel boot)."""
        net, _ = network.names(self.cfg, plan.rack)
        if vols is None:
            vols = [v for v in self.volumes(plan.rack) if v["iqn"]]
        cmdline = None
        if self.cfg.kernel:
            cmdline = " ".join(x for x in (self.cfg.cmdline, self.context(plan, node, vols)) if x)
        disks = [DiskSpec(self.disk_path(node.name))]
        for i, v in enumerate(vols):
            if v["appliance"] == node.appliance:
                disks.append(IscsiDiskSpec(v["iqn"], v["address"], v["iscsi_port"], v["lun"],
                                           target="vd%s" % chr(ord("b") + i)))
        if self.cfg.isolation == "ovs":
            from vc import isolation

            nic = isolation.OvsInterfaceSpec(mac=node.mac, bridge=self.cfg.ovs_bridge,
                                             vlan=plan.isolation_id)
        else:
            nic = InterfaceSpec(mac=node.mac, network=net)
        return DomainSpec(
            name=self.domain_name(node.name), memory_mb=node.memory_mb, vcpus=node.vcpus,
            domain_type=self.cfg.domain_type, kernel=self.cfg.kernel, initrd=self.cfg.initrd,
            cmdline=cmdline, disks=disks, interfaces=[nic],
            console_log=self.console_path(node.name),
            metadata={"rack": str(plan.rack), "node": node.name, "appliance": node.appliance})

    def entries(self, plan) -> List[register.NodeEntry]:
        return [register.NodeEntry(hostname=n.name, rack=plan.rack, rank=n.rank, cpus=n.vcpus,
                                   appliance=self.cfg.membership(n.appliance), mac=n.mac,
                                   device="eth0", module="virtio_net", ipaddr=n.ip,
                                   netmask=plan.netmask)
                for n in plan.nodes]

    def dump_text(self, plan) -> str:
        argv0 = self.cfg.insert_ethers if self.cfg.registrar == "rocks" else "insert-ethers"
        return register.dump(self.entries(plan), argv0)

    # ---------------------------------------------------------------- start
    def _begin_start(self, rack, now):
        """Move to ``starting`` and allocate, in one transaction. Returns (plan, resumed)."""

        def run(cur):
            reservations._lock_admission(cur)
            row = states.lock(cur, rack)
            st = row["state"]
            if row["pending"] == "delete":
                raise InvalidTransition(rack=rack, state=st + " (delete pending)",
                                        action="start it")
            if st == states.RUNNING:
                return None, "running"
            if st not in (states.RESERVED, states.FAILED, states.STARTING):
                raise InvalidTransition(rack=rack, state=st, action="start it")
            start, end = aware_utc(row["start_at"]), aware_utc(row["end_at"])
            if end <= now:
                raise VcError("reservation %d ended at %s: nothing to start" % (
                    rack, timeutil.show(end, self.cfg.tzinfo())))
            res = reservations._resources(cur, rack)
            if start > now:
                # forced early: the time before the reserved start needs capacity too
                reservations.admit(self.cfg, cur, now, start, res, now, exclude_rack=rack)
                cur.execute("UPDATE vcregist SET start_at = %s WHERE rack = %s",
                            (naive_utc(now), rack))
            if st != states.STARTING:
                states.transition(cur, row, states.STARTING, now, self.actor,
                                  "start" if st == states.RESERVED else "retry start after: %s"
                                  % (row["error"] or "failure"))
            plan = addresses.allocate(self.cfg, cur, rack, res, now)
            return plan, st

        return self.db.transaction(run)

    def start(self, rack: int) -> dict:
        """Start a cluster (or finish a start that was interrupted). Returns a summary."""
        lock = self._lock(rack)
        try:
            return self._start(rack)
        finally:
            lock.close()

    def _start(self, rack):
        now = self.clock()
        step = "allocate"
        try:
            plan, was = self._begin_start(rack, now)
            if plan is None:
                return {"rack": rack, "state": "running", "changed": False}
            self.progress("rack %d: %s %s, %d nodes (%s)" % (
                rack, "resuming start" if was == states.STARTING else "starting", plan.subnet,
                len(plan.nodes), ", ".join("%s@%s" % (n.name, n.host) for n in plan.nodes)))
            self._step_done(rack, "start", step, "%s isolation %d" % (plan.subnet,
                                                                       plan.isolation_id))

            step = "dump"
            path = self.dump_path(rack)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            register._atomic_write(path, self.dump_text(plan))
            self._step_done(rack, "start", step, path)

            step = "network"
            mtu = self._mtu(plan)
            for h in sorted({n.host for n in plan.nodes}):
                self.networks.ensure(self.cfg, plan, self.host(h), mtu)
            self._step_done(rack, "start", step, network.names(self.cfg, rack)[0])

            step = "isolation"
            did = self.vlan(rack, "add")
            self._step_done(rack, "start", step, "%s, %d change(s)" % (self.cfg.isolation,
                                                                        len(did)))

            step = "register"
            added = self.registrar(plan).register(self.entries(plan),
                                                  network.names(self.cfg, rack)[0])
            self._step_done(rack, "start", step, "%d new" % len(added or []))

            step = "disks"
            os.makedirs(self.cfg.disk_dir, exist_ok=True)
            os.makedirs(self.cfg.console_dir, exist_ok=True)
            from vc import virt

            for n in plan.nodes:
                virt.create_cow_disk(self.disk_path(n.name), self.cfg.image(n.appliance),
                                     n.disk_gb, self.execute)
            self._step_done(rack, "start", step)

            step = "storage"
            n = self.ensure_storage(plan)
            self._step_done(rack, "start", step, "%d volume(s)" % n)

            step = "boot_gateways"
            vols = [v for v in self.volumes(rack) if v["iqn"]]
            gws = [n for n in plan.nodes if n.appliance == "gateway"]
            for n in gws:
                self._boot(plan, n, vols=vols)
            self._step_done(rack, "start", step, ", ".join(n.name for n in gws))

            step = "boot_computes"
            cps = [n for n in plan.nodes if n.appliance != "gateway"]
            if cps:
                with ThreadPoolExecutor(max_workers=self.cfg.boot_parallel) as ex:
                    errors = [f.exception() for f in [ex.submit(self._boot, plan, n, True, vols)
                                                      for n in cps]]
                errors = [e for e in errors if e]
                if errors:
                    raise errors[0]
            self._step_done(rack, "start", step, "%d computes" % len(cps))

            def done(cur):
                row = states.lock(cur, rack)
                states.transition(cur, row, states.RUNNING, self.clock(), self.actor,
                                  "all %d nodes running" % len(plan.nodes))

            self.db.transaction(done)
            self.progress("rack %d: running" % rack)
            return {"rack": rack, "state": "running", "changed": True,
                    "nodes": [vars(n) for n in plan.nodes]}
        except InvalidTransition:
            raise
        except Exception as e:
            if step == "allocate":
                raise  # nothing started: the transaction rolled back, the state is unchanged
            LOG.exception("rack %d: start failed at %s", rack, step)
            raise self._fail(rack, "start", step, e) from e

    def _set_node(self, rack, name, state):
        self.db.transaction(lambda cur: cur.execute(
            "UPDATE vcnode SET state = %s, updated_at = %s WHERE rack = %s AND name = %s",
            (state, naive_utc(self.clock()), rack, name)))

    def _boot(self, plan, node, own_connection=False, vols=None):
        """Define and start one node; wait until it runs (one retry: destroy, start again).

        :param vols: the cluster's attached volumes (read once per start; None: read them).
        :param own_connection: use a connection of its own (parallel boots: libvirtd serves at
            most ``max_client_requests`` (5) calls of one connection at a time).
        """
        shared = self.host(node.host)
        if own_connection and not getattr(shared, "state_per_connection", False):
            host = self._open_host(node.host, shared.uri)
            try:
                return self._boot_on(host, plan, node, vols)
            finally:
                host.close()
        return self._boot_on(shared, plan, node, vols)

    def _boot_on(self, host, plan, node, vols):
        spec = self.domain_spec(plan, node, vols)
        host.define(spec)
        for attempt in (1, 2):
            if attempt == 2:
                host.destroy(spec.name)
            if host.state(spec.name) != "running":
                host.start(spec.name)
            if host.wait_state(spec.name, "running", self.cfg.boot_timeout):
                self._set_node(plan.rack, node.name, "running")
                self.progress("rack %d: %s running on %s (%s, %s)" % (
                    plan.rack, node.name, node.host, node.mac, node.ip))
                return
            LOG.warning("rack %d: %s not running after %ss (attempt %d)", plan.rack, node.name,
                        self.cfg.boot_timeout, attempt)
        raise ClusterError("%s did not reach running on %s within %ds (twice)" % (
            node.name, node.host, self.cfg.boot_timeout))

    # ---------------------------------------------------------------- stop
    def stop(self, rack: int, reason: str = "stop") -> dict:
        """Stop a cluster and remove every trace (or finish an interrupted stop)."""
        lock = self._lock(rack)
        try:
            return self._stop(rack, reason)
        finally:
            lock.close()

    def _begin_stop(self, rack, now, reason):
        def run(cur):
            row = states.lock(cur, rack)
            st = row["state"]
            if aware_utc(row["end_at"]) > now:
                # a forced stop ends the reservation, or the tick would start it again (one
                # that has not begun yet ends before it began: an empty window)
                cur.execute("UPDATE vcregist SET start_at = LEAST(start_at, %s), end_at = %s "
                            "WHERE rack = %s", (naive_utc(now), naive_utc(now), rack))
            if st == states.RESERVED:
                states.transition(cur, row, states.STOPPED, now, self.actor,
                                  "stopped before it started")
                return "cancelled", row["pending"]
            if st in (states.RUNNING, states.STARTING, states.FAILED):
                states.transition(cur, row, states.STOPPING, now, self.actor, reason)
            elif st not in (states.STOPPING, states.STOPPED):
                raise InvalidTransition(rack=rack, state=st, action="stop it")
            return st, row["pending"]

        return self.db.transaction(run)

    def _stop(self, rack, reason):
        now = self.clock()
        was, pending = self._begin_stop(rack, now, reason)
        if was == "cancelled":
            if pending == "delete":
                self._finish_delete(rack)
                return {"rack": rack, "state": "deleted", "changed": True}
            return {"rack": rack, "state": "stopped", "changed": True}
        plan = self.db.transaction(lambda cur: addresses.load(cur, rack))
        nodes = plan.nodes if plan else []
        self.progress("rack %d: stopping %d nodes" % (rack, len(nodes)))
        step = "shutdown"
        try:
            doms = self._find_domains(rack, nodes)  # [(host, domain name)]
            self._shutdown_all(rack, doms)
            self._step_done(rack, "stop", step, "%d domains" % len(doms))

            step = "undefine"
            for h, d in doms:
                h.undefine(d)
            self._step_done(rack, "stop", step)

            step = "disks"
            for n in nodes:
                for p in (self.disk_path(n.name), self.console_path(n.name)):
                    if os.path.exists(p):
                        os.unlink(p)
            for d in (self.cfg.disk_dir, self.cfg.console_dir):
                for f in os.listdir(d) if os.path.isdir(d) else ():
                    if self._rack_re(rack).match(f.rsplit(".", 1)[0]):
                        os.unlink(os.path.join(d, f))
            self._step_done(rack, "stop", step)

            step = "unregister"
            if plan:
                self.registrar(plan).unregister(self.entries(plan),
                                                network.names(self.cfg, rack)[0])
            self._step_done(rack, "stop", step)

            step = "isolation"
            self.vlan(rack, "del")
            self._step_done(rack, "stop", step)

            step = "network"
            for h in self.cfg.hosts:
                self.networks.remove(self.cfg, rack, self.host(h.name))
            self._step_done(rack, "stop", step)

            step = "release"

            def release(cur):
                row = states.lock(cur, rack)
                addresses.release(cur, rack)
                if row["state"] != states.STOPPED:
                    if row["state"] == states.FAILED:  # a failed stop being retried
                        states.transition(cur, row, states.STOPPING, self.clock(), self.actor,
                                          "retry stop")
                    states.transition(cur, row, states.STOPPED, self.clock(), self.actor,
                                      "all nodes removed, addresses released")

            self.db.transaction(release)
            if os.path.exists(self.dump_path(rack)):
                os.unlink(self.dump_path(rack))
            self._step_done(rack, "stop", step)
        except Exception as e:
            LOG.exception("rack %d: stop failed at %s", rack, step)
            raise self._fail(rack, "stop", step, e) from e
        self.progress("rack %d: stopped" % rack)
        if pending == "delete":
            self._finish_delete(rack)
            return {"rack": rack, "state": "deleted", "changed": True}
        return {"rack": rack, "state": "stopped", "changed": True}

    def _finish_delete(self, rack):
        """``stopped`` (or an interrupted ``deleting``) → remove the volumes' LUNs and backing
        storage → the row is deleted. A storage failure leaves it ``failed`` with the error;
        ``delete`` or the tick tries again."""

        def begin(cur):
            row = states.lock(cur, rack)
            if row["state"] != states.DELETING:
                states.transition(cur, row, states.DELETING, self.clock(), self.actor,
                                  "delete requested", action="delete it")

        self.db.transaction(begin)
        try:
            n = self.remove_storage(rack)
        except Exception as e:
            raise self._fail(rack, "delete", "storage", e) from e

        def done(cur):
            row = states.lock(cur, rack)
            states.transition(cur, row, states.DELETED, self.clock(), self.actor,
                              "deleted (%d volume(s) removed)" % n)

        self.db.transaction(done)
        self.progress("rack %d: deleted" % rack)

    def delete(self, rack: int, confirm_volumes: bool = False) -> dict:
        """Delete a reservation whose cluster is not running, with its volumes' LUNs and
        backing storage, or finish an interrupted delete. Volumes holding data need
        ``confirm_volumes``."""
        lock = self._lock(rack)
        try:
            vols = [v for v in self.volumes(rack) if v["iqn"]]
            if vols and not confirm_volumes:
                raise VcError("reservation %d has %d iSCSI volume(s) with data (%s): confirm "
                              "that they are to be destroyed (--delete-volumes)"
                              % (rack, len(vols), ", ".join(v["mount_point"] for v in vols)))
            self._finish_delete(rack)
            return {"rack": rack, "state": "deleted", "changed": True}
        finally:
            lock.close()

    def _find_domains(self, rack, nodes):
        """The cluster's domains: those its node rows name, plus any other domain on any host
        whose name says it belongs to this rack (a crash can leave one behind)."""
        found = []
        rx = self._rack_re(rack)
        for h in self.cfg.hosts:
            host = self.host(h.name)
            for d in host.list_domains(self.cfg.name_prefix + "-"):
                if rx.match(d):
                    found.append((host, d))
        return found

    def _shutdown_all(self, rack, doms):
        """ACPI shutdown in parallel, wait up to shutdown_timeout, then destroy what runs."""

        def one(hd):
            h, d = hd
            if h.state(d) in ("running", "paused", "other"):
                h.shutdown(d)
                if not h.wait_state(d, "shutoff", self.cfg.shutdown_timeout):
                    LOG.warning("rack %d: %s ignored ACPI shutdown for %ss: destroying", rack, d,
                                self.cfg.shutdown_timeout)
                    h.destroy(d)
            elif h.state(d) != "absent":
                h.destroy(d)
            self.progress("rack %d: %s off" % (rack, d))

        if doms:
            with ThreadPoolExecutor(max_workers=max(1, min(32, len(doms)))) as ex:
                errors = [f.exception() for f in [ex.submit(one, hd) for hd in doms]]
            errors = [e for e in errors if e]
            if errors:
                raise errors[0]

    # ---------------------------------------------------------------- HA
    def reachable(self, host_name) -> bool:
        """Can we talk to this host's libvirt at all? (Connecting is the probe.)"""
        try:
            _ = self.host(host_name).conn
            return True
        except VcError:
            return False

    def _mark_host(self, name, reachable):
        now = naive_utc(self.clock())
        h = next((h for h in self.cfg.hosts if h.name == name), None)
        if h is None:
            return

        def run(cur):
            cur.execute("INSERT INTO vchost (name, uri, memory_mb, vcpus, reachable, updated_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
                        "reachable = VALUES(reachable), updated_at = VALUES(updated_at)",
                        (h.name, h.uri, h.memory_mb, h.vcpus, int(reachable), now))

        self.db.transaction(run)

    def heal(self, rack: int, max_restarts: int = 3) -> List[str]:
        """Bring every node of a running cluster back to running.

        A node whose domain is not running is started again on its host (its MAC, IP and disk
        are unchanged), at most ``max_restarts`` times per hour. A node whose host is unreachable
        is placed on another host with room — never while the old domain might still run: its
        host must be unreachable (and is marked so), or the old domain must be gone.
        :returns: what was done, one line per node acted on.
        """
        lock = self._lock(rack)
        try:
            plan = self.db.transaction(lambda cur: addresses.load(cur, rack))
            if plan is None:
                return []
            done = []
            down_hosts = {h for h in {n.host for n in plan.nodes} if not self.reachable(h)}
            for h in down_hosts:
                self._mark_host(h, False)
            for node in plan.nodes:
                msg = self._heal_node(plan, node, node.host in down_hosts, max_restarts)
                if msg:
                    done.append(msg)
            return done
        finally:
            lock.close()

    def _restarts_last_hour(self, rack, name):
        since = naive_utc(self.clock()) - timedelta(hours=1)
        return self.db.query("SELECT COUNT(*) AS n FROM vcevent WHERE rack = %s AND at > %s AND "
                             "reason LIKE %s", (rack, since, "ha: restarted %s %%" % name))[0]["n"]

    def _heal_node(self, plan, node, host_down, max_restarts):
        dom = self.domain_name(node.name)
        state = None if host_down else self.host(node.host).state(dom)
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
                self._boot(plan, node)
            except VcError as e:
                # the host refuses: make sure the old domain is gone, then move the node
                LOG.warning("rack %d: %s cannot start on %s (%s): moving it", plan.rack,
                            node.name, node.host, e)
                h = self.host(node.host)
                h.destroy(dom)
                h.undefine(dom)
                if h.state(dom) != "absent":
                    raise ClusterError("%s: old domain on %s could not be removed; not moving "
                                       "it" % (node.name, node.host)) from e
                where = self._replace(plan, node)
        msg = "ha: restarted %s on %s (was %s)" % (node.name, where,
                                                   state or "on unreachable host %s" % node.host)
        self._event(plan.rack, msg)
        return msg

    def _replace(self, plan, node):
        """Move a node to another host with room: placement, network, DHCP, disk, boot."""
        from vc import virt

        def pick(cur):
            free = addresses.host_free(self.cfg, cur, plan.rack)
            # this cluster's other nodes count too (host_free leaves out the rack itself)
            for other in plan.nodes:
                if other is not node and other.host in free:
                    free[other.host][0] -= other.memory_mb
                    free[other.host][1] -= other.vcpus
            free.pop(node.host, None)
            from vc import admission

            target = admission.best_host(free, node.memory_mb, node.vcpus)
            if target is None:
                raise ClusterError("no other host has room for %s (%d MB)" % (node.name,
                                                                              node.memory_mb))
            cur.execute("UPDATE vcnode SET host = %s, updated_at = %s WHERE rack = %s AND "
                        "name = %s", (target, naive_utc(self.clock()), plan.rack, node.name))
            return target

        target = self.db.transaction(pick)
        node.host = target
        h = self.host(target)
        self.networks.ensure(self.cfg, plan, h)
        h.add_dhcp_host(network.names(self.cfg, plan.rack)[0], DhcpHost(node.mac, node.ip,
                                                                         node.name))
        virt.create_cow_disk(self.disk_path(node.name), self.cfg.image(node.appliance),
                             node.disk_gb, self.execute)
        self._boot(plan, node)
        return target

    # ---------------------------------------------------------------- reading
    def status(self, rack: Optional[int] = None) -> List[dict]:
        """Per node: name, appliance, MAC, IP, host and the libvirt state now."""

        def run(cur):
            sql = ("SELECT n.rack, n.name, n.appliance, n.`rank`, n.mac, n.ip, n.public_ip, "
                   "n.host, n.state AS recorded, r.state AS cluster FROM vcnode n JOIN vcregist "
                   "r ON r.rack = n.rack")
            if rack is not None:
                cur.execute(sql + " WHERE n.rack = %s ORDER BY n.appliance = 'compute', "
                            "n.`rank`", (rack,))
            else:
                cur.execute(sql + " ORDER BY n.rack, n.appliance = 'compute', n.`rank`")
            return list(cur.fetchall())

        if rack is not None:
            reservations.get(self.db, rack)  # NotFound for an unknown rack
        rows = self.db.transaction(run)
        for r in rows:
            try:
                r["libvirt"] = self.host(r["host"]).state(self.domain_name(r["name"]))
            except VcError as e:
                r["libvirt"] = "unknown (%s)" % e
        return rows

    def plan_preview(self, rack):
        """The plan and domain XML a start would use, changing nothing (``--dry-run``)."""

        def run(cur):
            res = reservations._resources(cur, rack)
            return addresses.preview(self.cfg, cur, rack, res)

        reservations.get(self.db, rack)
        plan = self.db.transaction(run)
        vols = [v for v in self.volumes(rack) if v["iqn"]]
        return plan, [self.domain_spec(plan, n, vols).to_xml() for n in plan.nodes]

    def dump(self, rack) -> str:
        plan = self.db.transaction(lambda cur: addresses.load(cur, rack))
        if plan is None:
            reservations.get(self.db, rack)
            raise VcError("rack %d has no addresses (not started)" % rack)
        return self.dump_text(plan)


"""The services a cluster's steps share: one libvirt connection per physical host, the command
executors (local, per host, per iSCSI target), and the backends, each made by its family's
factory from the configuration (isolation, registrar, iSCSI target). :class:`vc.ctl.Ctl` is the
runner on top of these; tests inject test-driver hosts and recording executors here.
"""

import contextlib
import logging
import os
import threading
from typing import Callable, Dict, Optional

from vc import isolation, network, register, remote, timeutil
from vc.ha import Healer
from vc.steps import ClusterError

LOG = logging.getLogger(__name__)


def _open_libvirt_host(name, uri, state_dir=None):
    from vc import virt

    # qemu+ssh: libvirt's ssh shares one connection per host with the host commands
    return virt.Host(uri, name=name, connect_uri=remote.shared_ssh_uri(uri, state_dir)
                     if state_dir else None)


class Services:
    """What the steps of one orchestrator share.

    :param cfg: the configuration.
    :param db: a :class:`vc.db.Database`.
    :param open_host: ``open_host(name, uri) -> vc.virt.Host`` (tests pass test-driver hosts).
    :param execute: ``execute(argv) -> str`` for local commands (qemu-img; insert-ethers).
    :param clock: returns the current aware UTC time.
    :param progress: ``progress(message)``, called once per node and step.
    :param actor: who is acting, for the event log.
    :param registrar: a registrar to use instead of the configured one (tests).
    :param target_exec: ``target_exec(remote.Target) -> executor`` instead of SSH (tests).
    :param host_exec: ``host_exec(host name) -> executor`` for host commands (tests).
    :param probe: ``probe(ip) -> bool``: does the guest answer (default: its SSH banner)?
    """

    def __init__(self, cfg, db, open_host=None, execute=None, clock=timeutil.utcnow,
                 progress: Optional[Callable[[str], None]] = None, actor="vc_ctl", networks=None,
                 registrar=None, target_exec=None, host_exec=None, probe=None):
        self.cfg, self.db, self.clock, self.actor = cfg, db, clock, actor
        # libvirt is imported only when a host is first used (an idle tick never needs it)
        self.open_host = open_host or (lambda name, uri: _open_libvirt_host(
            name, uri, cfg.site.state_dir))
        self.execute = execute or remote.run_local
        self.progress = progress or (lambda msg: LOG.info("%s", msg))
        self.networks = networks or network.LibvirtNetworks()
        self.isolation = isolation.make_isolation(cfg)
        self.ha = Healer(self)
        self._registrar, self._target_exec, self._host_exec = registrar, target_exec, host_exec
        self.probe = probe
        self._hosts: Dict[str, object] = {}
        self._hosts_lock = threading.Lock()
        # test hook: die (SIGKILL) right after this step, to prove crash recovery
        self.crash_after = os.environ.get("VC_CRASH_AFTER")

    def host(self, name):
        """The libvirt host ``name`` (one shared connection per host)."""
        with self._hosts_lock:
            if name not in self._hosts:
                uri = next((h.uri for h in self.cfg.hosts if h.name == name), None)
                if uri is None:
                    raise ClusterError("node placed on host %r, which is not configured" % name)
                self._hosts[name] = self.open_host(name, uri)
            return self._hosts[name]

    def host_exec(self, name):
        """How to run a command on a physical host."""
        if self._host_exec:
            return self._host_exec(name)
        uri = next(h.uri for h in self.cfg.hosts if h.name == name)
        return remote.executor_for_uri(uri, mux_dir=remote.ssh_mux_dir(self.cfg.site.state_dir)
                                       if uri.startswith("qemu+ssh:") else None)

    def registrar(self, plan=None):
        if self._registrar is not None:
            return self._registrar
        return register.make_registrar(self.cfg, db=self.db, execute=self.execute,
                                       dhcp=network.DhcpRouter(
                                           self.host, plan, self.segment(plan, sorted(
                                               {n.host for n in plan.nodes})) is not None,
                                           self.cfg.hosts[0].name) if plan else None)

    def segment(self, plan, host_names):
        """The cluster's L2 segment over ``host_names`` (None: nothing to join)."""
        return self.isolation.segment(self.cfg, plan, host_names, self.host_exec)

    @contextlib.contextmanager
    def target_pool(self):
        """One SSH connection per iSCSI target for the duration of the block."""
        if self._target_exec:
            yield None
            return
        key, _ = remote.frontend_key(self.cfg.site.state_dir)
        with remote.SSHPool(key, connect_timeout=self.cfg.storage.connect_timeout,
                            command_timeout=self.cfg.storage.command_timeout) as pool:
            yield pool

    def target_backend(self, pool, v):
        """The configured iSCSI backend on the target of volume row ``v``."""
        from vc import iscsi

        t = remote.Target(v["target"], v["address"], v["port"], v["ssh_user"], v["iscsi_port"],
                          v["host_key_fingerprint"])
        return iscsi.make_target_backend(self.cfg, self._target_exec(t) if self._target_exec
                                         else pool.get(t))

"""Start and stop a virtual cluster: the step runner behind ``vc_ctl.py start|stop`` and the tick.

A start or a stop is the list of steps in :mod:`vc.steps` (:data:`~vc.steps.START`,
:data:`~vc.steps.STOP`). This module runs them, and is the only place that knows how: one process
per rack (a lock), one transaction per state move and per step event, the crash hook
(``VC_CRASH_AFTER=<step>``), and failure handling (a failing step leaves the cluster ``failed``
with the error on the reservation). Each step is idempotent, so a run that dies anywhere — an
exception, a SIGKILL, a host reboot — is finished by running the same command again.

The services the steps share (hosts, executors, backends) are in :mod:`vc.services`; what a
node *is* lives in :mod:`vc.designer`; HA in :mod:`vc.ha`; readiness in :mod:`vc.ready`;
reading a cluster without acting (status, dump, ``--dry-run``) in :mod:`vc.readout`.
"""

import contextlib
import fcntl
import logging
import os
import signal
import time
from typing import Dict, List, Optional

from vc import addresses, dblease, states, steps, timeutil
from vc.errors import VcError
from vc.services import Services
from vc.steps import ClusterError  # noqa: F401 - re-exported: callers catch vc.ctl.ClusterError

LOG = logging.getLogger(__name__)

START_STEPS = tuple(s.name for s in steps.START)
STOP_STEPS = tuple(s.name for s in steps.STOP)


class RackBusy(VcError):
    """Another process holds the rack's lock."""


class Ctl(Services):
    """Orchestrates one cluster at a time (the services it runs on: :class:`Services`)."""

    # ---------------------------------------------------------------- the runner
    # the clock of the database leases: real time, whatever ``clock`` says (``vc_cron --now``
    # acts as if it were another time; a lease measures how long its holder has been silent)
    lease_clock = staticmethod(timeutil.utcnow)

    @contextlib.contextmanager
    def locked(self, rack, wait: float = 0.0):
        """One process of one frontend works on a cluster at a time: an exclusive per-rack lock
        file (this frontend's processes), then the rack's database lease (every frontend that
        shares the database; :mod:`vc.dblease`), renewed in the background while the block runs
        and released at its end. Waits up to ``wait`` seconds in all for another one to
        finish; :class:`RackBusy` after that."""
        d = os.path.join(self.cfg.site.state_dir, "locks")
        os.makedirs(d, exist_ok=True)
        deadline = time.monotonic() + wait
        with open(os.path.join(d, "rack-%d.lock" % rack), "w") as f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise RackBusy("rack %d is being started or stopped by another process"
                                       % rack) from None
                    time.sleep(0.2)
            lease = dblease.Lease.for_config(self.cfg, self.db, dblease.rack_name(rack),
                                             clock=self.lease_clock)
            leases = self.__dict__.setdefault("_leases", {})
            with dblease.holding(lease, wait=max(0.0, deadline - time.monotonic()),
                                 busy=lambda who: RackBusy(
                                     "rack %d is being started or stopped by %s"
                                     % (rack, who))):
                leases[rack] = lease
                try:
                    yield
                finally:
                    leases.pop(rack, None)

    def event(self, rack, reason) -> None:
        """One event row that records the state the reservation is in (unchanged)."""

        def run(cur):
            cur.execute("SELECT state FROM vcregist WHERE rack = %s", (rack,))
            row = cur.fetchone()
            st = row["state"] if row else None
            states.event(cur, rack, self.clock(), self.actor, reason, st, st)

        self.db.transaction(run)

    def _move(self, rack, to, reason, only_from=None, **kw) -> None:
        """One state transition in its own transaction."""

        def run(cur):
            row = states.lock(cur, rack)
            if only_from is None or row["state"] in only_from:
                states.transition(cur, row, to, self.clock(), self.actor, reason, **kw)

        self.db.transaction(run)

    def _run(self, kind, r: steps.Run, step_list) -> None:
        step = None
        # the rack's lease (None outside locked()): lost — taken over by another frontend
        # after it expired — means stop at the next step boundary, recording nothing
        lease = getattr(self, "_leases", {}).get(r.rack)
        try:
            for step in step_list:
                if lease is not None:
                    lease.check()
                detail = step.run(r)
                if r.result is not None:
                    return
                self.event(r.rack, "%s: %s done%s" % (kind, step.name,
                                                      (": " + detail) if detail else ""))
                if self.crash_after == step.name:  # pragma: no cover - through a subprocess
                    LOG.warning("VC_CRASH_AFTER=%s: killing myself", step.name)
                    os.kill(os.getpid(), signal.SIGKILL)
            if lease is not None:
                lease.check()  # before the caller's last state move
        except dblease.LeaseLost:
            LOG.warning("rack %d: %s stopped before step %s: lease lost", r.rack, kind,
                        step.name if step else "-")
            raise
        except Exception as e:
            if step is None or not step.records_failure:
                raise  # nothing started: the transaction rolled back, the state is unchanged
            LOG.exception("rack %d: %s failed at %s", r.rack, kind, step.name)
            raise self._fail(r.rack, kind, step.name, e) from e

    def _fail(self, rack, kind, step, err) -> ClusterError:
        msg = "%s failed at step %s: %s" % (kind, step, err)
        self._move(rack, states.FAILED, msg, only_from=(states.STARTING, states.STOPPING,
                                                        states.DELETING), error=msg)
        return ClusterError(msg)

    # ---------------------------------------------------------------- verbs
    def start(self, rack: int, preboot: bool = False) -> dict:
        """Start a cluster (or finish a start that was interrupted). Returns a summary.

        ``preboot``: before its start, only when admission lets the early window
        (:class:`vc.errors.CapacityError` otherwise, nothing changed), the start time kept."""
        with self.locked(rack):
            r = steps.Run(self, rack, preboot=preboot)
            self._run("start", r, steps.START)
            if r.result is not None:
                return r.result
            self._move(rack, states.RUNNING, "all %d nodes running" % len(r.plan.nodes))
            self.progress("rack %d: running" % rack)
            return {"rack": rack, "state": "running", "changed": True,
                    "nodes": [vars(n) for n in r.plan.nodes]}

    def stop(self, rack: int, reason: str = "stop", wait: float = 0.0) -> dict:
        """End the reservation now and remove every trace of its cluster (or finish an
        interrupted stop); a pending delete is carried out after.

        :param wait: when another process works on the rack (a start under way), record the
            stop (the reservation ends now, so the tick stops it next) and wait up to this many
            seconds to carry it out here; 0: refuse at once.
        """
        try:
            with self.locked(rack):
                return self._stop(rack, reason)
        except RackBusy:
            if not wait:
                raise
        steps.end_now(self, rack, "%s (recorded while another process works on the rack)"
                      % reason)
        self.progress("rack %d is busy (a start under way): stop recorded; waiting up to %ds"
                      % (rack, wait))
        try:
            with self.locked(rack, wait=wait):
                return self._stop(rack, reason)
        except RackBusy:
            return {"rack": rack, "state": "stop recorded", "changed": True,
                    "note": "the reservation ends now: the next tick stops the cluster"}

    def _stop(self, rack, reason):
        was, pending = steps.begin_stop(self, rack, reason)
        if was != "cancelled":
            r = steps.Run(self, rack)
            r.plan = self.db.transaction(lambda cur: addresses.load(cur, rack))
            self.progress("rack %d: stopping %d nodes" % (
                rack, len(r.plan.nodes) if r.plan else 0))
            self._run("stop", r, steps.STOP)
            self.progress("rack %d: stopped" % rack)
        if pending == "delete":
            self._finish_delete(rack)
            return {"rack": rack, "state": "deleted", "changed": True}
        return {"rack": rack, "state": "stopped", "changed": True}

    def delete(self, rack: int, confirm_volumes: bool = False) -> dict:
        """Delete a reservation whose cluster is not running, with its volumes' LUNs and
        backing storage, or finish an interrupted delete. Volumes holding data need
        ``confirm_volumes``."""
        with self.locked(rack):
            vols = [v for v in steps.volumes(self.db, rack) if v["iqn"]]
            if vols and not confirm_volumes:
                raise VcError("reservation %d has %d iSCSI volume(s) with data (%s): confirm "
                              "that they are to be destroyed (--delete-volumes)"
                              % (rack, len(vols), ", ".join(v["mount_point"] for v in vols)))
            self._finish_delete(rack)
            return {"rack": rack, "state": "deleted", "changed": True}

    def _finish_delete(self, rack):
        """``stopped`` (or an interrupted ``deleting``) → remove the volumes' LUNs and backing
        storage → the row is deleted. A storage failure leaves it ``failed`` with the error."""
        self._move(rack, states.DELETING, "delete requested", action="delete it",
                   only_from=tuple(st for st in states.ALL if st != states.DELETING))
        try:
            n = steps.remove_storage(self, rack)
        except Exception as e:
            raise self._fail(rack, "delete", "storage", e) from e
        self._move(rack, states.DELETED, "deleted (%d volume(s) removed)" % n)
        self.progress("rack %d: deleted" % rack)

    def wait_ready(self, rack: int, timeout: Optional[float] = None) -> Dict[str, str]:
        """Wait until every node of a running cluster is up (``[virt] ready_timeout``).

        :raises VcError: naming the nodes that are not up in time.
        """
        from vc import ready

        got = ready.observe(self, rack, wait=self.cfg.virt.ready_timeout if timeout is None
                            else timeout)
        if ready.summary(got) != "ready":
            raise VcError("rack %d is running but not ready: %s" % (rack, ready.summary(got)))
        self.progress("rack %d: ready (%d nodes answer SSH)" % (rack, len(got)))
        return got

    def vlan(self, rack: int, action: str, dry_run: bool = False) -> List[str]:
        """``vc_vlan.py add|del`` (see :func:`vc.steps.vlan`)."""
        return steps.vlan(self, rack, action, dry_run)

    def heal(self, rack: int, max_restarts: int = 3) -> List[str]:
        """HA for one running cluster (see :meth:`vc.ha.Healer.heal`)."""
        return self.ha.heal(rack, max_restarts)

"""One tick of the minute: compare reservations with the clock and act through :mod:`vc.ctl`.

Order within a pass (Blazar's: ends before starts, so back-to-back reservations share capacity):

1. resume what a crashed run left transitional (``starting`` → start again unless it has ended,
   ``stopping``/``deleting`` → stop again);
2. stop clusters whose end has passed, or whose delete was requested; a reservation that ended
   before it ever started becomes ``stopped``;
3. start clusters whose start has come; retry a ``failed`` start with back-off (1, 2, 4 …
   minutes, at most ``[cron] max_start_retries`` times, then leave it ``failed`` with its error);
4. check every node of every running cluster (:meth:`vc.ctl.Ctl.heal`).

Before 1, the notices (:mod:`vc.notify`): the warnings before the end that are due, and the
failed / stopped-early notices not sent yet (mail to the owner, wall on the nodes); before the
stops, so a cluster stopped early still hears it. One query when nothing is due; a failure to
send is logged, recorded and retried next tick, and never stops the tick.

Each cluster is handled in its own try/except: one failure never blocks the others; it is
recorded on that reservation (``failed`` + error, by ``vc.ctl``) and in the event log.

**On time**: after a pass the tick looks ahead to the end of its minute; a start or end that falls
inside it is waited for (sleep) and acted on then, so a cluster begins starting within a second
of its start time instead of at the next minute.

An exclusive ``flock`` on ``state_dir/cron.lock`` keeps overlapping ticks from acting twice: a
second tick exits at once. Then the ``tick`` lease in the database (:mod:`vc.dblease`) does the
same between frontends that share the database; each cluster's work is further guarded by its
rack's lease (:meth:`vc.ctl.Ctl.locked`).
"""

import fcntl
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, List, Optional

from vc import dblease, states, timeutil
from vc.db import aware_utc, naive_utc
from vc.errors import CapacityError, VcError

LOG = logging.getLogger(__name__)


@dataclass
class Action:
    rack: int
    verb: str           # start, stop, resume-start, resume-stop, retry-start, heal, expire
    why: str
    result: str = ""
    ok: bool = True


@dataclass
class TickReport:
    acted: bool = True  # False when another tick held the lock
    actions: List[Action] = field(default_factory=list)
    notices: List[str] = field(default_factory=list)  # what the notify passes did (vc.notify)


def _due(db, now, preboot: timedelta = timedelta(0)) -> List[Action]:
    """What must happen at ``now``, in the order it must happen. A reserved cluster whose start
    is at most ``preboot`` away is a ``preboot`` candidate (started early if admission agrees,
    see :func:`preboot_short`)."""
    n = naive_utc(now)
    rows = db.query(
        "SELECT rack, state, start_at, end_at, pending, error, updated_at FROM vcregist WHERE "
        "state IN ('starting', 'stopping', 'deleting') "
        "OR (state IN ('running', 'failed') AND (end_at <= %s OR pending = 'delete')) "
        "OR (state = 'reserved' AND (start_at <= %s OR end_at <= %s OR pending = 'delete')) "
        "OR state = 'failed' OR (state = 'stopped' AND pending = 'delete') "
        "ORDER BY start_at, rack", (n, naive_utc(now + preboot), n))
    resume, stops, starts = [], [], []
    for r in rows:
        ended = aware_utc(r["end_at"]) <= now
        st = r["state"]
        if st == states.STARTING:
            if ended or r["pending"] == "delete":
                resume.append(Action(r["rack"], "resume-stop", "start interrupted, window over"))
            else:
                resume.append(Action(r["rack"], "resume-start", "start was interrupted"))
        elif st in (states.STOPPING, states.DELETING):
            resume.append(Action(r["rack"], "resume-stop", "stop was interrupted"))
        elif st == states.STOPPED:
            stops.append(Action(r["rack"], "delete", "delete requested"))
        elif st == states.RESERVED and (ended or r["pending"] == "delete"):
            stops.append(Action(r["rack"], "expire", "ended before it started"))
        elif st in (states.RUNNING, states.FAILED) and (ended or r["pending"] == "delete"):
            stops.append(Action(r["rack"], "stop", "delete requested" if r["pending"] ==
                                "delete" else "end reached"))
        elif st == states.RESERVED and aware_utc(r["start_at"]) > now:
            starts.append(Action(r["rack"], "preboot", "pre-boot: ready at the start %s"
                                 % timeutil.iso(aware_utc(r["start_at"]))))
        elif st == states.RESERVED:
            starts.append(Action(r["rack"], "start", "start reached"))
        elif st == states.FAILED:
            starts.append(Action(r["rack"], "retry-start", r["error"] or "failed"))
    return resume + stops + starts


def _failures_since_running(db, rack) -> int:
    rows = db.query("SELECT to_state FROM vcevent WHERE rack = %s AND to_state IN "
                    "('failed', 'running') ORDER BY id DESC", (rack,))
    n = 0
    for r in rows:
        if r["to_state"] == "running":
            break
        n += 1
    return n


def _retry_due(db, rack, now, max_retries) -> Optional[str]:
    """None when a failed start may be retried now, else why not."""
    n = _failures_since_running(db, rack)
    if n > max_retries:
        return "gave up after %d failed starts" % (n - 1)
    row = db.query("SELECT updated_at FROM vcregist WHERE rack = %s", (rack,))[0]
    wait = timedelta(minutes=2 ** max(0, n - 1))
    at = aware_utc(row["updated_at"]) + wait
    if now < at:
        return "next retry at %s" % timeutil.iso(at)
    return None


def next_event(db, after: datetime, before: datetime,
               preboot: timedelta = timedelta(0)) -> Optional[datetime]:
    """The earliest start, pre-boot time (start - ``preboot``) or end in ``(after, before)``
    that a tick would act on."""
    a, b = naive_utc(after), naive_utc(before)
    pb = int(preboot.total_seconds())
    pre = (" UNION ALL SELECT MIN(start_at) - INTERVAL %d SECOND FROM vcregist WHERE "
           "state = 'reserved' AND start_at > %%s AND start_at < %%s" % pb) if pb else ""
    args = (a, b, a, b) + ((naive_utc(after + preboot), naive_utc(before + preboot)) if pb else ())
    rows = db.query(
        "SELECT MIN(t) AS t FROM ("
        " SELECT MIN(start_at) AS t FROM vcregist WHERE state = 'reserved' AND start_at > %s "
        "  AND start_at < %s"
        " UNION ALL SELECT MIN(end_at) FROM vcregist WHERE state IN ('running', 'starting', "
        "  'failed', 'reserved') AND end_at > %s AND end_at < %s" + pre + ") x", args)
    return aware_utc(rows[0]["t"]) if rows and rows[0]["t"] else None


def preboot_short(cfg, db, rack, now) -> Optional[str]:
    """None when reservation ``rack`` may start now, before its start: the early window
    ``[now, start)`` fits beside every reservation holding capacity then (a still-running one
    keeps its capacity to its end) -- admission's own check; else why not."""
    from vc import reservations
    from vc.errors import CapacityError

    def txn(cur):
        cur.execute("SELECT start_at FROM vcregist WHERE rack = %s", (rack,))
        start = aware_utc(cur.fetchone()["start_at"])
        if start <= now:
            return None
        try:
            # a first look without the admission lock (the start itself admits under it)
            reservations.admit(cfg, cur, now, start, reservations._resources(cur, rack), now,
                               exclude_rack=rack)
        except CapacityError as e:
            return str(e)
        return None

    return db.transaction(txn)


class Scheduler:
    """:param ctl: a :class:`vc.ctl.Ctl`. :param clock: now (aware UTC).
    :param sleep: ``sleep(seconds)``. ``lookahead=False`` acts only on what is due at the first
    ``clock()`` (``--now``)."""

    def __init__(self, cfg, db, ctl, clock: Callable[[], datetime] = timeutil.utcnow,
                 sleep=time.sleep, lookahead=True, max_start_retries=5, ha_max_restarts=3,
                 dry_run=False, notifier=None):
        self.cfg, self.db, self.ctl = cfg, db, ctl
        self.clock, self.sleep, self.lookahead = clock, sleep, lookahead
        self.max_start_retries, self.ha_max_restarts = max_start_retries, ha_max_restarts
        self.dry_run = dry_run
        cron = getattr(cfg, "cron", None)
        self.preboot = timedelta(minutes=getattr(cron, "preboot_minutes", 0))
        self.preflight_minutes = getattr(cron, "preflight_minutes", 0)
        # preflight_kw (tests): host_exec, target_exec, send for vc.preflight.tick
        self.preflight_kw: dict = {}
        # a vc.notify.Notifier (tests inject one with a recording mailer and wall); made on
        # first use
        self.notifier = notifier
        self.notices: List[str] = []

    def _lock(self):
        os.makedirs(self.cfg.site.state_dir, exist_ok=True)
        f = open(os.path.join(self.cfg.site.state_dir, "cron.lock"), "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
        return f

    # the clock of the tick's database lease: real time, also under ``--now`` (see vc.ctl)
    lease_clock = staticmethod(timeutil.utcnow)

    def tick(self) -> TickReport:
        lock = self._lock()
        if lock is None:
            LOG.info("another tick is running: exiting")
            return TickReport(acted=False)
        try:
            # one tick at a time over every frontend sharing the database (vc.dblease)
            lease = dblease.Lease.for_config(self.cfg, self.db, dblease.TICK,
                                             clock=self.lease_clock)
            if not lease.acquire():
                LOG.info("the tick of %s is running: exiting",
                         lease.describe_holder() or "another frontend")
                return TickReport(acted=False)
            lease.start_renewing()
            try:
                return self._tick()
            finally:
                lease.release()
        finally:
            lock.close()

    def _tick(self) -> TickReport:
        report = TickReport()
        self.notices = report.notices
        started = self.clock()
        # the horizon: this tick's minute; what falls after it is the next tick's
        horizon = started.replace(second=0, microsecond=0) + timedelta(minutes=1)
        now = started
        while True:
            report.actions += self.run_once(now)
            if now is started:
                report.actions += self._preflight(now)
            if not self.lookahead:
                break
            nxt = next_event(self.db, now, horizon, self.preboot)
            if nxt is None:
                break
            delay = (nxt - self.clock()).total_seconds()
            LOG.info("next start/end at %s: sleeping %.1f s", timeutil.iso(nxt), max(0, delay))
            if delay > 0:
                self.sleep(delay)
            now = max(self.clock(), nxt)
        return report

    def run_once(self, now) -> List[Action]:
        actions = []
        if not self.dry_run:
            self._notify(now)
        for a in _due(self.db, now, self.preboot):
            if a.verb == "preboot":
                why_not = preboot_short(self.cfg, self.db, a.rack, now)
                if why_not:
                    LOG.info("rack %d: no pre-boot (%s): it starts at its start", a.rack, why_not)
                    continue
            if a.verb == "retry-start":
                why_not = _retry_due(self.db, a.rack, now, self.max_start_retries)
                if why_not:
                    LOG.debug("rack %d: failed start not retried: %s", a.rack, why_not)
                    continue
            actions.append(self._do(a))
        if not self.dry_run:
            actions += self._heal_all()
        return actions

    def _notify(self, now) -> None:
        """The notify pass (:mod:`vc.notify`); nothing it meets stops the tick."""
        try:
            if self.notifier is None:
                from vc import notify

                self.notifier = notify.Notifier(self.cfg, self.db, clock=self.clock)
            self.notices += self.notifier.run(now)
        except Exception:  # noqa: BLE001 - e.g. the database went away: the tick goes on
            LOG.exception("notify pass failed")

    def _do(self, a: Action) -> Action:
        LOG.info("rack %d: %s (%s)", a.rack, a.verb, a.why)
        if self.dry_run:
            a.result = "dry run"
            return a
        try:
            if a.verb == "preboot":
                # admitted again under the admission lock; the reserved start is kept
                a.result = self.ctl.start(a.rack, preboot=True)["state"]
            elif a.verb in ("start", "resume-start", "retry-start"):
                a.result = self.ctl.start(a.rack)["state"]
            elif a.verb == "delete":
                # confirmed when the delete was requested (pending = 'delete')
                a.result = self.ctl.delete(a.rack, confirm_volumes=True)["state"]
            else:
                a.result = self.ctl.stop(a.rack, "tick: " + a.why)["state"]
        except CapacityError as e:
            if a.verb != "preboot":
                raise
            # taken meanwhile: no pre-boot, nothing changed; it starts at its start
            LOG.info("rack %d: no pre-boot (%s)", a.rack, e)
            a.result = "no pre-boot: %s" % e
        except Exception as e:  # one cluster's failure never blocks the others
            a.ok, a.result = False, str(e)
            if not isinstance(e, VcError):
                LOG.exception("rack %d: %s failed", a.rack, a.verb)
            else:
                LOG.error("rack %d: %s failed: %s", a.rack, a.verb, e)
            self._record(a.rack, "tick: %s failed: %s" % (a.verb, e))
        return a

    def _preflight(self, now) -> List[Action]:
        """The pre-flights due ``[cron] preflight_minutes`` before their start (once each)."""
        if self.dry_run or self.preflight_minutes <= 0:
            return []
        from vc import preflight

        # not in the tick's report: a pre-flight changes no cluster (its result is stored)
        try:
            for rack, problems in preflight.tick(self.cfg, self.db, now, self.preflight_minutes,
                                                 **self.preflight_kw):
                LOG.info("rack %d: pre-flight: %s", rack, "; ".join(map(str, problems)) or "ok")
        except Exception as e:
            LOG.error("pre-flight failed: %s", e)
        return []

    def _record(self, rack, reason):
        try:
            self.db.transaction(lambda cur: states.event(cur, rack, self.clock(), "vc_cron",
                                                         reason))
        except Exception:  # pragma: no cover - the database itself is down
            LOG.exception("rack %d: cannot record event", rack)

    def _heal_all(self) -> List[Action]:
        # a host marked unreachable comes back into use once it answers again, and only
        # after its stale domains (nodes moved away meanwhile) are destroyed and undefined
        # there: fence first, so nothing can start a second copy
        for h in self.db.query("SELECT name FROM vchost WHERE reachable = 0"):
            if self.ctl.ha.reachable(h["name"]):
                LOG.info("host %s answers again", h["name"])
                try:
                    self.ctl.ha.fence(h["name"])
                except Exception as e:
                    LOG.error("host %s: fencing failed, kept unreachable: %s", h["name"], e)
                    continue
                self.ctl.ha.mark_host(h["name"], True)
        racks = [r["rack"] for r in self.db.query(
            "SELECT rack FROM vcregist WHERE state = 'running' ORDER BY rack")]
        out = []
        booting = {r["rack"] for r in self.db.query(
            "SELECT DISTINCT rack FROM vcnode WHERE readiness <> 'up' AND state = 'running'")}
        for rack in racks:
            try:
                for msg in self.ctl.heal(rack, self.ha_max_restarts):
                    out.append(Action(rack, "heal", msg, "restarted"))
                if rack in booting:
                    # readiness: one quick look per tick at the guests that are not up yet
                    from vc import ready

                    ready.observe(self.ctl, rack, probe=lambda ip: ready.ssh_answers(ip, 22, 0.5))
            except Exception as e:
                LOG.error("rack %d: health check failed: %s", rack, e)
                out.append(Action(rack, "heal", "health check", str(e), ok=False))
                self._record(rack, "tick: health check failed: %s" % e)
        return out

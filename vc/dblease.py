"""Leases: mutual exclusion in the database, between frontends that share it.

Two frontends on one Galera cluster each keep their own flocks (``state_dir/locks``,
``state_dir/cron.lock``), and on Galera neither ``GET_LOCK()`` nor ``SELECT … FOR UPDATE`` reaches
beyond the node it runs on. What does reach every node is a *write*: certification lets exactly
one of two conflicting transactions commit. So a lease is a row of ``vclease`` (sql/006), taken
by one conditional UPDATE::

    UPDATE vclease SET holder = me, expires_at = now + ttl, generation = generation + 1 …
     WHERE name = … AND (holder IS NULL OR holder = me OR expires_at < now)

and held when it changed exactly one row. ``holder = me``: a frontend re-takes its own lease at
once after a crash (its flock, taken first, says no process of its own still works there).
While the work runs, a thread renews the lease every ``ttl/3``; a renewal that changes no row
(another frontend took it over: the ``generation`` differs) or that cannot reach the database
before the lease would expire marks the lease *lost*, and the work stops at its next step
boundary (:meth:`Lease.check`, called by the step runner in :mod:`vc.ctl`). At the end the
lease is released. A frontend that dies stops renewing: ``ttl`` later another frontend takes the
lease and finishes the work (the steps are idempotent, as after any crash).

Times are the frontends' own clocks (``clock``, injectable; aware UTC), so their clocks must
agree to well within ``ttl/3``: a holder renews ``ttl/3`` after its last renewal, a taker waits
for ``ttl``. Works the same on a single MariaDB.
"""

import contextlib
import logging
import socket
import threading
import time
from datetime import timedelta
from typing import Callable, Optional

from vc import timeutil
from vc.db import aware_utc, naive_utc
from vc.errors import VcError

LOG = logging.getLogger(__name__)

TICK = "tick"


def rack_name(rack: int) -> str:
    return "rack-%d" % rack


def frontend_id(cfg) -> str:
    """``[site] frontend_id``, else this machine's host name."""
    return cfg.site.frontend_id or socket.gethostname()


class LeaseLost(VcError):
    """The lease ran out or was taken over by another frontend: stop working."""


class Lease:
    """One named lease, as held (or wanted) by one frontend.

    :param db: a :class:`vc.db.Database`.
    :param name: the lease's row (:func:`rack_name`, :data:`TICK`).
    :param holder: this frontend's id (:func:`frontend_id`).
    :param ttl: seconds a take or renewal lasts.
    :param clock: now, aware UTC (tests inject one).
    """

    def __init__(self, db, name: str, holder: str, ttl: float,
                 clock: Callable = timeutil.utcnow):
        self.db, self.name, self.holder, self.ttl, self.clock = db, name, holder, ttl, clock
        self.generation: Optional[int] = None   # of our take, while held
        self.expires_at = None                  # of our last take or renewal
        self.lost_reason: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @classmethod
    def for_config(cls, cfg, db, name, clock: Callable = timeutil.utcnow) -> "Lease":
        return cls(db, name, frontend_id(cfg), cfg.site.lease_seconds, clock)

    # ------------------------------------------------------------------ take, renew, release
    @property
    def held(self) -> bool:
        return self.generation is not None and self.lost_reason is None

    def try_take(self) -> bool:
        """Take the lease if it is free, ours already or expired; True when we hold it now."""
        now = self.clock()
        exp = now + timedelta(seconds=self.ttl)

        def run(cur):
            cur.execute("INSERT IGNORE INTO vclease (name) VALUES (%s)", (self.name,))
            cur.execute(
                "UPDATE vclease SET holder = %s, expires_at = %s, taken_at = %s, beats = 0, "
                "generation = LAST_INSERT_ID(generation + 1) "
                "WHERE name = %s AND (holder IS NULL OR holder = %s OR expires_at < %s)",
                (self.holder, naive_utc(exp, micro=True), naive_utc(now, micro=True),
                 self.name, self.holder, naive_utc(now, micro=True)))
            return cur.lastrowid if cur.rowcount == 1 else None

        gen = self.db.transaction(run)
        if gen is None:
            return False
        self.generation, self.expires_at, self.lost_reason = int(gen), exp, None
        self._stop.clear()
        LOG.debug("lease %s taken by %s (generation %d, until %s)", self.name, self.holder,
                  self.generation, timeutil.iso(exp))
        return True

    def acquire(self, wait: float = 0.0, poll: float = 0.5, sleep=time.sleep,
                monotonic=time.monotonic) -> bool:
        """:meth:`try_take`, again every ``poll`` seconds for up to ``wait`` seconds."""
        deadline = monotonic() + wait
        while True:
            if self.try_take():
                return True
            left = deadline - monotonic()
            if left <= 0:
                return False
            sleep(min(poll, left))

    def renew(self) -> bool:
        """Extend our lease by ``ttl`` from now; False (and the lease is lost) when another
        frontend holds it now."""
        if self.generation is None:
            raise VcError("lease %s is not held" % self.name)
        exp = self.clock() + timedelta(seconds=self.ttl)

        def run(cur):
            cur.execute("UPDATE vclease SET expires_at = %s, beats = beats + 1 WHERE name = %s "
                        "AND holder = %s AND generation = %s",
                        (naive_utc(exp, micro=True), self.name, self.holder, self.generation))
            return cur.rowcount == 1

        if self.db.transaction(run):
            self.expires_at = exp
            return True
        self._lose("taken over by %s" % (self.describe_holder() or "another frontend"))
        return False

    def release(self) -> None:
        """Free the lease (only the generation we took: never a new holder's)."""
        self.stop_renewing()
        gen, self.generation = self.generation, None
        if gen is None:
            return
        try:
            self.db.transaction(lambda cur: cur.execute(
                "UPDATE vclease SET holder = NULL, expires_at = NULL WHERE name = %s AND "
                "holder = %s AND generation = %s", (self.name, self.holder, gen)))
        except VcError as e:  # the database is away: the lease expires by itself
            LOG.warning("lease %s: cannot release it (%s): it expires at %s", self.name, e,
                        timeutil.iso(self.expires_at))

    def current(self) -> Optional[dict]:
        """The lease row as stored: ``holder``, ``expires_at`` (aware), ``generation``."""
        rows = self.db.query("SELECT holder, expires_at, generation, beats FROM vclease "
                             "WHERE name = %s", (self.name,))
        if not rows:
            return None
        return dict(rows[0], expires_at=aware_utc(rows[0]["expires_at"]))

    def describe_holder(self) -> str:
        """``frontend X (until T)`` of whoever holds the lease now ('' when free)."""
        try:
            row = self.current()
        except VcError:
            return ""
        if not row or not row["holder"]:
            return ""
        return "frontend %s (lease until %s)" % (row["holder"],
                                                 timeutil.iso(row["expires_at"]))

    # ------------------------------------------------------------------ lost
    def _lose(self, why: str) -> None:
        if self.lost_reason is None:
            self.lost_reason = why
            LOG.warning("lease %s lost: %s", self.name, why)

    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    def check(self) -> None:
        """Raise :class:`LeaseLost` when the lease is lost (called between steps)."""
        if self.lost_reason is not None:
            raise LeaseLost("lease %s of %s lost (%s): stopping here; the frontend that holds "
                            "it now finishes the work" % (self.name, self.holder,
                                                          self.lost_reason))

    # ------------------------------------------------------------------ renewing in the background
    def start_renewing(self, interval: Optional[float] = None) -> None:
        """Renew every ``interval`` seconds (default ``ttl/3``) until :meth:`stop_renewing`."""
        if self._thread is not None:
            return
        self._stop.clear()
        every = self.ttl / 3.0 if interval is None else interval
        self._thread = threading.Thread(target=self._renew_loop, args=(every,), daemon=True,
                                        name="lease-%s" % self.name)
        self._thread.start()

    def stop_renewing(self) -> None:
        t, self._thread = self._thread, None
        if t is not None:
            self._stop.set()
            t.join()

    def _renew_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                if not self.renew():
                    return
            except Exception as e:  # the database is away: retried; lost once we expire
                if self.expires_at is not None and self.clock() >= self.expires_at:
                    self._lose("could not renew it before it expired: %s" % e)
                    return
                LOG.warning("lease %s: renewal failed (%s): retrying", self.name, e)


@contextlib.contextmanager
def holding(lease: Lease, wait: float = 0.0, busy: Callable[[str], Exception] = None,
            renew_every: Optional[float] = None):
    """Hold ``lease`` for the block: take it (waiting up to ``wait`` seconds), renew it in the
    background, release it at the end. When another frontend holds it, raise ``busy(who)``
    (default :class:`VcError`)."""
    if not lease.acquire(wait):
        who = lease.describe_holder() or "another frontend"
        raise (busy or (lambda w: VcError("lease %s is held by %s" % (lease.name, w))))(who)
    lease.start_renewing(renew_every)
    try:
        yield lease
    finally:
        lease.release()

"""Notices about a reservation's lease: the warnings before its end (``[notify] before_end``,
default ``60m,10m,1m``) and the notices that it failed or was stopped early; each sent **once**.

What is due (:func:`due_warning`, a pure function of the reservation's start and end, now, the
thresholds and what was sent already): at the first tick at or after ``end - d``, the warning of
the *smallest* threshold ``d`` that has passed, unless a warning of that or a smaller threshold
went out for the same end. So a tick that missed a threshold sends one warning, not a burst;
an end moved later or earlier gets fresh warnings for the new end (the row's key names the end);
a threshold as long as the reservation itself or longer is never sent (a 30-minute booking gets
no "ends in 30 minutes" at its start).

Where each one goes:

* **mail** to the owner (:mod:`vc.mail`; a failure also to ``[site] admins``);
* **wall** on every node of a running cluster whose SSH server answered (readiness ``up``), for
  the warnings and a stop that ends the cluster early: the tick connects to each node's private
  address with the cluster's own key pair (``vcclusterkey``; the root login every node's seed
  authorises) and runs ``wall`` there, the message on stdin (a guest without ``wall``, like
  busybox, gets it written to each of its ``/dev/pts`` terminals). **Why from the tick and not a
  timer inside the guest**: the tick reads the end from the database at the moment it warns, so
  an end extended after the seed was written is simply the end it warns about; a timer in the
  guest would need the seed's end and a way to learn every change (or poll the lease service
  from every node every minute), would differ per image (busybox has no cron or wall), and
  could not record "sent once" anywhere the frontends see. The guests' host keys are made at
  each boot, so they cannot be pinned: the connection skips host-key checking. What that risks
  is small: the frontend sends a non-secret message, and public-key authentication does not
  hand the key to the server; only a machine on the cluster's own isolated segment (the
  tenant's) could pose as a node.

"Once" is a row in ``vcnotices`` (``sql/009_notices.sql``), unique on ``(rack, start_at,
end_at, kind)``, written **before** anything is sent (``INSERT IGNORE``: of two writers, one
wins). A mail that fails is retried by the next tick (at most :data:`MAX_ATTEMPTS`, each
failure an event on the reservation); the wall is tried once (its failures are an event). A
warning whose end has passed or changed before it went out is dropped. A tick killed after the
mail was handed over and before the row was updated sends it again: the only duplicate.

The failed and stopped-early notices are written by :func:`note` where the reservation moves
(in the same transaction: :func:`vc.states.transition` for ``failed`` and a stop before the
end, :func:`vc.reservations.stop_now`/``delete`` and :func:`vc.steps.end_now` where an end is
moved to now), and sent by the next tick. Why not read them from the event log: the events
carry no "booked end", so telling a stop at the end from one before it would mean parsing
reasons, and the idle tick would need a second query with a watermark.

The tick (:mod:`vc.scheduler`) calls :meth:`Notifier.run` once per pass, before it stops
clusters (a stopped-early wall still reaches the nodes): one query when nothing is due
(:data:`PASS_SQL`). :mod:`smtplib`, :mod:`email` and the key's unsealing are imported only when
something is sent.
"""

import logging
import os
from datetime import timedelta
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from vc import states, timeutil
from vc.db import aware_utc, naive_utc

LOG = logging.getLogger(__name__)

BEFORE = "before:"             # + seconds: a warning before the end
FAILED = "failed:"             # + start | stop | delete
STOPPED_EARLY = "stopped-early"
MAX_ATTEMPTS = 5               # mail attempts of one notice (one per tick)
WALL_TIMEOUT = 20              # seconds one node's wall may take (connect 5 s)
ACTOR = "vc_cron (notify)"

# the whole idle cost of notices: running clusters whose end is within the longest threshold
# (the (state, end_at) index), with the warnings already written for that end, and the notices
# not done yet (the done index); ORDER BY keeps what a tick sends stable
PASS_SQL = (
    "SELECT r.rack, r.owner, r.start_at, r.end_at, NULL AS id, NULL AS kind, "
    " (SELECT GROUP_CONCAT(n.kind) FROM vcnotices n WHERE n.rack = r.rack AND "
    "  n.start_at = r.start_at AND n.end_at = r.end_at) AS sent "
    "FROM vcregist r WHERE r.state = 'running' AND r.end_at > %s AND r.end_at <= %s "
    "UNION ALL SELECT rack, owner, start_at, end_at, id, kind, NULL FROM vcnotices "
    "WHERE done = 0 ORDER BY rack, id")


# ------------------------------------------------------------------------ what is due
def due_warning(start, end, now, before_end: Sequence[int], sent: Iterable[int]) -> Optional[int]:
    """The threshold (seconds) whose warning is due now, or None.

    :param start, end, now: aware datetimes (the reservation's window, the tick's time).
    :param before_end: ``[notify] before_end`` (seconds).
    :param sent: thresholds already warned about for this ``end``.
    """
    left = (end - now).total_seconds()
    if left <= 0:
        return None
    length = (end - start).total_seconds()
    passed = [d for d in before_end if d >= left and d < length]
    if not passed:
        return None
    d = min(passed)
    if any(s <= d for s in sent):
        return None
    return d


def sent_thresholds(kinds: Optional[str]) -> List[int]:
    """``GROUP_CONCAT(kind)`` → the warning thresholds in it."""
    out = []
    for k in (kinds or "").split(","):
        if k.startswith(BEFORE) and k[len(BEFORE):].isdigit():
            out.append(int(k[len(BEFORE):]))
    return out


# ------------------------------------------------------------------------ recording
def note(cur, row: dict, kind: str, now, detail: str = "") -> bool:
    """Record a notice to be sent by the next tick, once (in the caller's transaction).

    :param row: the reservation row (``rack, owner, start_at, end_at``; the end it is about).
    :returns: True when this call wrote it (False: it was recorded already).
    """
    cur.execute(
        "INSERT IGNORE INTO vcnotices (rack, start_at, end_at, kind, owner, detail, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (row["rack"], naive_utc(aware_utc(row["start_at"])), naive_utc(aware_utc(row["end_at"])),
         kind, row["owner"], (detail or "")[:2000], naive_utc(now, micro=True)))
    return cur.rowcount == 1


def on_transition(cur, row: dict, to_state: str, now, actor: str, reason: str) -> None:
    """The hook of :func:`vc.states.transition` (before the row dict is updated): a move to
    ``failed`` is a failed notice; a stop (``→ stopping``) before the booked end is a
    stopped-early notice (``row`` still holds the end before the stop moved it)."""
    if to_state == states.FAILED:
        what = {states.STARTING: "start", states.STOPPING: "stop",
                states.DELETING: "delete"}.get(row["state"], "start")
        note(cur, row, FAILED + what, now, reason)
    elif to_state == states.STOPPING and row["state"] in (states.RUNNING, states.STARTING,
                                                         states.FAILED) \
            and aware_utc(row["end_at"]) > now:
        note(cur, row, STOPPED_EARLY, now, "stopped by %s: %s" % (actor, reason))


def early_end(cur, row: dict, now, actor: str, why: str) -> None:
    """Hook where a started reservation's end is moved to now (stop now, vc-lease release,
    delete, a stop recorded while another process works on the rack): a stopped-early notice
    when the booked end (still in ``row``) was later."""
    if row["state"] in (states.STARTING, states.RUNNING, states.FAILED) \
            and aware_utc(row["end_at"]) > now:
        note(cur, row, STOPPED_EARLY, now, "%s by %s" % (why, actor))


# ------------------------------------------------------------------------ the texts
def left_text(seconds: float) -> str:
    """``10 minutes``, ``1 minute``, ``2 h 5 min``, ``1 d 3 h``: rounded to the minute."""
    m = int(seconds / 60 + 0.5)
    if m < 1:
        return "less than a minute"
    if m < 120:
        return "%d minute%s" % (m, "" if m == 1 else "s")
    h, m = divmod(m, 60)
    if h < 48:
        return "%d h %d min" % (h, m) if m else "%d hours" % h
    d, h = divmod(h, 24)
    return "%d d %d h" % (d, h) if h else "%d days" % d


def texts(cfg, n: dict, now) -> Dict[str, str]:
    """``subject``, ``body`` (the mail) and ``wall`` (lines under 80 columns: util-linux wall
    wraps longer ones) of the notice ``n`` (a ``vcnotices`` row, times aware)."""
    tz = cfg.tzinfo()
    rack, owner, end = n["rack"], n["owner"], n["end_at"]
    at = timeutil.show(end, tz)
    frontend = cfg.site.frontend_name()
    sig = "\n-- \nVC on %s (sent once)\n" % frontend
    kind = n["kind"]
    if kind.startswith(BEFORE):
        left = left_text((end - now).total_seconds())
        return {
            "subject": "[VC] rack %d ends in %s (%s)" % (rack, left, at),
            "body": (
                "Hello %s,\n\nyour virtual cluster rack %d ends in %s, at %s.\n"
                "At its end every node is shut down and removed; its iSCSI volumes keep "
                "their data.\n\nTo keep it longer, from any node of the cluster:\n"
                "    vc-lease extend 30m            # all of it or nothing\n"
                "    vc-lease extend --longest 2h   # the longest that fits, up to 2 h\n"
                "or on the frontend: vc_ctl.py extend %d --end TIME, or the View "
                "registrations page.\n" % (owner, rack, left, at, rack)) + sig,
            "wall": ("VC: reservation ends in %s (at %s)\n"
                     "extend with: vc-lease extend 30m  (or: vc-lease extend --longest 2h)"
                     % (left, at)),
        }
    if kind == STOPPED_EARLY:
        return {
            "subject": "[VC] rack %d was stopped early" % rack,
            "body": (
                "Hello %s,\n\nyour virtual cluster rack %d, booked until %s, was ended early "
                "(%s): %s.\nIts nodes are shut down and removed; its iSCSI volumes keep their "
                "data. A stopped reservation can be reopened: vc_ctl.py extend %d --end TIME.\n"
                % (owner, rack, at, timeutil.show(aware_utc(n["created_at"]), tz),
                   n["detail"] or "stopped", rack)) + sig,
            "wall": "VC: this cluster (rack %d) is being stopped now, before its end (%s)\n%s"
                    % (rack, at, (n["detail"] or "")[:78]),
        }
    what = kind[len(FAILED):] if kind.startswith(FAILED) else "start"
    retry = ("VC retries a failed start after 1, 2, 4 ... minutes, at most %d times.\n"
             % cfg.cron.max_start_retries) if what == "start" else ""
    return {
        "subject": "[VC] rack %d: %s failed" % (rack, what),
        "body": (
            "Hello %s,\n\nthe %s of your virtual cluster rack %d (until %s) failed:\n    %s\n\n"
            "%s'vc_ctl.py show %d' shows its state and error.\n"
            % (owner, what, rack, at, n["detail"] or "(no detail)", retry, rack)) + sig,
        "wall": "",
    }


def recipients(cfg, n: dict) -> List[str]:
    """The owner; for a failure also ``[site] admins``."""
    from vc import mail

    users = [n["owner"]]
    if n["kind"].startswith(FAILED):
        users += [a for a in cfg.site.admins if a not in users]
    out = []
    for u in users:
        try:
            a = mail.address(cfg, u)
        except mail.MailError as e:
            LOG.warning("rack %d: %s", n["rack"], e)
            continue
        if a not in out:
            out.append(a)
    return out


# ------------------------------------------------------------------------ wall over SSH
WALL_SCRIPT = (
    # the message on stdin; wall where there is one (util-linux, busybox with the applet), else
    # every pseudo-terminal (busybox without wall: the test guest): what wall does for root
    'm=$(cat); if command -v wall >/dev/null 2>&1; then printf "%s\\n" "$m" | wall; '
    'else for t in /dev/pts/[0-9]*; do [ -c "$t" ] && '
    '{ printf "\\r\\nBroadcast message from VC:\\r\\n%s\\r\\n" "$m" > "$t"; } 2>/dev/null; '
    'done; fi; true')


def ssh_argv(key_file: str, ip: str, proxy: Optional[List[str]] = None) -> List[str]:
    """The ``ssh`` command that runs :data:`WALL_SCRIPT` as root on a node.

    :param proxy: an ``ssh`` argv (with its destination) to reach the node through: the host
        that holds the cluster segment's ``.1`` when that is not this machine.
    """
    argv = ["ssh", "-i", key_file, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR"]
    if proxy:
        import shlex

        argv += ["-o", "ProxyCommand=" + shlex.join(proxy + ["-W", "%h:%p"])]
    return argv + ["root@" + ip, WALL_SCRIPT]


def _run_input(argv, data: bytes) -> str:
    from vc import remote

    return remote.LocalExecutor("wall", command_timeout=WALL_TIMEOUT).run_input(argv, data)


class Wall:
    """``wall(rack, text) -> {node: error or None}`` on every node of a running cluster that
    answered SSH, in parallel.

    :param run_input: ``run_input(argv, stdin bytes)`` (injected by tests; default: this machine,
        :class:`vc.remote.LocalExecutor`).
    """

    def __init__(self, cfg, db, run_input: Callable = _run_input):
        self.cfg, self.db, self.run_input = cfg, db, run_input

    def __call__(self, rack: int, text: str) -> Dict[str, Optional[str]]:
        rows = self.db.query(
            "SELECT name, ip, host FROM vcnode WHERE rack = %s AND state = 'running' AND "
            "readiness = 'up' ORDER BY appliance = 'compute', `rank`", (rack,))
        if not rows:
            return {}
        proxy = self._proxy(rack)
        with self._key(rack) as key_file:
            from concurrent.futures import ThreadPoolExecutor

            def one(r):
                try:
                    self.run_input(ssh_argv(key_file, r["ip"], proxy),
                                   (text + "\n").encode("utf-8"))
                    return None
                except Exception as e:  # noqa: BLE001 - a node's failure is reported, not raised
                    return " ".join(str(e).split())[:200] or type(e).__name__

            with ThreadPoolExecutor(max_workers=min(16, len(rows))) as ex:
                errs = list(ex.map(one, rows))
        return {r["name"]: e for r, e in zip(rows, errs)}

    def _proxy(self, rack) -> Optional[List[str]]:
        """Through the first gateway's host when it is remote (it holds the segment's ``.1``,
        :mod:`vc.ready` probes from there for the same reason)."""
        from vc import disks

        first = self.db.query("SELECT host FROM vcnode WHERE rack = %s AND appliance = "
                              "'gateway' ORDER BY `rank` LIMIT 1", (rack,))
        host = first[0]["host"] if first else None
        if not host or not disks.is_remote(self.cfg, host):
            return None
        from vc import remote

        h = next(h for h in self.cfg.hosts if h.name == host)
        ex = remote.executor_for_uri(h.uri, h.name)
        return list(ex.ssh) + [ex.dest]

    def _key(self, rack):
        """The cluster's private key as a file: this frontend's copy
        (``state_dir/keys/rack-N/id_ed25519``) or, when another frontend started the cluster,
        the database's pair unsealed into a temporary 0600 file removed afterwards."""
        import contextlib
        import tempfile

        from vc import designer

        path = os.path.join(designer.key_dir(self.cfg, rack), "id_ed25519")

        @contextlib.contextmanager
        def copy():
            if os.path.exists(path):
                yield path
                return
            from vc import iscsi
            from vc.errors import VcError

            row = self.db.query("SELECT private_sealed FROM vcclusterkey WHERE rack = %s",
                                (rack,))
            if not row:
                raise VcError("rack %d has no cluster key pair" % rack)
            try:
                text = iscsi.unseal(self.cfg.site.state_dir, row[0]["private_sealed"])
            except ValueError as e:
                raise VcError("rack %d: the cluster's key: %s" % (rack, e)) from None
            fd, tmp = tempfile.mkstemp(prefix="vc-wall-", dir=self.cfg.site.state_dir)
            try:
                with os.fdopen(fd, "w") as f:  # mkstemp: 0600
                    f.write(text)
                yield tmp
            finally:
                os.unlink(tmp)

        return copy()


# ------------------------------------------------------------------------ the pass
class Notifier:
    """One notify pass of the tick.

    :param send_mail: ``send(cfg, recipients, subject, body)`` (default :func:`vc.mail.send`).
    :param wall: ``wall(rack, text) -> {node: error or None}`` (default :class:`Wall`).
    """

    def __init__(self, cfg, db, clock=timeutil.utcnow, send_mail: Optional[Callable] = None,
                 wall: Optional[Callable] = None):
        self.cfg, self.db, self.clock = cfg, db, clock
        self._send, self._wall = send_mail, wall

    def send_mail(self, *a):
        if self._send is None:
            from vc import mail

            self._send = mail.send
        return self._send(*a)

    def wall(self, rack, text):
        if self._wall is None:
            self._wall = Wall(self.cfg, self.db)
        return self._wall(rack, text)

    def run(self, now) -> List[str]:
        """Write the warnings due at ``now`` and deliver every notice not done.

        :returns: one line per notice acted on (what was sent, what failed). Never raises for a
            notice: a failure is logged and recorded as an event on its reservation.
        """
        horizon = max(self.cfg.notify.before_end, default=0)
        rows = self.db.query(PASS_SQL, (naive_utc(now), naive_utc(now + timedelta(
            seconds=horizon))))
        if not rows:
            return []
        pending = [r for r in rows if r["id"] is not None]
        for r in rows:
            if r["id"] is not None or not horizon:
                continue
            d = due_warning(aware_utc(r["start_at"]), aware_utc(r["end_at"]), now,
                            self.cfg.notify.before_end, sent_thresholds(r["sent"]))
            if d is None:
                continue
            kind = BEFORE + str(d)
            if self.db.transaction(lambda cur, r=r, kind=kind: note(cur, r, kind, now)):
                got = self.db.query("SELECT id, rack, owner, start_at, end_at, kind FROM "
                                    "vcnotices WHERE rack = %s AND start_at = %s AND end_at = %s "
                                    "AND kind = %s", (r["rack"], r["start_at"], r["end_at"],
                                                      kind))
                pending += got
        out = []
        for p in pending:
            try:
                out.append(self.deliver(p["id"], now))
            except Exception as e:  # one notice never stops the others (nor the tick)
                LOG.exception("notice %s of rack %s", p["id"], p["rack"])
                out.append("rack %s: notice %s failed: %s" % (p["rack"], p["id"], e))
        return [x for x in out if x]

    def deliver(self, nid: int, now) -> str:
        """Send what notice ``nid`` still owes (mail, wall) and record it."""
        rows = self.db.query(
            "SELECT n.*, r.state, r.start_at AS r_start, r.end_at AS r_end, "
            " (SELECT COUNT(*) FROM vcnotices m WHERE m.rack = n.rack AND m.start_at = "
            "  n.start_at AND m.end_at = n.end_at AND m.id > n.id AND m.kind LIKE 'before:%%') "
            " AS superseded "
            "FROM vcnotices n LEFT JOIN vcregist r ON r.rack = n.rack "
            "WHERE n.id = %s AND n.done = 0", (nid,))
        if not rows:
            return ""
        n = dict(rows[0])
        for k in ("start_at", "end_at", "created_at", "r_start", "r_end"):
            n[k] = aware_utc(n[k]) if n[k] is not None else None
        rack, kind = n["rack"], n["kind"]
        label = "rack %d: %s" % (rack, kind)
        if kind.startswith(BEFORE) and (n["state"] != states.RUNNING or n["r_end"] != n["end_at"]
                                        or n["r_start"] != n["start_at"] or now >= n["end_at"]
                                        or n["superseded"]):
            # moot: the end passed or moved (the new end gets its own warnings), it stopped, or
            # a later warning for the same end is due (one mail saying the time left, not two)
            self._update(nid, done=1, last_error=n["last_error"] or "moot: not sent before "
                         "the end passed or changed, or a later warning was due")
            return "%s: dropped (the end passed or changed, or a later warning was due, before " \
                "it went out)" % label
        t = texts(self.cfg, n, now)
        done_parts, msgs = [], []
        # mail
        from vc import mail

        off = mail.unavailable(self.cfg) if n["mail_at"] is None else None
        if off and n["last_error"] != "not mailed: " + off:
            # no MTA here: said once (an event), not failed at every tick
            self._update(nid, last_error="not mailed: " + off)
            self._event(rack, now, "notice %s: not mailed: %s" % (kind, off))
            msgs.append("not mailed: %s" % off)
        elif mail.enabled(self.cfg) and n["mail_at"] is None and not off:
            to = recipients(self.cfg, n)
            try:
                if not to:
                    raise mail.MailError("no mail address for %s" % n["owner"])
                self.send_mail(self.cfg, to, t["subject"], t["body"])
                self._update(nid, mail_at=naive_utc(now, micro=True))
                msgs.append("mailed %s" % ", ".join(to))
                done_parts.append(True)
            except Exception as e:  # noqa: BLE001 - logged, recorded, retried next tick
                attempts = n["attempts"] + 1
                give_up = attempts >= MAX_ATTEMPTS
                err = " ".join(str(e).split())[:500] or type(e).__name__
                self._update(nid, attempts=attempts, last_error=err)
                LOG.error("%s: mail failed (attempt %d of %d): %s", label, attempts,
                          MAX_ATTEMPTS, err)
                self._event(rack, now, "notice %s: mail failed (attempt %d of %d%s): %s" % (
                    kind, attempts, MAX_ATTEMPTS, "; given up" if give_up else
                    "; retried next tick", err))
                msgs.append("mail failed: %s" % err)
                done_parts.append(give_up)
        # wall: warnings and a stop before the end, on a cluster still running
        wants_wall = (kind.startswith(BEFORE) or kind == STOPPED_EARLY) and t["wall"]
        if self.cfg.notify.wall and wants_wall and n["wall_at"] is None \
                and n["state"] == states.RUNNING:
            try:
                res = self.wall(rack, t["wall"])
            except Exception as e:  # noqa: BLE001 - e.g. no usable key: reported, not retried
                res = {"(all nodes)": " ".join(str(e).split())[:300]}
            bad = {k: v for k, v in res.items() if v}
            self._update(nid, wall_at=naive_utc(now, micro=True))
            msgs.append("wall on %d of %d node(s)" % (len(res) - len(bad), len(res)))
            if bad:
                LOG.error("%s: wall failed on %s", label, bad)
                self._event(rack, now, "notice %s: wall failed on %s" % (kind, "; ".join(
                    "%s: %s" % kv for kv in sorted(bad.items()))))
        if all(done_parts):
            self._update(nid, done=1)
        line = "%s: %s" % (label, "; ".join(msgs) or "nothing to send")
        LOG.info("%s", line)
        return line

    def _update(self, nid, **cols):
        sets = ", ".join("%s = %%s" % k for k in cols)
        self.db.transaction(lambda cur: cur.execute(
            "UPDATE vcnotices SET " + sets + " WHERE id = %s", tuple(cols.values()) + (nid,)))

    def _event(self, rack, now, reason):
        try:
            self.db.transaction(lambda cur: states.event(cur, rack, now, ACTOR, reason))
        except Exception:  # pragma: no cover - the database itself is down
            LOG.exception("rack %d: cannot record event", rack)

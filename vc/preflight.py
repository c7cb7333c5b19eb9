"""Pre-flight: before a cluster starts, check -- without acting -- what its start will need.

- each enabled physical host answers through its executor (:func:`vc.remote.executor_for_uri`:
  ``qemu+ssh://`` hosts over OpenSSH with its known (pinned) host key) and has the memory its
  ``[host:NAME]`` promises;
- the base images and kernels of the reservation's appliances are present on each host;
- each iSCSI target of its volumes answers over SSH with its pinned key
  (:class:`vc.remote.SSHPool`) and has room for the volumes (the backend's own probe and size
  check, :mod:`vc.iscsi`);
- the reservation still fits beside the others on the enabled hosts and in the address and
  isolation pools (:func:`vc.hosts.no_longer_fit`, admission's own rule).

:func:`run` returns a list of :class:`Problem` (each naming its host or target) and has no side
effect; :func:`record` stores a result (table ``vcpreflight``, ``sql/010_preflight.sql``);
:func:`due` / :func:`tick` are the cron tick's part: once per reservation, ``[cron]
preflight_minutes`` before its start, with the problems mailed to the owner and the admins.

Light to import (the tick imports it): :mod:`vc.remote` and the backends are imported by the
checks themselves. Executors and the clock are injected
(``host_exec(name)``, ``target_exec(remote.Target)``), so
the checks are tested with recording executors; the defaults are the real ones with short
timeouts (a booking waits for them).
"""

import json
import logging
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Callable, List, Optional

from vc import timeutil
from vc.db import aware_utc, naive_utc

LOG = logging.getLogger(__name__)

# short: a booking waits for the checks
CONNECT_TIMEOUT = 5
COMMAND_TIMEOUT = 10

BOOKING, TICK, MANUAL = "booking", "tick", "manual"
BOOKING_POOLS = "booking (pools)"   # the web pages' booking: capacity and pools only


@dataclass
class Problem:
    kind: str    # host, image, target, capacity
    where: str   # the host's or target's name, or "pools"
    detail: str

    def __str__(self):
        return "%s %s: %s" % (self.kind, self.where, self.detail)


def _volumes(db, rack):
    return db.query(
        "SELECT v.mount_point, v.size_gb, t.name AS target, t.address, t.port, t.ssh_user, "
        "t.iscsi_port, t.host_key_fingerprint FROM vciscsi v JOIN vciscsitarget t "
        "ON t.id = v.target_id WHERE v.rack = %s ORDER BY t.name, v.mount_point", (rack,))


def _appliances(db, rack) -> List[str]:
    return [r["appliance"] for r in db.query(
        "SELECT appliance FROM vcresource WHERE rack = %s AND count > 0 ORDER BY appliance",
        (rack,))]


def _enabled_hosts(cfg, db):
    off = {r["name"] for r in db.query("SELECT name FROM vchost WHERE enabled = 0")}
    return [h for h in cfg.hosts if h.name not in off]


def _files(cfg, appliances) -> List[str]:
    out = []
    for a in appliances:
        p = cfg.appliance(a)
        for f in (p.image, p.kernel, p.initrd):
            if f and f not in out:
                out.append(f)
    return out


def check_hosts(cfg, db, rack, host_exec: Callable) -> List[Problem]:
    """Each enabled host answers, has the memory it promises and holds the images/kernels."""
    problems = []
    files = _files(cfg, _appliances(db, rack))
    for h in _enabled_hosts(cfg, db):
        if h.uri.startswith("test:"):
            continue                    # the libvirt test driver: nothing to reach
        try:
            ex = host_exec(h.name)
            meminfo = ex.run(["cat", "/proc/meminfo"])
        except Exception as e:
            problems.append(Problem("host", h.name, "unreachable: %s" % _one_line(e)))
            continue
        kib = next((int(line.split()[1]) for line in meminfo.splitlines()
                    if line.startswith("MemTotal:")), None)
        if kib is not None and kib // 1024 < h.memory_mb:
            problems.append(Problem("host", h.name, "has %d MB of memory but [host:%s] "
                                    "memory_mb = %d" % (kib // 1024, h.name, h.memory_mb)))
        for f in files:
            try:
                ex.run(["test", "-r", f])
            except Exception:
                problems.append(Problem("image", h.name, "%s is missing (or unreadable)" % f))
    return problems


def check_targets(cfg, db, rack, target_exec: Callable) -> List[Problem]:
    """Each target of the reservation's volumes answers with its pinned key and has room."""
    from vc import iscsi, remote

    problems = []
    by_target = {}
    for v in _volumes(db, rack):
        by_target.setdefault(v["target"], []).append(v)
    for name, vols in by_target.items():
        v = vols[0]
        t = remote.Target(name, v["address"], v["port"], v["ssh_user"], v["iscsi_port"],
                          v["host_key_fingerprint"])
        try:
            backend = iscsi.make_target_backend(cfg, target_exec(t))
            free, sizes, _, _ = backend._probe()
            backend._check_sizes([backend.volume_spec(rack, x["mount_point"], x["size_gb"])
                                  for x in vols], free, sizes)
        except Exception as e:
            problems.append(Problem("target", name, _one_line(e)))
    return problems


def check_capacity(cfg, db, rack, now) -> List[Problem]:
    """The reservation still fits (hosts enabled now, address and isolation pools)."""
    from vc import hosts

    return [Problem("capacity", "pools", x["why"]) for x in hosts.no_longer_fit(cfg, db, now)
            if x["rack"] == rack]


def _one_line(e) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def run(cfg, db, rack, now, host_exec: Optional[Callable] = None,
        target_exec: Optional[Callable] = None, reach: bool = True) -> List[Problem]:
    """Every check for reservation ``rack``; nothing is changed. :raises NotFound:

    ``reach=False``: only what the database says (capacity, pools) -- the web pages' booking:
    the web process holds no SSH key (its only SSH is the host-key scan, vc/web/testconn.py)."""
    from vc import remote, reservations

    reservations.get(db, rack)  # NotFound for a wrong rack
    if not reach:
        return check_capacity(cfg, db, rack, now)
    if host_exec is None:
        uris = {h.name: h.uri for h in cfg.hosts}

        def host_exec(name):
            ex = remote.executor_for_uri(uris[name], name=name, connect_timeout=CONNECT_TIMEOUT)
            ex.command_timeout = COMMAND_TIMEOUT
            return ex
    problems = check_hosts(cfg, db, rack, host_exec)
    if target_exec is None and _volumes(db, rack):
        key, _ = remote.frontend_key(cfg.site.state_dir)
        with remote.SSHPool(key, connect_timeout=min(CONNECT_TIMEOUT, cfg.storage.connect_timeout),
                            command_timeout=COMMAND_TIMEOUT) as pool:
            problems += check_targets(cfg, db, rack, pool.get)
    elif target_exec is not None:
        problems += check_targets(cfg, db, rack, target_exec)
    problems += check_capacity(cfg, db, rack, now)
    return problems


# ------------------------------------------------------------------------ the stored result
def record(db, rack, now, trigger: str, problems: List[Problem]) -> None:
    """Store the last result of ``rack`` (``trigger``: booking, tick, manual). A tick's run is
    remembered (``tick_at``) so the tick runs it once."""
    data = json.dumps([asdict(p) for p in problems])
    n = naive_utc(now)
    tick_at = n if trigger == TICK else None
    db.transaction(lambda cur: cur.execute(
        "INSERT INTO vcpreflight (rack, checked_at, `trigger`, problems, tick_at) "
        "VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE checked_at = VALUES(checked_at), "
        "`trigger` = VALUES(`trigger`), problems = VALUES(problems), "
        "tick_at = COALESCE(VALUES(tick_at), tick_at)", (rack, n, trigger, data, tick_at)))


def last(db, rack) -> Optional[dict]:
    """``{checked_at, trigger, problems: [{kind, where, detail}]}`` or None (never checked)."""
    rows = db.query("SELECT checked_at, `trigger`, problems FROM vcpreflight WHERE rack = %s",
                    (rack,))
    if not rows:
        return None
    r = rows[0]
    return {"checked_at": aware_utc(r["checked_at"]), "trigger": r["trigger"],
            "problems": json.loads(r["problems"] or "[]")}


def check_and_record(cfg, db, rack, now, trigger, **kw) -> List[Problem]:
    problems = run(cfg, db, rack, now, **kw)
    record(db, rack, now, trigger, problems)
    return problems


# ------------------------------------------------------------------------ the tick's part
def due(db, now, minutes: int) -> List[int]:
    """Reserved racks starting within ``minutes`` whose tick pre-flight has not run: the one
    query the idle tick pays for this feature."""
    if minutes <= 0:
        return []
    n = naive_utc(now)
    return [r["rack"] for r in db.query(
        "SELECT r.rack FROM vcregist r LEFT JOIN vcpreflight p ON p.rack = r.rack "
        "WHERE r.state = 'reserved' AND r.start_at > %s AND r.start_at <= %s "
        "AND r.pending IS NULL AND p.tick_at IS NULL ORDER BY r.start_at, r.rack",
        (n, n + timedelta(minutes=minutes)))]


def notify(cfg, db, rack, problems: List[Problem], send=None) -> None:
    """Mail the problems to the owner and the admins (``vc.mail.send``, imported here; user
    names become addresses by :func:`vc.mail.address`)."""
    from vc import mail

    row = db.query("SELECT owner, start_at FROM vcregist WHERE rack = %s", (rack,))[0]
    recipients = [row["owner"]] + [a for a in cfg.site.admins if a != row["owner"]]
    recipients = [mail.address(cfg, u) for u in recipients]
    send = send or mail.send
    start = timeutil.show(aware_utc(row["start_at"]), cfg.tzinfo())
    body = "Pre-flight of reservation %d (starts %s) found %d problem(s):\n\n%s\n" % (
        rack, start, len(problems), "\n".join("- %s" % p for p in problems))
    send(cfg, recipients, "vc: reservation %d: pre-flight found %d problem(s)"
         % (rack, len(problems)), body)


def tick(cfg, db, now, minutes: int, send=None, **kw) -> List[tuple]:
    """Run the due pre-flights: ``[(rack, problems)]``. One failure never blocks the others."""
    out = []
    for rack in due(db, now, minutes):
        try:
            problems = check_and_record(cfg, db, rack, now, TICK, **kw)
        except Exception as e:
            LOG.exception("rack %d: pre-flight failed", rack)
            problems = [Problem("preflight", "frontend", _one_line(e))]
            record(db, rack, now, TICK, problems)
        if problems:
            try:
                notify(cfg, db, rack, problems, send=send)
            except Exception as e:
                LOG.error("rack %d: cannot mail the pre-flight problems: %s", rack, e)
        out.append((rack, problems))
    return out

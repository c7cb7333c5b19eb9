"""Reservations: validate, admit, create, extend, stop early, delete, list, show.

Every rule that depends on time takes ``now``. Every write happens in one transaction that first
writes the ``admission`` counter row (:func:`_lock_admission`), so capacity decisions are
serialised, on one MariaDB and across Galera nodes alike: of two clients racing for the last
capacity exactly one wins (the other then sees the winner's row and is refused). Deadlocks,
lock-wait timeouts and Galera certification failures are retried, whole, inside
:meth:`vc.db.Database.transaction`.
"""

import dataclasses
import logging
import posixpath
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Dict, List, Optional, Tuple

from vc import admission, states, timeutil
from vc.config import USER_RE
from vc.db import aware_utc, naive_utc
from vc.errors import CapacityError, InvalidTransition, NotFound, ValidationError, VcError
from vc.numbers import NumberError, parse_int

LOG = logging.getLogger(__name__)

APPLIANCES = ("gateway", "compute")
# a mount point: an absolute path of these characters (checked with fullmatch), at most
# MOUNT_MAX long; stored normalised (see normalise_mount)
MOUNT_RE = re.compile(r"/[A-Za-z0-9._/-]*")
MOUNT_MAX = 200
COMMENT_RE = re.compile(r"^[^\x00-\x1f\x7f]*$")


@dataclass(frozen=True)
class Resource:
    count: int
    memory_mb: int
    disk_gb: int
    vcpus: int


@dataclass(frozen=True)
class Volume:
    mount_point: str
    target: str
    size_gb: int


@dataclass
class Request:
    """A validated reservation request (times aware UTC)."""

    owner: str
    start: object
    end: object
    resources: Dict[str, Resource]
    volumes: List[Volume] = field(default_factory=list)
    comment: str = ""


# ------------------------------------------------------------------------ validation
def _int_field(errors, name, raw, lo, hi, what):
    """Parse one integer field; record a message in ``errors`` and return None when bad."""
    if isinstance(raw, bool) or raw is None or (isinstance(raw, str) and not raw.strip()):
        errors[name] = "%s is required" % what
        return None
    try:
        return parse_int(raw, what, lo, hi)   # ASCII digits only, bounded length
    except NumberError as e:
        if e.kind == "syntax":
            errors[name] = "%s must be a whole number, got %s" % (what, e.shown)
        else:
            errors[name] = "%s must be between %d and %d, got %s" % (what, lo, hi, e.shown)
        return None


def normalise_mount(mount: str) -> str:
    """A mount point as it is stored: absolute, of ``A-Z a-z 0-9 . _ - /`` only, without ``.``
    segments, repeated or trailing slashes (``posixpath.normpath``); not ``/`` itself. A ``..``
    segment is refused, not resolved (``/a/../etc`` is not a place to mount a volume on).

    :raises ValueError: with a message for the user.
    """
    m = str(mount).strip()
    if not MOUNT_RE.fullmatch(m):
        raise ValueError("mount point must be an absolute path of letters, digits, . _ - /, "
                         "got %r" % m[:80])
    if len(m) > MOUNT_MAX:
        raise ValueError("mount point must be at most %d characters, got %d" % (MOUNT_MAX,
                                                                               len(m)))
    if ".." in m.split("/"):
        raise ValueError("mount point must not contain '..', got %r" % m)
    norm = posixpath.normpath(m)
    norm = "/" + norm.lstrip("/")   # normpath keeps a leading '//'
    if norm == "/":
        raise ValueError("mount point must be a directory below /, not /, got %r" % m)
    return norm


def _iscsi_names(cfg, mount: str) -> set:
    """The names a volume on ``mount`` may get on its target (vc.iscsi.slug: the backing file
    and, shortened to fit, the IQN), as ``(length, name)``: two mount points of one reservation
    must not share one."""
    from vc import iscsi  # not on the pages' import path unless volumes are given

    head = len("%s:rack." % cfg.storage.iqn_prefix)
    lengths = {64} | {min(64, iscsi.IQN_MAX - head - digits) for digits in range(1, 11)}
    return {(n, iscsi.slug(mount, max_len=n)) for n in lengths if n >= 12}


def parse_volume(spec) -> Tuple[str, str, str]:
    """``MOUNT:TARGET:SIZE_GB`` -> its three parts (as strings), or a dict with those keys."""
    if isinstance(spec, dict):
        return (str(spec.get("mount_point", "")), str(spec.get("target", "")),
                str(spec.get("size_gb", "")))
    parts = str(spec).rsplit(":", 2)
    if len(parts) != 3:
        raise ValueError("%r is not MOUNT:TARGET:SIZE_GB" % str(spec)[:80])
    return parts[0], parts[1], parts[2]


def validate(cfg, fields: dict, now, known_targets=None) -> Request:
    """Turn raw fields (strings from a form or the CLI, or ints) into a :class:`Request`.

    Keys: ``owner, start, end, gateways, computes``, per appliance ``gateway_memory_mb``,
    ``gateway_disk_gb``, ``gateway_vcpus`` (same for ``compute_``; ``memory_mb``, ``disk_gb``,
    ``vcpus`` set both), ``volumes`` (list of ``MOUNT:TARGET:SIZE_GB`` or dicts), ``comment``.

    :param known_targets: names of registered iSCSI targets (None: do not check).
    :raises ValidationError: with one message per bad field; nothing is written.
    """
    errors: Dict[str, str] = {}
    tz = cfg.tzinfo()
    owner = str(fields.get("owner") or "").strip()
    if not re.match(USER_RE, owner):  # what Apache hands over: alice, alice@EXAMPLE.ORG
        errors["owner"] = ("owner must be a user name (letters, digits, . _ @ -), got %r"
                           % owner[:40])

    times = {}
    for key in ("start", "end"):
        try:
            times[key] = timeutil.parse(fields.get(key, ""), tz, now)
        except ValueError as e:
            errors[key] = "%s time %s" % (key, e)
    start, end = times.get("start"), times.get("end")
    ahead = timedelta(days=cfg.limits.max_days_ahead)
    if start and start > now + ahead:
        errors["start"] = "a reservation may start at most %d days ahead (until %s), this one " \
                          "starts %s" % (cfg.limits.max_days_ahead, timeutil.show(now + ahead, tz),
                                         timeutil.show(start, tz))
    if start and end:
        if end <= start:
            errors["end"] = "end (%s) must be after start (%s)" % (
                timeutil.show(end, tz), timeutil.show(start, tz))
        elif end <= now:
            errors["end"] = "end (%s) is already past (now %s)" % (
                timeutil.show(end, tz), timeutil.show(now, tz))
        elif end - max(start, now) > timedelta(hours=cfg.limits.max_hours) or \
                end - start > timedelta(hours=cfg.limits.max_hours):
            errors["end"] = "a reservation may last at most %d hours, this one lasts %.1f" % (
                cfg.limits.max_hours, (end - start).total_seconds() / 3600)

    gateways = _int_field(errors, "gateways", fields.get("gateways", 1), 1, cfg.limits.max_gateways,
                          "gateway nodes")
    computes = _int_field(errors, "computes", fields.get("computes", 0), 0, cfg.limits.max_nodes,
                          "compute nodes")
    if gateways is not None and computes is not None and gateways + computes > cfg.limits.max_nodes:
        errors["computes"] = "at most %d nodes per reservation, asked for %d" % (
            cfg.limits.max_nodes, gateways + computes)

    resources = {}
    for app, count in (("gateway", gateways), ("compute", computes)):
        vals = {}
        for key, lo, hi, default, what in (
                ("memory_mb", 64, cfg.limits.max_memory_mb, cfg.defaults.memory_mb, "memory (MB)"),
                ("disk_gb", 1, cfg.limits.max_disk_gb, cfg.defaults.disk_gb, "disk (GB)"),
                ("vcpus", 1, cfg.limits.max_vcpus, cfg.defaults.vcpus, "vcpus")):
            raw = fields.get("%s_%s" % (app, key))
            if raw is None or raw == "":
                raw = fields.get(key)
            if raw is None or raw == "":
                raw = default
            vals[key] = _int_field(errors, "%s_%s" % (app, key), raw, lo, hi,
                                   "%s %s" % (app, what))
        if count is not None and None not in vals.values():
            resources[app] = Resource(count=count, **vals)

    volumes = []
    specs = fields.get("volumes") or []
    if isinstance(specs, (str, dict)):
        specs = [specs]
    if len(specs) > cfg.limits.max_volumes:
        errors["volumes"] = "at most %d iSCSI volumes per reservation, got %d" % (
            cfg.limits.max_volumes, len(specs))
    seen: Dict[str, str] = {}      # lower case -> mount point (the unique key ignores case)
    names: Dict[tuple, str] = {}   # iSCSI name -> mount point
    for i, spec in enumerate(specs):
        key = "volume%d" % (i + 1)
        try:
            mount, target, size = parse_volume(spec)
            mount = normalise_mount(mount)
        except ValueError as e:
            errors[key] = str(e)
            continue
        target = target.strip()
        other = seen.get(mount.lower())
        if other == mount:
            errors[key] = "mount point %s is given twice" % mount
            continue
        if other is not None:
            errors[key] = "mount points %s and %s differ only in case (mount points are " \
                          "compared without regard to case)" % (other, mount)
            continue
        mine = _iscsi_names(cfg, mount)
        clash = next((names[n] for n in sorted(mine) if n in names), None)
        if clash is not None:
            errors[key] = "mount points %s and %s would get the same iSCSI name %r: rename " \
                          "one" % (clash, mount, iscsi_name(mine))
            continue
        seen[mount.lower()] = mount
        names.update((n, mount) for n in mine)
        if known_targets is not None and target not in known_targets:
            errors[key] = "unknown iSCSI target %r (registered: %s)" % (
                target[:64], ", ".join(sorted(known_targets)) or "none")
            continue
        size_gb = _int_field(errors, key, size, 1, cfg.limits.max_volume_gb, "volume size (GB)")
        if size_gb is not None:
            volumes.append(Volume(mount, target, size_gb))

    comment = str(fields.get("comment") or "")
    if len(comment) > 255 or not COMMENT_RE.match(comment):
        errors["comment"] = "comment must be one line of at most 255 characters"

    if errors:
        raise ValidationError(errors)
    return Request(owner=owner, start=start, end=end, resources=resources, volumes=volumes,
                   comment=comment)


def iscsi_name(names) -> str:
    """The full-length one of :func:`_iscsi_names` (for messages)."""
    return max(names)[1]


# ------------------------------------------------------------------------ admission
HOLDING = states.HOLDS_CAPACITY


def _booking(rack, start, end, resources: Dict[str, Resource]) -> admission.Booking:
    shapes: Dict[Tuple[int, int], int] = {}
    for r in resources.values():
        if r.count:
            shapes[(r.memory_mb, r.vcpus)] = shapes.get((r.memory_mb, r.vcpus), 0) + r.count
    gw = resources.get("gateway")
    return admission.Booking(rack, start, end, tuple(sorted(shapes.items())),
                             gw.count if gw else 0)


# the longest [cron] preboot_minutes: a cluster started that early holds capacity before its start
PREBOOT_MAX = timedelta(minutes=120)


def overlapping(cur, start, end, exclude_rack=None) -> List[admission.Booking]:
    """Reservations holding capacity in ``[start, end)``.

    The ``longest_seconds`` bound lets the query use the ``start_at`` index for both ends.
    """
    cur.execute("SELECT value FROM vccounter WHERE name = 'longest_seconds'")
    longest = int(cur.fetchone()["value"])
    cur.execute(
        "SELECT r.rack, r.state, r.start_at, r.end_at, s.appliance, s.count, s.memory_mb, "
        "s.disk_gb, s.vcpus FROM vcregist r JOIN vcresource s ON s.rack = r.rack "
        "WHERE r.start_at >= %s AND r.start_at < %s AND r.end_at > %s "
        "AND r.state IN (" + ",".join(["%s"] * len(HOLDING)) + ")",
        (naive_utc(start - timedelta(seconds=longest)), naive_utc(end + PREBOOT_MAX),
         naive_utc(start)) + tuple(HOLDING))
    by_rack: Dict[int, dict] = {}
    for row in cur.fetchall():
        if row["rack"] == exclude_rack:
            continue
        b_start = aware_utc(row["start_at"])
        if row["state"] in (states.STARTING, states.RUNNING) and b_start > start:
            # pre-booted ([cron] preboot_minutes): it holds its capacity already
            b_start = start
        elif b_start >= end:
            continue
        b = by_rack.setdefault(row["rack"], {"start": b_start,
                                             "end": aware_utc(row["end_at"]), "res": {}})
        b["res"][row["appliance"]] = Resource(row["count"], row["memory_mb"], row["disk_gb"],
                                              row["vcpus"])
    return [_booking(rack, b["start"], b["end"], b["res"]) for rack, b in by_rack.items()]


def admit(cfg, cur, start, end, resources, now, exclude_rack=None):
    """Raise :class:`CapacityError` unless the cluster fits in ``[max(start, now), end)``.

    The caller holds the admission lock.
    """
    start = max(start, now)
    new = _booking(None, start, end, resources)
    others = overlapping(cur, start, end, exclude_rack)
    hosts = [(h.name, h.memory_mb, h.vcpus) for h in enabled_hosts(cfg, cur)]
    if not hosts:
        raise CapacityError("refused: no physical host is enabled")
    short = admission.check(new, others, hosts, cfg.subnet_count, cfg.isolation_count,
                            len(cfg.addresses.public_pool))
    if short:
        tz = cfg.tzinfo()
        raise CapacityError("refused: not enough %s from %s to %s: %s" % (
            short.what, timeutil.show(short.start, tz), timeutil.show(short.end, tz),
            short.detail))


def enabled_hosts(cfg, cur):
    """Configured hosts minus those an operator disabled in ``vchost``."""
    cur.execute("SELECT name FROM vchost WHERE enabled = 0")
    disabled = {r["name"] for r in cur.fetchall()}
    return [h for h in cfg.hosts if h.name not in disabled]


def _lock_admission(cur):
    """Serialise capacity decisions: *write* the shared ``admission`` counter row first, before
    anything is counted. On one MariaDB the write's row lock makes the next admission wait here
    (then READ COMMITTED shows it the winner's rows). On Galera row locks are node-local — a
    ``SELECT … FOR UPDATE`` on node A does not block node B, and "lock the row, count, insert"
    admitted one booking per node for the last seat — but the written row is in every
    admission's write set, so certification commits exactly one of concurrent admissions on
    different nodes and aborts the others with 1213 (at any statement or at COMMIT);
    :meth:`vc.db.Database.transaction` runs each of those whole again, and it then counts the
    winner's booking."""
    cur.execute("UPDATE vccounter SET value = value + 1 WHERE name = 'admission'")
    if cur.rowcount != 1:
        raise VcError("the database is not initialised: run 'sbin/vc_ctl.py db upgrade'")


def _note_longest(cur, start, end):
    cur.execute("UPDATE vccounter SET value = GREATEST(value, %s) WHERE name = 'longest_seconds'",
                (int((end - start).total_seconds()),))


# ------------------------------------------------------------------------ operations
def create(cfg, db, fields: dict, now, actor: Optional[str] = None) -> int:
    """Validate, admit and store a reservation. Returns its rack number.

    :raises ValidationError: bad input (nothing written).
    :raises CapacityError: it does not fit (nothing written).
    """

    def run(cur):
        cur.execute("SELECT id, name FROM vciscsitarget")
        targets = {r["name"]: r["id"] for r in cur.fetchall()}
        req = validate(cfg, fields, now, known_targets=set(targets))
        _lock_admission(cur)
        admit(cfg, cur, req.start, req.end, req.resources, now)
        n = naive_utc(now)
        cur.execute("INSERT INTO vcregist (owner, start_at, end_at, state, comment, created_at, "
                    "updated_at) VALUES (%s, %s, %s, 'reserved', %s, %s, %s)",
                    (req.owner, naive_utc(req.start), naive_utc(req.end), req.comment, n, n))
        rack = cur.lastrowid
        for app in APPLIANCES:
            r = req.resources[app]
            cur.execute("INSERT INTO vcresource (rack, appliance, count, memory_mb, disk_gb, "
                        "vcpus) VALUES (%s, %s, %s, %s, %s, %s)",
                        (rack, app, r.count, r.memory_mb, r.disk_gb, r.vcpus))
        for v in req.volumes:
            cur.execute("INSERT INTO vciscsi (rack, appliance, target_id, mount_point, size_gb, "
                        "nfs_export, nfs_client_mount) VALUES (%s, 'gateway', %s, %s, %s, %s, %s)",
                        (rack, targets[v.target], v.mount_point, v.size_gb, v.mount_point,
                         v.mount_point))
        _note_longest(cur, req.start, req.end)
        states.event(cur, rack, now, actor or req.owner, "reserved %s to %s: %d gateway(s), "
                     "%d compute(s)" % (timeutil.iso(req.start), timeutil.iso(req.end),
                                        req.resources["gateway"].count,
                                        req.resources["compute"].count),
                     None, states.RESERVED)
        return rack

    rack = db.transaction(run)
    LOG.info("reservation %s created", rack)
    return rack


def _authorize(row, actor, admin):
    if not admin and row["owner"] != actor:
        raise VcError("reservation %s belongs to %s; only its owner or an admin may change it"
                      % (row["rack"], row["owner"]))


@dataclass
class Offer:
    """The longest extension of a reservation that fits (:func:`longest_offer`): ``end`` (the
    current end when nothing more fits), what was ``asked`` (None: as long as the limits
    allow), and what stops it there: ``limit`` (``max_hours``) or ``short`` (the
    :class:`vc.admission.Shortage`; ``short.racks`` the reservations that block the rest)."""

    rack: int
    old_end: object
    end: object
    asked: object = None
    limit: str = ""
    short: Optional[admission.Shortage] = None

    @property
    def full(self) -> bool:
        return self.asked is not None and self.end >= self.asked

    def why(self, tz) -> str:
        """Why it is not longer, in words ("" when nothing stops it short of what was asked)."""
        if self.short is not None:
            who = ""
            if self.short.racks:
                who = " (reservation%s %s)" % ("s" if len(self.short.racks) > 1 else "",
                                               ", ".join(str(r) for r in self.short.racks))
            return "not enough %s from %s%s: %s" % (self.short.what,
                                                   timeutil.show(self.short.start, tz), who,
                                                   self.short.detail)
        if self.limit:
            return "a reservation may last at most %s hours" % self.limit
        return ""

    def as_dict(self, tz=None) -> dict:
        return {"rack": self.rack, "old_end": self.old_end, "end": self.end, "asked": self.asked,
                "full": self.full, "extended_by_seconds": max(0, int(
                    (self.end - self.old_end).total_seconds())),
                "blocked_by": list(self.short.racks) if self.short else [],
                "short": self.short.what if self.short else None,
                "short_from": self.short.start if self.short else None,
                "why": self.why(tz) if tz else ""}


def _offer(cfg, cur, row, asked, now) -> Offer:
    """The longest end ``<= asked`` (None: the length limit) a started-or-reserved reservation
    ``row`` (locked, admission lock held) can get."""
    rack = row["rack"]
    start, old_end = aware_utc(row["start_at"]), aware_utc(row["end_at"])
    cap = start + timedelta(hours=cfg.limits.max_hours)
    hi = cap if asked is None else min(asked, cap)
    limit = str(cfg.limits.max_hours) if asked is None or asked > cap else ""
    if hi <= old_end:
        return Offer(rack, old_end, old_end, asked, limit)
    lo = max(old_end, start, now)
    new = _booking(None, lo, hi, _resources(cur, rack))
    hosts = [(h.name, h.memory_mb, h.vcpus) for h in enabled_hosts(cfg, cur)]
    if not hosts:
        return Offer(rack, old_end, old_end, asked, limit, admission.Shortage(
            "hosts", lo, hi, "no physical host is enabled"))
    until, short = admission.fits_until(new, overlapping(cur, lo, hi, rack), hosts,
                                        cfg.subnet_count, cfg.isolation_count,
                                        len(cfg.addresses.public_pool))
    end = max(old_end, until.replace(microsecond=0) if until < hi else until)
    return Offer(rack, old_end, end, asked, "" if short else limit, short)


def longest_offer(cfg, db, rack: int, now, asked=None) -> Offer:
    """What :func:`extend` with ``longest=True`` would grant now (nothing is changed)."""
    def run(cur):
        _lock_admission(cur)
        row = states.lock(cur, rack)
        return _offer(cfg, cur, row, asked, now)

    return db.transaction(run)


def extend(cfg, db, rack: int, new_end, now, actor: str, admin: bool = False,
           longest: bool = False, offer_out: Optional[list] = None):
    """Change the end of a reservation that has not ended (longer or shorter), or reopen a
    ``stopped`` one from now to ``new_end`` (``stopped → reserved``; the next tick or
    ``vc_ctl start`` starts it again, with its iSCSI volumes and their data).

    A longer end that does not fit is refused (:class:`CapacityError`, its ``offer`` attribute
    the :class:`Offer` of the longest extension that does, named in the message). With
    ``longest`` the end becomes the longest that fits up to ``new_end`` (None or empty: up to
    the length limit) and ``offer_out`` (a list) receives the :class:`Offer` granted: it says
    when that is less than asked, and why.

    :param new_end: a user-typed time or an aware datetime.
    """
    tz = cfg.tzinfo()
    if longest and (new_end is None or new_end == ""):
        end = None
    else:
        try:
            end = timeutil.parse(new_end, tz, now)
        except ValueError as e:
            raise ValidationError({"end": "end time %s" % e}) from None

    def run(cur):
        _lock_admission(cur)
        row = states.lock(cur, rack)
        _authorize(row, actor, admin)
        if longest:
            return _extend_longest(cfg, cur, row, end, now, actor, offer_out)
        if row["state"] == states.STOPPED and not row["pending"]:
            return _reopen(cfg, cur, row, end, now, actor)
        if row["state"] not in (states.RESERVED, states.STARTING, states.RUNNING, states.FAILED) \
                or row["pending"]:
            raise InvalidTransition(rack=rack, state=row["state"] + (
                " (%s pending)" % row["pending"] if row["pending"] else ""),
                action="change its end")
        start, old_end = aware_utc(row["start_at"]), aware_utc(row["end_at"])
        if old_end <= now:
            raise InvalidTransition(rack=rack, state="ended", action="change its end")
        if end <= start or end <= now:
            raise ValidationError({"end": "new end (%s) must be after the start (%s) and now "
                                          "(%s)" % (timeutil.show(end, tz),
                                                    timeutil.show(start, tz),
                                                    timeutil.show(now, tz))})
        if end - start > timedelta(hours=cfg.limits.max_hours):
            raise ValidationError({"end": "a reservation may last at most %d hours, this would "
                                          "last %.1f" % (cfg.limits.max_hours,
                                                         (end - start).total_seconds() / 3600)})
        if end > old_end:
            res = _resources(cur, rack)
            # only the added time needs capacity; the rest is ours already
            try:
                admit(cfg, cur, max(old_end, start), end, res, now, exclude_rack=rack)
            except CapacityError as e:
                offer = _offer(cfg, cur, row, end, now)
                if offer.end > old_end:
                    msg = "%s; the longest extension that fits ends %s (%s)" % (
                        e, timeutil.show(offer.end, tz), offer.why(tz))
                else:
                    msg = "%s; no extension fits now" % e
                err = CapacityError(msg)
                err.offer = offer
                raise err from None
        cur.execute("UPDATE vcregist SET end_at = %s, updated_at = %s WHERE rack = %s",
                    (naive_utc(end), naive_utc(now), rack))
        _note_longest(cur, start, end)
        states.event(cur, rack, now, actor, "end changed from %s to %s" % (
            timeutil.iso(old_end), timeutil.iso(end)), row["state"], row["state"])
        return end

    return db.transaction(run)


def _extend_longest(cfg, cur, row, asked, now, actor, offer_out):
    rack, tz = row["rack"], cfg.tzinfo()
    if row["state"] not in (states.RESERVED, states.STARTING, states.RUNNING, states.FAILED) \
            or row["pending"]:
        raise InvalidTransition(rack=rack, state=row["state"] + (
            " (%s pending)" % row["pending"] if row["pending"] else ""), action="extend it")
    old_end = aware_utc(row["end_at"])
    if old_end <= now:
        raise InvalidTransition(rack=rack, state="ended", action="extend it")
    if asked is not None and asked <= old_end:
        raise ValidationError({"end": "the longest extension up to %s: that is not after the "
                                      "current end (%s)" % (timeutil.show(asked, tz),
                                                            timeutil.show(old_end, tz))})
    offer = _offer(cfg, cur, row, asked, now)
    if offer_out is not None:
        offer_out.append(offer)
    if offer.end <= old_end:
        err = CapacityError("refused: no extension of rack %d fits: %s" % (
            rack, offer.why(tz) or "nothing more is allowed"))
        err.offer = offer
        raise err
    cur.execute("UPDATE vcregist SET end_at = %s, updated_at = %s WHERE rack = %s",
                (naive_utc(offer.end), naive_utc(now), rack))
    _note_longest(cur, aware_utc(row["start_at"]), offer.end)
    states.event(cur, rack, now, actor, "end changed from %s to %s (the longest that fits%s)" % (
        timeutil.iso(old_end), timeutil.iso(offer.end),
        "" if offer.full else ": " + offer.why(tz)), row["state"], row["state"])
    return offer.end


def _reopen(cfg, cur, row, end, now, actor):
    tz = cfg.tzinfo()
    if end <= now:
        raise ValidationError({"end": "new end (%s) must be after now (%s)" % (
            timeutil.show(end, tz), timeutil.show(now, tz))})
    if end - now > timedelta(hours=cfg.limits.max_hours):
        raise ValidationError({"end": "a reservation may last at most %d hours, this would "
                                      "last %.1f" % (cfg.limits.max_hours,
                                                     (end - now).total_seconds() / 3600)})
    rack = row["rack"]
    admit(cfg, cur, now, end, _resources(cur, rack), now, exclude_rack=rack)
    start = now.replace(microsecond=0)
    cur.execute("UPDATE vcregist SET start_at = %s, end_at = %s, updated_at = %s WHERE rack = %s",
                (naive_utc(start), naive_utc(end), naive_utc(now), rack))
    _note_longest(cur, start, end)
    states.transition(cur, row, states.RESERVED, now, actor, "reopened until %s"
                      % timeutil.iso(end), action="reopen it")
    return end


def stop_now(cfg, db, rack: int, now, actor: str, admin: bool = False) -> str:
    """End a reservation now. Not started yet: it becomes ``stopped`` at once. Started: its end
    becomes now, and the tick (or ``vc_ctl stop``) stops the cluster.

    :returns: the state afterwards.
    """

    def run(cur):
        row = states.lock(cur, rack)
        _authorize(row, actor, admin)
        start, end = aware_utc(row["start_at"]), aware_utc(row["end_at"])
        if row["state"] == states.RESERVED:
            cur.execute("UPDATE vcregist SET start_at = LEAST(start_at, %s), end_at = %s "
                        "WHERE rack = %s", (naive_utc(now), naive_utc(now), rack))
            states.transition(cur, row, states.STOPPED, now, actor,
                              "stopped before it started" if start > now else "stopped early")
            return row["state"]
        if row["state"] in (states.STARTING, states.RUNNING, states.FAILED):
            if end > now:
                from vc import notify  # the owner is told (vc.notify)
                notify.early_end(cur, row, now, actor, "stop requested")
                cur.execute("UPDATE vcregist SET end_at = %s, updated_at = %s WHERE rack = %s",
                            (naive_utc(now), naive_utc(now), rack))
                states.event(cur, rack, now, actor, "stop requested: end moved from %s to now"
                             % timeutil.iso(end), row["state"], row["state"])
            return row["state"]
        raise InvalidTransition(rack=rack, state=row["state"], action="stop it")

    return db.transaction(run)


def holds_resources(cur, rack) -> bool:
    """True when a cluster has nodes or allocations left (a stop must run before deletion)."""
    cur.execute("SELECT (SELECT COUNT(*) FROM vcnode WHERE rack = %s) + "
                "(SELECT COUNT(*) FROM vcalloc WHERE rack = %s) AS n", (rack, rack))
    return cur.fetchone()["n"] > 0


def volumes_with_data(cur, rack) -> List[str]:
    """Mount points of the reservation's volumes that exist on their target (hold data)."""
    cur.execute("SELECT mount_point FROM vciscsi WHERE rack = %s AND iqn IS NOT NULL "
                "ORDER BY mount_point", (rack,))
    return [r["mount_point"] for r in cur.fetchall()]


def delete(cfg, db, rack: int, now, actor: str, admin: bool = False,
           confirm_volumes: bool = False) -> str:
    """Delete a reservation. One that holds nothing goes at once (``deleted``). A started one,
    or one whose iSCSI volumes exist on their target, is marked ``pending = 'delete'`` (its end
    moved to now): the tick or ``vc_ctl`` stops it, removes the volumes, then deletes it.
    Volumes that hold data are destroyed only with ``confirm_volumes``.

    :returns: ``deleted`` or the state it waits in.
    """

    def run(cur):
        row = states.lock(cur, rack)
        _authorize(row, actor, admin)
        st = row["state"]
        data = volumes_with_data(cur, rack)
        if data and not confirm_volumes:
            raise VcError("reservation %d has %d iSCSI volume(s) holding data (%s): confirm that "
                          "they are to be destroyed" % (rack, len(data), ", ".join(data)))
        def pending(why):
            from vc import notify  # the owner is told (vc.notify)
            notify.early_end(cur, row, now, actor, "deleted")
            # the end moves to now (never before the start: a window cannot be negative)
            cur.execute("UPDATE vcregist SET pending = 'delete', "
                        "end_at = GREATEST(start_at, LEAST(end_at, %s)), "
                        "updated_at = %s WHERE rack = %s", (naive_utc(now), naive_utc(now), rack))
            states.event(cur, rack, now, actor, "delete requested: " + why, st, st)
            return st

        if data and st in (states.RESERVED, states.STOPPED):
            return pending("its volumes are removed first")
        if st in (states.RESERVED, states.STOPPED) or (
                st == states.FAILED and not holds_resources(cur, rack)):
            states.transition(cur, row, states.DELETING, now, actor, "delete requested",
                              action="delete it")
            states.transition(cur, row, states.DELETED, now, actor, "deleted")
            return states.DELETED
        if st in (states.STARTING, states.RUNNING, states.STOPPING, states.FAILED):
            return pending("it is stopped first, then deleted")
        raise InvalidTransition(rack=rack, state=st, action="delete it")

    return db.transaction(run)


# ------------------------------------------------------------------------ reading
def _resources(cur, rack) -> Dict[str, Resource]:
    cur.execute("SELECT appliance, count, memory_mb, disk_gb, vcpus FROM vcresource "
                "WHERE rack = %s", (rack,))
    return {r["appliance"]: Resource(r["count"], r["memory_mb"], r["disk_gb"], r["vcpus"])
            for r in cur.fetchall()}


def _public(row, res, volumes=None) -> dict:
    out = {
        "rack": row["rack"], "owner": row["owner"], "state": row["state"],
        "start": aware_utc(row["start_at"]), "end": aware_utc(row["end_at"]),
        "pending": row["pending"], "error": row["error"], "comment": row["comment"],
        "resources": {app: dataclasses.asdict(r) for app, r in res.items()},
    }
    if volumes is not None:
        out["volumes"] = volumes
    return out


def list_all(db, owner: Optional[str] = None, include_stopped: bool = True) -> List[dict]:
    def run(cur):
        sql = "SELECT * FROM vcregist"
        args = []
        where = []
        if owner:
            where.append("owner = %s")
            args.append(owner)
        if not include_stopped:
            where.append("state <> 'stopped'")
        if where:
            sql += " WHERE " + " AND ".join(where)
        cur.execute(sql + " ORDER BY start_at, rack", args)
        rows = list(cur.fetchall())
        cur.execute("SELECT * FROM vcresource")
        res: Dict[int, Dict[str, Resource]] = {}
        for r in cur.fetchall():
            res.setdefault(r["rack"], {})[r["appliance"]] = Resource(
                r["count"], r["memory_mb"], r["disk_gb"], r["vcpus"])
        return [_public(row, res.get(row["rack"], {})) for row in rows]

    return db.transaction(run)


def get(db, rack: int) -> dict:
    """One reservation with its resources, volumes, nodes and events.

    :raises NotFound:
    """

    def run(cur):
        cur.execute("SELECT * FROM vcregist WHERE rack = %s", (rack,))
        row = cur.fetchone()
        if row is None:
            raise NotFound(what="reservation", key=rack)
        cur.execute("SELECT v.mount_point, v.size_gb, v.appliance, v.state, v.iqn, v.lun, "
                    "t.name AS target FROM vciscsi v JOIN vciscsitarget t ON t.id = v.target_id "
                    "WHERE v.rack = %s ORDER BY v.mount_point", (rack,))
        volumes = list(cur.fetchall())
        out = _public(row, _resources(cur, rack), volumes)
        cur.execute("SELECT name, appliance, `rank`, mac, ip, public_ip, host, state, readiness "
                    "FROM vcnode WHERE rack = %s ORDER BY appliance DESC, `rank`", (rack,))
        out["nodes"] = list(cur.fetchall())
        # ready: every node's guest answers SSH (vc.ready); only a running cluster can be
        out["ready"] = bool(out["nodes"]) and row["state"] == "running" and all(
            n["readiness"] == "up" for n in out["nodes"])
        cur.execute("SELECT at, actor, from_state, to_state, reason FROM vcevent WHERE rack = %s "
                    "ORDER BY id", (rack,))
        out["events"] = [dict(e, at=aware_utc(e["at"]).replace(microsecond=0))
                         for e in cur.fetchall()]
        return out

    return db.transaction(run)


# ------------------------------------------------------------------------ what may be done next
# every action a reservation may offer, in the order they are listed
ACTIONS = ("start", "extend", "reopen", "stop", "delete")
_STARTED = (states.STARTING, states.RUNNING, states.STOPPING)


def allowed_actions(row, now, user: str, admins, root: bool = False) -> List[str]:
    """What ``user`` may do with a reservation now (in the order of :data:`ACTIONS`); the
    pages and ``vc_ctl show`` offer these, the operations above enforce them.

    - ``extend``: change the end of one whose window is not over (reserved, starting, running,
      failed; no request pending);
    - ``reopen``: a stopped one from now (``stopped → reserved``, by :func:`extend`);
    - ``stop``: end it now: a reserved one at once, a started one while its window lasts;
    - ``delete``: reserved, stopped or failed at once (or once its volumes are removed); a
      starting, running or stopping one is stopped first (unless a delete is pending already);
    - ``start``: start it now, retry a failed start or resume one (``vc_ctl start``): only for
      admins and root, while its window lasts and no delete is pending.

    Owners only their own reservations; admins (``user in admins``) and ``root`` every one.

    :param row: a reservation as :func:`get` or :func:`list_all` return it (``end`` aware UTC),
        or a ``vcregist`` row (``end_at``).
    """
    admin = root or user in admins
    if not admin and row["owner"] != user:
        return []
    st, pending = row["state"], row["pending"]
    end = row["end"] if "end" in row else aware_utc(row["end_at"])
    live = end > now
    out = []
    if admin and live and pending != "delete" and (
            st == states.STARTING or states.can(st, states.STARTING)):
        out.append("start")
    if not pending:
        if live and st in (states.RESERVED, states.STARTING, states.RUNNING, states.FAILED):
            out.append("extend")
        if st == states.STOPPED:
            out.append("reopen")
        if st == states.RESERVED or (
                live and st in (states.STARTING, states.RUNNING, states.FAILED)):
            out.append("stop")
    if st in (states.RESERVED, states.STOPPED, states.FAILED) or (
            st in _STARTED and pending != "delete"):
        out.append("delete")
    return out


# ------------------------------------------------------------------------ how to log in
def login(cfg, r) -> list:
    """How the owner of reservation ``r`` (:func:`vc.reservations.get`) logs in: through the
    frontend (``[site] frontend``, else this machine's FQDN) to each gateway's public address,
    then from the gateway to the other nodes by name."""
    import socket

    frontend = cfg.site.frontend or socket.getfqdn()
    gws = [n for n in r.get("nodes", []) if n["appliance"] == "gateway" and n["public_ip"]]
    out = ["ssh -J %s@%s root@%s" % (r["owner"], frontend, n["public_ip"]) for n in gws]
    cps = [n["name"] for n in r.get("nodes", []) if n["appliance"] != "gateway"]
    if gws and cps:
        out.append("then on the gateway: ssh %s (any node by name)" % cps[0])
    return out

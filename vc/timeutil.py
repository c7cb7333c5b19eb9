"""Times as users type them and as VC shows them.

Internally every time is an aware UTC ``datetime`` with whole seconds; the database stores the
naive UTC value (see :mod:`vc.db`). Users type ISO 8601 with or without an offset; a time without
one is in the configured site time zone.
"""

import re
from datetime import datetime, timedelta, timezone

# ASCII digits only (\d would take "١" for 1); more digits than any time in range needs
REL_RE = re.compile(r"^now\s*(?:([+-])\s*([0-9]{1,15})\s*([smhd]))?$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# Every time VC accepts lies in [EARLIEST, LATEST]: far from datetime's own limits (year 1 and
# 9999), so the arithmetic done with a time (a window, the admission's longest-window bound, the
# tick's back-off, showing it in any time zone) never overflows. The reservation rules bound a
# booking much closer to now ([limits] max_days_ahead, max_hours).
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)


def utcnow() -> datetime:
    """The real clock, to the microsecond (entry points pass it down; library code takes ``now``
    as a parameter). Reservation times are stored to the second; event times keep the
    microseconds, so the tick's punctuality can be measured."""
    return datetime.now(timezone.utc)


def parse(text, tz, now: datetime) -> datetime:
    """Parse a user-typed time.

    Accepts ISO 8601 (``2026-12-01T09:00``, ``2026-12-01 09:00:00+09:00``, ``...Z``) and
    ``now``, ``now+30m``, ``now+2h``, ``now-1d``.

    :param tz: the ``tzinfo`` for times typed without an offset.
    :raises ValueError: with a message for the user.
    """
    if isinstance(text, datetime):
        dt = text
    else:
        s = str(text).strip()
        if not s:
            raise ValueError("is required")
        m = REL_RE.match(s.lower())
        if m:
            delta = 0
            if m.group(1):
                delta = int(m.group(2)) * UNITS[m.group(3)] * (1 if m.group(1) == "+" else -1)
            try:
                out = (now + timedelta(seconds=delta)).astimezone(timezone.utc)
            except (OverflowError, ValueError):
                raise ValueError("%r is out of range (%s)" % (s[:40], _RANGE)) from None
            return _bounded(out.replace(microsecond=0), s)
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError("%r is not a time; use ISO 8601 like 2026-12-01T09:00 or "
                             "2026-12-01T09:00+09:00, or now+2h" % str(text)[:40]) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    try:
        out = dt.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise ValueError("%r is out of range (%s)" % (str(text)[:40], _RANGE)) from None
    return _bounded(out.replace(microsecond=0), text)


_RANGE = "VC takes times from %s to %s" % (EARLIEST.strftime("%Y-%m-%d"),
                                           LATEST.strftime("%Y-%m-%d UTC"))


def _bounded(dt: datetime, text) -> datetime:
    if not EARLIEST <= dt <= LATEST:
        raise ValueError("%r is out of range (%s)" % (str(text)[:40], _RANGE))
    return dt


def show(dt: datetime, tz) -> str:
    """A time for people: minutes precision in the site zone, with its abbreviation."""
    if dt is None:
        return "-"
    local = dt.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M") + (" " + local.tzname() if local.tzname() else "")


def iso(dt: datetime) -> str:
    """A time for machines: ISO 8601 in UTC with ``Z``."""
    return None if dt is None else dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

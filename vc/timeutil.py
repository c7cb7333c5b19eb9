"""Times as users type them and as VC shows them.

Internally every time is an aware UTC ``datetime`` with whole seconds; the database stores the
naive UTC value (see :mod:`vc.db`). Users type ISO 8601 with or without an offset; a time without
one is in the configured site time zone.
"""

import re
from datetime import datetime, timedelta, timezone

REL_RE = re.compile(r"^now\s*(?:([+-])\s*(\d{1,6})\s*([smhd]))?$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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
            return (now + timedelta(seconds=delta)).astimezone(timezone.utc).replace(microsecond=0)
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError("%r is not a time; use ISO 8601 like 2026-12-01T09:00 or "
                             "2026-12-01T09:00+09:00, or now+2h" % str(text)) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    try:
        out = dt.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise ValueError("%r is out of range" % str(text)) from None
    return out.replace(microsecond=0)


def show(dt: datetime, tz) -> str:
    """A time for people: minutes precision in the site zone, with its abbreviation."""
    if dt is None:
        return "-"
    local = dt.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M") + (" " + local.tzname() if local.tzname() else "")


def iso(dt: datetime) -> str:
    """A time for machines: ISO 8601 in UTC with ``Z``."""
    return None if dt is None else dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

"""vc.timeutil.parse: what users type, and the range of times VC accepts at all."""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from conftest import NOW
from vc import timeutil

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize("text,want", [
    ("now", NOW),
    ("now+30m", NOW + timedelta(minutes=30)),
    ("now + 2h", NOW + timedelta(hours=2)),
    ("now-1d", NOW - timedelta(days=1)),
    ("2026-12-01T09:00", NOW),                       # naive = the site zone (JST)
    ("2026-12-01T00:00Z", NOW),
    ("2026-12-01 09:00:00+09:00", NOW),
])
def test_parse(text, want):
    assert timeutil.parse(text, TOKYO, NOW) == want


# every one of these once raised OverflowError (an internal error in the CLI, a 500 on a page)
# or gave a time the database or the pages cannot handle
OUT_OF_RANGE = [
    "now-999999d", "now+999999d", "now+99999999d", "now+999999999999d", "now-99999999999s",
    "9999-12-31T23:59", "9999-12-31T23:59:59+00:00", "9999-12-31T23:59-14:00",
    "0001-01-01T00:00", "0001-01-01T00:00+14:00", "0001-01-01T00:00Z", "1969-12-31T23:59Z",
    "3000-01-01T00:00Z",
]


@pytest.mark.parametrize("text", OUT_OF_RANGE)
@pytest.mark.parametrize("tz", [TOKYO, NEW_YORK, timezone.utc])
def test_out_of_range_is_a_value_error(text, tz):
    with pytest.raises(ValueError) as ei:
        timeutil.parse(text, tz, NOW)
    assert "\n" not in str(ei.value)


def test_out_of_range_says_so():
    with pytest.raises(ValueError, match="out of range"):
        timeutil.parse("9999-12-31T23:59", TOKYO, NOW)
    with pytest.raises(ValueError, match="out of range"):
        timeutil.parse("now-999999d", TOKYO, NOW)
    # the range itself: to the second
    assert timeutil.parse(timeutil.iso(timeutil.EARLIEST), TOKYO, NOW) == timeutil.EARLIEST
    assert timeutil.parse(timeutil.iso(timeutil.LATEST), TOKYO, NOW) == timeutil.LATEST
    with pytest.raises(ValueError):
        timeutil.parse(timeutil.LATEST + timedelta(seconds=1), TOKYO, NOW)


@pytest.mark.parametrize("text", ["now+١h", "now+²h", "now+１h", "now+1_0m", "now+1 0m"])
def test_relative_times_take_ascii_digits_only(text):
    with pytest.raises(ValueError, match="not a time"):
        timeutil.parse(text, TOKYO, NOW)


def test_show_and_iso_of_the_extremes():
    for dt in (timeutil.EARLIEST, timeutil.LATEST):
        assert timeutil.show(dt, TOKYO) and timeutil.show(dt, NEW_YORK)
        assert timeutil.iso(dt).endswith("Z")
    assert datetime(2999, 12, 31, 23, 59, 59, tzinfo=timezone.utc) == timeutil.LATEST

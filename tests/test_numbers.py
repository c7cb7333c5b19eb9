"""vc.numbers.parse_int: the one integer parser (CLI arguments, reservation fields, the config's
integer keys). ASCII digits only, bounded length, range-checked, one-line messages."""

from datetime import datetime, timedelta, timezone

import pytest

from conftest import make_cfg
from vc import config as vconfig
from vc import numbers
from vc.errors import ConfigError, ValidationError


@pytest.mark.parametrize("value,lo,hi,want", [
    ("0", 0, 10, 0), ("7", 0, 10, 7), ("10", 0, 10, 10), (" 7 ", 0, 10, 7), ("007", 0, 10, 7),
    ("-3", -5, 5, -3), ("-0", -5, 5, 0), (5, 0, 10, 5), ("65535", 1, 65535, 65535),
    ("4294967295", 1, 2 ** 32 - 1, 2 ** 32 - 1),
])
def test_accepts_plain_ascii_integers(value, lo, hi, want):
    assert numbers.parse_int(value, "thing", lo, hi) == want


BAD = [
    "",                 # nothing
    "   ",
    "١",                # ARABIC-INDIC DIGIT ONE: int() says 1
    "١٢",
    "²",                # SUPERSCRIPT TWO: str.isdigit() says yes, int() raises
    "５",               # FULLWIDTH DIGIT FIVE
    "𝟗",                # MATHEMATICAL BOLD DIGIT NINE
    "1 000",            # whitespace inside
    "1\t0",
    "1_000",            # int() accepts underscores
    "+5",
    "--5",
    "-",
    "5.0", "1e3", "0x10", "five", "5\x00", "5\n6",
    "9" * 5000,         # beyond Python's int-string limit (4300 digits)
    "-" + "9" * 5000,
    "0" * 5000 + "1",
]


@pytest.mark.parametrize("value", BAD)
def test_refuses_everything_else_in_one_line(value):
    with pytest.raises(ValidationError) as ei:
        numbers.parse_int(value, "compute nodes", 0, 16)
    msg = str(ei.value)
    assert msg.startswith("compute nodes "), msg
    assert "\n" not in msg and len(msg) < 160, msg
    assert ei.value.errors == {"compute nodes": msg}
    assert ei.value.what == "compute nodes"


@pytest.mark.parametrize("value,lo,hi,needle", [
    ("17", 0, 16, "thing must be a whole number from 0 to 16, got 17"),
    ("-1", 0, 16, "from 0 to 16, got -1"),              # a minus only when lo < 0
    ("-0", 0, 16, "from 0 to 16, got -0"),
    ("-6", -5, 5, "from -5 to 5, got -6"),
    ("99999999999999999999999", 1, 87600, "from 1 to 87600, got a 23-digit number"),
    ("9" * 5000, 0, 16, "from 0 to 16, got a 5000-digit number"),
    ("0" * 5000 + "1", 0, 16, "from 0 to 16, got a 5001-digit number"),
    ("-" + "9" * 5000, -5, 5, "from -5 to 5, got a negative 5000-digit number"),
    ("lots", 0, 16, "must be a whole number from 0 to 16, got 'lots'"),
    ("١", 0, 16, "must be a whole number from 0 to 16, got '١'"),
    (True, 0, 16, "must be a whole number"),
    (2.0, 0, 16, "must be a whole number"),
    (None, 0, 16, "must be a whole number"),
    (17, 0, 16, "from 0 to 16, got 17"),
    (10 ** 30, 0, 16, "got a larger number"),
])
def test_messages(value, lo, hi, needle):
    with pytest.raises(ValidationError) as ei:
        numbers.parse_int(value, "thing", lo, hi)
    assert needle in str(ei.value), str(ei.value)


def test_the_error_says_what_kind_so_callers_can_word_it():
    with pytest.raises(numbers.NumberError) as ei:
        numbers.parse_int("x", "SSH port", 1, 65535)
    e = ei.value
    assert (e.kind, e.what, e.lo, e.hi, e.shown) == ("syntax", "SSH port", 1, 65535, "'x'")
    assert isinstance(e, ValidationError) and e.errors == {"SSH port": str(e)}
    with pytest.raises(numbers.NumberError) as ei:
        numbers.parse_int("0", "SSH port", 1, 65535)
    assert ei.value.kind == "range" and ei.value.shown == "0"
    assert str(ei.value) == "SSH port must be a whole number from 1 to 65535, got 0"
    # a long bad value is shown cut short
    with pytest.raises(numbers.NumberError) as ei:
        numbers.parse_int("x" * 1000, "thing", 0, 1)
    assert len(str(ei.value)) < 100


def test_bad_bounds_are_a_bug():
    with pytest.raises(ValueError):
        numbers.parse_int("1", "thing", 5, 1)


# ------------------------------------------------------------------------ the config's integers
def _cfg(section, key, value):
    return make_cfg({section: {key: value}}, path="/etc/vc/x.conf")


@pytest.mark.parametrize("section,key,value,needle", [
    ("limits", "max_hours", "1e26", "must be an integer"),
    ("limits", "max_hours", "99999999999999999999999", "between 1 and 87600, got a 23-digit"),
    ("limits", "max_hours", "9" * 5000, "between 1 and 87600, got a 5000-digit number"),
    ("limits", "max_hours", "87601", "between 1 and 87600"),
    ("limits", "max_hours", "١٦٨", "must be an integer"),
    ("limits", "max_hours", "1_68", "must be an integer"),
    ("limits", "max_nodes", "²", "must be an integer"),
    ("limits", "max_volume_gb", "99999999999999999999", "between 1 and"),
    ("defaults", "memory_mb", "9" * 30, "between 64 and"),
    ("host:h1", "memory_mb", "9" * 30, "between 64 and"),
    ("database", "port", "٣٣٠٦", "must be an integer"),
    ("cron", "max_start_retries", "100", "between 0 and 20"),
    ("addresses", "isolation_ids", "١٠٠-٤٠٩٤", "range like"),
    ("addresses", "isolation_ids", "100-" + "9" * 5000, "1 <= first <= last <= 16777215"),
    ("addresses", "isolation_ids", "100-99999999999999999999", "1 <= first <= last"),
])
def test_config_integers_name_the_key(section, key, value, needle):
    with pytest.raises(ConfigError) as ei:
        _cfg(section, key, value)
    msg = str(ei.value)
    assert msg.startswith("config error in /etc/vc/x.conf: [%s] %s: " % (section, key)), msg
    assert needle in msg and "\n" not in msg and len(msg) < 200, msg


def _int_keys():
    classes = list(vconfig.SECTIONS.values()) + [c for c, _ in vconfig.REPEATED.values()]
    for cls in classes:
        for f in vconfig.keys(cls):
            bounds = getattr(f.metadata["parser"], "bounds", None)
            if bounds is not None:
                yield cls.__name__, f.name, bounds


def test_every_integer_key_has_an_upper_bound_that_keeps_times_safe():
    found = {name: bounds for _, name, bounds in _int_keys()}
    assert "max_hours" in found and "max_start_retries" in found and "port" in found
    for cls, name, (lo, hi) in _int_keys():
        assert hi is not None and lo <= hi, (cls, name)
        assert hi < 2 ** 32, (cls, name)   # fits the INT UNSIGNED columns
    assert found["max_hours"][1] <= 87600
    latest = datetime(2999, 12, 31, tzinfo=timezone.utc)
    # the longest reservation, from the latest time VC accepts, plus days ahead
    latest + timedelta(hours=found["max_hours"][1]) + timedelta(days=found["max_days_ahead"][1])
    # the tick's back-off: 2 ** (retries - 1) minutes after the last failure
    latest + timedelta(minutes=2 ** found["max_start_retries"][1])


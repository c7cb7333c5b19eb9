"""Whole numbers typed by people (query parameters, form fields, command-line values, the
configuration file).

``str.isdigit()`` and ``int()`` accept far more than ``0-9``: ``"²".isdigit()`` is True and
``int("²")`` raises, ``int("١")`` (Arabic-Indic one) is 1, ``int("1_000")`` is 1000, and
``int()`` of more than 4,300 digits raises. :func:`parse_int` accepts ASCII digits only, bounds
the length before converting, and checks the range, so every bad value is one
:class:`NumberError` (a :class:`~vc.errors.ValidationError`) with a one-line message naming the
value.

Callers with wording of their own (the reservation form: "between 1 and 4"; the configuration:
"must be an integer") phrase it from the error's ``kind``, ``lo``, ``hi`` and ``shown``.
"""

from vc.errors import ValidationError

_DIGITS = frozenset("0123456789")


class NumberError(ValidationError):
    """A bad whole number: ``errors == {what: message}``, ``str()`` is the message.

    :ivar kind: ``"syntax"`` (not ASCII digits, an optional ``-`` only when ``lo < 0``, or longer
        than any number in range can be written) or ``"range"`` (a number outside ``[lo, hi]``).
    :ivar shown: the value as the message shows it (quoted and cut short for text).
    """

    def __init__(self, what, lo, hi, kind, shown):
        self.what, self.lo, self.hi, self.kind, self.shown = what, lo, hi, kind, shown
        msg = "%s must be a whole number from %d to %d, got %s" % (what, lo, hi, shown)
        super().__init__({what: msg})
        self.args = (msg,)


def parse_int(value, what: str, lo: int, hi: int) -> int:
    """``value`` (str or int) as an int in ``[lo, hi]``.

    ASCII digits only (surrounding blanks are ignored), an optional leading ``-`` only when
    ``lo < 0``; no ``+``, no ``_``, no blanks inside, no other scripts' digits, no superscripts.

    :param what: the value's name in the message, e.g. ``"page"``.
    :raises NumberError: ``{what: "<what> must be a whole number from lo to hi, got …"}``.
    :raises ValueError: ``lo > hi`` (a bug in the caller).
    """
    if lo > hi:
        raise ValueError("parse_int(%r): lo %d > hi %d" % (what, lo, hi))

    def bad(kind, shown):
        return NumberError(what, lo, hi, kind, shown)

    if isinstance(value, bool):
        raise bad("syntax", repr(value))
    if isinstance(value, int):
        v = value
    else:
        s = str(value if value is not None else "").strip()
        neg = s.startswith("-")
        digits = s[1:] if neg else s
        if not digits or not set(digits) <= _DIGITS:
            raise bad("syntax", repr(s[:20] + ("…" if len(s) > 20 else "")))
        # no more digits than the bounds have (plus leading zeros up to 20): int() never sees
        # a 5,000-digit string; a longer one is out of range whatever it says
        longest = max(len(str(abs(lo))), len(str(abs(hi))), 20)
        if len(digits) > longest:
            raise bad("range", "a%s %d-digit number" % (" negative" if neg else "", len(digits)))
        v = -int(digits) if neg else int(digits)
        # a minus only when lo < 0: below lo otherwise (-0 included)
        if neg and lo >= 0:
            raise bad("range", s[:21])
    if not lo <= v <= hi:
        raise bad("range", str(v) if len(str(v)) <= 20 else "a larger number")
    return v

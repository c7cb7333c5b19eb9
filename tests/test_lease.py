"""Extensions that tell the truth: the longest extension that fits, what blocks the rest
(vc.admission.fits_until, vc.reservations.extend longest=True / its refusal), the CLI's
``extend --longest``."""

import io
import json
from datetime import timedelta

import pytest

from conftest import NOW
from vc import admission
from vc import reservations as R
from vc.errors import CapacityError

H = timedelta(hours=1)
HOSTS = [("h1", 4096, 8)]


def bk(rack, s, e, mem=1024, n=1):
    return admission.Booking(rack, NOW + s * H, NOW + e * H, (((mem, 1), n),), 1)


def test_fits_until_names_the_first_blocker():
    new = bk(None, 2, 6, mem=2048)
    others = [bk(1, 0, 8, mem=1024), bk(2, 3, 5, mem=1024), bk(3, 4, 6, mem=1024)]
    # 2048 + 1024 + 1024 fits at 3h; at 4h rack 3 joins: 5120 > 4096
    until, short = admission.fits_until(new, others, HOSTS, 10, 10, 10)
    assert until == NOW + 4 * H and short.racks == (3,) and short.what == "memory"
    until, short = admission.fits_until(bk(None, 2, 6, mem=512), others, HOSTS, 10, 10, 10)
    assert until == NOW + 6 * H and short is None
    # short from the window's start: every reservation active then
    until, short = admission.fits_until(bk(None, 4, 6, mem=2048), others, HOSTS, 10, 10, 10)
    assert until == NOW + 4 * H and short.racks == (1, 2, 3)
    # pools: the third overlapping cluster has no subnet
    until, short = admission.fits_until(bk(None, 2, 6, mem=64), others, HOSTS, 2, 10, 10)
    assert until == NOW + 3 * H and short.what == "private subnets" and short.racks == (2,)


def book(cfg, db, start, end, mem, owner="bob"):
    return R.create(cfg, db, {"owner": owner, "start": start.isoformat(),
                              "end": end.isoformat(), "gateways": "1", "computes": "1",
                              "memory_mb": str(mem)}, NOW)


def test_extend_refusal_offers_the_longest(cfg, db):
    # BASE_CONF host h1: 4096 MB. a: 2 x 1024 until 02:00; blocker: 2 x 1536 from 03:00
    a = book(cfg, db, NOW, NOW + 2 * H, 1024)
    blk = book(cfg, db, NOW + 3 * H, NOW + 5 * H, 1536, owner="carol")
    with pytest.raises(CapacityError) as e:
        R.extend(cfg, db, a, (NOW + 4 * H).isoformat(), NOW, "bob")
    msg = str(e.value)
    assert "longest extension that fits ends 2026-12-01 12:00 JST" in msg, msg
    assert "reservation %d" % blk in msg
    assert e.value.offer.end == NOW + 3 * H and e.value.offer.short.racks == (blk,)
    assert R.get(db, a)["end"] == NOW + 2 * H                     # nothing changed

    got = []
    end = R.extend(cfg, db, a, (NOW + 4 * H).isoformat(), NOW, "bob", longest=True,
                   offer_out=got)
    assert end == NOW + 3 * H and got[0].full is False
    assert "reservation %d" % blk in got[0].why(cfg.tzinfo())
    ev = R.get(db, a)["events"][-1]["reason"]
    assert "the longest that fits" in ev and "reservation %d" % blk in ev
    # nothing more: refused, not a silent no-op
    with pytest.raises(CapacityError, match="no extension of rack %d fits" % a):
        R.extend(cfg, db, a, None, NOW, "bob", longest=True)
    # the offer alone changes nothing
    assert R.longest_offer(cfg, db, a, NOW).end == NOW + 3 * H


def test_longest_without_a_blocker_is_bounded_by_the_limit(cfg, db):
    a = book(cfg, db, NOW, NOW + 2 * H, 256)
    got = []
    end = R.extend(cfg, db, a, None, NOW, "bob", longest=True, offer_out=got)
    assert end == NOW + cfg.limits.max_hours * H
    assert got[0].limit == str(cfg.limits.max_hours) and "at most" in got[0].why(cfg.tzinfo())


def test_cli_extend_longest(cfg, db):
    from vc.cmd import vc_ctl

    a = book(cfg, db, NOW, NOW + 2 * H, 1024)
    blk = book(cfg, db, NOW + 3 * H, NOW + 5 * H, 1536, owner="carol")

    def run(*argv):
        out = io.StringIO()
        rc = vc_ctl.main(list(argv), cfg=cfg, uid=0, environ={}, out=out, now=NOW)
        return rc, out.getvalue()

    rc, out = run("extend", str(a), "--end", (NOW + 4 * H).isoformat())
    assert rc == 1
    rc, out = run("extend", str(a), "--longest", "--end", (NOW + 4 * H).isoformat())
    assert rc == 0 and "less than asked" in out and "reservation %d" % blk in out, out
    assert R.get(db, a)["end"] == NOW + 3 * H
    rc, out = run("extend", str(a), "--longest", "--json")
    assert rc == 1
    book2 = book(cfg, db, NOW, NOW + H, 64)
    rc, out = run("extend", str(book2), "--longest", "--end", (NOW + 2 * H).isoformat(),
                  "--json")
    d = json.loads(out)
    assert rc == 0 and d["full"] is True and d["end"].startswith("2026-12-01T02:00")

"""Clients racing for capacity, each with its own connection, on the real MariaDB."""

import random
import threading
from datetime import timedelta

from conftest import NOW
from vc import admission
from vc import reservations as R
from vc.db import Database, aware_utc
from vc.errors import CapacityError

H = timedelta(hours=1)


def race(cfg, requests):
    """Run ``R.create`` for each request in its own thread and connection, all released at once.

    :returns: list of ("ok", rack) / ("refused", message) / ("error", repr) per request.
    """
    barrier = threading.Barrier(len(requests))
    results = [None] * len(requests)

    def worker(i, f):
        db = Database(cfg)  # own connections
        barrier.wait()
        try:
            results[i] = ("ok", R.create(cfg, db, f, NOW))
        except CapacityError as e:
            results[i] = ("refused", str(e))
        except Exception as e:  # anything else (deadlock, lock timeout) is a failure
            results[i] = ("error", repr(e))

    threads = [threading.Thread(target=worker, args=(i, f)) for i, f in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_last_capacity_exactly_one_wins(cfg, db):
    # h1 has 4096 MB: each request wants 3 x 1024 MB, so only one can be admitted
    f = {"owner": "bob", "start": "2026-12-01T10:00", "end": "2026-12-01T12:00",
         "gateways": "1", "computes": "2", "memory_mb": "1024"}
    results = race(cfg, [dict(f) for _ in range(16)])
    kinds = [r[0] for r in results]
    assert kinds.count("ok") == 1, results
    assert kinds.count("refused") == 15, results
    assert all("not enough memory" in r[1] for r in results if r[0] == "refused")
    assert db.query("SELECT COUNT(*) AS n FROM vcregist")[0]["n"] == 1


def booked_never_exceeds(cfg, db):
    """Sweep every instant of every stored reservation: all must be placeable at once."""
    regs = db.query("SELECT r.rack, r.start_at, r.end_at, s.count, s.memory_mb, s.vcpus, "
                    "s.appliance FROM vcregist r JOIN vcresource s ON s.rack = r.rack")
    by = {}
    for r in regs:
        b = by.setdefault(r["rack"], {"start": aware_utc(r["start_at"]),
                                      "end": aware_utc(r["end_at"]), "shapes": {}, "gw": 0})
        if r["count"]:
            key = (r["memory_mb"], r["vcpus"])
            b["shapes"][key] = b["shapes"].get(key, 0) + r["count"]
        if r["appliance"] == "gateway":
            b["gw"] = r["count"]
    hosts = [(h.name, h.memory_mb, h.vcpus) for h in cfg.hosts]
    instants = sorted({b["start"] for b in by.values()})
    for t in instants:
        active = [b for b in by.values() if b["start"] <= t < b["end"]]
        shapes = {}
        for b in active:
            for k, c in b["shapes"].items():
                shapes[k] = shapes.get(k, 0) + c
        unplaced, _ = admission.place(shapes, hosts)
        assert not unplaced, (t, shapes)
        assert sum(b["gw"] for b in active) <= len(cfg.addresses.public_pool)
    return len(by)


def test_random_race_never_overbooks(cfg, db):
    rng = random.Random(7)
    reqs = []
    for _ in range(16):
        start = rng.randrange(0, 6)
        reqs.append({"owner": "u%d" % rng.randrange(5),
                     "start": (NOW + start * H).isoformat(),
                     "end": (NOW + (start + rng.randrange(1, 4)) * H).isoformat(),
                     "gateways": "1", "computes": str(rng.randrange(0, 4)),
                     "memory_mb": str(rng.choice([256, 512, 1024]))})
    for _ in range(3):  # the same requests thrice: later rounds race against earlier rows
        results = race(cfg, reqs)
        assert not [r for r in results if r[0] == "error"], results
    n = booked_never_exceeds(cfg, db)
    assert n >= 3  # something was admitted, and some were refused
    assert n < 48


def test_admission_writes_its_counter_row(cfg, db):
    """Every admission *writes* the shared counter row in its transaction (on Galera a row lock
    alone is node-local; the write is what certification serialises): an admitted booking and
    an extension count, a refused booking is rolled back with the rest of its transaction."""
    def counter():
        return db.query("SELECT value FROM vccounter WHERE name = 'admission'")[0]["value"]

    f = {"owner": "bob", "start": "2026-12-01T10:00", "end": "2026-12-01T12:00",
         "gateways": "1", "computes": "2", "memory_mb": "1024"}
    before = counter()
    rack = R.create(cfg, db, dict(f), NOW)
    assert counter() == before + 1
    try:
        R.create(cfg, db, dict(f), NOW)
    except CapacityError:
        pass
    else:
        raise AssertionError("the second booking fits?")
    assert counter() == before + 1
    R.extend(cfg, db, rack, "2026-12-01T13:00", NOW, "bob")
    assert counter() == before + 2

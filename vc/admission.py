"""Admission control: does a cluster fit beside every reservation that overlaps its window?

Pure functions over plain values, so they are tested without a database and timed by
``bench/admission.py``. :mod:`vc.reservations` feeds them the overlapping reservations it read
under the admission lock.

A window fits when, at every instant of it, the reservations active then plus the new one can be
*placed* on the physical hosts (each node whole on one host, memory and vcpus both) and the
address pools hold enough cluster subnets, isolation ids and public gateway addresses. The set of
active reservations only grows at a start, so only the window start and the starts inside the
window are checked; a set contained in the next checked set is skipped.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

# (memory_mb, vcpus) -> number of nodes of that shape
Shapes = Dict[Tuple[int, int], int]


@dataclass(frozen=True)
class Booking:
    """What one reservation holds during its window."""

    rack: Optional[int]
    start: datetime
    end: datetime
    shapes: Tuple[Tuple[Tuple[int, int], int], ...]  # ((memory_mb, vcpus), count) pairs
    gateways: int

    @property
    def nodes(self) -> int:
        return sum(c for _, c in self.shapes)


@dataclass
class Shortage:
    """Why a window does not fit, and from when to when."""

    what: str
    start: datetime
    end: datetime
    detail: str
    # the reservations that make it short: those starting at ``start`` (they join then), or
    # when it is short from the window's start, every one active then
    racks: Tuple[int, ...] = field(default=())


def best_host(free: Dict[str, list], mem: int, cpu: int) -> Optional[str]:
    """The host with the most free memory that has room for a node (ties: first listed)."""
    best, best_mem = None, -1
    for name, (fm, fc) in free.items():
        if fm >= mem and fc >= cpu and fm > best_mem:
            best, best_mem = name, fm
    return best


def place(shapes: Shapes, hosts: Sequence[Tuple[str, int, int]]):
    """Place nodes on hosts, largest first, each on the host with the most free memory that has
    room for it (the same spreading rule the cluster start uses).

    :param hosts: ``[(name, memory_mb, vcpus)]``.
    :returns: ``(unplaced, free)``: a ``Shapes`` of nodes that did not fit and the free
        ``{host: [memory, vcpus]}`` after placing the rest.
    """
    free = {name: [mem, cpu] for name, mem, cpu in hosts}
    unplaced: Shapes = {}
    for (mem, cpu), count in sorted(shapes.items(), reverse=True):
        for _ in range(count):
            best = best_host(free, mem, cpu)
            if best is None:
                unplaced[(mem, cpu)] = unplaced.get((mem, cpu), 0) + 1
            else:
                free[best][0] -= mem
                free[best][1] -= cpu
    return unplaced, free


def _merge(bookings: Iterable[Booking]) -> Shapes:
    out: Shapes = {}
    for b in bookings:
        for shape, count in b.shapes:
            out[shape] = out.get(shape, 0) + count
    return out


def check(new: Booking, others: List[Booking], hosts, subnets: int, isolation_ids: int,
          public_addresses: int) -> Optional[Shortage]:
    """First shortage in ``new``'s window, or None when it fits.

    :param others: reservations holding capacity that overlap the window (may include more).
    :param hosts: ``[(name, memory_mb, vcpus)]`` of the enabled physical hosts.
    """
    # a node bigger than every host never fits, whatever else is booked
    for (mem, cpu), _ in new.shapes:
        if not any(hm >= mem and hc >= cpu for _, hm, hc in hosts):
            biggest = max(hosts, key=lambda h: (h[1], h[2]))
            return Shortage("host size", new.start, new.end,
                            "a node of %d MB / %d vcpus is larger than every physical host "
                            "(largest: %s with %d MB / %d vcpus)"
                            % (mem, cpu, biggest[0], biggest[1], biggest[2]))
    others = [b for b in others if b.start < new.end and b.end > new.start]
    points = sorted({new.start} | {b.start for b in others if b.start > new.start})
    sets = []
    for t in points:
        sets.append((t, frozenset(i for i, b in enumerate(others) if b.start <= t < b.end)))
    # a set contained in the next one is checked there
    keep = [sets[i] for i in range(len(sets))
            if i + 1 == len(sets) or not sets[i][1] <= sets[i + 1][1]]
    for t, active in keep:
        act = [others[i] for i in active]
        # until when this set of reservations is unchanged (for the message)
        until = min([new.end] + [b.end for b in act] +
                    [b.start for b in others if b.start > t])
        n = len(act) + 1
        if n > subnets:
            return Shortage("private subnets", t, until,
                            "%d clusters would overlap, the private pool holds %d cluster subnets"
                            % (n, subnets))
        if n > isolation_ids:
            return Shortage("isolation ids", t, until,
                            "%d clusters would overlap, the isolation-id pool holds %d"
                            % (n, isolation_ids))
        gws = sum(b.gateways for b in act) + new.gateways
        if gws > public_addresses:
            return Shortage("public addresses", t, until,
                            "%d gateways would need public addresses, the pool holds %d (%d free)"
                            % (gws, public_addresses, max(0, public_addresses - gws +
                                                          new.gateways)))
        unplaced, free = place(_merge(act + [new]), hosts)
        if unplaced:
            total = sum(unplaced.values())
            need_mem = sum(m * c for (m, _), c in _merge(act + [new]).items())
            need_cpu = sum(p * c for (_, p), c in _merge(act + [new]).items())
            cap_mem = sum(h[1] for h in hosts)
            cap_cpu = sum(h[2] for h in hosts)
            if need_mem > cap_mem:
                what = "memory"
            elif need_cpu > cap_cpu:
                what = "vcpus"
            else:
                what = "memory/vcpus on one host"
            return Shortage(what, t, until,
                            "%d node(s) could not be placed; the hosts have %d MB / %d vcpus in "
                            "all, the overlapping clusters and this one need %d MB / %d vcpus"
                            % (total, cap_mem, cap_cpu, need_mem, need_cpu))
    return None


def _short_at(t, act, new, until, hosts, subnets, isolation_ids, public_addresses):
    """The shortage with ``act`` (the others active at ``t``) plus ``new``, or None."""
    n = len(act) + 1
    if n > subnets:
        return Shortage("private subnets", t, until, "%d clusters would overlap, the private "
                        "pool holds %d cluster subnets" % (n, subnets))
    if n > isolation_ids:
        return Shortage("isolation ids", t, until, "%d clusters would overlap, the isolation-id "
                        "pool holds %d" % (n, isolation_ids))
    gws = sum(b.gateways for b in act) + new.gateways
    if gws > public_addresses:
        return Shortage("public addresses", t, until, "%d gateways would need public addresses, "
                        "the pool holds %d" % (gws, public_addresses))
    unplaced, _ = place(_merge(act + [new]), hosts)
    if unplaced:
        need = _merge(act + [new])
        need_mem = sum(m * c for (m, _), c in need.items())
        need_cpu = sum(p * c for (_, p), c in need.items())
        cap_mem, cap_cpu = sum(h[1] for h in hosts), sum(h[2] for h in hosts)
        what = "memory" if need_mem > cap_mem else "vcpus" if need_cpu > cap_cpu else \
            "memory/vcpus on one host"
        return Shortage(what, t, until, "%d node(s) could not be placed; the hosts have %d MB / "
                        "%d vcpus in all, the overlapping clusters and this one need %d MB / %d "
                        "vcpus" % (sum(unplaced.values()), cap_mem, cap_cpu, need_mem, need_cpu))
    return None


def fits_until(new: Booking, others: List[Booking], hosts, subnets: int, isolation_ids: int,
               public_addresses: int) -> Tuple[datetime, Optional[Shortage]]:
    """The latest end ``e <= new.end`` such that ``[new.start, e)`` fits, and the shortage that
    stops it there (None when the whole window fits; ``e == new.start`` when nothing fits).

    Every instant where the set of active reservations grows is checked in time order (no
    subset skipping: the *first* short instant is wanted); its ``racks`` name the reservations
    that start there — what blocks the rest — or, when it is short from the window's start, the
    ones active then.
    """
    for (mem, cpu), _ in new.shapes:
        if not any(hm >= mem and hc >= cpu for _, hm, hc in hosts):
            return new.start, check(new, others, hosts, subnets, isolation_ids,
                                    public_addresses)
    others = [b for b in others if b.start < new.end and b.end > new.start]
    points = sorted({new.start} | {b.start for b in others if b.start > new.start})
    for t in points:
        act = [b for b in others if b.start <= t < b.end]
        until = min([new.end] + [b.end for b in act] + [b.start for b in others if b.start > t])
        short = _short_at(t, act, new, until, hosts, subnets, isolation_ids, public_addresses)
        if short:
            joining = [b for b in act if b.start == t] if t > new.start else act
            short.racks = tuple(sorted(b.rack for b in joining if b.rack is not None))
            return t, short
    return new.end, None

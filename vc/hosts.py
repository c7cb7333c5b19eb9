"""Host maintenance: list the physical hosts, drain one (no new placements, its capacity no
longer counted by admission), enable it again, remove it; and the check that a host has the
memory its ``[host:NAME]`` section promises.

Where the state lives: the hosts come from the configuration (``[host:NAME]``); ``vchost``
keeps what an operator or the tick decided about each (``enabled`` = 0: drained, ``reachable``
= 0: the tick could not talk to it). Placement (:func:`vc.addresses.host_free`) skips hosts
that are drained or unreachable; admission (:func:`vc.reservations.enabled_hosts`) skips drained
ones (an unreachable host is expected back: its capacity stays booked).

``remove`` cannot delete a host the configuration still names (it would come back, enabled, at
the next read of the file): it then drains it and says to delete the section; once the file no
longer names it, ``remove`` deletes its row.
"""

from typing import Dict, List

from vc import admission, reservations, timeutil
from vc.db import aware_utc, naive_utc
from vc.errors import NotFound, VcError


def _rows(db) -> Dict[str, dict]:
    return {r["name"]: r for r in db.query("SELECT name, uri, memory_mb, vcpus, enabled, "
                                           "reachable, updated_at FROM vchost")}


def list_hosts(cfg, db) -> List[dict]:
    """Every configured host (and any ``vchost`` row the configuration no longer names):
    capacity, what live nodes use on it now, reachable, drained, the clusters on it."""
    rows = _rows(db)
    used: Dict[str, dict] = {}
    for r in db.query("SELECT n.host, n.rack, s.memory_mb, s.vcpus FROM vcnode n JOIN "
                      "vcresource s ON s.rack = n.rack AND s.appliance = n.appliance "
                      "WHERE n.host IS NOT NULL"):
        u = used.setdefault(r["host"], {"memory_mb": 0, "vcpus": 0, "nodes": 0, "racks": set()})
        u["memory_mb"] += int(r["memory_mb"])
        u["vcpus"] += int(r["vcpus"])
        u["nodes"] += 1
        u["racks"].add(int(r["rack"]))
    out = []
    names = [h.name for h in cfg.hosts] + sorted(set(rows) - {h.name for h in cfg.hosts})
    for name in names:
        h = next((x for x in cfg.hosts if x.name == name), None)
        row = rows.get(name, {})
        u = used.get(name, {"memory_mb": 0, "vcpus": 0, "nodes": 0, "racks": set()})
        out.append({
            "name": name, "uri": h.uri if h else row.get("uri"),
            "configured": h is not None,
            "memory_mb": h.memory_mb if h else row.get("memory_mb"),
            "vcpus": h.vcpus if h else row.get("vcpus"),
            "underlay_ip": h.underlay_ip if h else None,
            "used_memory_mb": u["memory_mb"], "used_vcpus": u["vcpus"], "nodes": u["nodes"],
            "clusters": sorted(u["racks"]),
            "reachable": bool(row.get("reachable", 1)),
            "drained": not bool(row.get("enabled", 1)),
        })
    return out


def _need_configured(cfg, name):
    h = next((x for x in cfg.hosts if x.name == name), None)
    if h is None:
        raise NotFound("no host %r in the configuration ([host:%s])" % (name, name))
    return h


def _set_enabled(cfg, db, name, enabled: bool, now) -> None:
    h = _need_configured(cfg, name)
    db.transaction(lambda cur: cur.execute(
        "INSERT INTO vchost (name, uri, memory_mb, vcpus, enabled, reachable, updated_at) "
        "VALUES (%s, %s, %s, %s, %s, 1, %s) ON DUPLICATE KEY UPDATE enabled = VALUES(enabled), "
        "updated_at = VALUES(updated_at)",
        (h.name, h.uri, h.memory_mb, h.vcpus, int(enabled), naive_utc(now))))


def no_longer_fit(cfg, db, now) -> List[dict]:
    """The reservations not yet over that no longer fit on the hosts enabled now. Earlier
    bookings keep their place: in booking order (rack number), each is checked beside those
    before it that still fit (admission's own rule), so the list names the ones to move or
    cancel. :returns: ``[{rack, owner, start, end, why}]``."""
    def txn(cur):
        hosts = [(h.name, h.memory_mb, h.vcpus) for h in reservations.enabled_hosts(cfg, cur)]
        cur.execute("SELECT rack, owner, start_at, end_at FROM vcregist WHERE end_at > %s AND "
                    "state IN ('reserved', 'starting', 'running', 'failed') ORDER BY rack",
                    (naive_utc(now),))
        kept, out, tz = [], [], cfg.tzinfo()
        for r in cur.fetchall():
            start, end = max(aware_utc(r["start_at"]), now), aware_utc(r["end_at"])
            new = reservations._booking(r["rack"], start, end,
                                        reservations._resources(cur, r["rack"]))
            why = "no physical host is enabled" if not hosts else None
            if hosts:
                short = admission.check(new, kept, hosts, cfg.subnet_count,
                                        cfg.isolation_count, len(cfg.addresses.public_pool))
                if short:
                    why = "not enough %s from %s to %s: %s" % (
                        short.what, timeutil.show(short.start, tz),
                        timeutil.show(short.end, tz), short.detail)
            if why:
                out.append({"rack": r["rack"], "owner": r["owner"], "start": start,
                            "end": end, "why": why})
            else:
                kept.append(new)
        return out

    return db.transaction(txn)


def drain(cfg, db, name, now) -> dict:
    """No new node goes to ``name`` and admission stops counting it, from now on. Nodes on it
    keep running. :returns: ``{"host", "nodes", "no_longer_fit": [...]}``."""
    _set_enabled(cfg, db, name, False, now)
    h = next(x for x in list_hosts(cfg, db) if x["name"] == name)
    return {"host": name, "nodes": h["nodes"], "clusters": h["clusters"],
            "no_longer_fit": no_longer_fit(cfg, db, now)}


def enable(cfg, db, name, now) -> dict:
    _set_enabled(cfg, db, name, True, now)
    return {"host": name, "drained": False}


def remove(cfg, db, name, now) -> dict:
    """Refused while nodes are placed on the host. A host the configuration still names is
    drained (``removed: False``, delete its ``[host:NAME]`` section); else its row is deleted."""
    n = db.query("SELECT COUNT(*) AS n FROM vcnode WHERE host = %s", (name,))[0]["n"]
    if n:
        raise VcError("host %s runs %d node(s): drain it and wait for (or stop) its clusters "
                      "first" % (name, n))
    if any(h.name == name for h in cfg.hosts):
        _set_enabled(cfg, db, name, False, now)
        return {"host": name, "removed": False, "drained": True,
                "note": "drained; [host:%s] is still in %s: delete that section, then run "
                        "'host remove %s' again to drop its row" % (name, cfg.path, name)}
    if not db.query("SELECT name FROM vchost WHERE name = %s", (name,)):
        raise NotFound("no host %r (neither configured nor recorded)" % name)
    db.transaction(lambda cur: cur.execute("DELETE FROM vchost WHERE name = %s", (name,)))
    return {"host": name, "removed": True}


def check_capacity(ctl, name) -> None:
    """Refuse a host whose libvirt reports less memory than ``[host:NAME] memory_mb`` promises
    (vCPUs may be overcommitted, memory may not). :raises VcError: naming the host."""
    h = _need_configured(ctl.cfg, name)
    host = ctl.host(name)
    if host.uri.startswith("test:"):
        return                          # the test driver's node is whatever its file says
    real = int(host.conn.getInfo()[1])  # MiB
    if real < h.memory_mb:
        raise VcError("host %s has %d MB of memory but [host:%s] memory_mb = %d: lower it in "
                      "the configuration" % (name, real, name, h.memory_mb))

"""Timeline: reservations over the next days against capacity, drawn server-side as SVG.

Three parts share one time axis:

- memory and vcpus in use (step areas) against the enabled hosts' totals;
- "fits": when a cluster of the shape in the form (default: the configured defaults) could start
  and run for the given hours. That is exactly admission control (:func:`vc.admission.check`) run
  for a start every half hour, so a green band means the register form would accept it;
- one bar per reservation holding capacity, packed into lanes.

The geometry is computed here; ``templates/timeline_svg.html`` only draws it.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Dict, List, Tuple

from vc import admission, states
from vc.db import aware_utc, naive_utc
from vc.web.app import HTTPError, Response

WIDTH = 1000
LEFT = 96
RIGHT = 12
AXIS_H = 34
CHART_H = 56
GAP = 10
FIT_H = 20
LANE_H = 22
STEP = timedelta(minutes=30)
STATE_COLOURS = {
    states.RESERVED: "#6f9fd8", states.STARTING: "#e9b949", states.RUNNING: "#4caf6a",
    states.STOPPING: "#e8964a", states.FAILED: "#d9534f", states.DELETING: "#9e9e9e",
}


@dataclass
class Held:
    rack: int
    owner: str
    state: str
    start: datetime
    end: datetime
    nodes: int
    gateways: int
    memory_mb: int
    vcpus: int
    booking: admission.Booking


FROM_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")  # ASCII digits: strptime takes others
FROM_YEARS = 10  # how far from today "from" may be


def _params(req):
    num = req.number  # ASCII digits, bounded, range-checked; else 400 naming the parameter
    cfg = req.cfg
    p = {"days": num("days", 7, 1, 31),
         "gateways": num("gateways", 1, 1, cfg.limits.max_gateways),
         "computes": num("computes", min(2, cfg.limits.max_nodes - 1), 0, cfg.limits.max_nodes),
         "memory_mb": num("memory_mb", cfg.defaults.memory_mb, 64, cfg.limits.max_memory_mb),
         "vcpus": num("vcpus", cfg.defaults.vcpus, 1, cfg.limits.max_vcpus),
         "hours": num("hours", 2, 1, cfg.limits.max_hours)}
    tz = req.tz()
    raw = req.query.get("from", "")
    today = req.now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    if raw:
        try:
            if not FROM_RE.match(raw):
                raise ValueError(raw)
            day = datetime.strptime(raw, "%Y-%m-%d")
        except ValueError:
            raise HTTPError(400, "from must be a date like 2026-12-01, got %r" % raw[:20]) from None
        if abs(day - today.replace(tzinfo=None)) > timedelta(days=366 * FROM_YEARS):
            raise HTTPError(400, "from must be within %d years of today, got %s"
                            % (FROM_YEARS, raw))
        start = day.replace(tzinfo=tz)
    else:
        start = today
    p["from"] = start.strftime("%Y-%m-%d")
    p["t0"] = start
    # whole local days; a DST change makes one day 23 or 25 hours, which is what the clock says
    p["t1"] = (start.replace(tzinfo=None) + timedelta(days=p["days"])).replace(tzinfo=tz)
    return p


def load(req, t0, t1) -> Tuple[List[Held], list]:
    """Reservations holding capacity that overlap ``[t0, t1)``, and the enabled hosts."""
    from vc.reservations import enabled_hosts

    def run(cur):
        cur.execute("SELECT value FROM vccounter WHERE name = 'longest_seconds'")
        row = cur.fetchone()
        longest = int(row["value"]) if row else 0
        cur.execute(
            "SELECT r.rack, r.owner, r.state, r.start_at, r.end_at, s.appliance, s.count, "
            "s.memory_mb, s.vcpus FROM vcregist r JOIN vcresource s ON s.rack = r.rack "
            "WHERE r.start_at >= %s AND r.start_at < %s AND r.end_at > %s AND r.state IN ("
            + ",".join(["%s"] * len(states.HOLDS_CAPACITY)) + ") ORDER BY r.start_at, r.rack",
            (naive_utc(t0 - timedelta(seconds=longest)), naive_utc(t1), naive_utc(t0))
            + tuple(states.HOLDS_CAPACITY))
        rows = list(cur.fetchall())
        return rows, [(h.name, h.memory_mb, h.vcpus) for h in enabled_hosts(req.cfg, cur)]

    rows, hosts = req.db.transaction(run)
    by: Dict[int, dict] = {}
    for r in rows:
        b = by.setdefault(r["rack"], {"owner": r["owner"], "state": r["state"],
                                      "start": aware_utc(r["start_at"]),
                                      "end": aware_utc(r["end_at"]), "shapes": {}, "gw": 0})
        if r["count"]:
            key = (r["memory_mb"], r["vcpus"])
            b["shapes"][key] = b["shapes"].get(key, 0) + r["count"]
        if r["appliance"] == "gateway":
            b["gw"] = r["count"]
    out = []
    for rack, b in by.items():
        shapes = tuple(sorted(b["shapes"].items()))
        out.append(Held(rack, b["owner"], b["state"], b["start"], b["end"],
                        sum(c for _, c in shapes), b["gw"],
                        sum(m * c for (m, _), c in shapes), sum(v * c for (_, v), c in shapes),
                        admission.Booking(rack, b["start"], b["end"], shapes, b["gw"])))
    return out, hosts


def usage(held: List[Held], t0, t1) -> List[dict]:
    """Step function of what is in use: ``[{at, memory_mb, vcpus, nodes}]`` from ``t0``."""
    points = sorted({t0} | {h.start for h in held if t0 < h.start < t1}
                    | {h.end for h in held if t0 < h.end < t1})
    out = []
    for t in points:
        act = [h for h in held if h.start <= t < h.end]
        out.append({"at": t, "memory_mb": sum(h.memory_mb for h in act),
                    "vcpus": sum(h.vcpus for h in act), "nodes": sum(h.nodes for h in act)})
    return out


def fits(cfg, held: List[Held], hosts, p, not_before) -> List[Tuple[datetime, datetime]]:
    """Runs of start times (now, then every :data:`STEP` mark) at which the shape in ``p`` is
    admitted."""
    shapes: Dict[Tuple[int, int], int] = {}
    n = p["gateways"] + p["computes"]
    shapes[(p["memory_mb"], p["vcpus"])] = n
    dur = timedelta(hours=p["hours"])
    others = [h.booking for h in held]
    runs: List[Tuple[datetime, datetime]] = []
    # candidates: now (a start may be now), then every STEP mark of the window after it
    t, t1 = p["t0"], p["t1"]
    starts = []
    if t < not_before < t1:
        starts.append(not_before)
        t = t + (-(-(not_before - t) // STEP)) * STEP
    elif not_before >= t1:
        t = t1
    while t < t1:
        if not starts or t > starts[-1]:
            starts.append(t)
        t += STEP
    for i, t in enumerate(starts):
        cell_end = starts[i + 1] if i + 1 < len(starts) else t1
        new = admission.Booking(None, t, t + dur, tuple(shapes.items()), p["gateways"])
        ok = hosts and n <= cfg.limits.max_nodes and admission.check(
            new, others, hosts, cfg.subnet_count, cfg.isolation_count,
            len(cfg.addresses.public_pool)) is None
        if ok:
            if runs and runs[-1][1] == t:
                runs[-1] = (runs[-1][0], cell_end)
            else:
                runs.append((t, cell_end))
    return runs


def lanes(held: List[Held]) -> Dict[int, int]:
    """Pack bars into as few lanes as possible (interval partitioning by start)."""
    ends: List[datetime] = []
    out = {}
    for h in sorted(held, key=lambda h: (h.start, h.rack)):
        for i, e in enumerate(ends):
            if e <= h.start:
                ends[i] = h.end
                out[h.rack] = i
                break
        else:
            out[h.rack] = len(ends)
            ends.append(h.end)
    return out


def build(req, p, held, hosts):
    """Everything the page, the SVG and the JSON twin show."""
    cfg, tz = req.cfg, req.tz()
    t0, t1 = p["t0"], p["t1"]
    span = (t1 - t0).total_seconds()
    plot_w = WIDTH - LEFT - RIGHT

    def x(t) -> float:
        s = min(max((t - t0).total_seconds(), 0), span)
        return round(LEFT + plot_w * s / span, 1)

    cap_mem = sum(h[1] for h in hosts)
    cap_cpu = sum(h[2] for h in hosts)
    runs = fits(cfg, held, hosts, p, req.now)  # all loaded: a late start runs past t1
    held = [h for h in held if h.start < t1 and h.end > t0]
    use = usage(held, t0, t1)

    # vertical layout
    y_mem = AXIS_H
    y_cpu = y_mem + CHART_H + GAP
    y_fit = y_cpu + CHART_H + GAP
    y_lanes = y_fit + FIT_H + GAP + 14
    lane_of = lanes(held)
    n_lanes = max(lane_of.values()) + 1 if lane_of else 0
    height = y_lanes + max(n_lanes, 1) * LANE_H + 8

    days = []
    d = t0
    while d < t1:
        nxt = (d.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=tz)
        days.append({"x": x(d), "w": round(x(min(nxt, t1)) - x(d), 1),
                     "label": d.strftime("%a %m-%d"), "date": d.strftime("%Y-%m-%d")})
        d = nxt
    ticks = []
    if p["days"] <= 10:
        step = 6 if p["days"] <= 4 else 12
        d = t0
        while d < t1:
            d = d + timedelta(hours=step)
            if d < t1 and d.astimezone(tz).hour != 0:
                ticks.append({"x": x(d), "label": d.astimezone(tz).strftime("%H:%M")})

    def area(key, cap, top):
        if cap <= 0:
            return ""
        pts = []
        for i, u in enumerate(use):
            end = use[i + 1]["at"] if i + 1 < len(use) else t1
            y = round(top + CHART_H * (1 - min(u[key] / cap, 1.0)), 1)
            pts += [(x(u["at"]), y), (x(end), y)]
        base = top + CHART_H
        return " ".join("%s,%s" % pt for pt in [(LEFT, base)] + pts + [(WIDTH - RIGHT, base)])

    peak_mem = max([u["memory_mb"] for u in use] + [0])
    peak_cpu = max([u["vcpus"] for u in use] + [0])
    bars = []
    for h in sorted(held, key=lambda h: (h.start, h.rack)):
        bx, bw = x(h.start), max(x(h.end) - x(h.start), 2)
        label = "%d %s" % (h.rack, h.owner)
        bars.append({
            "rack": h.rack, "x": bx, "y": y_lanes + lane_of[h.rack] * LANE_H, "w": round(bw, 1),
            "h": LANE_H - 4, "colour": STATE_COLOURS.get(h.state, "#999"),
            "label": label if bw >= 7 * len(label) + 8 else ("%d" % h.rack if bw >= 24 else ""),
            "title": "rack %d (%s, %s): %s to %s, %d node(s), %d MB, %d vcpus" % (
                h.rack, h.owner, h.state, req.show(h.start), req.show(h.end), h.nodes,
                h.memory_mb, h.vcpus),
            "url": req.url("/reservations/%d" % h.rack)})
    fit_rects = [{"x": x(a), "w": max(round(x(b) - x(a), 1), 1.5),
                  "title": "a %d+%d cluster for %d h fits starting from %s to %s" % (
                      p["gateways"], p["computes"], p["hours"], req.show(a), req.show(b))}
                 for a, b in runs]
    first = runs[0][0] if runs else None
    book_url = None
    if first is not None:
        book_url = req.url("/register", start=req.local_input(first),
                           end=req.local_input(first + timedelta(hours=p["hours"])),
                           gateways=p["gateways"], computes=p["computes"],
                           memory_mb=p["memory_mb"], vcpus=p["vcpus"])
    now_x = x(req.now) if t0 <= req.now < t1 else None
    past_w = round(x(req.now) - LEFT, 1) if req.now > t0 else 0
    svg = {"width": WIDTH, "height": height, "left": LEFT, "right": WIDTH - RIGHT,
           "days": days, "ticks": ticks, "y_mem": y_mem, "y_cpu": y_cpu, "y_fit": y_fit,
           "y_lanes": y_lanes, "chart_h": CHART_H, "fit_h": FIT_H, "axis_h": AXIS_H,
           "mem_area": area("memory_mb", cap_mem, y_mem),
           "cpu_area": area("vcpus", cap_cpu, y_cpu), "bars": bars, "fits": fit_rects,
           "now_x": now_x, "past_w": past_w, "cap_mem": cap_mem, "cap_cpu": cap_cpu,
           "peak_mem": peak_mem, "peak_cpu": peak_cpu, "n_lanes": n_lanes}
    data = {
        "from": t0, "to": t1, "days": p["days"], "timezone": cfg.site.timezone,
        "over": t1 <= req.now,
        "capacity": {"memory_mb": cap_mem, "vcpus": cap_cpu, "hosts": [h[0] for h in hosts]},
        "reservations": [{"rack": h.rack, "owner": h.owner, "state": h.state, "start": h.start,
                          "end": h.end, "nodes": h.nodes, "memory_mb": h.memory_mb,
                          "vcpus": h.vcpus} for h in sorted(held, key=lambda h: (h.start,
                                                                                   h.rack))],
        "usage": use,
        "fit": {"gateways": p["gateways"], "computes": p["computes"],
                "memory_mb": p["memory_mb"], "vcpus": p["vcpus"], "hours": p["hours"],
                "starts": [{"from": a, "to": b} for a, b in runs], "first": first},
    }
    return data, svg, book_url


def _nav(req, p) -> dict:
    keep = {k: p[k] for k in ("days", "gateways", "computes", "memory_mb", "vcpus", "hours")}
    t0 = p["t0"].replace(tzinfo=None)
    shift = timedelta(days=p["days"])
    return {"prev": req.url("/timeline", **dict(keep, **{"from": (t0 - shift).strftime(
                "%Y-%m-%d")})),
            "next": req.url("/timeline", **dict(keep, **{"from": (t0 + shift).strftime(
                "%Y-%m-%d")})),
            "today": req.url("/timeline", **keep),
            "svg": req.url("/timeline.svg", **dict(keep, **{"from": p["from"]}))}


def page(req):
    p = _params(req)
    held, hosts = load(req, p["t0"], p["t1"] + timedelta(hours=req.cfg.limits.max_hours))
    data, svg, book_url = build(req, p, held, hosts)
    if req.wants_json:
        return req.json(data)
    form = {k: p[k] for k in ("days", "gateways", "computes", "memory_mb", "vcpus", "hours",
                              "from")}
    return req.page("timeline.html", data, svg=svg, form=form, book_url=book_url,
                    window_start=p["t0"], nav=_nav(req, p), colours=STATE_COLOURS)


def svg(req):
    """The chart alone (``image/svg+xml``), e.g. to embed elsewhere."""
    p = _params(req)
    held, hosts = load(req, p["t0"], p["t1"] + timedelta(hours=req.cfg.limits.max_hours))
    _, chart, _ = build(req, p, held, hosts)
    body = req.render("timeline_svg.html", {"svg": chart, "standalone": True})
    return Response(body, 200, "image/svg+xml; charset=utf-8")

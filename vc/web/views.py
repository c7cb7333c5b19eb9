"""Pages: the menu, Register a new virtual cluster, View registrations (list, one reservation,
delete / stop now / extend) and Show all tables.

Reads are plain parameterised queries (a page of reservations at a time); every change goes
through :mod:`vc.reservations`, which validates, runs admission control, checks ownership and
writes in one transaction, so a refused request writes nothing.
"""

from datetime import timedelta
from typing import Dict, List, Optional

from vc import states
from vc.db import aware_utc
from vc.errors import CapacityError, NotFound, ValidationError, VcError
from vc.web.app import HTTPError, redirect

PAGE_SIZE = 50
VOLUME_ROWS_MAX = 8
SHOWS = ("all", "current", "mine")

# every table "Show all tables" may list; names are never taken from the request
DEBUG_TABLES = ("vcregist", "vcresource", "vciscsi", "vciscsitarget", "vcnode", "vcevent",
                "vchost", "vcalloc", "vccounter", "schema_version", "memberships", "nodes",
                "networks")

MESSAGES = {
    "created": "Reserved: rack {rack}.",
    "deleted": "Rack {rack} was deleted.",
    "delete-pending": "Rack {rack} ends now: the tick stops its cluster, then deletes it.",
    "stopped": "Rack {rack} was stopped.",
    "stop-requested": "Rack {rack} ends now: the tick stops its cluster.",
    "extended": "The end of rack {rack} was changed.",
    "target-added": "The iSCSI target was added.",
    "target-saved": "The iSCSI target was saved.",
    "target-removed": "The iSCSI target was removed.",
    "pinned": "The host key was pinned.",
}


def flash(req) -> Optional[str]:
    """The one-line result of the last action, from ``?msg=CODE&rack=N`` (known codes only)."""
    text = MESSAGES.get(req.query.get("msg", ""))
    if not text:
        return None
    rack = req.query.get("rack", "")
    return text.format(rack=int(rack) if rack.isdigit() else "?")


# ------------------------------------------------------------------------ menu
def menu(req):
    rows = req.db.query("SELECT state, COUNT(*) AS n FROM vcregist GROUP BY state")
    counts = {r["state"]: int(r["n"]) for r in rows}
    pages = [
        {"title": "iSCSI target setup", "path": "/targets",
         "about": "register the storage targets and get the frontend's public SSH key",
         "admin": True},
        {"title": "Register a new virtual cluster", "path": "/register",
         "about": "book gateway and compute nodes for a time window", "admin": False},
        {"title": "View registrations", "path": "/reservations",
         "about": "every reservation with its nodes; delete, stop now, extend", "admin": False},
        {"title": "Timeline", "path": "/timeline",
         "about": "reservations over the next days against capacity: when does a cluster fit?",
         "admin": False},
        {"title": "Show all tables", "path": "/tables", "about": "the raw tables, for debugging",
         "admin": True},
    ]
    shown = [dict(p, url=req.url(p["path"])) for p in pages
             if not p["admin"] or req.may_admin_pages]
    data = {"user": req.user, "admin": req.admin, "single_user": not req.users_known,
            "timezone": req.cfg.timezone, "counts": counts, "pages": shown}
    return req.page("menu.html", data)


# ------------------------------------------------------------------------ register
def _limits(cfg) -> dict:
    return {"max_hours": cfg.max_hours, "max_nodes": cfg.max_nodes,
            "max_gateways": cfg.max_gateways, "max_memory_mb": cfg.max_memory_mb,
            "max_disk_gb": cfg.max_disk_gb, "max_vcpus": cfg.max_vcpus,
            "max_volumes": cfg.max_volumes, "max_volume_gb": cfg.max_volume_gb}


def _targets(req) -> List[dict]:
    return req.db.query("SELECT id, name, address FROM vciscsitarget ORDER BY name")


def _volume_rows(cfg) -> int:
    return min(cfg.max_volumes, VOLUME_ROWS_MAX)


def _form_defaults(req) -> dict:
    cfg = req.cfg
    start = req.now.replace(second=0)
    v = {"start": req.local_input(start), "end": req.local_input(start + timedelta(hours=2)),
         "gateways": "1", "computes": "0", "owner": req.user, "comment": ""}
    for app in ("gateway", "compute"):
        v[app + "_memory_mb"] = str(cfg.default_memory_mb)
        v[app + "_disk_gb"] = str(cfg.default_disk_gb)
        v[app + "_vcpus"] = str(cfg.default_vcpus)
    for i in range(1, _volume_rows(cfg) + 1):
        v["vol_mount_%d" % i] = v["vol_target_%d" % i] = v["vol_size_%d" % i] = ""
    # a link from the timeline ("book this slot") may fill in the shape and the window
    for key in ("start", "end", "gateways", "computes", "comment"):
        if key in req.query and len(req.query[key]) <= 64:
            v[key] = req.query[key]
    for key in ("memory_mb", "disk_gb", "vcpus"):
        if key in req.query and len(req.query[key]) <= 12:
            v["gateway_" + key] = v["compute_" + key] = req.query[key]
    return v


FIELDS = ("start", "end", "gateways", "computes", "gateway_memory_mb", "gateway_disk_gb",
          "gateway_vcpus", "compute_memory_mb", "compute_disk_gb", "compute_vcpus", "comment")


def _register_page(req, values, errors=None, refusal=None, status=200):
    data = {"fields": values, "errors": errors or {}, "refusal": refusal,
            "limits": _limits(req.cfg), "targets": _targets(req),
            "volume_rows": _volume_rows(req.cfg), "timezone": req.cfg.timezone,
            "csrf_token": req.csrf_token}
    return req.page("register.html", data, status)


def register(req):
    if req.method != "POST":
        return _register_page(req, _form_defaults(req))
    form = req.form
    values = {k: form.get(k, "") for k in FIELDS}
    values["owner"] = form.get("owner", "").strip() or req.user
    errors: Dict[str, str] = {}
    if values["owner"] != req.user and not req.admin:
        errors["owner"] = "only an admin may book for another owner (you are %s)" % req.user
    fields = {k: values[k] for k in FIELDS}
    fields["owner"] = values["owner"]
    volumes, rows = [], []
    for i in range(1, _volume_rows(req.cfg) + 1):
        m, t, s = (form.get("vol_%s_%d" % (k, i), "").strip() for k in ("mount", "target", "size"))
        values["vol_mount_%d" % i], values["vol_target_%d" % i], values["vol_size_%d" % i] = m, t, s
        if m or s:  # a row with only the target chosen (the select's default) is empty
            if not t:
                errors["vol_%d" % i] = "choose the iSCSI target of volume %d" % i
                continue
            volumes.append({"mount_point": m, "target": t, "size_gb": s})
            rows.append(i)
    fields["volumes"] = volumes
    if errors:
        return _register_page(req, values, errors, status=400)
    from vc import reservations

    try:
        rack = reservations.create(req.cfg, req.db, fields, req.now, actor=req.user)
    except ValidationError as e:
        for key, msg in e.errors.items():
            if key.startswith("volume") and key[6:].isdigit() and int(key[6:]) <= len(rows):
                errors["vol_%d" % rows[int(key[6:]) - 1]] = msg
            else:
                errors[key] = msg
        return _register_page(req, values, errors, status=400)
    except CapacityError as e:
        return _register_page(req, values, refusal=str(e), status=409)
    if req.wants_json:
        return req.json({"rack": rack, "url": req.url("/reservations/%d" % rack)}, 201)
    return redirect(req.url("/reservations", msg="created", rack=rack) + "#rack-%d" % rack)


# ------------------------------------------------------------------------ reservations
def actions_for(req, row) -> Dict[str, str]:
    """The actions this user may take on a reservation in its state: {action: button label}."""
    if not req.may_change(row["owner"]):
        return {}
    st, pending, live = row["state"], row["pending"], row["end"] > req.now
    out = {}
    if not pending:
        if st in (states.RESERVED, states.STARTING, states.RUNNING, states.FAILED) and live:
            out["extend"] = "Change end"
        if st == states.RESERVED or (st in (states.STARTING, states.RUNNING, states.FAILED)
                                     and live):
            out["stop"] = "Stop now"
    if st in (states.RESERVED, states.STOPPED, states.FAILED):
        out["delete"] = "Delete"
    elif st in (states.STARTING, states.RUNNING, states.STOPPING) and pending != "delete":
        out["delete"] = "Delete (stops it first)"
    return out


def _res_summary(res: dict) -> str:
    parts = []
    for app in ("gateway", "compute"):
        r = res.get(app)
        if r and r["count"]:
            parts.append("%d %s%s × %d MB / %d GB / %d vcpu" % (
                r["count"], app, "s" if r["count"] > 1 else "", r["memory_mb"], r["disk_gb"],
                r["vcpus"]))
    return ", ".join(parts) or "no nodes"


def _in(n):
    return ",".join(["%s"] * n)


def _load_page(req, show, page):
    where, args = [], []
    if show == "current":
        where.append("(end_at > %s OR state IN ('starting', 'running', 'stopping', 'failed', "
                     "'deleting'))")
        from vc.db import naive_utc

        args.append(naive_utc(req.now))
    elif show == "mine":
        where.append("owner = %s")
        args.append(req.user)
    sql_where = (" WHERE " + " AND ".join(where)) if where else ""

    def run(cur):
        cur.execute("SELECT COUNT(*) AS n FROM vcregist" + sql_where, args)
        total = int(cur.fetchone()["n"])
        cur.execute("SELECT rack, owner, start_at, end_at, state, pending, error, comment "
                    "FROM vcregist" + sql_where + " ORDER BY start_at DESC, rack DESC "
                    "LIMIT %s OFFSET %s", args + [PAGE_SIZE, (page - 1) * PAGE_SIZE])
        rows = list(cur.fetchall())
        racks = [r["rack"] for r in rows]
        res: Dict[int, dict] = {}
        nodes: Dict[int, list] = {}
        vols: Dict[int, list] = {}
        if racks:
            cur.execute("SELECT rack, appliance, count, memory_mb, disk_gb, vcpus FROM vcresource "
                        "WHERE rack IN (%s)" % _in(len(racks)), racks)
            for r in cur.fetchall():
                res.setdefault(r.pop("rack"), {})[r.pop("appliance")] = r
            cur.execute("SELECT rack, name, appliance, `rank`, mac, ip, public_ip, host, state "
                        "FROM vcnode WHERE rack IN (%s) ORDER BY rack, appliance DESC, `rank`"
                        % _in(len(racks)), racks)
            for r in cur.fetchall():
                nodes.setdefault(r.pop("rack"), []).append(r)
            cur.execute("SELECT v.rack, v.mount_point, v.size_gb, v.state, t.name AS target "
                        "FROM vciscsi v JOIN vciscsitarget t ON t.id = v.target_id "
                        "WHERE v.rack IN (%s) ORDER BY v.rack, v.mount_point" % _in(len(racks)),
                        racks)
            for r in cur.fetchall():
                vols.setdefault(r.pop("rack"), []).append(r)
        return total, rows, res, nodes, vols

    total, rows, res, nodes, vols = req.db.transaction(run)
    out = []
    for r in rows:
        item = {"rack": r["rack"], "owner": r["owner"], "state": r["state"],
                "pending": r["pending"], "error": r["error"], "comment": r["comment"],
                "start": aware_utc(r["start_at"]), "end": aware_utc(r["end_at"]),
                "resources": res.get(r["rack"], {}), "nodes": nodes.get(r["rack"], []),
                "volumes": vols.get(r["rack"], [])}
        item["summary"] = _res_summary(item["resources"])
        item["actions"] = actions_for(req, item)
        out.append(item)
    return total, out


def _int_param(req, name, default, lo, hi):
    raw = req.query.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise HTTPError(400, "%s must be a number from %d to %d" % (name, lo, hi))
    return int(raw)


def reservations(req):
    show = req.query.get("show", "all")
    if show not in SHOWS:
        raise HTTPError(400, "show must be one of %s" % ", ".join(SHOWS))
    page = _int_param(req, "page", 1, 1, 10 ** 6)
    total, rows = _load_page(req, show, page)
    pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
    data = {"reservations": rows, "total": total, "page": page, "pages": pages, "show": show,
            "page_size": PAGE_SIZE, "user": req.user, "now": req.now}
    if req.wants_json:
        return req.json(data)
    return req.page("reservations.html", data, flash=flash(req), csrf_token=req.csrf_token)


def _detail(req, rack: int) -> dict:
    from vc import reservations as R

    r = R.get(req.db, rack)
    r["summary"] = _res_summary(r["resources"])
    r["actions"] = actions_for(req, r)
    return r


def reservation(req, rack, error=None, end_value=None, status=200):
    r = _detail(req, int(rack))
    data = {"reservation": r, "error": error}
    return req.page("reservation.html", data, status, flash=flash(req),
                    csrf_token=req.csrf_token, end_value=end_value)


def action(req, rack, action):
    from vc import reservations as R

    rack = int(rack)
    rows = req.db.query("SELECT owner, state FROM vcregist WHERE rack = %s", (rack,))
    if not rows:
        raise NotFound(what="reservation", key=rack)
    if not req.may_change(rows[0]["owner"]):
        raise HTTPError(403, "rack %d belongs to %s; only its owner or an admin may change it"
                        % (rack, rows[0]["owner"]))
    back = "detail" if req.form.get("next") == "detail" else "list"
    if action in ("delete", "stop") and req.form.get("confirm") != "yes":
        if req.wants_json:
            raise HTTPError(400, "add confirm=yes to %s rack %d" % (action, rack))
        r = _detail(req, rack)
        return req.page("confirm.html", {"reservation": r, "action": action, "next": back},
                        csrf_token=req.csrf_token)
    try:
        if action == "delete":
            st = R.delete(req.cfg, req.db, rack, req.now, req.user, req.admin)
            msg, back = ("deleted", "list") if st == states.DELETED else ("delete-pending", back)
            result = {"rack": rack, "state": st}
        elif action == "stop":
            before = rows[0]["state"]
            st = R.stop_now(req.cfg, req.db, rack, req.now, req.user, req.admin)
            msg = "stopped" if before == states.RESERVED else "stop-requested"
            result = {"rack": rack, "state": states.STOPPED if msg == "stopped" else st}
        else:
            end = R.extend(req.cfg, req.db, rack, req.form.get("end", ""), req.now, req.user,
                           req.admin)
            msg, result = "extended", {"rack": rack, "end": end}
    except ValidationError as e:
        if req.wants_json:
            return req.json({"error": str(e), "errors": e.errors}, 400)
        return reservation(req, rack, error="; ".join(e.errors.values()),
                           end_value=req.form.get("end", ""), status=400)
    except (CapacityError, VcError) as e:
        if isinstance(e, NotFound):
            raise
        if req.wants_json:
            return req.json({"error": str(e)}, 409)
        return reservation(req, rack, error=str(e), end_value=req.form.get("end", ""),
                           status=409)
    if req.wants_json:
        return req.json(result)
    if back == "detail":
        return redirect(req.url("/reservations/%d" % rack, msg=msg, rack=rack))
    return redirect(req.url("/reservations", msg=msg, rack=rack) + "#rack-%d" % rack)


# ------------------------------------------------------------------------ tables
def tables(req):
    req.require_admin_pages()
    one = req.query.get("table")
    if one is not None and one not in DEBUG_TABLES:
        raise HTTPError(404, "no such table %r (tables: %s)" % (one[:64], ", ".join(DEBUG_TABLES)))
    limit = 200 if one else 20
    offset = _int_param(req, "offset", 0, 0, 10 ** 9) if one else 0

    def run(cur):
        cur.execute("SELECT table_name AS t FROM information_schema.tables "
                    "WHERE table_schema = DATABASE()")
        present = {r["t"] for r in cur.fetchall()}
        out = []
        for name in DEBUG_TABLES:
            if name not in present or (one and name != one):
                continue
            # name is one of DEBUG_TABLES (a constant), never request text
            cur.execute("SELECT COUNT(*) AS n FROM `%s`" % name)
            total = int(cur.fetchone()["n"])
            cur.execute("SELECT * FROM `%s` ORDER BY 1 DESC LIMIT %%s OFFSET %%s" % name,
                        (limit, offset))
            cols = [d[0] for d in cur.description]
            rows = [[r[c] for c in cols] for r in cur.fetchall()]
            out.append({"name": name, "columns": cols, "rows": rows, "total": total,
                        "offset": offset, "limit": limit})
        return out

    data = {"tables": req.db.transaction(run), "one": one}
    return req.page("tables.html", data)

"""Pages: the menu, Register a new virtual cluster, View registrations (list, one reservation,
delete / stop now / extend) and Show all tables.

Reads are plain parameterised queries (a page of reservations at a time); every change goes
through :mod:`vc.reservations`, which validates, runs admission control, checks ownership and
writes in one transaction, so a refused request writes nothing.
"""

import logging
import threading
from collections import OrderedDict
from datetime import timedelta
from typing import Dict, List, Optional

from vc import states
from vc.errors import CapacityError, NotFound, ValidationError, VcError
from vc.web.app import MAX_ID, HTTPError, Response, number, redirect

LOG = logging.getLogger(__name__)
PAGE_SIZE = 20  # like Horizon's (the Blazar dashboard) default page
VOLUME_ROWS_MAX = 8
SHOWS = ("all", "current", "mine")

# every table "Show all tables" may list; names are never taken from the request
DEBUG_TABLES = ("vcregist", "vcresource", "vciscsi", "vciscsitarget", "vcnode", "vcevent",
                "vchost", "vcalloc", "vccounter", "vcsshkey", "vcpreflight", "schema_version",
                "memberships", "nodes", "networks")

MESSAGES = {
    "created": "Reserved: rack {rack}.",
    "created_preflight": "Reserved: rack {rack}. Its pre-flight found problems (below); it is "
                         "checked again before the start.",
    "deleted": "Rack {rack} was deleted.",
    "delete-pending": "Rack {rack} ends now: the tick stops its cluster, then deletes it.",
    "stopped": "Rack {rack} was stopped.",
    "stop-requested": "Rack {rack} ends now: the tick stops its cluster.",
    "extended": "The end of rack {rack} was changed.",
    "extended-less": "Rack {rack} got the longest extension that fits, which is less than you "
                     "asked: its events say which reservation blocks the rest.",
    "target-added": "The iSCSI target was added.",
    "target-saved": "The iSCSI target was saved.",
    "target-removed": "The iSCSI target was removed.",
    "pinned": "The host key was pinned.",
}


def flash(req) -> Optional[str]:
    """The one-line result of the last action, from ``?msg=CODE&rack=N`` (known codes only)."""
    rack = req.number("rack", None, 1, MAX_ID)  # a bad one is a 400, whatever the message
    text = MESSAGES.get(req.query.get("msg", ""))
    if not text:
        return None
    return text.format(rack=rack if rack is not None else "?")


def _key_warning(req, owner: str) -> Optional[str]:
    """The "no SSH key" warning for a booking of ``owner`` (shown to the owner, and to an
    admin in words about the owner), else None. A booking without a key is still accepted."""
    from vc.web.keys import NO_KEY_WARNING, no_key_warning

    if not (owner == req.user or req.admin):
        return None
    if no_key_warning(req, owner) is None:
        return None
    if owner == req.user:
        return NO_KEY_WARNING
    return ("%s has no SSH key: they will not be able to log in to the cluster — they can add "
            "one on My SSH keys" % owner)


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
        {"title": "My SSH keys", "path": "/keys",
         "about": "the public keys that let you log in to your clusters' nodes as root",
         "admin": False},
        {"title": "Show all tables", "path": "/tables", "about": "the raw tables, for debugging",
         "admin": True},
    ]
    shown = [dict(p, url=req.url(p["path"])) for p in pages
             if not p["admin"] or req.may_admin_pages]
    data = {"user": req.user, "admin": req.admin, "single_user": not req.users_known,
            "timezone": req.cfg.site.timezone, "counts": counts, "pages": shown}
    return req.page("menu.html", data)


# ------------------------------------------------------------------------ register
def _limits(cfg) -> dict:
    return {"max_hours": cfg.limits.max_hours, "max_nodes": cfg.limits.max_nodes,
            "max_gateways": cfg.limits.max_gateways, "max_memory_mb": cfg.limits.max_memory_mb,
            "max_disk_gb": cfg.limits.max_disk_gb, "max_vcpus": cfg.limits.max_vcpus,
            "max_volumes": cfg.limits.max_volumes, "max_volume_gb": cfg.limits.max_volume_gb}


def _targets(req) -> List[dict]:
    return req.db.query("SELECT id, name, address FROM vciscsitarget ORDER BY name")


def _volume_rows(cfg) -> int:
    return min(cfg.limits.max_volumes, VOLUME_ROWS_MAX)


def _form_defaults(req) -> dict:
    cfg = req.cfg
    start = req.now.replace(second=0)
    v = {"start": req.local_input(start), "end": req.local_input(start + timedelta(hours=2)),
         "gateways": "1", "computes": "0", "owner": req.user, "comment": ""}
    for app in ("gateway", "compute"):
        v[app + "_memory_mb"] = str(cfg.defaults.memory_mb)
        v[app + "_disk_gb"] = str(cfg.defaults.disk_gb)
        v[app + "_vcpus"] = str(cfg.defaults.vcpus)
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
    owner = values.get("owner") or req.user
    data = {"fields": values, "errors": errors or {}, "refusal": refusal,
            "limits": _limits(req.cfg), "targets": _targets(req),
            "volume_rows": _volume_rows(req.cfg), "timezone": req.cfg.site.timezone,
            "csrf_token": req.csrf_token, "key_warning": _key_warning(req, owner[:64])}
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
    problems = _booking_preflight(req, rack)
    if req.wants_json:
        return req.json({"rack": rack, "url": req.url("/reservations/%d" % rack),
                         "key_warning": _key_warning(req, fields["owner"]),
                         "preflight": [str(p) for p in problems]}, 201)
    if problems:  # the booking stands; its page says what the pre-flight found
        return redirect(req.url("/reservations/%d" % rack, msg="created_preflight", rack=rack))
    return redirect(req.url("/reservations", msg="created", rack=rack) + "#rack-%d" % rack)


def _booking_preflight(req, rack) -> list:
    """The booking's pre-flight: what the database knows (capacity, pools); the hosts and
    targets are reached by ``vc_ctl.py preflight`` and the tick (the web process has no SSH
    key). Problems are warnings; a failing check is logged, never a failed booking."""
    from vc import preflight

    try:
        return preflight.check_and_record(req.cfg, req.db, rack, req.now,
                                          preflight.BOOKING_POOLS, reach=False)
    except Exception as e:  # pragma: no cover - the database went away after the booking
        LOG.error("rack %d: booking pre-flight failed: %s", rack, e)
        return []


# ------------------------------------------------------------------------ reservations
# the actions the pages have a button for (the rule is vc.reservations.allowed_actions')
LABELS = {"extend": "Change end", "stop": "Stop now", "delete": "Delete"}


def actions_for(req, row) -> Dict[str, str]:
    """The actions this user may take on a reservation in its state that the pages offer:
    {action: button label}."""
    from vc.reservations import allowed_actions

    out = {a: LABELS[a] for a in allowed_actions(row, req.now, req.user, req.cfg.site.admins)
           if a in LABELS}
    if "delete" in out and row["state"] in (states.STARTING, states.RUNNING, states.STOPPING):
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


def _safe(token):
    """The CSRF token (digits, a dot and hex) as markup: it is written three times a row."""
    from markupsafe import Markup

    assert all(c in "0123456789abcdef." for c in token)
    return Markup(token)


def _in(n):
    return ",".join(["%s"] * n)


class Row(dict):
    """A reservation for the list page: its dict is what the JSON twin shows; attributes set on
    it (``url``, ``window``, ``end_input``) are for the template only. Attribute access to keys
    keeps the template loop fast (Jinja tries ``getattr`` first)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def _fetch(req, show, page):
    """One page of reservations in one query (with their resources and how many nodes and
    volumes they have), then the nodes and volumes of the racks that have some. One row more
    than a page tells whether there is a next page (no COUNT over the whole table).

    :returns: ``(more, rows, nodes, volumes)`` as the database gave them (rows are tuples).
    """
    from vc.db import naive_utc

    where, args = [], []
    if show == "current":
        where.append("(r.end_at > %s OR r.state IN ('starting', 'running', 'stopping', 'failed', "
                     "'deleting'))")
        args.append(naive_utc(req.now))
    elif show == "mine":
        where.append("r.owner = %s")
        args.append(req.user)
    # what is not over yet: soonest first; everything: newest first
    order = "r.start_at, r.rack" if show == "current" else "r.start_at DESC, r.rack DESC"
    sql = (
        "SELECT r.rack, r.owner, UNIX_TIMESTAMP(r.start_at), UNIX_TIMESTAMP(r.end_at), r.state, "
        "r.pending, r.error, r.comment, CONCAT_WS(',', g.count, g.memory_mb, g.disk_gb, "
        "g.vcpus), CONCAT_WS(',', c.count, c.memory_mb, c.disk_gb, c.vcpus), "
        "(SELECT COUNT(*) FROM vcnode n WHERE n.rack = r.rack), "
        "(SELECT COUNT(*) FROM vciscsi v WHERE v.rack = r.rack) "
        # the index walk stops after one page (without it MariaDB sorts the whole table)
        "FROM vcregist r FORCE INDEX (by_start) "
        "LEFT JOIN vcresource g ON g.rack = r.rack AND g.appliance = 'gateway' "
        "LEFT JOIN vcresource c ON c.rack = r.rack AND c.appliance = 'compute'"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY " + order + " LIMIT %s OFFSET %s")

    def run(cur):
        cur.execute(sql, args + [PAGE_SIZE + 1, (page - 1) * PAGE_SIZE])
        rows = [tuple(r.values()) for r in cur.fetchall()]
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        def by_rack(select, racks):
            """``{rack: [row]}`` of ``select`` (ending in ``rack IN (%s)``) for ``racks``."""
            out: Dict[int, list] = {}
            if racks:
                cur.execute(select % _in(len(racks)), racks)
                for r in cur.fetchall():
                    out.setdefault(r.pop("rack"), []).append(r)
            return out

        nodes = by_rack("SELECT rack, name, appliance, `rank`, mac, ip, public_ip, host, state, "
                        "readiness FROM vcnode WHERE rack IN (%s) "
                        "ORDER BY rack, appliance DESC, `rank`", [r[0] for r in rows if r[10]])
        vols = by_rack("SELECT v.rack, v.mount_point, v.size_gb, v.state, t.name AS target "
                       "FROM vciscsi v JOIN vciscsitarget t ON t.id = v.target_id "
                       "WHERE v.rack IN (%s) ORDER BY v.rack, v.mount_point",
                       [r[0] for r in rows if r[11]])
        return more, rows, nodes, vols

    return req.db.transaction(run)


def ready(r) -> bool:
    """A cluster is ready when it runs and every node's guest answers SSH (as
    :func:`vc.reservations.get` says it)."""
    return bool(r["nodes"]) and r["state"] == states.RUNNING and all(
        n.get("readiness") == "up" for n in r["nodes"])


def _login(req, r) -> List[str]:
    """How the owner logs in (:func:`vc.reservations.login`), for the owner and admins."""
    if r.get("visibility") == "other":
        return []
    from vc import reservations

    return reservations.login(req.cfg, r)


def _build(req, rows, nodes, vols) -> List[Row]:
    """The fetched rows as the page and its JSON twin show them (trimmed to what this user may
    see: :mod:`vc.web.visibility`)."""
    from datetime import datetime, timezone

    from vc.web import visibility

    redact = None
    out = []
    tz, base, utc = req.tz(), req.base, timezone.utc
    fromts = datetime.fromtimestamp
    for t in rows:
        rack = t[0]
        start, end = fromts(int(t[2]), utc), fromts(int(t[3]), utc)
        res = {}
        for app, packed in (("gateway", t[8]), ("compute", t[9])):
            if packed:
                c, m, d, v = (int(x) for x in packed.split(","))
                res[app] = {"count": c, "memory_mb": m, "disk_gb": d, "vcpus": v}
        item = Row(rack=rack, owner=t[1], state=t[4], pending=t[5], error=t[6], comment=t[7],
                   start=start, end=end, resources=res, nodes=nodes.get(rack, []),
                   volumes=vols.get(rack, []))
        item["ready"] = ready(item)
        if visibility.level(req, item["owner"]) == "owner" and redact is None and item["error"]:
            redact = visibility.redactor(req)
        visibility.apply(req, item, redact or (lambda text: text))
        item["readiness"] = visibility.readiness(item["nodes"])
        item["login"] = _login(req, item)
        item["summary"] = _res_summary(res)
        item["actions"] = actions_for(req, item)
        item.url = "%s/reservations/%d" % (base, rack)
        ls, le = start.astimezone(tz), end.astimezone(tz)
        item.end_input = le.strftime("%Y-%m-%d %H:%M")
        item.window = "%s %s → %s %s" % (ls.strftime("%Y-%m-%d %H:%M"), ls.tzname(),
                                         item.end_input, le.tzname())
        item.__dict__.update(item)  # plain attributes: the template's getattr hits at once
        out.append(item)
    return out


# Rendered View registrations pages, by everything they show (see _page_key): under mod_wsgi a
# page asked for again with nothing changed is not rendered again. Per process, a few pages.
_PAGES: "OrderedDict[tuple, str]" = OrderedDict()
_PAGES_MAX = 32
_PAGES_LOCK = threading.Lock()


def _page_key(req, template, more, rows, nodes, vols) -> tuple:
    """Every input of the rendered page: the request (path, query: filter, page, flash
    message), who asks (user, admin, the CSRF token of the forms), the site time zone, the
    template, the fetched data, and what depends on the clock (which ends are still ahead)."""
    now = req.now.timestamp()
    return (id(template), req.method, req.base, req.path, req.environ.get("QUERY_STRING", ""),
            req.user, req.admin, req.users_known, req.csrf_token, req.cfg.site.timezone, more,
            tuple(rows), tuple((rack, tuple(tuple(n.values()) for n in lst))
                               for rack, lst in sorted(nodes.items())),
            tuple((rack, tuple(tuple(v.values()) for v in lst))
                  for rack, lst in sorted(vols.items())),
            tuple(int(r[3]) > now for r in rows))


def reservations(req):
    show = req.query.get("show", "all")
    if show not in SHOWS:
        raise HTTPError(400, "show must be one of %s" % ", ".join(SHOWS))
    page = req.number("page", 1, 1, 10 ** 6)
    more, raw, nodes, vols = _fetch(req, show, page)
    data = {"page": page, "next_page": page + 1 if more else None, "show": show,
            "page_size": PAGE_SIZE, "user": req.user, "now": req.now}
    fl = flash(req)
    # just booked: the no-key warning once more (the booking itself was accepted)
    data["key_warning"] = _key_warning(req, req.user) if req.query.get("msg") == "created" \
        else None
    if req.wants_json:
        data["reservations"] = _build(req, raw, nodes, vols)
        return req.json(data)
    template = req.app.jinja().get_template("reservations.html")
    # + what the page shows besides the data: the warning, the login lines' frontend name
    key = _page_key(req, template, more, raw, nodes, vols) + (data["key_warning"],
                                                              req.cfg.site.frontend)
    with _PAGES_LOCK:
        body = _PAGES.get(key)
        if body is not None:
            _PAGES.move_to_end(key)
    if body is None:
        data["reservations"] = _build(req, raw, nodes, vols)
        body = req.render("reservations.html", dict(
            data, flash=fl, csrf_token=_safe(req.csrf_token)))
        with _PAGES_LOCK:
            _PAGES[key] = body
            while len(_PAGES) > _PAGES_MAX:
                _PAGES.popitem(last=False)
    return Response(body)


def _detail(req, rack: int) -> dict:
    from vc import reservations as R
    from vc.web import visibility

    r = R.get(req.db, rack)
    r["ready"] = bool(r.get("ready"))
    # the volumes whose LUN exists (their data goes with a confirmed delete): before the IQNs
    # are taken out for the owner
    r["volumes_with_data"] = [v["mount_point"] for v in r["volumes"] if v.get("iqn")]
    visibility.apply(req, r)
    r["readiness"] = visibility.readiness(r["nodes"])
    r["login"] = _login(req, r)
    r["summary"] = _res_summary(r["resources"])
    r["actions"] = actions_for(req, r)
    if r["visibility"] != "other":  # the owner's and admins': names hosts and targets
        from vc import preflight

        pf = preflight.last(req.db, rack)
        if pf and r["visibility"] == "owner":  # the frontend's paths, as in errors and events
            redact = visibility.redactor(req)
            pf["problems"] = [dict(p, where=redact(p["where"]), detail=redact(p["detail"]))
                              for p in pf["problems"]]
        r["preflight"] = pf
    return r


def _rack(rack) -> int:
    return number(rack, "rack", 1, MAX_ID)


def reservation(req, rack, error=None, end_value=None, status=200):
    r = _detail(req, _rack(rack))
    data = {"reservation": r, "error": error, "key_warning": _key_warning(req, r["owner"])}
    return req.page("reservation.html", data, status, flash=flash(req),
                    csrf_token=req.csrf_token, end_value=end_value)


def action(req, rack, action):
    from vc import reservations as R

    rack = _rack(rack)
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
            st = R.delete(req.cfg, req.db, rack, req.now, req.user, req.admin,
                          confirm_volumes=req.form.get("delete_volumes") == "yes")
            msg, back = ("deleted", "list") if st == states.DELETED else ("delete-pending", back)
            result = {"rack": rack, "state": st}
        elif action == "stop":
            before = rows[0]["state"]
            st = R.stop_now(req.cfg, req.db, rack, req.now, req.user, req.admin)
            msg = "stopped" if before == states.RESERVED else "stop-requested"
            result = {"rack": rack, "state": states.STOPPED if msg == "stopped" else st}
        else:
            longest, got = req.form.get("longest") == "yes", []
            end = R.extend(req.cfg, req.db, rack, req.form.get("end", ""), req.now, req.user,
                           req.admin, longest=longest, offer_out=got)
            msg, result = "extended", {"rack": rack, "end": end, "full": True}
            if got:
                result = got[0].as_dict(req.cfg.tzinfo())
                msg = "extended" if got[0].full else "extended-less"
    except ValidationError as e:
        if req.wants_json:
            return req.json({"error": str(e), "errors": e.errors}, 400)
        return reservation(req, rack, error="; ".join(e.errors.values()),
                           end_value=req.form.get("end", ""), status=400)
    except (CapacityError, VcError) as e:
        if isinstance(e, NotFound):
            raise
        if req.wants_json:
            out = {"error": str(e)}
            if getattr(e, "offer", None) is not None:
                out["longest"] = e.offer.as_dict(req.cfg.tzinfo())
            return req.json(out, 409)
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
    offset = req.number("offset", 0, 0, 10 ** 9) if one else 0

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

"""The lease inside the cluster: a small metadata service for the guests (like OpenStack's
metadata API or OpenNebula's OneGate), ``sbin/vc_metad.py``.

One port (``[notify] metad_bind``:``metad_port``) bound widely, but a request is answered only
when

* its **source address** is the private address of a node of a *running* cluster
  (``vcnode.ip``; unique among live clusters: ``vcalloc`` holds it), and
* it arrived on that cluster's own ``.1`` (the local address of the connection is the cluster
  subnet's first host, :attr:`vc.addresses.Plan.bridge_ip`).

Both together identify the cluster; nothing in the request names it, so a guest can neither
read nor change another cluster's lease. (A guest that forges a source address of another
cluster on its own isolated segment does not get the reply: the host routes it to the other
segment, and the TCP handshake fails.) Binding per cluster ``.1`` instead would need the daemon
to follow every start and stop; one widely bound port with this check needs nothing.

``GET /lease`` → JSON ``rack, node, state, start, end, seconds_left`` (``?format=text``: one
line for people). Writes need the cluster's token (made at its start, in every node's seed as
``/etc/vc/lease.token`` mode 0600, only its sha256 in ``vcleasetoken``) in the header
``X-VC-Lease-Token``:

* ``POST /lease/extend`` body ``{"by": "2h"}`` or ``{"end": "ISO 8601"}``, ``"longest": true``
  for the longest extension that fits (up to ``by``/``end`` when given): the same admission and
  limits as the pages (:func:`vc.reservations.extend`); the answer is the end actually granted;
  a refusal (409) carries the longest offer and what blocks the rest;
* ``POST /lease/release``: ends the reservation now (:func:`vc.reservations.stop_now`).

Bad input gets a clean 4xx and changes nothing: 400 (malformed token or body), 403 (not a node
of a running cluster, wrong token), 404, 405, 411, 413 (a body over :data:`MAX_BODY`), 409.
"""

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional
from urllib.parse import parse_qs, urlsplit

from vc import timeutil
from vc.db import naive_utc

LOG = logging.getLogger(__name__)
MAX_BODY = 4096
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
DURATION_RE = re.compile(r"^(?:(\d{1,5})d)?(?:(\d{1,6})h)?(?:(\d{1,7})m)?(?:(\d{1,9})s)?$")
TOKEN_FILE = "lease.token"


# ------------------------------------------------------------------------ the token
def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def ensure_token(cfg, db, rack: int, now) -> str:
    """The cluster's lease token: made at its first start (``secrets``, 256 bits), kept in
    ``state_dir/keys/rack-N/lease.token`` (0600, removed with the key pair at stop, so the next
    start makes a new one) and, hashed, in ``vcleasetoken``. Idempotent (a resumed start keeps
    it)."""
    from vc import designer

    d = designer.key_dir(cfg, rack)
    path = os.path.join(d, TOKEN_FILE)
    token = None
    if os.path.exists(path):
        with open(path) as f:
            token = f.read().strip()
        if not TOKEN_RE.match(token):
            token = None
    if token is None:
        os.makedirs(d, mode=0o700, exist_ok=True)
        token = secrets.token_urlsafe(32)
        tmp = path + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(token + "\n")
        os.replace(tmp, path)
    h = token_hash(token)
    db.transaction(lambda cur: cur.execute(
        "INSERT INTO vcleasetoken (rack, token_sha256, created_at) VALUES (%s, %s, %s) "
        "ON DUPLICATE KEY UPDATE token_sha256 = VALUES(token_sha256), "
        "created_at = IF(token_sha256 = VALUES(token_sha256), created_at, VALUES(created_at))",
        (rack, h, naive_utc(now))))
    return token


def lease_url(cfg, plan) -> str:
    """What the guests of ``plan``'s cluster call: its own ``.1``."""
    return "http://%s:%d" % (plan.bridge_ip, cfg.notify.metad_port)


# ------------------------------------------------------------------------ who is asking
def cluster_of(db, src: str, local: str) -> Optional[dict]:
    """The running cluster whose node has private address ``src``, provided the request came
    to that cluster's ``.1`` (``local``); else None. ``{rack, node, owner}``."""
    try:
        ipaddress.IPv4Address(src)
        ipaddress.IPv4Address(local)
    except ValueError:
        return None
    rows = db.query(
        "SELECT n.rack, n.name, r.owner, a.value AS subnet FROM vcnode n "
        "JOIN vcregist r ON r.rack = n.rack "
        "JOIN vcalloc a ON a.rack = n.rack AND a.kind = 'subnet' "
        "WHERE n.ip = %s AND r.state = 'running'", (src,))
    if len(rows) != 1:
        return None
    r = rows[0]
    net = ipaddress.IPv4Network(r["subnet"])
    if ipaddress.IPv4Address(src) not in net or str(next(net.hosts())) != local:
        return None
    return {"rack": r["rack"], "node": r["name"], "owner": r["owner"]}


def parse_duration(text) -> timedelta:
    """``2h``, ``30m``, ``1h30m``, ``90s``, ``1d`` (a bare number: minutes)."""
    s = str(text).strip().lower()
    if re.match(r"^\d{1,7}$", s):
        return timedelta(minutes=int(s))
    m = DURATION_RE.match(s)
    if not s or not m or not any(m.groups()):
        raise ValueError("a duration like 30m, 2h or 1h30m, got %r" % s[:40])
    d, h, mi, se = (int(x or 0) for x in m.groups())
    out = timedelta(days=d, hours=h, minutes=mi, seconds=se)
    if out <= timedelta(0) or out > timedelta(days=3650):
        raise ValueError("a duration between 1 s and 10 years, got %r" % s[:40])
    return out


def human(seconds: float) -> str:
    s = max(0, int(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return "%d d %d h %d min" % (d, h, m)
    if h:
        return "%d h %d min" % (h, m)
    if m:
        return "%d min" % m
    return "%d s" % s


# ------------------------------------------------------------------------ the service
class Refusal(Exception):
    def __init__(self, status, message, **extra):
        super().__init__(message)
        self.status, self.extra = status, extra


class Lease:
    """What the handler does, without HTTP (tests call it directly too)."""

    def __init__(self, cfg, db, clock: Callable = timeutil.utcnow, resolve=None):
        self.cfg, self.db, self.clock = cfg, db, clock
        self.resolve = resolve or (lambda src, local: cluster_of(db, src, local))

    def who(self, src, local) -> dict:
        c = self.resolve(src, local)
        if c is None:
            raise Refusal(403, "%s is not a node of a running cluster served here" % src)
        return c

    def read(self, c) -> dict:
        from vc import reservations as R

        r = R.get(self.db, c["rack"])
        now = self.clock()
        left = (r["end"] - now).total_seconds()
        tz = self.cfg.tzinfo()
        return {"rack": r["rack"], "node": c["node"], "owner": r["owner"], "state": r["state"],
                "start": timeutil.iso(r["start"]), "end": timeutil.iso(r["end"]),
                "end_local": timeutil.show(r["end"], tz), "seconds_left": max(0, int(left)),
                "text": "rack %d (%s) ends %s: %s left" % (
                    r["rack"], r["owner"], timeutil.show(r["end"], tz), human(left))}

    def check_token(self, c, token) -> None:
        if not token or not TOKEN_RE.match(token):
            raise Refusal(400, "missing or malformed lease token (X-VC-Lease-Token)")
        rows = self.db.query("SELECT token_sha256 FROM vcleasetoken WHERE rack = %s",
                             (c["rack"],))
        if not rows or not hmac.compare_digest(rows[0]["token_sha256"], token_hash(token)):
            raise Refusal(403, "wrong lease token for rack %d" % c["rack"])

    def extend(self, c, body: dict) -> dict:
        from vc import reservations as R
        from vc.errors import CapacityError, InvalidTransition, ValidationError, VcError

        tz = self.cfg.tzinfo()
        now = self.clock()
        unknown = set(body) - {"by", "end", "longest"}
        if unknown:
            raise Refusal(400, "unknown field(s): %s" % ", ".join(sorted(unknown))[:200])
        longest = body.get("longest", False)
        if not isinstance(longest, bool):
            raise Refusal(400, "longest must be true or false")
        if "by" in body and "end" in body:
            raise Refusal(400, "give by or end, not both")
        cur = R.get(self.db, c["rack"])
        target = None
        if "by" in body:
            try:
                target = cur["end"] + parse_duration(body["by"])
            except ValueError as e:
                raise Refusal(400, "by: %s" % e) from None
        elif "end" in body:
            if not isinstance(body["end"], str) or len(body["end"]) > 64:
                raise Refusal(400, "end must be a time like 2026-12-24T18:00")
            try:
                target = timeutil.parse(body["end"], tz, now)
            except ValueError as e:
                raise Refusal(400, "end: %s" % e) from None
        elif not longest:
            raise Refusal(400, "give by (e.g. 2h), end, or longest")
        actor = "%s (vc-lease %s)" % (c["owner"], c["node"])
        got = []
        try:
            end = R.extend(self.cfg, self.db, c["rack"], target, now, actor[:64], admin=True,
                           longest=longest, offer_out=got)
        except CapacityError as e:
            offer = getattr(e, "offer", None)
            extra = {}
            if offer is not None:
                extra["longest"] = _jsonable(offer.as_dict(tz))
            raise Refusal(409, str(e), **extra) from None
        except ValidationError as e:
            raise Refusal(409 if target and target > cur["end"] else 400, str(e)) from None
        except (InvalidTransition, VcError) as e:
            raise Refusal(409, str(e)) from None
        out = {"rack": c["rack"], "old_end": timeutil.iso(cur["end"]), "end": timeutil.iso(end),
               "asked": timeutil.iso(target) if target else None, "full": True, "why": "",
               "seconds_left": max(0, int((end - now).total_seconds()))}
        text = "rack %d now ends %s (%s left)" % (c["rack"], timeutil.show(end, tz),
                                                 human((end - now).total_seconds()))
        if got:
            o = got[0]
            out.update(full=o.full, why=o.why(tz),
                       blocked_by=list(o.short.racks) if o.short else [])
            if not o.full:
                text += " — %s: %s" % ("less than asked" if o.asked else "the longest possible",
                                       o.why(tz))
        out["text"] = text
        return out

    def release(self, c) -> dict:
        from vc import reservations as R
        from vc.errors import VcError

        actor = "%s (vc-lease %s)" % (c["owner"], c["node"])
        try:
            st = R.stop_now(self.cfg, self.db, c["rack"], self.clock(), actor[:64], admin=True)
        except VcError as e:
            raise Refusal(409, str(e)) from None
        return {"rack": c["rack"], "state": st,
                "text": "rack %d ends now: the tick stops the cluster" % c["rack"]}


def _jsonable(d):
    return {k: timeutil.iso(v) if hasattr(v, "isoformat") else v for k, v in d.items()}


class Handler(BaseHTTPRequestHandler):
    server_version = "vc-metad"
    sys_version = ""
    protocol_version = "HTTP/1.0"
    timeout = 10  # a client that sends nothing is dropped (slowloris)

    def log_message(self, fmt, *args):  # pragma: no cover - logging only
        LOG.info("%s %s", self.client_address[0], fmt % args)

    @property
    def lease(self) -> Lease:
        return self.server.lease

    def _send(self, status, obj, text_wanted=False):
        if text_wanted:
            msg = obj.get("text") or obj.get("error") or ""
            offer = obj.get("longest")
            if offer and offer.get("extended_by_seconds"):
                msg += "\nlongest possible: until %s (+%s): vc-lease extend --longest" % (
                    offer["end"], human(offer["extended_by_seconds"]))
            data, ctype = (msg + "\n").encode("utf-8"), "text/plain; charset=utf-8"
        else:
            data, ctype = (json.dumps(obj, sort_keys=True) + "\n").encode("utf-8"), \
                "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self, method):
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        text = q.get("format", [""])[0] == "text"
        try:
            routes = {"/lease": ("GET",), "/lease/extend": ("POST",),
                      "/lease/release": ("POST",)}
            if url.path not in routes:
                raise Refusal(404, "no such path (try GET /lease)")
            if method not in routes[url.path]:
                raise Refusal(405, "%s %s is not allowed" % (method, url.path))
            c = self.lease.who(self.client_address[0], self.connection.getsockname()[0])
            if method == "GET":
                return self._send(200, self.lease.read(c), text)
            body = self._body()
            self.lease.check_token(c, self.headers.get("X-VC-Lease-Token", "").strip())
            if url.path == "/lease/extend":
                return self._send(200, self.lease.extend(c, body), text)
            return self._send(200, self.lease.release(c), text)
        except Refusal as e:
            out = {"error": str(e), "status": e.status}
            out.update(e.extra)
            return self._send(e.status, out, text)
        except Exception:  # never a traceback to a guest
            LOG.exception("metad: %s %s from %s", method, self.path, self.client_address[0])
            return self._send(500, {"error": "internal error (see the frontend's log)",
                                    "status": 500}, text)

    def _body(self) -> dict:
        n = self.headers.get("Content-Length")
        if n is None:
            raise Refusal(411, "a POST needs Content-Length")
        if not re.match(r"^\d{1,9}$", n.strip()):
            raise Refusal(400, "bad Content-Length")
        n = int(n)
        if n > MAX_BODY:
            raise Refusal(413, "body too large (at most %d bytes)" % MAX_BODY)
        raw = self.rfile.read(n) if n else b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise Refusal(400, "the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise Refusal(400, "the body must be a JSON object")
        return body

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def make_server(cfg, db, bind=None, port=None, clock=timeutil.utcnow, resolve=None) -> Server:
    srv = Server((bind or cfg.notify.metad_bind, cfg.notify.metad_port if port is None else port),
                 Handler)
    srv.lease = Lease(cfg, db, clock, resolve)
    return srv


def serve_in_thread(srv: Server) -> threading.Thread:
    t = threading.Thread(target=srv.serve_forever, name="vc-metad", daemon=True)
    t.start()
    return t


def main(argv=None) -> int:
    """``sbin/vc_metad.py [--bind A] [--port N]``: serve until SIGTERM."""
    import argparse
    import signal

    from vc import config
    from vc.db import Database

    p = argparse.ArgumentParser(prog="vc_metad.py", description="VC's lease service for the "
                                "guests (GET /lease, POST /lease/extend, POST /lease/release)")
    p.add_argument("--bind")
    p.add_argument("--port", type=int)
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    cfg = config.load(config.default_path())
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s vc-metad %(levelname)s %(message)s")
    srv = make_server(cfg, Database(cfg), a.bind, a.port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    LOG.info("listening on %s:%d", *srv.server_address[:2])
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    srv.server_close()
    return 0

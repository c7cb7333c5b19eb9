"""The WSGI application: requests, routing, the security checks every request passes, rendering
and error handling. The pages themselves are in :mod:`vc.web.views`, :mod:`vc.web.targets` and
:mod:`vc.web.timeline`, imported only when a request is routed to them.

Every request:

1. must name a loopback ``Host`` (users come in through an SSH port-forward; this stops DNS
   rebinding);
2. gets a user: ``REMOTE_USER``, which the web server sets when it authenticated someone
   (``[web] auth = pam`` or ``htpasswd``, the default: a request without it is refused with 403,
   never served as a default user); only with an explicit ``[web] auth = single-user`` does a
   request without it act as ``[web] user``, and every page then says so;
3. if it is a POST: must not come from another site (``Origin``/``Referer``) and must carry the
   form's CSRF token (:mod:`vc.web.security`);
4. never shows a traceback: an unexpected error is logged with a reference id, which is all the
   page shows.
"""

import logging
import os
import re
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, quote, urlencode

from vc import timeutil
from vc.errors import (ConfigError, DatabaseError, NotFound, SchemaError, ValidationError,
                       VcError)
from vc.web import security

LOG = logging.getLogger("vc.web")
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATES = os.path.join(CHECKOUT, "templates")
MAX_BODY = 64 * 1024
# Apache's own limit (LimitRequestBody in tools/web.sh and etc/apache-vc.conf): a larger body is
# answered 413 by Apache before the CGI reads any of it; up to this the app drains it itself
APACHE_MAX_BODY = 1024 * 1024
MAX_ID = 2 ** 31 - 1  # racks, target and key ids are INT columns
# what REMOTE_USER may be: vc.config's user names (letters, digits, . _ @ -; at most 64, the
# owner column): Kerberos principals (alice@EXAMPLE.ORG) included
USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}\Z")

STATUS = {200: "OK", 201: "Created", 303: "See Other", 304: "Not Modified", 400: "Bad Request",
          401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
          409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type",
          421: "Misdirected Request", 500: "Internal Server Error", 503: "Service Unavailable"}

SECURITY_HEADERS = [
    # no scripts at all; inline CSS only; forms only to ourselves; never framed (clickjacking)
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
                                "img-src 'self' data:; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
]

# (methods, path regex, "module:function"); the handler gets the regex groups as str kwargs
ROUTES: List[Tuple[Tuple[str, ...], str, str]] = [
    (("GET",), r"/", "vc.web.views:menu"),
    (("GET",), r"/targets", "vc.web.targets:index"),
    (("POST",), r"/targets/add", "vc.web.targets:add"),
    (("GET", "POST"), r"/targets/(?P<tid>[^/]+)/edit", "vc.web.targets:edit"),
    (("POST",), r"/targets/(?P<tid>[^/]+)/delete", "vc.web.targets:delete"),
    (("POST",), r"/targets/(?P<tid>[^/]+)/test", "vc.web.targets:test"),
    (("POST",), r"/targets/(?P<tid>[^/]+)/pin", "vc.web.targets:pin"),
    (("GET", "POST"), r"/register", "vc.web.views:register"),
    (("GET",), r"/reservations", "vc.web.views:reservations"),
    (("GET",), r"/reservations/(?P<rack>[^/]+)", "vc.web.views:reservation"),
    (("POST",), r"/reservations/(?P<rack>[^/]+)/(?P<action>delete|stop|extend)",
     "vc.web.views:action"),
    (("GET",), r"/timeline", "vc.web.timeline:page"),
    (("GET",), r"/timeline\.svg", "vc.web.timeline:svg"),
    (("GET",), r"/tables", "vc.web.views:tables"),
    (("GET",), r"/keys", "vc.web.keys:index"),
    (("POST",), r"/keys", "vc.web.keys:add"),
    (("POST",), r"/keys/(?P<kid>[^/]+)/delete", "vc.web.keys:delete"),
]
_COMPILED = [(m, re.compile(p + r"\Z"), h) for m, p, h in ROUTES]


class HTTPError(Exception):
    """Answer with ``status`` and ``message`` (shown to the user)."""

    def __init__(self, status: int, message: str, headers=None):
        super().__init__(message)
        self.status = status
        self.headers = headers or []


class Response:
    def __init__(self, body=b"", status=200, content_type="text/html; charset=utf-8",
                 headers=None):
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.status = status
        self.headers = [("Content-Type", content_type)] + list(headers or [])


def redirect(location: str) -> Response:
    """303 See Other: after a POST the browser GETs the result page (reload does not resend)."""
    return Response(b"", 303, "text/plain; charset=utf-8", [("Location", location)])


# ------------------------------------------------------------------------ request
class Request:
    """One request: who asks, what, and the tools to answer (config, db, clock, rendering)."""

    def __init__(self, app: "App", environ: dict, cfg, settings):
        self.app = app
        self.environ = environ
        self.cfg = cfg
        self.settings = settings
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.base = environ.get("SCRIPT_NAME", "").rstrip("/")
        self.path = environ.get("PATH_INFO", "") or ""
        self.query: Dict[str, str] = {}
        self.query_lists: Dict[str, List[str]] = {}
        for k, v in parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True):
            self.query.setdefault(k, v)
            self.query_lists.setdefault(k, []).append(v)
        remote = (environ.get("REMOTE_USER") or "").strip()
        # single_user: nobody is authenticated and everyone acts as [web] user (explicit only)
        self.single_user = settings.auth == "single-user" and not remote
        self.users_known = not self.single_user
        self.user = remote if remote else (settings.user if self.single_user else "")
        # why this request may not be served (checked before routing), or None
        self.auth_problem: Optional[str] = None
        if not self.single_user and not remote:
            self.auth_problem = (
                "nobody is signed in: the web server must authenticate you ([web] auth = %s; "
                "see etc/apache-vc.conf), or the administrator may set [web] auth = single-user"
                % settings.auth)
        elif remote and not USER_RE.match(remote):
            self.user = ""
            self.auth_problem = ("the web server signed you in as %r, which is not a user name "
                                 "VC can use (letters, digits, . _ @ -; at most 64)"
                                 % remote[:80])
        self.admin = bool(self.user) and self.user in cfg.site.admins
        self.now = app.clock()
        self._form: Optional[Dict[str, str]] = None
        self._db = None
        self._token: Optional[str] = None

    # -------------------------------------------------------------- input
    @property
    def form(self) -> Dict[str, str]:
        """The urlencoded POST body (first value of each field)."""
        if self._form is None:
            self._form = {}
            for k, v in self.form_items():
                self._form.setdefault(k, v)
        return self._form

    def form_items(self) -> List[Tuple[str, str]]:
        if not hasattr(self, "_items"):
            ctype = self.environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
            raw = self.environ.get("vc.body", b"")
            if raw is None:
                raise HTTPError(413, "the form is larger than %d bytes" % MAX_BODY)
            if raw and ctype not in ("application/x-www-form-urlencoded", ""):
                raise HTTPError(415, "forms must be sent as application/x-www-form-urlencoded")
            try:
                text = raw.decode("utf-8")
                self._items = parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                                        max_num_fields=500)
            except (UnicodeDecodeError, ValueError):
                raise HTTPError(400, "the form could not be read (not UTF-8 urlencoded)") from None
        return self._items

    @property
    def wants_json(self) -> bool:
        fmt = self.query.get("format")
        if fmt is not None:
            return fmt == "json"
        accept = self.environ.get("HTTP_ACCEPT", "")
        return "application/json" in accept and "text/html" not in accept

    # -------------------------------------------------------------- tools
    @property
    def db(self):
        if self._db is None:
            self._db = self.app.database(self.cfg)
        return self._db

    @property
    def may_admin_pages(self) -> bool:
        """Target setup and Show all tables: admins, or anyone in single-user mode."""
        return self.admin or not self.users_known

    def require_admin_pages(self):
        if not self.may_admin_pages:
            raise HTTPError(403, "this page is for admins only (you are %s)" % self.user)

    def may_change(self, owner: str) -> bool:
        return self.admin or owner == self.user

    def number(self, name: str, default, lo: int, hi: int):
        """The query parameter ``name`` as a whole number in ``[lo, hi]`` (``default`` when it is
        absent or empty). :raises HTTPError: 400 naming the parameter."""
        raw = self.query.get(name, "")
        if raw == "":
            return default
        return number(raw, name, lo, hi)

    @property
    def csrf_token(self) -> str:
        if self._token is None:
            # issued at a 10-minute mark: the same token for a while, so a page can be reused
            issued = time.time() // security.TOKEN_STEP * security.TOKEN_STEP
            self._token = security.make_token(self.app.secret(self.cfg), self.user, issued)
        return self._token

    def url(self, path: str = "/", **query) -> str:
        q = {k: v for k, v in query.items() if v is not None and v != ""}
        return self.base + quote(path) + ("?" + urlencode(q) if q else "")

    @property
    def json_url(self) -> str:
        """This page's JSON twin."""
        q = [(k, v) for k, v in parse_qsl(self.environ.get("QUERY_STRING", ""),
                                          keep_blank_values=True) if k not in ("format", "msg")]
        q.append(("format", "json"))
        return self.base + quote(self.path or "/") + "?" + urlencode(q)

    def tz(self):
        return self.cfg.tzinfo()

    def show(self, dt) -> str:
        return timeutil.show(dt, self.tz())

    def local_input(self, dt) -> str:
        """A time as the forms show it: site zone, no offset (typed back as such)."""
        return "" if dt is None else dt.astimezone(self.tz()).strftime("%Y-%m-%d %H:%M")

    # -------------------------------------------------------------- output
    def page(self, template: str, data: dict, status: int = 200, **extra) -> Response:
        """The HTML page, or its JSON twin when the client asked for JSON (``data`` only)."""
        if self.wants_json:
            return self.json(data, status)
        return Response(self.render(template, dict(data, **extra)), status)

    def render(self, template: str, ctx: dict) -> str:
        env = self.app.jinja()
        return env.get_template(template).render(req=self, **ctx)

    def json(self, obj, status=200) -> Response:
        return Response(to_json(obj), status, "application/json; charset=utf-8")


def number(value, what: str, lo: int, hi: int) -> int:
    """:func:`vc.numbers.parse_int`, a bad value answered with HTTP 400 and its message."""
    from vc.numbers import parse_int

    try:
        return parse_int(value, what, lo, hi)
    except ValidationError as e:
        raise HTTPError(400, "; ".join(e.errors.values())) from None


def to_json(obj) -> str:
    import json
    from datetime import datetime

    def default(o):
        if isinstance(o, datetime):
            return timeutil.iso(o)
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        raise TypeError(type(o).__name__)

    return json.dumps(obj, default=default, indent=1, sort_keys=True) + "\n"


# ------------------------------------------------------------------------ the app
class App:
    """The WSGI callable.

    :param cfg: a fixed :class:`vc.config.Config` (tests); None = load ``VC_CONFIG`` (from the
        WSGI environ first, as mod_wsgi's ``SetEnv`` gives it, then the process environment).
    :param settings: fixed ``[web]`` settings (a :class:`vc.config.Web`); None = the config's
        ``cfg.web``.
    :param clock: returns the current aware UTC time (tests pass a fixed one).
    :param persistent_db: keep one database connection per thread between requests
        (mod_wsgi, dev server); CGI serves one request per process and does not need it.
    """

    def __init__(self, cfg=None, settings=None, clock: Optional[Callable] = None,
                 persistent_db: bool = False):
        self.fixed_cfg = cfg
        self.fixed_settings = settings
        self.clock = clock or timeutil.utcnow
        self.persistent_db = persistent_db
        self._cfg_cache: Dict[str, tuple] = {}
        self._secrets: Dict[str, bytes] = {}
        self._env = None
        self._local = threading.local()
        self._lock = threading.Lock()

    # -------------------------------------------------------------- per-process resources
    def config(self, environ):
        if self.fixed_cfg is not None:
            return self.fixed_cfg, self.fixed_settings or self.fixed_cfg.web
        from vc import config as vconfig

        path = environ.get("VC_CONFIG") or os.environ.get("VC_CONFIG") or vconfig.default_path()
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            mtime = None
        hit = self._cfg_cache.get(path)
        if hit and hit[0] == mtime and mtime is not None:
            return hit[1], hit[2]
        cfg = vconfig.load(path)
        settings = self.fixed_settings or cfg.web
        setup_logging(cfg)
        self._cfg_cache[path] = (mtime, cfg, settings)
        return cfg, settings

    def secret(self, cfg) -> bytes:
        s = self._secrets.get(cfg.site.state_dir)
        if s is None:
            try:
                s = security.load_secret(cfg)
            except OSError as e:
                raise VcError("the web pages' secret %s is missing and cannot be created here "
                              "(%s); run tools/web.sh start (or python -m vc.web.prepare) as "
                              "root" % (security.secret_path(cfg), e.strerror or e)) from None
            self._secrets[cfg.site.state_dir] = s
        return s

    def database(self, cfg):
        from vc.db import Database

        if not self.persistent_db:
            return Database(cfg)
        return _PooledDatabase(cfg, self._local)

    def jinja(self):
        if self._env is None:
            with self._lock:
                if self._env is None:
                    self._env = make_jinja()
        return self._env

    # -------------------------------------------------------------- WSGI
    def __call__(self, environ, start_response):
        resp = self.handle(environ)
        headers = resp.headers + SECURITY_HEADERS
        body = resp.body if environ.get("REQUEST_METHOD", "GET").upper() != "HEAD" else b""
        headers.append(("Content-Length", str(len(resp.body))))
        start_response("%d %s" % (resp.status, STATUS.get(resp.status, "Status")), headers)
        return [body]

    def handle(self, environ) -> Response:
        req = None
        try:
            read_body(environ)
            security.check_host(environ)
            cfg, settings = self.config(environ)
            req = Request(self, environ, cfg, settings)
            if req.auth_problem:
                LOG.warning("refused %s %s: %s", req.method, req.path, req.auth_problem)
                raise HTTPError(403, req.auth_problem)
            handler, kwargs = self.route(req)
            if req.method == "POST":
                security.check_origin(environ)
                reason = security.check_token(self.secret(cfg), req.user,
                                              req.form.get("csrf", ""))
                if reason:
                    LOG.warning("refused POST %s by %s: %s", req.path, req.user, reason)
                    raise security.Refused("refused: %s" % reason, 403)
            return handler(req, **kwargs)
        except HTTPError as e:
            return self.error_page(req, environ, e.status, str(e), e.headers)
        except security.Refused as e:
            return self.error_page(req, environ, e.status, str(e))
        except NotFound as e:
            return self.error_page(req, environ, 404, str(e))
        except (ConfigError, SchemaError) as e:
            LOG.error("%s", e)
            return self.error_page(req, environ, 500, str(e))
        except DatabaseError as e:
            LOG.error("%s", e)
            return self.error_page(req, environ, 503, str(e))
        except VcError as e:
            return self.error_page(req, environ, 409, str(e))
        except Exception:
            ref = os.urandom(6).hex()  # (uuid would import platform: ~2 ms a CGI)
            LOG.exception("internal error, reference %s, %s %s", ref,
                          environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            return self.error_page(req, environ, 500, "internal error (a bug): the log has the "
                                   "details under reference %s" % ref, ref=ref)

    def route(self, req: Request):
        path = req.path
        if path == "":
            raise HTTPError(303, "moved", [("Location", req.base + "/")])
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        allowed = []
        for methods, rx, target in _COMPILED:
            m = rx.match(path)
            if not m:
                continue
            meth = "GET" if req.method == "HEAD" else req.method
            if meth not in methods:
                allowed.extend(methods)
                continue
            mod, _, func = target.partition(":")
            __import__(mod)
            return getattr(sys.modules[mod], func), m.groupdict()
        if allowed:
            raise HTTPError(405, "%s is not allowed here (use %s)" % (req.method,
                                                                      ", ".join(allowed)),
                            [("Allow", ", ".join(sorted(set(allowed))))])
        raise HTTPError(404, "there is no page %s" % (req.base + path))

    def error_page(self, req, environ, status, message, headers=None, ref=None) -> Response:
        headers = list(headers or [])
        if status == 303:
            return Response(b"", 303, "text/plain; charset=utf-8", headers)
        try:
            if req is not None and req.wants_json:
                out = req.json({"error": message, "status": status}, status)
            elif req is not None:
                out = Response(req.render("error.html", {"status": status, "message": message,
                                                         "ref": ref}), status)
            else:
                out = Response(message + "\n", status, "text/plain; charset=utf-8")
        except Exception:  # the error page itself failed: plain text, still no traceback
            LOG.exception("error page failed")
            out = Response(message + "\n", status, "text/plain; charset=utf-8")
        out.headers.extend(headers)
        return out


def read_body(environ):
    """Read the whole request body first, whatever the answer will be: a CGI that exits with
    unread input makes mod_cgid's socket reset, and the browser gets a truncated page.
    ``environ["vc.body"]`` is the bytes, or None when larger than :data:`MAX_BODY`."""
    if "vc.body" in environ:
        return
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ.get("wsgi.input")
    if length <= 0 or stream is None:
        environ["vc.body"] = b""
        return
    if length <= MAX_BODY:
        environ["vc.body"] = stream.read(length)
        return
    left = min(length, 64 * MAX_BODY)  # drain a too-large body (up to 4 MB), keep none of it
    while left > 0:
        chunk = stream.read(min(left, 65536))
        if not chunk:
            break
        left -= len(chunk)
    environ["vc.body"] = None


IDLE_PING = 5.0


class _PooledDatabase:
    """A :class:`vc.db.Database` that reuses one connection per thread (pinged after
    :data:`IDLE_PING` idle seconds)."""

    def __init__(self, cfg, local):
        from vc.db import Database

        self._db = Database(cfg)
        self._local = local
        self.cfg = cfg

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        d = self.cfg.database
        key = (d.unix_socket, d.host, d.port, d.name, d.user)
        now = time.monotonic()
        if conn is not None and getattr(self._local, "key", None) == key:
            # a connection used in the last seconds is alive; an idle one is pinged (the
            # server may have restarted or timed it out)
            if now - self._local.used < IDLE_PING:
                self._local.used = now
                return conn
            try:
                conn.ping(reconnect=False)
                self._local.used = now
                return conn
            except Exception:
                try:
                    conn.close()
                except Exception:
                    pass
        conn = self._db.connect()
        self._local.conn, self._local.key, self._local.used = conn, key, now
        return conn

    def transaction(self, fn, conn=None):
        if conn is not None:
            return self._db.transaction(fn, conn=conn)
        conn = self._conn()
        try:
            return self._db.transaction(fn, conn=conn)
        except Exception:
            if not conn.open:  # lost: the next request connects afresh
                self._local.conn = None
            raise

    def query(self, sql, args=()):
        def run(cur):
            cur.execute(sql, args)
            return list(cur.fetchall())

        return self.transaction(run)

    def __getattr__(self, name):
        return getattr(self._db, name)


def make_jinja():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      bytecode_cache=_bytecode_cache(), auto_reload=True)
    return env


def _bytecode_cache():
    """Under CGI every request would compile the templates again (several ms): the Apache config
    names a cache directory the web user owns (``VC_WEB_CACHE``)."""
    d = os.environ.get("VC_WEB_CACHE")
    if not d or not os.path.isdir(d) or not os.access(d, os.W_OK):
        return None
    from jinja2 import FileSystemBytecodeCache

    return FileSystemBytecodeCache(d, "vc-%s.cache")


_LOGGING_DONE = False


def setup_logging(cfg):
    """Log to ``[site] log_file`` when this process may append to it, else to stderr (which
    Apache puts in its error log)."""
    global _LOGGING_DONE
    if _LOGGING_DONE or logging.getLogger().handlers or logging.getLogger("vc").handlers:
        _LOGGING_DONE = True
        return
    _LOGGING_DONE = True
    handler = None
    if cfg.site.log_file:
        try:
            handler = logging.FileHandler(cfg.site.log_file)
        except OSError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s "
                                           "%(message)s"))
    log = logging.getLogger("vc")
    log.addHandler(handler)
    log.setLevel(logging.INFO)


# what cgi-bin/vc.cgi and vc.web.wsgi serve (configuration from VC_CONFIG)
application = App()

"""Helpers for the web tests: a config for the test database, and a WSGI test client."""

import io
import re
from urllib.parse import urlencode

from conftest import NOW, db_overrides, make_cfg
from vc.web import security
from vc.web.app import App
from vc.web.settings import WebSettings

TOKEN_RE = re.compile(r'name="csrf" value="([^"]+)"')


def web_config(dbinfo, state_dir, **site):
    over = db_overrides(dbinfo)
    over["site"] = dict({"timezone": "Asia/Tokyo", "admins": "root alice",
                         "state_dir": str(state_dir)}, **site)
    return make_cfg(over)


class Result:
    def __init__(self, status, headers, body):
        self.status = int(status.split()[0])
        self.headers = dict(headers)
        self.header_list = headers
        self.text = body.decode("utf-8")

    @property
    def token(self):
        m = TOKEN_RE.search(self.text)
        assert m, "no CSRF token in the page"
        return m.group(1)

    def json(self):
        import json

        return json.loads(self.text)

    @property
    def messages(self):
        """The field messages shown on a form page."""
        return [unescape(m) for m in re.findall(r'class="msg"[^>]*>(.*?)</div>', self.text, re.S)]

    @property
    def location(self):
        return self.headers.get("Location")

    def __repr__(self):
        return "<Result %d %s>" % (self.status, self.text[:200])


def unescape(s):
    import html

    return html.unescape(s)


class Client:
    """Calls the WSGI app in-process the way a server would."""

    def __init__(self, app, user=None, host="localhost:8080"):
        self.app = app
        self.user = user  # REMOTE_USER (None: single-user mode)
        self.host = host

    def request(self, method, path, query="", body=b"", headers=None, content_type=None):
        if isinstance(query, dict):
            query = urlencode(query)
        environ = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "/vc", "PATH_INFO": path,
            "QUERY_STRING": query, "SERVER_NAME": "localhost", "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(),
            "CONTENT_LENGTH": str(len(body)) if body else "",
            "CONTENT_TYPE": content_type or ("application/x-www-form-urlencoded" if body else ""),
        }
        if self.host is not None:
            environ["HTTP_HOST"] = self.host
        if self.user:
            environ["REMOTE_USER"] = self.user
        environ.update(headers or {})
        out = {}

        def start_response(status, hdrs):
            out["status"], out["headers"] = status, hdrs

        chunks = self.app(environ, start_response)
        return Result(out["status"], out["headers"], b"".join(chunks))

    def get(self, path, query="", **kw):
        return self.request("GET", path, query, **kw)

    def token(self):
        """A valid CSRF token for this client's user."""
        cfg = self.app.fixed_cfg
        who = self.user or (self.app.fixed_settings or WebSettings()).user
        return security.make_token(self.app.secret(cfg), who)

    def post(self, path, data=None, csrf=True, origin="http://localhost:8080", headers=None,
             query=""):
        data = dict(data or {})
        if csrf is True:
            data["csrf"] = self.token()
        elif csrf:
            data["csrf"] = csrf
        h = dict(headers or {})
        if origin:
            h["HTTP_ORIGIN"] = origin
        return self.request("POST", path, query, body=urlencode(data).encode(), headers=h)


def make_app(cfg, now=NOW, user="root", auth="single-user"):
    """The app on ``cfg`` at the fixed time ``now``. ``auth``: single-user (the default here,
    so that a Client without a user acts as ``user``, root) or pam/htpasswd (the configuration's
    default: a request without REMOTE_USER is refused)."""
    return App(cfg=cfg, settings=WebSettings(user=user, auth=auth), clock=lambda: now)

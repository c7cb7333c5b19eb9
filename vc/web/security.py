"""Request checks of the web pages: the per-install secret, CSRF tokens, Origin/Referer and Host.

There are no sessions or cookies. A form carries a token ``<issued>.<hmac>`` where the HMAC (key:
a random secret generated once into ``<state_dir>/web/csrf.key``) covers the user name and the
issue time. A page on another site cannot read our pages, so it cannot learn a token; and a POST
whose ``Origin`` (or, without one, ``Referer``) names another site is refused before the token is
even looked at. The ``Host`` check refuses DNS-rebinding: users come in through an SSH
port-forward, so the name in the address bar is always a loopback one.
"""

import hashlib
import hmac
import ipaddress
import logging
import os
import time
from typing import Optional
from urllib.parse import urlsplit

LOG = logging.getLogger(__name__)

TOKEN_TTL = 24 * 3600  # a form left open over night still works the next morning
TOKEN_STEP = 600  # pages issue tokens at 10-minute marks
SECRET_BYTES = 32


class Refused(Exception):
    """A request refused for a security reason; ``status`` is the HTTP status to answer."""

    def __init__(self, message, status=403):
        super().__init__(message)
        self.status = status


def secret_path(cfg) -> str:
    return os.path.join(cfg.site.state_dir, "web", "csrf.key")


def load_secret(cfg, create: bool = True) -> bytes:
    """The per-install secret, generated once (atomically: two first requests agree on one).

    :raises OSError: when it is missing and cannot be created (the web user may not write the
        state dir: ``tools/web.sh start`` creates it as root).
    """
    path = secret_path(cfg)
    try:
        with open(path, "rb") as f:
            data = f.read().strip()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        if not create:
            raise
    d = os.path.dirname(path)
    os.makedirs(d, mode=0o755, exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        os.write(fd, os.urandom(SECRET_BYTES).hex().encode() + b"\n")
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process won the race: use theirs
        LOG.info("generated the web secret %s", path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    with open(path, "rb") as f:
        return f.read().strip()


def make_token(secret: bytes, user: str, now: Optional[float] = None) -> str:
    issued = int(now if now is not None else time.time())
    mac = hmac.new(secret, ("csrf|%s|%d" % (user, issued)).encode(), hashlib.sha256).hexdigest()
    return "%d.%s" % (issued, mac)


def check_token(secret: bytes, user: str, token: str, now: Optional[float] = None) -> Optional[str]:
    """None when ``token`` is valid for ``user``, else the reason (for the log and the page)."""
    now = now if now is not None else time.time()
    if not token:
        return "the form has no security token"
    issued, _, mac = token.partition(".")
    if not (issued.isascii() and issued.isdigit() and len(issued) <= 12) or len(mac) != 64:
        return "the form's security token is malformed"
    want = hmac.new(secret, ("csrf|%s|%s" % (user, issued)).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, mac):
        return "the form's security token is not valid for you"
    age = now - int(issued)
    if age > TOKEN_TTL or age < -300:
        return "the form is too old (security token expired); load the page again"
    return None


SIGNED_TTL = 15 * 60  # a signed value (e.g. a scanned host key) is good for a quarter hour


def _signature(secret: bytes, purpose: str, user: str, values, issued: str) -> str:
    # each value length-prefixed: ("a|b", "c") and ("a", "b|c") sign differently
    text = "%s|%s|%s|%s" % (purpose, len(user), user, issued) + "".join(
        "|%d:%s" % (len(v), v) for v in (str(x) for x in values))
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def sign(secret: bytes, purpose: str, user: str, values, now: Optional[float] = None) -> str:
    """A token ``<issued>.<hmac>`` saying: the server itself gave ``user`` these ``values`` for
    ``purpose`` (e.g. ``pin``: the target id, its address and port and the host key fingerprint
    VC scanned there). It goes into a hidden form field beside the values; :func:`check_signed`
    tells whether the values came back unchanged, for the same user, within
    :data:`SIGNED_TTL`."""
    issued = str(int(now if now is not None else time.time()))
    return "%s.%s" % (issued, _signature(secret, purpose, user, values, issued))


def check_signed(secret: bytes, purpose: str, user: str, values, token: str,
                 now: Optional[float] = None, ttl: int = SIGNED_TTL) -> Optional[str]:
    """None when ``token`` is :func:`sign`'s for exactly these values, else the reason."""
    now = now if now is not None else time.time()
    issued, _, mac = (token or "").partition(".")
    if not (issued.isascii() and issued.isdigit() and len(issued) <= 12) or len(mac) != 64:
        return "the form does not carry what VC saw (no valid signature)"
    if not hmac.compare_digest(_signature(secret, purpose, user, values, issued), mac):
        return "the form's values are not the ones VC gave you"
    age = now - int(issued)
    if age > ttl or age < -300:
        return "the form is too old; do it again"
    return None


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, ``*.localhost``, 127.0.0.0/8 and ::1 (with or without a port)."""
    if not host:
        return False
    h = host.strip().lower()
    if h.startswith("["):
        h = h[1:h.find("]")] if "]" in h else h[1:]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    h = h.rstrip(".")
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def own_origin(environ) -> str:
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST") or "%s:%s" % (environ.get("SERVER_NAME", ""),
                                                  environ.get("SERVER_PORT", ""))
    return "%s://%s" % (scheme, host.lower())


def _origin_of(url: str) -> Optional[str]:
    try:
        p = urlsplit(url)
    except ValueError:
        return None
    if not p.scheme or not p.netloc:
        return None
    return "%s://%s" % (p.scheme.lower(), p.netloc.lower())


def _same(a: str, b: str) -> bool:
    """Origins equal, treating an explicit default port as absent."""
    def norm(o):
        for scheme, port in (("http", ":80"), ("https", ":443")):
            if o.startswith(scheme + "://") and o.endswith(port):
                return o[: -len(port)]
        return o
    return norm(a) == norm(b)


def check_host(environ):
    """Refuse a request whose ``Host`` is not a loopback name (DNS rebinding)."""
    host = environ.get("HTTP_HOST", "")
    if host and not is_loopback_host(host):
        raise Refused("this server answers only to localhost names (reach it through an SSH "
                      "port-forward, e.g. http://localhost:8080/vc/), not to %r" % host[:80], 421)


def check_origin(environ):
    """Refuse a POST that another site's page made the browser send."""
    mine = own_origin(environ)
    origin = environ.get("HTTP_ORIGIN")
    if origin is not None:
        if origin.strip().lower() == "null" or not _same(origin.strip().lower(), mine):
            raise Refused("refused: this form was sent from another site (%s)" % origin[:80])
        return
    referer = environ.get("HTTP_REFERER")
    if referer:
        ro = _origin_of(referer.strip())
        if ro is None or not _same(ro, mine):
            raise Refused("refused: this form was sent from another site (%s)"
                          % (ro or "unreadable Referer"))

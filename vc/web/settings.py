"""The ``[web]`` section of the configuration file.

::

    [web]
    # who acts when Apache does not authenticate (no REMOTE_USER): single-user mode
    user = root
    # the demo Apache's port on 127.0.0.1 (tools/web.sh); users forward a local port to it
    port = 8080
    # where the pages live on the web server
    url_prefix = /vc

:data:`KEYS` is the section's entry in :data:`vc.config.SCHEMA`; :func:`load` reads only this
section of a file (``tools/web.sh`` asks it for the port before anything else runs). Every
problem is a :class:`~vc.errors.ConfigError` naming the file and the key.
"""

import configparser
import re
from typing import NamedTuple, Optional

from vc.errors import ConfigError

SECTION = "web"
USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")


class WebSettings(NamedTuple):
    # (a NamedTuple, not a dataclass: cheaper to define, and every CGI page defines it)
    user: str = "root"
    port: int = 8080
    url_prefix: str = "/vc"


def _user(s):
    s = s.strip()
    if not USER_RE.match(s):
        raise ValueError("must be a user name (letters, digits, . _ @ -), got %r" % s)
    return s


def _port(s):
    try:
        v = int(s.strip())
    except ValueError:
        raise ValueError("must be an integer, got %r" % s) from None
    if not 1 <= v <= 65535:
        raise ValueError("must be between 1 and 65535, got %d" % v)
    return v


def _url_prefix(s):
    s = s.strip().rstrip("/")
    if not PREFIX_RE.match(s):
        raise ValueError("must be a path like /vc (segments of letters, digits, . _ ~ -), "
                         "got %r" % s)
    return s


# key -> (parser, default): the entry to merge into vc.config.SCHEMA as "web"
KEYS = {
    "user": (_user, "root"),
    "port": (_port, "8080"),
    "url_prefix": (_url_prefix, "/vc"),
}


def parse(section: Optional[dict], path: str) -> WebSettings:
    """Validate a ``[web]`` section given as a mapping (None or {} = all defaults)."""
    section = section or {}
    for key in section:
        if key not in KEYS:
            raise ConfigError(path, "[web] %s" % key, "unknown key (known: %s)" % ", ".join(KEYS))
    values = {}
    for key, (parser, default) in KEYS.items():
        raw = section[key] if key in section else default
        try:
            values[key] = parser(raw)
        except ValueError as e:
            raise ConfigError(path, "[web] %s" % key, str(e)) from None
    return WebSettings(**values)


def load(path: str) -> WebSettings:
    """Read ``[web]`` from the INI file at ``path`` (normally ``cfg.path``).

    A file without the section gives the defaults.

    :raises ConfigError: naming the file and the key.
    """
    cp = configparser.ConfigParser(interpolation=None, default_section="__none__")
    try:
        with open(path, encoding="utf-8") as f:
            cp.read_file(f, source=path)
    except FileNotFoundError:
        raise ConfigError(path, "(file)", "not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, "(file)", "cannot read: %s" % e) from None
    except configparser.Error as e:
        raise ConfigError(path, "(syntax)", str(e).splitlines()[0]) from None
    return parse(dict(cp[SECTION]) if cp.has_section(SECTION) else None, path)


def for_config(cfg) -> WebSettings:
    """The web settings of a loaded :class:`vc.config.Config` (its ``[web]`` section)."""
    return WebSettings(cfg.web_user, cfg.web_port, cfg.web_url_prefix)


def main(argv=None):
    """``python -m vc.web.settings [--get KEY] [FILE]``: print the settings (for tools/web.sh)."""
    import sys

    from vc import config as vconfig

    args = list(sys.argv[1:] if argv is None else argv)
    key = None
    if args[:1] == ["--get"]:
        if len(args) < 2:
            sys.stderr.write("usage: python -m vc.web.settings [--get KEY] [FILE]\n")
            return 2
        key, args = args[1], args[2:]
    path = args[0] if args else vconfig.default_path()
    try:
        s = load(path)
    except ConfigError as e:
        sys.stderr.write("%s\n" % e)
        return 2
    if key:
        if key not in KEYS:
            sys.stderr.write("unknown [web] key %r (known: %s)\n" % (key, ", ".join(KEYS)))
            return 2
        print(getattr(s, key))
    else:
        for k in KEYS:
            print("%s = %s" % (k, getattr(s, k)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

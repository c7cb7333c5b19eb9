"""The ``[web]`` section of the configuration file, read on its own.

::

    [web]
    # pam | htpasswd: Apache authenticates, the pages act as REMOTE_USER (required);
    # single-user: nobody is authenticated, everyone acts as [web] user
    auth = pam
    # the password file of auth = htpasswd (empty: <state_dir>/web/htpasswd)
    htpasswd =
    # who acts in single-user mode
    user = root
    # the demo Apache's port on 127.0.0.1 (tools/web.sh); users forward a local port to it
    port = 8080
    # where the pages live on the web server
    url_prefix = /vc

The keys are declared in :class:`vc.config.Web` (``cfg.web`` of a loaded configuration); this
module only reads that one section of a file, which ``tools/web.sh`` does for the port before
anything else is set up (``python -m vc.web.settings --get port FILE``). Every problem is a
:class:`~vc.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import os

from vc import config as vconfig
from vc.config import Web as WebSettings  # WebSettings() = the defaults
from vc.errors import ConfigError

SECTION = "web"
KEYS = tuple(f.name for f in vconfig.keys(WebSettings))


def parse(section: dict | None, path: str) -> WebSettings:
    """Validate a ``[web]`` section given as a mapping (None or {} = all defaults)."""
    return vconfig.parse_section(WebSettings, SECTION, section, path)


def load(path: str) -> WebSettings:
    """Read ``[web]`` from the INI file at ``path`` (normally ``cfg.path``); the other sections
    are not looked at. A file without the section gives the defaults.

    :raises ConfigError: naming the file and the key.
    """
    cp = vconfig.read(path)
    return parse(cp[SECTION] if cp.has_section(SECTION) else None, path)


def for_config(cfg) -> WebSettings:
    """The web settings of a loaded :class:`vc.config.Config`: its ``cfg.web``."""
    return cfg.web


def htpasswd_path(settings: WebSettings, state_dir: str) -> str:
    """The password file of ``auth = htpasswd``: ``[web] htpasswd``, else
    ``<state_dir>/web/htpasswd``."""
    return settings.htpasswd or os.path.join(state_dir, "web", "htpasswd")


def _state_dir(path: str) -> str:
    """``[site] state_dir`` of the file as written (its default when absent)."""
    cp = vconfig.read(path)
    default = {f.name: f.default for f in vconfig.keys(vconfig.Site)}["state_dir"]
    return cp.get("site", "state_dir", fallback=default).strip() or default


def main(argv=None):
    """``python -m vc.web.settings [--get KEY] [FILE]``: print the settings (for tools/web.sh)."""
    import sys

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
        if key == "htpasswd":  # resolved: what Apache's AuthUserFile names
            print(htpasswd_path(s, _state_dir(path)))
        else:
            print(getattr(s, key))
    else:
        for k in KEYS:
            print("%s = %s" % (k, getattr(s, k)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

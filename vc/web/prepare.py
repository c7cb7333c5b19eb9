"""Get a frontend ready to serve the pages as the web server's user (``tools/web.sh start``).

``python -m vc.web.prepare [--group www-data] [CONFIG]`` (as root):

- generates the web secret (``<state_dir>/web/csrf.key``) and the frontend's SSH key pair
  (``<state_dir>/ssh/id_ed25519``) if missing; the web user can create neither, because it may
  not write the state directory;
- gives ``--group`` read access to the secret and to the configuration file (mode 640, group
  www-data): the pages need the database password in it, and nobody else does.

``python -m vc.web.prepare --check [PATH]`` (as the web user): serves one GET of ``PATH`` (default
``/``) in-process, as Apache would for the signed-in user ``--user`` (default
:data:`CHECK_USER`; authenticated pages refuse a request without one), and exits 0 on HTTP 200,
else prints why. It also fills the template cache (``VC_WEB_CACHE``) as that user.
"""

import argparse
import grp
import io
import os
import sys

from vc import config as vconfig
from vc.errors import VcError
from vc.web import security, sshkey


def _share(path, gid, mode):
    st = os.stat(path)
    if st.st_gid != gid:
        os.chown(path, -1, gid)
    if (st.st_mode & 0o777) != mode:
        os.chmod(path, mode)


def prepare(cfg, group=None):
    os.makedirs(os.path.join(cfg.site.state_dir, "web"), mode=0o755, exist_ok=True)
    security.load_secret(cfg)
    sshkey.ensure(cfg)
    if group:
        gid = grp.getgrnam(group).gr_gid
        _share(security.secret_path(cfg), gid, 0o640)
        # the config holds the database password: readable by root and the web group only
        _share(cfg.path, gid, 0o640)
    return {"secret": security.secret_path(cfg), "ssh_key": sshkey.key_path(cfg),
            "config": cfg.path}


CHECK_USER = "vc-web-check"


def check(path="/", user=CHECK_USER):
    from vc.web.app import App

    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/vc", "PATH_INFO": path,
               "QUERY_STRING": "", "SERVER_NAME": "localhost", "SERVER_PORT": "80",
               "HTTP_HOST": "localhost", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr}
    if user:
        environ["REMOTE_USER"] = user
    out = {}

    def start_response(status, headers):
        out["status"] = status

    body = b"".join(App()(environ, start_response))
    if not out["status"].startswith("200"):
        text = body.decode("utf-8", "replace")
        import re

        m = re.search(r'<div class="errors" role="alert">(.*?)</div>', text, re.S)
        sys.stderr.write("GET /vc%s as uid %d: %s: %s\n" % (path, os.getuid(), out["status"],
                                                             (m.group(1) if m else text)[:500]))
        return 1
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m vc.web.prepare")
    ap.add_argument("--group", help="the web server's group (e.g. www-data)")
    ap.add_argument("--check", metavar="PATH", nargs="?", const="/",
                    help="serve one GET as this user and report")
    ap.add_argument("--user", default=CHECK_USER,
                    help="the REMOTE_USER of that GET (default %(default)s)")
    ap.add_argument("config", nargs="?", help="configuration file (default: $VC_CONFIG)")
    args = ap.parse_args(argv)
    if args.config:
        os.environ["VC_CONFIG"] = args.config
    try:
        if args.check:
            return check(args.check, args.user)
        done = prepare(vconfig.load(), args.group)
    except (VcError, OSError, KeyError) as e:
        sys.stderr.write("vc.web.prepare: %s\n" % e)
        return 1
    for k, v in done.items():
        print("%s %s" % (k, v))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A local development server: ``python -m vc.web.devserver [--port 8080] [--host 127.0.0.1]``.

Serves the same WSGI application under the configured ``[web] url_prefix`` (default ``/vc``)
with :mod:`wsgiref` (one thread per request), on loopback only. ``VC_CONFIG`` names the
configuration as for ``vc_ctl.py``. Not for production: use Apache (``tools/web.sh``).
"""

import argparse
import logging
import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from vc import config as vconfig
from vc.errors import VcError
from vc.web.app import App


class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        logging.getLogger("vc.web.devserver").info("%s %s", self.address_string(), fmt % args)


def mount(app, prefix):
    """Serve ``app`` at ``prefix``: SCRIPT_NAME = prefix, PATH_INFO = the rest."""

    def wrapped(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == prefix or path.startswith(prefix + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
            environ["PATH_INFO"] = path[len(prefix):]
            return app(environ, start_response)
        if path in ("", "/"):
            start_response("303 See Other", [("Location", prefix + "/"),
                                             ("Content-Type", "text/plain")])
            return [b""]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [("not here: the pages are under %s/\n" % prefix).encode()]

    return wrapped


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m vc.web.devserver", description=__doc__.split(
        "\n")[0])
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, help="port (default [web] port + 1, i.e. 8081)")
    args = ap.parse_args(argv)
    try:
        cfg = vconfig.load()
        ws = cfg.web
    except VcError as e:
        sys.stderr.write("%s\n" % e)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    port = args.port or ws.port + 1
    app = App(cfg=cfg, settings=ws, persistent_db=True)
    httpd = make_server(args.host, port, mount(app, ws.url_prefix), server_class=ThreadingServer,
                        handler_class=QuietHandler)
    print("VC pages on http://%s:%d%s/ (Ctrl-C stops)" % (args.host, port, ws.url_prefix),
          flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

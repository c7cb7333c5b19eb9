"""mod_wsgi entry point: ``WSGIScriptAlias /vc /path/to/vc/web/wsgi.py``.

The configuration file comes from ``SetEnv VC_CONFIG ...`` (mod_wsgi passes it in the WSGI
environ, not in ``os.environ``). Unlike CGI, the process lives on, so it keeps one database
connection per thread.
"""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:  # mod_wsgi runs this file by path; the vc package is beside it
    sys.path.insert(0, _ROOT)

from vc.web.app import App  # noqa: E402

application = App(persistent_db=True)

"""Run an entry point from a checkout with the checkout's venv.

``sbin/*.py`` call :func:`reexec_in_venv` first: when ``<checkout>/.venv`` exists and the current
interpreter is not it, the script is re-executed with it (so ``./sbin/vc_ctl.py`` works after
``make demo`` without activating anything). Installed copies have no ``.venv`` beside them and
run as they are. Standard library only: this runs before the dependencies are importable.
"""

import os
import sys


def reexec_in_venv(script):
    root = os.path.dirname(os.path.dirname(os.path.realpath(script)))
    venv = os.path.join(root, ".venv")
    py = os.path.join(venv, "bin", "python3")
    if os.path.exists(py) and os.path.realpath(sys.prefix) != os.path.realpath(venv) \
            and not os.environ.get("VC_NO_REEXEC"):
        os.execv(py, [py, os.path.realpath(script)] + sys.argv[1:])

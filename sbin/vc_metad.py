#!/usr/bin/env python3
"""vc_metad.py: the lease service for the guests (GET /lease, POST /lease/extend|release)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
from vc import bootstrap  # noqa: E402

bootstrap.reexec_in_venv(__file__)
from vc.metad import main  # noqa: E402

sys.exit(main())

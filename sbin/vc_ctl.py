#!/usr/bin/env python3
"""vc_ctl.py: reserve, inspect, start and stop virtual clusters (see 'vc_ctl.py --help')."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
from vc import bootstrap  # noqa: E402

bootstrap.reexec_in_venv(__file__)
from vc.cmd.vc_ctl import main  # noqa: E402

sys.exit(main())

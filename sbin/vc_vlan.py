#!/usr/bin/env python3
"""vc_vlan.py: switch a cluster onto its isolated network or off it (see 'vc_vlan.py --help')."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
from vc import bootstrap  # noqa: E402

bootstrap.reexec_in_venv(__file__)
from vc.cmd.vc_vlan import main  # noqa: E402

sys.exit(main())

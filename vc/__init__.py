"""VC: reservations for virtual clusters on a cluster frontend.

Library modules, one per boundary: :mod:`vc.config`, :mod:`vc.db` (the only PyMySQL user),
:mod:`vc.states`, :mod:`vc.admission`, :mod:`vc.reservations`, :mod:`vc.cli`.
"""

__version__ = "0.1.0"

"""The frontend's SSH key pair (ed25519), shown on the iSCSI target page.

The pair lives in ``<state_dir>/ssh/id_ed25519`` and is generated once with ``ssh-keygen``. The
private half is root's (mode 600): the cron uses it to configure targets. The web process only
reads the public half, so the directory is mode 711 and the ``.pub`` file 644.
"""

import logging
import os

from vc import remote
from vc.errors import VcError
from vc.remote import fingerprint  # noqa: F401 - the page shows the key's; one helper for all

LOG = logging.getLogger(__name__)


class KeyUnavailable(Exception):
    """No public key yet and this process may not make one; the message says what to run."""


def key_path(cfg) -> str:
    return os.path.join(cfg.site.state_dir, "ssh", "id_ed25519")


def ensure(cfg) -> str:
    """Generate the key pair if it is missing (:func:`vc.remote.frontend_key`: the same files
    the cron uses); returns the private key path."""
    return remote.frontend_key(cfg.site.state_dir)[0]


def public_key(cfg) -> str:
    """The public key line, generating the pair when this process can.

    :raises KeyUnavailable: when there is none and it cannot be generated here.
    """
    priv = key_path(cfg)
    try:
        with open(priv + ".pub", encoding="ascii") as f:
            return f.read().strip()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise KeyUnavailable("cannot read %s.pub: %s" % (priv, e.strerror)) from None
    try:
        ensure(cfg)
        with open(priv + ".pub", encoding="ascii") as f:
            return f.read().strip()
    except (OSError, VcError) as e:
        LOG.warning("cannot generate the SSH key %s: %s", priv, e)
        raise KeyUnavailable(
            "the frontend has no SSH key yet and this web process cannot create %s (%s); as root "
            "run: ssh-keygen -t ed25519 -N '' -f %s  (tools/web.sh start does it)"
            % (priv, getattr(e, "strerror", None) or e, priv)) from None

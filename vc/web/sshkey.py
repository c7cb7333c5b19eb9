"""The frontend's SSH key pair (ed25519), shown on the iSCSI target page.

The pair lives in ``<state_dir>/ssh/id_ed25519`` and is generated once with ``ssh-keygen``. The
private half is root's (mode 600): the cron uses it to configure targets. The web process only
reads the public half, so the directory is mode 711 and the ``.pub`` file 644.
"""

import base64
import fcntl
import hashlib
import logging
import os
import socket
import subprocess

LOG = logging.getLogger(__name__)


class KeyUnavailable(Exception):
    """No public key yet and this process may not make one; the message says what to run."""


def key_path(cfg) -> str:
    return os.path.join(cfg.state_dir, "ssh", "id_ed25519")


def fingerprint(pub_line: str) -> str:
    """``SHA256:...`` of an OpenSSH public key line, as ``ssh-keygen -l`` prints it."""
    parts = pub_line.split()
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key line")
    blob = base64.b64decode(parts[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def ensure(cfg) -> str:
    """Generate the key pair if it is missing; returns the private key path."""
    priv = key_path(cfg)
    pub = priv + ".pub"
    if os.path.exists(pub):
        return priv
    d = os.path.dirname(priv)
    os.makedirs(d, mode=0o711, exist_ok=True)
    os.chmod(d, 0o711)
    with open(os.path.join(d, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two first visits must not both run ssh-keygen
        if os.path.exists(pub):
            return priv
        if os.path.exists(priv):
            # the public half was lost: derive it again rather than replace the pair
            out = subprocess.run(["ssh-keygen", "-y", "-f", priv], capture_output=True,
                                 text=True, check=True, timeout=30).stdout
            with open(pub + ".tmp", "w") as f:
                f.write(out)
            os.chmod(pub + ".tmp", 0o644)
            os.rename(pub + ".tmp", pub)
        else:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                            "vc@%s" % socket.gethostname(), "-f", priv],
                           stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=30)
            os.chmod(pub, 0o644)
            LOG.info("generated the frontend SSH key %s", priv)
    return priv


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
    except (OSError, subprocess.SubprocessError) as e:
        LOG.warning("cannot generate the SSH key %s: %s", priv, e)
        raise KeyUnavailable(
            "the frontend has no SSH key yet and this web process cannot create %s (%s); as root "
            "run: ssh-keygen -t ed25519 -N '' -f %s  (tools/web.sh start does it)"
            % (priv, getattr(e, "strerror", None) or e, priv)) from None

"""The "test connection" button of the iSCSI target page: the only SSH the web process does.

It opens an SSH transport to the target, reads the host key the server offers and closes the
connection: no authentication, no command. The page shows the key's fingerprint; it is pinned in
``vciscsitarget.host_key_fingerprint`` only when the user confirms it (a second POST). From then
on the cron refuses a target whose key differs.

paramiko (imported by :mod:`vc.remote` inside the call) is loaded only by that button: at about
60 ms it would double the start-up of every CGI page.
"""

import logging
from dataclasses import dataclass

LOG = logging.getLogger(__name__)
TIMEOUT = 8.0


@dataclass
class HostKey:
    key_type: str
    fingerprint: str  # SHA256:... as ssh-keygen -l prints it

    @property
    def pin(self) -> str:
        """What is stored in ``vciscsitarget.host_key_fingerprint``: the ``SHA256:...``
        fingerprint alone, as the storage code compares it with the key a target offers."""
        return self.fingerprint


class ConnectFailed(Exception):
    """The target could not be reached or did not speak SSH; the message is for the user."""


def scan(address: str, port: int, timeout: float = TIMEOUT) -> HostKey:
    """Fetch the host key of the SSH server at ``address:port`` (through :mod:`vc.remote`, the
    one module that speaks SSH).

    :raises ConnectFailed: with a short reason.
    """
    from vc import remote

    try:
        key_type, fp = remote.probe_host_key(address, port, timeout)
    except remote.StorageError as e:
        raise ConnectFailed(e.cause) from None
    return HostKey(key_type, fp)

"""The "test connection" button of the iSCSI target page: the only SSH the web process does.

It opens an SSH transport to the target, reads the host key the server offers and closes the
connection: no authentication, no command. The page shows the key's fingerprint; it is pinned in
``vciscsitarget.host_key_fingerprint`` only when the user confirms it (a second POST). From then
on the cron refuses a target whose key differs.

paramiko is imported here, inside the function, and this module is imported only by that button:
at about 60 ms it would double the start-up of every CGI page.
"""

import base64
import hashlib
import logging
import socket
from dataclasses import dataclass
from typing import Optional

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
    """Fetch the host key of the SSH server at ``address:port``.

    :raises ConnectFailed: with a short reason.
    """
    import paramiko

    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except socket.timeout:
        raise ConnectFailed("no answer from %s port %d within %.0f s" % (address, port,
                                                                         timeout)) from None
    except OSError as e:
        raise ConnectFailed("cannot connect to %s port %d: %s" % (address, port,
                                                                  e.strerror or e)) from None
    transport: Optional[paramiko.Transport] = None
    try:
        transport = paramiko.Transport(sock)
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        blob = key.asbytes()
        fp = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
        return HostKey(key.get_name(), fp)
    except (paramiko.SSHException, EOFError, OSError) as e:
        raise ConnectFailed("%s port %d did not complete an SSH handshake: %s"
                            % (address, port, e or type(e).__name__)) from None
    finally:
        if transport is not None:
            transport.close()
        sock.close()

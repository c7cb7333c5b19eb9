"""The storage boundary: iSCSI volumes made over SSH on a target host.

This is the only VC module that imports ``paramiko`` (lazily, inside :class:`SSHExecutor` and
:func:`probe_host_key`: the web pages must not pay ~80 ms to import it).

Target access
    The frontend has one ed25519 key pair, made once under ``<state_dir>/ssh`` by
    :func:`frontend_key`; its public key is what the target host must authorise. A target host's
    SSH key is pinned by its SHA256 fingerprint (:class:`Target.fingerprint`), recorded only when
    an admin confirms what :func:`probe_host_key` shows. :class:`SSHExecutor` loads no
    known_hosts file at all and checks every server key against the pin
    (:class:`PinnedHostKeyPolicy`): no pin is :class:`HostKeyUnknown`, another key is
    :class:`HostKeyChanged`. One connection per target, opened on first use and reused
    (:class:`SSHPool` hands out one executor per target for a run).

Commands
    Every command is an argv list, checked (no NUL, no newline) and quoted with
    :func:`shlex.join`. An executor runs a *script* of several commands in one remote exec (one
    SSH round trip, one remote shell start) under ``set -e``, with a marker line before each
    command so that each command's output comes back separately and a failure names the command
    that failed. Every command and its exit status is logged. Executors are injected into the
    backends, so tests record the exact command lines (see tests/test_storage.py).

Volumes
    :class:`TgtBackend` (``tgtadm``) and :class:`TargetcliBackend` (LIO) offer the same
    idempotent verbs: ``ensure_volumes`` (create or find each target + LUN + ACL, recreating a
    target that tgtd forgot around its existing backing store, growing but never shrinking),
    ``remove_volume`` and ``show``. Each verb costs two remote execs whatever the number of
    volumes: one that reads the state, one batched script that changes it. A verb that fails half
    way leaves what it made in place and the next call continues from there.
"""

import base64
import dataclasses
import fcntl
import hashlib
import ipaddress
import logging
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import time
import uuid
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from vc.errors import VcError

LOG = logging.getLogger(__name__)

Argv = List[str]

GIB = 1024 ** 3
DEFAULT_IQN_PREFIX = "iqn.2026-11.vc.frontend"
FINGERPRINT_RE = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
IQN_PREFIX_RE = re.compile(r"^iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*$")
IQN_MAX = 223


##################
# Exceptions     #
##################


class StorageError(VcError):
    """Something about an iSCSI target host failed. ``target`` is the target's name; every
    message starts with it."""

    def __init__(self, target: str, cause: str):
        self.target, self.cause = target, cause
        super().__init__("iSCSI target %s: %s" % (target, cause))


class TargetUnreachable(StorageError):
    """No SSH connection: refused, timed out, no route, or lost."""


class HostKeyUnknown(StorageError):
    """The target's host key was never confirmed by an admin (no pinned fingerprint)."""

    def __init__(self, target: str, got: str):
        self.got = got
        super().__init__(target, "its SSH host key %s has not been confirmed: check it on the "
                         "target host (ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub) and "
                         "trust it on the iSCSI target page or with 'vc_ctl.py target trust %s'"
                         % (got, target))


class HostKeyChanged(StorageError):
    """The target's host key is not the pinned one: refused (a new host, or an attack)."""

    def __init__(self, target: str, expected: str, got: str):
        self.expected, self.got = expected, got
        super().__init__(target, "its SSH host key CHANGED: expected %s, got %s; refusing to "
                         "connect. If the target host was reinstalled, confirm the new key "
                         "with 'vc_ctl.py target trust %s'" % (expected, got, target))


class AuthFailed(StorageError):
    """The target host did not accept the frontend's key."""


class RemoteCommandError(StorageError):
    """A command on the target host failed (or timed out: ``returncode`` None)."""

    def __init__(self, target: str, argv: Sequence[str], returncode: Optional[int], stderr: str):
        self.argv, self.returncode, self.stderr = list(argv), returncode, stderr or ""
        status = "exit status %s" % returncode if returncode is not None else "no exit status"
        super().__init__(target, "%s failed (%s): %s" % (
            shlex.join(self.argv), status, self.stderr.strip() or "no error output"))


class OutOfSpace(StorageError):
    """The backing store has not room for the requested volumes."""


##################
# Names          #
##################


def slug(mount_point: str, max_len: int = 64) -> str:
    """A volume's name part from its mount point: ``/data`` -> ``data``, ``/home/shared`` ->
    ``home-shared``. Deterministic, and only ``a-z 0-9 . -``. Mount points of only lower-case
    letters, digits and dots map one to one; any other (``/Data``, ``/a_b``, ``/a-b``, too long)
    gets ``-`` plus 8 hex digits of its SHA-1, so two mount points never share a name."""
    parts = [p for p in mount_point.strip().split("/") if p]
    if not parts:
        raise ValueError("mount point %r has no name" % mount_point)
    plain = all(re.match(r"^[a-z0-9.]+$", p) for p in parts)
    s = "-".join(parts).lower()
    s = re.sub(r"[^a-z0-9.]+", "-", s).strip("-.") or "vol"
    if plain and len(s) <= max_len:
        return s
    digest = hashlib.sha1(mount_point.strip().encode()).hexdigest()[:8]
    return "%s-%s" % (s[: max_len - 9].rstrip("-."), digest)


def volume_name(rack: int, mount_point: str, prefix: str = "vc") -> str:
    """``vc-rack3-data``: the backing file (``.img``) or logical volume name of a volume."""
    return "%s-rack%d-%s" % (prefix, int(rack), slug(mount_point))


def iqn_for(iqn_prefix: str, rack: int, mount_point: str) -> str:
    """``iqn.2026-11.vc.frontend:rack3.data``: the target name of a reservation's volume.

    :param iqn_prefix: ``iqn.YYYY-MM.reversed.domain`` (the part before the colon).
    """
    if not IQN_PREFIX_RE.match(iqn_prefix):
        raise ValueError("IQN prefix must look like iqn.2026-11.org.example (lower case), got %r"
                         % iqn_prefix)
    head = "%s:rack%d." % (iqn_prefix, int(rack))
    room = IQN_MAX - len(head)
    if room < 12:
        raise ValueError("IQN prefix %r is too long" % iqn_prefix)
    return head + slug(mount_point, max_len=min(64, room))


def fingerprint_of(key) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a paramiko key (anything with ``asbytes()``)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def check_fingerprint(fp: str) -> str:
    """``fp`` stripped, if it is an OpenSSH SHA256 fingerprint; else ValueError."""
    fp = (fp or "").strip()
    if not FINGERPRINT_RE.match(fp):
        raise ValueError("not a SHA256 host key fingerprint (like SHA256:<43 base64 chars>): %r"
                         % fp[:80])
    return fp


def check_argv(argv: Sequence[str]) -> Argv:
    """``argv`` as a list of str, refusing what could break out of one command line (Cinder's
    ``check_ssh_injection``, for argv lists: shlex.join quotes the rest)."""
    if isinstance(argv, (str, bytes)) or not argv:
        raise ValueError("a command must be a non-empty argv list, got %r" % (argv,))
    out = []
    for a in argv:
        if not isinstance(a, str):
            raise ValueError("argv elements must be str, got %r in %r" % (a, argv))
        if "\0" in a or "\n" in a or "\r" in a:
            raise ValueError("argv element contains NUL or a line break: %r" % a)
        out.append(a)
    return out


##################
# The frontend   #
##################


def frontend_key(state_dir: str) -> Tuple[str, str]:
    """The frontend's SSH key pair, made once: ``(private_key_path, public_key_line)``.

    ``<state_dir>/ssh/id_ed25519``, made by ``ssh-keygen`` (paramiko cannot generate ed25519
    keys). The private key is mode 600; the directory is 711 and the ``.pub`` 644 so that the
    web pages (another user) can show the public key without being able to list or read the
    rest (the same layout as vc/web/sshkey.py). A lost ``.pub`` is derived again from the
    private key, never replaced by a new pair.
    """
    d = os.path.join(state_dir, "ssh")
    path = os.path.join(d, "id_ed25519")
    pub = path + ".pub"
    if not os.path.exists(path) or not os.path.exists(pub):
        try:
            os.makedirs(d, mode=0o711, exist_ok=True)
            os.chmod(d, 0o711)
            with open(os.path.join(d, ".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # two first runs must not both run ssh-keygen
                if not os.path.exists(path):
                    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vc-frontend",
                            "-f", path]
                    LOG.info("generating the frontend's SSH key: %s", shlex.join(argv))
                    subprocess.run(argv, capture_output=True, text=True, check=True,
                                   timeout=60, stdin=subprocess.DEVNULL)
                elif not os.path.exists(pub):
                    out = subprocess.run(["ssh-keygen", "-y", "-f", path], capture_output=True,
                                         text=True, check=True, timeout=60,
                                         stdin=subprocess.DEVNULL).stdout
                    with open(pub + ".tmp", "w") as f:
                        f.write(out)
                    os.rename(pub + ".tmp", pub)
                os.chmod(path, 0o600)
                os.chmod(pub, 0o644)
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", None) or str(e)
            raise VcError("cannot generate the frontend's SSH key %s: %s"
                          % (path, detail.strip())) from e
    with open(pub, encoding="ascii") as f:
        return path, f.read().strip()


@dataclasses.dataclass(frozen=True)
class Target:
    """An iSCSI target host, as on the iSCSI target page (table ``vciscsitarget``)."""

    name: str
    address: str
    port: int = 22
    ssh_user: str = "root"
    iscsi_port: int = 3260
    fingerprint: Optional[str] = None  # pinned "SHA256:..." or None: never confirmed

    @property
    def where(self) -> str:
        return "%s@%s:%d" % (self.ssh_user, self.address, self.port)

    @property
    def portal(self) -> str:
        host = "[%s]" % self.address if ":" in self.address else self.address
        return "%s:%d" % (host, self.iscsi_port)


def _unreachable(name: str, where: str, err: BaseException) -> TargetUnreachable:
    errors = getattr(err, "errors", None)  # paramiko NoValidConnectionsError
    if errors:
        err = list(errors.values())[0]
    if isinstance(err, (socket.timeout, TimeoutError)):
        why = "timed out"
    elif isinstance(err, ConnectionRefusedError):
        why = "connection refused (is sshd running?)"
    elif isinstance(err, socket.gaierror):
        why = "cannot resolve the address (%s)" % err
    else:
        why = str(err) or type(err).__name__
    return TargetUnreachable(name, "cannot reach %s over SSH: %s" % (where, why))


def probe_host_key(address: str, port: int = 22, timeout: float = 10,
                   name: Optional[str] = None) -> Tuple[str, str]:
    """Connect, read the server's host key, authenticate nothing: ``(key_type, fingerprint)``,
    e.g. ``("ssh-ed25519", "SHA256:...")``. For "test connection" and trust: an admin compares
    the fingerprint with the one on the target host before it is pinned.

    :raises TargetUnreachable: naming ``name`` (default the address).
    """
    import paramiko

    name = name or address
    where = "%s:%d" % (address, port)
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as e:
        raise _unreachable(name, where, e) from e
    t = paramiko.Transport(sock)
    t.banner_timeout = timeout
    try:
        t.start_client(timeout=timeout)
        key = t.get_remote_server_key()
        return key.get_name(), fingerprint_of(key)
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise _unreachable(name, where, e) from e
    finally:
        t.close()


##################
# Executors      #
##################


class Executor:
    """Runs argv lists on one target host. Subclasses implement :meth:`_run_script`.

    ``execute(argv) -> stdout``; ``run_script([argv, ...]) -> [stdout, ...]`` runs them in order
    in one go and stops at the first failure, raising :class:`RemoteCommandError` for it (what
    ran before it stays done).
    """

    name = "?"

    def execute(self, argv: Sequence[str]) -> str:
        return self.run_script([argv])[0]

    def run_script(self, cmds: Iterable[Sequence[str]]) -> List[str]:
        cmds = [check_argv(c) for c in cmds]
        if not cmds:
            return []
        return self._run_script(cmds)

    def _run_script(self, cmds: List[Argv]) -> List[str]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ShellExecutor(Executor):
    """An executor that runs a POSIX shell script: ``set -e``, then each command quoted with
    shlex.join, each preceded by a marker line. The markers split the output per command and
    tell which command a failure came from (anything a login shell prints before the script,
    e.g. from a noisy ~/.bashrc, falls before the first marker and is dropped)."""

    command_timeout: Optional[float] = 60

    def _exec(self, script: str) -> Tuple[Optional[int], str, str]:
        """Run ``script``; ``(exit status or None on timeout, stdout, stderr)``."""
        raise NotImplementedError

    def _run_script(self, cmds: List[Argv]) -> List[str]:
        token = "@@vc-%s" % uuid.uuid4().hex[:12]
        lines = ["set -e"]
        for i, argv in enumerate(cmds):
            lines.append("printf '\\n%s:%d\\n'" % (token, i))
            lines.append(shlex.join(argv))
        lines.append("printf '\\n%s:end\\n'" % token)
        t0 = time.monotonic()
        rc, out, err = self._exec("\n".join(lines))
        ms = (time.monotonic() - t0) * 1000
        # out = junk \n T:0 \n out0 \n T:1 \n out1 ... \n T:end \n
        pieces = re.split(r"\n%s:(\d+|end)\n" % re.escape(token), out)
        outputs, reached, finished = [], -1, False
        for k in range(1, len(pieces), 2):
            if pieces[k] == "end":
                finished = True
            else:
                reached = int(pieces[k])
            if k > 1:
                outputs.append(pieces[k - 1])
        if not finished and reached >= 0:
            outputs.append(pieces[-1])  # the failed command's output so far
        for i, argv in enumerate(cmds):
            if i < reached or (i == reached and finished):
                LOG.info("target %s: rc=0 %s", self.name, shlex.join(argv))
            elif i == reached:
                LOG.warning("target %s: rc=%s %s: %s", self.name, rc, shlex.join(argv),
                            err.strip()[-500:])
        LOG.debug("target %s: %d command(s) in one exec, %.0f ms", self.name, len(cmds), ms)
        if finished and rc == 0:
            return outputs[: len(cmds)]
        if rc is None:
            failed = cmds[max(reached, 0)]
            raise RemoteCommandError(self.name, failed, None, "timed out after %s s%s" % (
                self.command_timeout, (": " + err.strip()) if err.strip() else ""))
        if reached < 0:
            raise RemoteCommandError(self.name, cmds[0], rc, "the remote shell failed before "
                                     "the first command: " + (err.strip() or out.strip()[-300:]))
        failed = cmds[reached] if not finished else cmds[-1]
        raise RemoteCommandError(self.name, failed, rc, err)


class LocalExecutor(ShellExecutor):
    """Runs the commands on this machine (``/bin/sh``): for a target host that is the frontend
    itself, and for tests and benchmarks."""

    def __init__(self, name: str = "local", command_timeout: Optional[float] = 60):
        self.name = name
        self.command_timeout = command_timeout

    def _exec(self, script):
        # a session of its own, so that a timeout ends the whole script, not only /bin/sh
        with subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) as proc:
            try:
                out, err = proc.communicate(timeout=self.command_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
                return None, out or "", err or ""
        return proc.returncode, out, err


class PinnedHostKeyPolicy:
    """paramiko's ``missing_host_key`` policy for a pinned fingerprint: since no known_hosts
    file is loaded, paramiko asks it about every server key. It accepts only the pinned one.

    (A plain class: paramiko only calls ``missing_host_key``, and subclassing
    ``paramiko.MissingHostKeyPolicy`` would import paramiko with this module.)
    """

    def __init__(self, target_name: str, pinned: Optional[str]):
        self.target_name = target_name
        self.pinned = pinned
        self.seen: Optional[str] = None

    def missing_host_key(self, client, hostname, key) -> None:
        got = fingerprint_of(key)
        self.seen = got
        if not self.pinned:
            LOG.warning("target %s: host key %s of %s not confirmed: refused", self.target_name,
                        got, hostname)
            raise HostKeyUnknown(self.target_name, got)
        if got != self.pinned:
            LOG.error("target %s: host key of %s CHANGED: expected %s, got %s: refused",
                      self.target_name, hostname, self.pinned, got)
            raise HostKeyChanged(self.target_name, self.pinned, got)
        LOG.debug("target %s: host key %s matches the pin", self.target_name, got)


class SSHExecutor(ShellExecutor):
    """Runs commands on a target host over one SSH connection, opened on first use and reused
    while it is alive (reopened once if it died).

    :param target: the host; its ``fingerprint`` must be pinned.
    :param key_path: the frontend's private key (:func:`frontend_key`).
    :param connect_timeout: seconds for TCP connect, banner, key exchange and authentication.
    :param command_timeout: seconds a script may run before :class:`RemoteCommandError`.
    """

    def __init__(self, target: Target, key_path: str, connect_timeout: float = 10,
                 command_timeout: float = 60):
        self.target = target
        self.name = target.name
        self.key_path = key_path
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._client = None
        self.connects = 0  # how many connections this executor opened (for tests and benches)

    def __repr__(self):
        return "SSHExecutor(%r, %s)" % (self.name, self.target.where)

    # -- connection ----------------------------------------------------------------------------

    def _load_key(self):
        import paramiko

        try:
            return paramiko.PKey.from_path(self.key_path)
        except (OSError, paramiko.SSHException, ValueError) as e:
            raise StorageError(self.name, "cannot read the frontend's SSH key %s: %s"
                               % (self.key_path, e)) from e

    def _connect(self):
        import paramiko

        t = self.target
        pkey = self._load_key()
        policy = PinnedHostKeyPolicy(self.name, t.fingerprint)
        client = paramiko.SSHClient()  # no load_system_host_keys(): the pin is the only truth
        client.set_missing_host_key_policy(policy)
        t0 = time.monotonic()
        try:
            client.connect(t.address, port=t.port, username=t.ssh_user, pkey=pkey,
                           look_for_keys=False, allow_agent=False,
                           timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout,
                           channel_timeout=self.connect_timeout)
        except StorageError:
            client.close()
            raise
        except paramiko.AuthenticationException as e:
            client.close()
            raise AuthFailed(self.name, "%s refused the frontend's SSH key (%s): add the "
                             "frontend's public key (shown on the iSCSI target page, file %s.pub)"
                             " to %s's ~/.ssh/authorized_keys on the target host"
                             % (t.where, e, self.key_path, t.ssh_user)) from e
        except (paramiko.SSHException, OSError, EOFError) as e:
            client.close()
            raise _unreachable(self.name, t.where, e) from e
        self.connects += 1
        LOG.info("target %s: connected to %s (host key %s) in %.0f ms", self.name, t.where,
                 policy.seen, (time.monotonic() - t0) * 1000)
        return client

    def transport(self):
        """The live paramiko transport, connecting if needed."""
        if self._client is not None:
            tr = self._client.get_transport()
            if tr is not None and tr.is_active():
                return tr
            LOG.warning("target %s: SSH connection lost, reconnecting", self.name)
            self.close()
        self._client = self._connect()
        return self._client.get_transport()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- commands ------------------------------------------------------------------------------

    def _exec(self, script):
        import paramiko

        tr = self.transport()
        try:
            ch = tr.open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise _unreachable(self.name, self.target.where, e) from e
        try:
            return self._collect(ch, script)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise TargetUnreachable(self.name, "SSH connection to %s lost while running a "
                                    "command: %s" % (self.target.where, e)) from e
        finally:
            ch.close()

    def _collect(self, ch, script):
        """Run ``script`` on channel ``ch``; read stdout and stderr together (so neither can
        fill the window and block the other) until exit or ``command_timeout``."""
        ch.exec_command(script)
        out, err = [], []
        deadline = time.monotonic() + (self.command_timeout or 1e9)
        fd = ch.fileno()
        while True:
            while ch.recv_ready():
                out.append(ch.recv(65536))
            while ch.recv_stderr_ready():
                err.append(ch.recv_stderr(65536))
            if ch.exit_status_ready() and not ch.recv_ready() and not ch.recv_stderr_ready():
                if ch.eof_received or ch.closed:
                    break
            left = deadline - time.monotonic()
            if left <= 0:
                return None, b"".join(out).decode(errors="replace"), \
                    b"".join(err).decode(errors="replace")
            r, _, _ = select.select([fd], [], [], min(left, 1.0))
            if r and not ch.recv_ready() and not ch.recv_stderr_ready():
                # the pipe says "closed/EOF" but no data: wait for the exit status, not a spin
                ch.status_event.wait(min(left, 0.05))
        # anything still buffered after EOF
        while ch.recv_ready():
            out.append(ch.recv(65536))
        while ch.recv_stderr_ready():
            err.append(ch.recv_stderr(65536))
        return (ch.recv_exit_status(), b"".join(out).decode(errors="replace"),
                b"".join(err).decode(errors="replace"))


class SSHPool:
    """One :class:`SSHExecutor` per target for one run (a cron tick, a page): every volume of
    every reservation on a target goes through the same connection. Close it at the end."""

    def __init__(self, key_path: str, connect_timeout: float = 10, command_timeout: float = 60):
        self.key_path = key_path
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._executors: Dict[Tuple, SSHExecutor] = {}

    def get(self, target: Target) -> SSHExecutor:
        key = (target.name, target.address, target.port, target.ssh_user, target.fingerprint)
        ex = self._executors.get(key)
        if ex is None:
            ex = self._executors[key] = SSHExecutor(target, self.key_path, self.connect_timeout,
                                                    self.command_timeout)
        return ex

    def close(self) -> None:
        for ex in self._executors.values():
            ex.close()
        self._executors.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


##################
# Backing stores #
##################


@dataclasses.dataclass(frozen=True)
class VolumeSpec:
    """One volume to ensure: target name, backing path (file or LV), size in GiB."""

    iqn: str
    backing: str
    size_gb: int

    @property
    def size_bytes(self) -> int:
        return int(self.size_gb) * GIB


class FileStore:
    """Volumes backed by sparse files in one directory on the target host.

    Space is checked before anything is made: the ``df`` free space must cover every new byte
    the batch asks for (files are sparse, so this is a check, not a reservation).
    """

    kind = "file"

    def __init__(self, backing_dir: str):
        if not backing_dir.startswith("/"):
            raise ValueError("backing_dir must be absolute, got %r" % backing_dir)
        self.backing_dir = backing_dir.rstrip("/") or "/"

    def path_for(self, name: str) -> str:
        return "%s/%s.img" % (self.backing_dir, name)

    def probe_cmds(self) -> List[Argv]:
        d = self.backing_dir
        return [["mkdir", "-p", d], ["df", "-B1", "--output=avail", d],
                ["find", d, "-maxdepth", "1", "-type", "f", "-printf", "%s %p\\n"]]

    @staticmethod
    def parse_probe(outs: List[str]) -> Tuple[int, Dict[str, int]]:
        """-> (free bytes, {path: size in bytes})"""
        free = int(outs[1].split()[-1])
        sizes = {}
        for line in outs[2].splitlines():
            if line.strip():
                size, _, path = line.partition(" ")
                sizes[path] = int(size)
        return free, sizes

    def grow_cmds(self, path: str, size: int, exists: bool) -> List[Argv]:
        # '>' = "at least": creates a missing file, grows a smaller one, never truncates data
        return [["truncate", "-s", ">%d" % size, path]]

    def remove_cmds(self, path: str) -> List[Argv]:
        return [["rm", "-f", "--", path]]

    def owns(self, path: str) -> bool:
        return os.path.dirname(path) == self.backing_dir


class LvmStore:
    """Volumes backed by logical volumes of one volume group (``/dev/VG/NAME``)."""

    kind = "lvm"

    def __init__(self, vg: str):
        if not vg or not re.match(r"^[A-Za-z0-9+_.-]+$", vg) or vg.startswith("-"):
            raise ValueError("bad LVM volume group name %r" % vg)
        self.vg = vg
        self.backing_dir = "/dev/%s" % vg

    def path_for(self, name: str) -> str:
        return "/dev/%s/%s" % (self.vg, name)

    def probe_cmds(self) -> List[Argv]:
        return [["vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_free", self.vg],
                ["lvs", "--noheadings", "--units", "b", "--nosuffix", "--separator", " ",
                 "-o", "lv_name,lv_size", self.vg]]

    def parse_probe(self, outs: List[str]) -> Tuple[int, Dict[str, int]]:
        free = int(outs[0].split()[0])
        sizes = {}
        for line in outs[1].splitlines():
            f = line.split()
            if len(f) == 2:
                sizes[self.path_for(f[0])] = int(f[1])
        return free, sizes

    def grow_cmds(self, path: str, size: int, exists: bool) -> List[Argv]:
        if exists:
            return [["lvextend", "-L", "%db" % size, path]]
        return [["lvcreate", "-y", "-n", os.path.basename(path), "-L", "%db" % size, self.vg]]

    def remove_cmds(self, path: str) -> List[Argv]:
        return [["lvremove", "-y", path]]

    def owns(self, path: str) -> bool:
        return os.path.dirname(path) == self.backing_dir


def _initiators(initiators: Iterable[str], target: str) -> List[str]:
    out = []
    for i in initiators:
        i = str(i).strip()
        if i.upper() == "ALL" or i.startswith(("iqn.", "eui.", "naa.")):
            out.append("ALL" if i.upper() == "ALL" else i)
            continue
        try:
            out.append(str(ipaddress.ip_network(i, strict=False)) if "/" in i
                       else str(ipaddress.ip_address(i)))
        except ValueError:
            raise StorageError(target, "initiator %r is neither an IP address nor an iSCSI "
                               "name (give the hypervisor hosts' addresses)" % i) from None
    if not out:
        raise StorageError(target, "no initiator given: a volume must admit the hypervisor "
                           "hosts (and only them)")
    return list(dict.fromkeys(out))


##################
# tgt backend    #
##################


def parse_tgtadm_show(text: str) -> Dict[str, dict]:
    """``tgtadm --lld iscsi --mode target --op show`` -> ``{iqn: {"tid": int, "luns": {lun:
    {"size_bytes": int, "backing": str or None}}, "acl": [str], "sessions": int}}``.
    (tgtadm prints sizes in rounded decimal MB, so ``size_bytes`` is approximate.)"""
    targets: Dict[str, dict] = {}
    cur = lun = None
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"^Target (\d+): (\S+)$", raw)
        if m:
            cur = targets[m.group(2)] = {"tid": int(m.group(1)), "luns": {}, "acl": [],
                                         "sessions": 0}
            section, lun = None, None
            continue
        if cur is None or not line:
            continue
        if raw.startswith("    ") and not raw.startswith("     "):
            section = line.rstrip(":")
            continue
        if section == "I_T nexus information" and line.startswith("I_T nexus:"):
            cur["sessions"] += 1
        elif section == "LUN information":
            m = re.match(r"^LUN: (\d+)$", line)
            if m:
                lun = cur["luns"][int(m.group(1))] = {"size_bytes": 0, "backing": None}
                continue
            if lun is None:
                continue
            m = re.match(r"^Size: (\d+) MB", line)
            if m:
                lun["size_bytes"] = int(m.group(1)) * 1000 * 1000
            m = re.match(r"^Backing store path: (.*)$", line)
            if m and m.group(1) not in ("None", ""):
                lun["backing"] = m.group(1)
        elif section == "ACL information":
            cur["acl"].append(line)
    return targets


class _Backend:
    lun = 1

    def __init__(self, executor: Executor, store):
        self.ex = executor
        self.store = store

    @property
    def target_name(self) -> str:
        return getattr(self.ex, "name", "?")

    def backing_for(self, name: str) -> str:
        """The backing path of volume ``name`` (see :func:`volume_name`)."""
        return self.store.path_for(name)

    def ensure_volume(self, iqn: str, backing_path: str, size_gb: int,
                      initiators: Sequence[str]) -> bool:
        """Create or find one volume; True if anything changed. See :meth:`ensure_volumes`."""
        return self.ensure_volumes([VolumeSpec(iqn, backing_path, size_gb)], initiators)[iqn]

    def ensure_volumes(self, volumes: Sequence[VolumeSpec],
                       initiators: Sequence[str]) -> Dict[str, bool]:
        raise NotImplementedError

    def _check_sizes(self, volumes, free, sizes) -> Dict[str, int]:
        """-> {backing: bytes to add}; refuses shrinking and what does not fit."""
        grow, need = {}, 0
        for v in volumes:
            if v.size_gb < 1:
                raise StorageError(self.target_name, "volume %s: size must be at least 1 GB"
                                   % v.iqn)
            if not self.store.owns(v.backing):
                raise StorageError(self.target_name, "volume %s: backing %s is not in %s"
                                   % (v.iqn, v.backing, self.store.backing_dir))
            have = sizes.get(v.backing)
            if have is not None and have > v.size_bytes:
                raise StorageError(self.target_name, "volume %s: cannot shrink %s from %.1f GB "
                                   "to %d GB (a volume's size can only grow)"
                                   % (v.iqn, v.backing, have / GIB, v.size_gb))
            if have is None or have < v.size_bytes:
                grow[v.backing] = v.size_bytes - (have or 0)
                need += grow[v.backing]
        if need > free:
            raise OutOfSpace(self.target_name, "not enough space for %d volume(s) in %s: "
                             "%.2f GB needed, %.2f GB free" % (
                                 len(volumes), self.store.backing_dir, need / GIB, free / GIB))
        return grow


def _acl_opt(initiator: str) -> str:
    return "--initiator-name" if initiator.startswith(("iqn.", "eui.", "naa.")) \
        else "--initiator-address"


class TgtBackend(_Backend):
    """Volumes on a Linux SCSI target framework daemon (``tgtd``), driven with ``tgtadm``.

    One target per volume, named by its IQN; its LUN 1 is the backing store; the ACL binds the
    given initiator addresses (or iSCSI names). tgtd keeps targets in memory only: a target it
    forgot (restart) is recreated around the existing backing store, whose data is untouched.

    :param control_port: tgtd's ``-C`` (``/var/run/tgtd/socket.N``); 0 is the default daemon.
    """

    lun = 1

    def __init__(self, executor: Executor, backing_dir: Optional[str] = None,
                 backing: str = "file", vg: Optional[str] = None, control_port: int = 0):
        if backing not in ("file", "lvm"):
            raise ValueError("backing must be file or lvm, got %r" % backing)
        store = LvmStore(vg) if backing == "lvm" else FileStore(backing_dir or "")
        super().__init__(executor, store)
        self.control_port = int(control_port)

    def tgtadm(self, *args) -> Argv:
        head = ["tgtadm"] + (["-C", str(self.control_port)] if self.control_port else [])
        return head + ["--lld", "iscsi"] + [str(a) for a in args]

    def _show_cmd(self) -> Argv:
        return self.tgtadm("--mode", "target", "--op", "show")

    def show(self) -> Dict[str, dict]:
        """What tgtd serves now (see :func:`parse_tgtadm_show`)."""
        return parse_tgtadm_show(self.ex.execute(self._show_cmd()))

    def _probe(self):
        outs = self.ex.run_script(self.store.probe_cmds() + [self._show_cmd()])
        free, sizes = self.store.parse_probe(outs[:-1])
        return free, sizes, parse_tgtadm_show(outs[-1])

    def ensure_volumes(self, volumes: Sequence[VolumeSpec],
                       initiators: Sequence[str]) -> Dict[str, bool]:
        """Make each volume exist: backing store of at least its size, target, LUN 1, ACL.

        Two remote execs for any number of volumes: one probe, one batched script (nothing if
        all exist). Idempotent; a half-done earlier call is completed, never duplicated.

        :returns: ``{iqn: changed}``.
        :raises OutOfSpace: before anything is made, when the new bytes do not fit.
        :raises StorageError: a shrink, or an IQN whose LUN uses another backing store.
        :raises RemoteCommandError: tgtadm (or truncate/lvcreate) failed; what ran stays.
        """
        name = self.target_name
        inits = _initiators(initiators, name)
        if len({v.iqn for v in volumes}) != len(volumes):
            raise StorageError(name, "the same IQN is given twice")
        free, sizes, shown = self._probe()
        grow = self._check_sizes(volumes, free, sizes)
        tids = [t["tid"] for t in shown.values()]
        next_tid = max(tids + [0]) + 1
        cmds: List[Argv] = []
        changed = {}
        for v in volumes:
            mine: List[Argv] = []
            cur = shown.get(v.iqn)
            lu = cur["luns"].get(self.lun) if cur else None
            if lu is not None and lu["backing"] != v.backing:
                raise StorageError(name, "target %s exists with LUN %d on %s, not %s: not "
                                   "touching it" % (v.iqn, self.lun, lu["backing"], v.backing))
            if v.backing in grow:
                mine += self.store.grow_cmds(v.backing, v.size_bytes, v.backing in sizes)
            if cur is None:
                tid = next_tid
                next_tid += 1
                mine.append(self.tgtadm("--mode", "target", "--op", "new", "--tid", tid,
                                        "--targetname", v.iqn))
            else:
                tid = cur["tid"]
            # tgtd fixes a LU's size when it is added: after a grow it is re-added (same store).
            # tgtadm shows rounded decimal MB: a LU 1 MB or more short is stale.
            stale = lu is not None and lu["size_bytes"] + 1000 * 1000 < v.size_bytes
            if stale or (lu is not None and v.backing in grow):
                if cur["sessions"]:
                    raise StorageError(name, "volume %s is in use (%d initiator session(s)): it "
                                       "can only grow while its cluster is stopped"
                                       % (v.iqn, cur["sessions"]))
                mine.append(self.tgtadm("--mode", "logicalunit", "--op", "delete", "--tid", tid,
                                        "--lun", self.lun))
                lu = None
            if lu is None:
                mine.append(self.tgtadm("--mode", "logicalunit", "--op", "new", "--tid", tid,
                                        "--lun", self.lun, "--backing-store", v.backing))
            # the ACL admits exactly the given initiators: bind the missing, unbind the others
            acl = cur["acl"] if cur else []
            for op, who in [("bind", i) for i in inits if i not in acl] + \
                           [("unbind", a) for a in acl if a not in inits]:
                mine.append(self.tgtadm("--mode", "target", "--op", op, "--tid", tid,
                                        _acl_opt(who), who))
            changed[v.iqn] = bool(mine)
            if mine:
                LOG.info("target %s: volume %s (%d GB, %s): %s", name, v.iqn, v.size_gb,
                         v.backing, "creating" if cur is None else "completing/growing")
            cmds += mine
        if cmds:
            self._run(cmds)
        return changed

    def remove_volume(self, iqn: str, backing_path: str) -> bool:
        """Delete the target (``--force``: sessions, LUN and ACL go with it) and its backing
        store. Idempotent; True if anything was there."""
        free, sizes, shown = self._probe()
        cmds: List[Argv] = []
        cur = shown.get(iqn)
        if cur is not None:
            if any(lu["backing"] not in (None, backing_path) for lu in cur["luns"].values()):
                raise StorageError(self.target_name, "target %s serves a LUN that is not %s: "
                                   "not removing it" % (iqn, backing_path))
            cmds.append(self.tgtadm("--mode", "target", "--op", "delete", "--force", "--tid",
                                    cur["tid"]))
        if backing_path in sizes:
            if not self.store.owns(backing_path):
                raise StorageError(self.target_name, "backing %s is not in %s: not removing it"
                                   % (backing_path, self.store.backing_dir))
            cmds += self.store.remove_cmds(backing_path)
        if cmds:
            LOG.info("target %s: removing volume %s and %s", self.target_name, iqn,
                     backing_path)
            self._run(cmds)
        return bool(cmds)

    def _run(self, cmds):
        try:
            return self.ex.run_script(cmds)
        except RemoteCommandError as e:
            if "No space left" in e.stderr or "Insufficient free space" in e.stderr:
                raise OutOfSpace(self.target_name, "out of space in %s: %s failed: %s" % (
                    self.store.backing_dir, shlex.join(e.argv), e.stderr.strip())) from e
            raise


##################
# LIO backend    #
##################


def parse_targetcli_ls(text: str) -> Dict[str, dict]:
    """``targetcli ls /`` (the tree) -> ``{"backstores": {name: {"kind", "path"}}, "targets":
    {iqn: {"luns": {n: backstore "kind/name"}, "acl": [initiator]}}}``."""
    stack: List[Tuple[int, str]] = []
    backstores: Dict[str, dict] = {}
    targets: Dict[str, dict] = {}
    for raw in text.splitlines():
        m = re.match(r"^([ |]*)o- (\S+)(?:\s+\.+)?\s*(?:\[(.*)\])?\s*$", raw)
        if not m:
            continue
        depth = len(m.group(1)) // 2
        node, info = m.group(2), m.group(3) or ""
        stack = [s for s in stack if s[0] < depth]
        stack.append((depth, node))
        path = [s[1] for s in stack]
        if len(path) == 4 and path[1] == "backstores" and path[2] in ("fileio", "block"):
            bs = re.match(r"^(\S+)", info)
            backstores["%s/%s" % (path[2], node)] = {"kind": path[2],
                                                     "path": bs.group(1) if bs else None}
        elif len(path) == 3 and path[1] == "iscsi":
            targets[node] = {"luns": {}, "acl": []}
        elif len(path) == 6 and path[1] == "iscsi" and path[4] == "luns":
            lm = re.match(r"^lun(\d+)$", node)
            bm = re.match(r"^(\S+)", info)
            if lm and path[2] in targets:
                targets[path[2]]["luns"][int(lm.group(1))] = bm.group(1) if bm else None
        elif len(path) == 6 and path[1] == "iscsi" and path[4] == "acls":
            if path[2] in targets:
                targets[path[2]]["acl"].append(node)
    return {"backstores": backstores, "targets": targets}


class TargetcliBackend(_Backend):
    """Volumes on the kernel's LIO target, driven with ``targetcli`` (targetcli-fb).

    Same verbs as :class:`TgtBackend`. LIO differs: LUNs count from 0, ACLs admit initiator
    *names* (IQNs: libvirt/QEMU's, e.g. ``iqn.2008-11.org.linux-kvm:HOST``), not addresses, and
    the configuration is saved with ``saveconfig`` so that it survives a reboot. Checked at the
    command level only (this project's machines have no configfs/LIO).
    """

    lun = 0

    def __init__(self, executor: Executor, backing_dir: Optional[str] = None,
                 backing: str = "file", vg: Optional[str] = None):
        if backing not in ("file", "lvm"):
            raise ValueError("backing must be file or lvm, got %r" % backing)
        store = LvmStore(vg) if backing == "lvm" else FileStore(backing_dir or "")
        super().__init__(executor, store)
        self.bs_kind = "block" if backing == "lvm" else "fileio"

    @staticmethod
    def _bs_name(backing: str) -> str:
        base = os.path.basename(backing)
        return base[:-4] if base.endswith(".img") else base

    def show(self) -> Dict[str, dict]:
        return parse_targetcli_ls(self.ex.execute(["targetcli", "ls", "/"]))

    def _probe(self):
        outs = self.ex.run_script(self.store.probe_cmds() + [["targetcli", "ls", "/"]])
        free, sizes = self.store.parse_probe(outs[:-1])
        return free, sizes, parse_targetcli_ls(outs[-1])

    def _bs_create(self, name, backing) -> Argv:
        if self.bs_kind == "fileio":
            return ["targetcli", "/backstores/fileio", "create", "name=%s" % name,
                    "file_or_dev=%s" % backing, "write_back=false"]
        return ["targetcli", "/backstores/block", "create", "name=%s" % name,
                "dev=%s" % backing]

    def ensure_volumes(self, volumes: Sequence[VolumeSpec],
                       initiators: Sequence[str]) -> Dict[str, bool]:
        name = self.target_name
        inits = _initiators(initiators, name)
        bad = [i for i in inits if not i.startswith(("iqn.", "eui.", "naa."))]
        if bad:
            raise StorageError(name, "LIO ACLs admit initiator names (IQNs), not addresses: %s"
                               % ", ".join(bad))
        free, sizes, state = self._probe()
        grow = self._check_sizes(volumes, free, sizes)
        cmds: List[Argv] = []
        changed = {}
        for v in volumes:
            mine: List[Argv] = []
            bs = self._bs_name(v.backing)
            bs_key = "%s/%s" % (self.bs_kind, bs)
            have_bs = state["backstores"].get(bs_key)
            if have_bs is not None and have_bs["path"] != v.backing:
                raise StorageError(name, "backstore %s exists on %s, not %s: not touching it"
                                   % (bs_key, have_bs["path"], v.backing))
            recreated = False
            if v.backing in grow:
                mine += self.store.grow_cmds(v.backing, v.size_bytes, v.backing in sizes)
                if have_bs is not None:
                    # LIO fixes the size when the backstore is made: re-create it (its LUNs go
                    # with it and are re-created below; the data stays in the file/LV)
                    mine.append(["targetcli", "/backstores/%s" % self.bs_kind, "delete", bs])
                    have_bs, recreated = None, True
            if have_bs is None:
                mine.append(self._bs_create(bs, v.backing))
            cur = state["targets"].get(v.iqn)
            if cur is None:
                mine.append(["targetcli", "/iscsi", "create", v.iqn])
            tpg = "/iscsi/%s/tpg1" % v.iqn
            luns = cur["luns"] if cur else {}
            if recreated or bs_key not in luns.values():
                mine.append(["targetcli", tpg + "/luns", "create",
                             "/backstores/%s/%s" % (self.bs_kind, bs)])
            acl = cur["acl"] if cur else []
            for i in inits:
                if i not in acl:
                    mine.append(["targetcli", tpg + "/acls", "create", i])
            changed[v.iqn] = bool(mine)
            cmds += mine
        if cmds:
            cmds.append(["targetcli", "saveconfig"])
            self.ex.run_script(cmds)
        return changed

    def remove_volume(self, iqn: str, backing_path: str) -> bool:
        free, sizes, state = self._probe()
        cmds: List[Argv] = []
        bs = self._bs_name(backing_path)
        if iqn in state["targets"]:
            cmds.append(["targetcli", "/iscsi", "delete", iqn])
        if "%s/%s" % (self.bs_kind, bs) in state["backstores"]:
            cmds.append(["targetcli", "/backstores/%s" % self.bs_kind, "delete", bs])
        if backing_path in sizes:
            cmds += self.store.remove_cmds(backing_path)
        if cmds:
            cmds.append(["targetcli", "saveconfig"])
            self.ex.run_script(cmds)
        return bool(cmds)


BACKENDS = {"tgt": TgtBackend, "targetcli": TargetcliBackend}


def backend_for(kind: str, executor: Executor, **opts):
    """``backend_for("tgt", ex, backing_dir=..., backing="file")`` and the like."""
    try:
        cls = BACKENDS[kind]
    except KeyError:
        raise ValueError("unknown iSCSI backend %r (known: %s)" % (kind, ", ".join(BACKENDS))) \
            from None
    return cls(executor, **opts)

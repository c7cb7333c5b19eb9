"""The one seam for running commands: on this machine, over ``ssh``, or over SSH to an iSCSI
target host whose key is pinned. Every command VC runs outside its own process goes through an
:class:`Executor` made here.

The protocol
    An executor runs an argv list and returns its stdout (``run(argv)``; an executor is also
    callable, ``ex(argv)``: the ``execute`` the isolation backends, the registrar and
    :mod:`vc.disks` take, which may as well be a plain function). ``run_script(cmds)`` runs
    several in one go, in order, stopping at the first failure. A failure is a
    :class:`CommandError` with ``argv``, ``returncode`` (None: it could not run or timed out) and
    ``stderr``; an executor that speaks for an iSCSI target host raises its subclass
    :class:`RemoteCommandError`, whose message names the target. Every argv is checked
    (:func:`check_argv`: no NUL, no line break) and, where a shell is involved, quoted with
    :func:`shlex.join`; every command and its exit status is logged, and logs and messages show
    a secret argument (``--password P``, ``password=P``) as ``********`` (:func:`mask_argv`).
    ``close()`` ends a connection.

The executors
    :class:`LocalExecutor` (this machine: one command without a shell, a script with
    ``/bin/sh``, with a timeout that kills the whole process group), :class:`OpenSSHExecutor`
    (the ``ssh`` program with ``BatchMode``: the hosts behind ``qemu+ssh://`` URIs, trusted as
    libvirt's own transport trusts them; see :func:`executor_for_uri`) and :class:`SSHExecutor`
    (paramiko, for iSCSI target hosts). A script runs in one remote exec (one SSH round trip,
    one remote shell start) under ``set -e``, with a marker line before each command so that
    each command's output comes back separately and a failure names the command that failed.

Target access
    This is the only VC module that imports ``paramiko`` (lazily, inside :class:`SSHExecutor` and
    :func:`probe_host_key`: the web pages must not pay ~80 ms to import it). The frontend has one
    ed25519 key pair, made once under ``<state_dir>/ssh`` by :func:`frontend_key`; its public key
    is what the target host must authorise. A target host's SSH key is pinned by its SHA256
    :func:`fingerprint` (:class:`Target.fingerprint`), recorded only when an admin confirms what
    :func:`probe_host_key` shows. :class:`SSHExecutor` loads no known_hosts file at all and
    checks every server key against the pin (:class:`PinnedHostKeyPolicy`): no pin is
    :class:`HostKeyUnknown`, another key is :class:`HostKeyChanged`. One connection per target,
    opened on first use and reused (:class:`SSHPool` hands out one executor per target for a
    run).
"""

import abc
import base64
import dataclasses
import fcntl
import hashlib
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
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from vc.errors import HypervisorError, VcError

LOG = logging.getLogger(__name__)

Argv = List[str]
#: ``execute(argv) -> stdout``: what a caller that runs single commands needs (any Executor is
#: one, and so is a plain function raising CommandError).
Execute = Callable[[Sequence[str]], str]

FINGERPRINT_RE = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
#: seconds a local command may run by default (qemu-img on a large image)
LOCAL_TIMEOUT = 600


##################
# Exceptions     #
##################


#: an argv element that says the next one is a secret (``tgtadm --password P``)
SECRET_OPTIONS = ("--password",)
#: an argv element ``KEY=secret`` (``targetcli ... set auth password=P``)
SECRET_KEYS = ("password=", "mutual_password=", "--password=")
MASK = "********"


def mask_argv(argv: Sequence[str]) -> Argv:
    """``argv`` with every secret replaced by :data:`MASK`: what logs and messages show of a
    command (the command itself runs unmasked)."""
    out, hide = [], False
    for a in argv:
        a = str(a)
        key = next((k for k in SECRET_KEYS if a.lower().startswith(k)), None)
        if hide:
            out.append(MASK)
        elif key:
            out.append(a[:len(key)] + MASK)
        else:
            out.append(a)
        hide = not hide and key is None and a in SECRET_OPTIONS
    return out


def shown(argv: Sequence[str]) -> str:
    """A command as logs and messages show it: quoted, secrets masked."""
    return shlex.join(mask_argv(argv))


def _failure(argv: Argv, returncode: Optional[int], stderr: str, no_status: str) -> str:
    status = "exit status %s" % returncode if returncode is not None else no_status
    return "%s failed (%s): %s" % (shown(argv), status, stderr.strip() or "no error output")


class CommandError(HypervisorError):
    """A command run by an executor failed; the message carries its stderr.

    ``returncode`` is None when it could not run or timed out; ``argv`` has its secrets
    masked (:func:`mask_argv`), like every message about it."""

    def __init__(self, argv, returncode, stderr):
        self.argv, self.returncode, self.stderr = mask_argv(argv), returncode, stderr or ""
        super().__init__(_failure(self.argv, returncode, self.stderr, "could not run"))


class StorageError(VcError):
    """Something about an iSCSI target host failed. ``target`` is the target's name; every
    message starts with it."""

    def __init__(self, target: str, cause: str):
        self.target, self.cause = target, cause
        # not super(): in RemoteCommandError the next class is CommandError
        VcError.__init__(self, "iSCSI target %s: %s" % (target, cause))


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



class RemoteCommandError(StorageError, CommandError):
    """A command on the target host failed (or timed out: ``returncode`` None). It is the
    protocol's :class:`CommandError` too, so a caller of any executor catches it alike."""

    def __init__(self, target: str, argv: Sequence[str], returncode: Optional[int], stderr: str):
        self.argv, self.returncode, self.stderr = mask_argv(argv), returncode, stderr or ""
        self.code = None
        StorageError.__init__(self, target, _failure(self.argv, returncode, self.stderr,
                                                     "no exit status"))


##################
# Checks         #
##################


def fingerprint(key) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key, as ``ssh-keygen -l`` prints it.

    :param key: the key's wire blob (``bytes``), an OpenSSH public key line (``str``:
        ``ssh-ed25519 AAAA... comment``) or a paramiko key (anything with ``asbytes()``).
    :raises ValueError: a ``str`` that is not a public key line.
    """
    if isinstance(key, str):
        parts = key.split()
        if len(parts) < 2:
            raise ValueError("not an OpenSSH public key line")
        blob = base64.b64decode(parts[1])
    elif isinstance(key, bytes):
        blob = key
    else:
        blob = key.asbytes()
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")

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
# Executors      #
##################


def _spawn(argv: Argv, timeout: Optional[float],
           data: Optional[bytes] = None) -> Tuple[Optional[int], str, str]:
    """Run ``argv`` (no shell) in a session of its own, so that a timeout kills it with all its
    children: ``(exit status or None on timeout, stdout, stderr)``. ``data``: bytes for its
    stdin (else it reads /dev/null). :raises OSError:"""
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL if data is None else subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            rc = None
        else:
            rc = proc.returncode
    return rc, _text(out), _text(err)


def _text(b: Optional[bytes]) -> str:
    """Bytes as ``text=True`` would give them (universal newlines)."""
    return (b or b"").decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")


class Executor(abc.ABC):
    """Runs argv lists on one host (see the module's docstring for the protocol). Subclasses
    implement :meth:`_run` and may batch :meth:`_run_script` (by default one :meth:`_run` per
    command).

    :attr name: how logs and messages name the host.
    :attr is_target: it speaks for the iSCSI target host ``name``: failures are
        :class:`RemoteCommandError` and every command is logged at INFO (else DEBUG).
    """

    name = "local"
    is_target = False

    def run(self, argv: Sequence[str]) -> str:
        """Run one command; its stdout. :raises CommandError:"""
        return self._run(check_argv(argv))

    __call__ = run

    def run_input(self, argv: Sequence[str], data: bytes) -> str:
        """Run one command with ``data`` on its stdin (e.g. a seed image written on a host
        with ``sh -c 'cat > F'``); its stdout. :raises CommandError:"""
        argv = check_argv(argv)
        rc, out, err = self._exec_input(argv, data)
        self._log(argv, rc, err)
        if rc is None:
            raise self._error(argv, None, "timed out after %s s" % getattr(
                self, "command_timeout", None))
        if rc:
            raise self._error(argv, rc, err)
        return out

    def _exec_input(self, argv: Argv, data: bytes) -> Tuple[Optional[int], str, str]:
        raise NotImplementedError("%s cannot pass stdin" % type(self).__name__)

    def run_script(self, cmds: Iterable[Sequence[str]]) -> List[str]:
        """Run the commands in order, in one go; their stdouts. The first failure is raised
        (what ran before it stays done). :raises CommandError:"""
        cmds = [check_argv(c) for c in cmds]
        if not cmds:
            return []
        return self._run_script(cmds)

    def close(self) -> None:  # noqa: B027 - most executors hold no connection
        """End the connection, if the executor holds one (the next command opens another)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @abc.abstractmethod
    def _run(self, argv: Argv) -> str:
        """Run one checked command; its stdout. :raises CommandError:"""

    def _run_script(self, cmds: List[Argv]) -> List[str]:
        return [self._run(c) for c in cmds]

    # -- for subclasses ------------------------------------------------------------------------

    @property
    def label(self) -> str:
        return ("target %s" if self.is_target else "%s") % self.name

    def _error(self, argv: Argv, returncode: Optional[int], stderr: str) -> CommandError:
        if self.is_target:
            return RemoteCommandError(self.name, argv, returncode, stderr)
        return CommandError(argv, returncode, stderr)

    def _log(self, argv: Argv, returncode: Optional[int], stderr: str = "") -> None:
        if returncode == 0:
            LOG.log(logging.INFO if self.is_target else logging.DEBUG, "%s: rc=0 %s", self.label,
                    shown(argv))
        else:
            LOG.warning("%s: rc=%s %s: %s", self.label, returncode, shown(argv),
                        stderr.strip()[-500:])


class ShellExecutor(Executor):
    """An executor that runs a POSIX shell script: ``set -e``, then each command quoted with
    shlex.join, each preceded by a marker line. The markers split the output per command and
    tell which command a failure came from (anything a login shell prints before the script,
    e.g. from a noisy ~/.bashrc, falls before the first marker and is dropped). One command is a
    script of one."""

    command_timeout: Optional[float] = 60

    @abc.abstractmethod
    def _exec(self, script: str) -> Tuple[Optional[int], str, str]:
        """Run ``script``; ``(exit status or None on timeout, stdout, stderr)``."""

    def _run(self, argv: Argv) -> str:
        return self._run_script([argv])[0]

    def _run_script(self, cmds: List[Argv]) -> List[str]:
        token = "@@vc-%s" % uuid.uuid4().hex[:12]
        lines = ["set -e"]
        for i, argv in enumerate(cmds):
            lines.append("printf '\\n%s:%d\\n'" % (token, i))
            lines.append(shlex.join(argv))
        lines.append("printf '\\n%s:end\\n'" % token)
        t0 = time.monotonic()
        try:
            rc, out, err = self._exec("\n".join(lines))
        except OSError as e:  # the shell (or ssh) itself cannot start
            raise self._error(cmds[0], None, str(e)) from e
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
                self._log(argv, 0)
            elif i == reached:
                self._log(argv, rc, err)
        LOG.debug("%s: %d command(s) in one exec, %.0f ms", self.label, len(cmds), ms)
        if finished and rc == 0:
            return outputs[: len(cmds)]
        if rc is None:
            failed = cmds[max(reached, 0)]
            raise self._error(failed, None, "timed out after %s s%s" % (
                self.command_timeout, (": " + err.strip()) if err.strip() else ""))
        if reached < 0:
            raise self._error(cmds[0], rc, "the remote shell failed before the first command: "
                              + (err.strip() or out.strip()[-300:]))
        failed = cmds[reached] if not finished else cmds[-1]
        raise self._error(failed, rc, err)


class LocalExecutor(ShellExecutor):
    """Runs commands on this machine: one command directly (no shell), a script with
    ``/bin/sh``. Each in a session of its own, so that a timeout ends all of it.

    :param name: how logs (and, with ``target``, messages) name this machine.
    :param command_timeout: seconds a command or a script may run.
    :param is_target: this machine is the iSCSI target host ``name`` (tests, benchmarks, a
        frontend that is its own target host): failures are :class:`RemoteCommandError`.
    """

    def __init__(self, name: str = "local", command_timeout: Optional[float] = LOCAL_TIMEOUT,
                 is_target: bool = False):
        self.name, self.command_timeout, self.is_target = name, command_timeout, is_target

    def _run(self, argv: Argv) -> str:
        try:
            rc, out, err = _spawn(argv, self.command_timeout)
        except OSError as e:
            raise self._error(argv, None, str(e)) from e
        self._log(argv, rc, err)
        if rc is None:
            raise self._error(argv, None, "timed out after %s s" % self.command_timeout)
        if rc:
            raise self._error(argv, rc, err)
        return out

    def _exec(self, script):
        return _spawn(["/bin/sh", "-c", script], self.command_timeout)

    def _exec_input(self, argv, data):
        try:
            return _spawn(argv, self.command_timeout, data)
        except OSError as e:
            return 127, "", str(e)


class OpenSSHExecutor(ShellExecutor):
    """Runs commands on a host with the ``ssh`` program: the trust libvirt's own ``qemu+ssh://``
    transport uses (the system's known_hosts and keys), ``BatchMode`` (never a prompt).

    :param dest: ``[user@]host``.
    :param port: the SSH port (None: ssh's default).
    """

    def __init__(self, dest: str, port: Optional[int] = None, name: Optional[str] = None,
                 connect_timeout: float = 10, command_timeout: Optional[float] = LOCAL_TIMEOUT,
                 keyfile: Optional[str] = None, mux_dir: Optional[str] = None):
        self.dest, self.name, self.command_timeout = dest, name or dest, command_timeout
        self.ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=%d" % connect_timeout]
        if mux_dir:  # share one SSH connection per host (see ssh_mux_options)
            self.ssh += ssh_mux_options(mux_dir)
        if port:
            self.ssh += ["-p", str(port)]
        if keyfile:  # the URI's ?keyfile=, as libvirt's ssh transport uses it
            self.ssh += ["-i", keyfile, "-o", "IdentitiesOnly=yes"]

    def __repr__(self):
        return "OpenSSHExecutor(%r)" % self.dest

    def _exec(self, script):
        return _spawn(self.ssh + [self.dest, "--", script], self.command_timeout)

    def _exec_input(self, argv, data):
        try:
            return _spawn(self.ssh + [self.dest, "--", shlex.join(argv)], self.command_timeout,
                          data)
        except OSError as e:
            return 127, "", str(e)


def run_local(argv: Sequence[str], timeout: Optional[float] = LOCAL_TIMEOUT) -> str:
    """Run ``argv`` here (no shell) and return its stdout (a :class:`LocalExecutor`'s ``run``).

    :raises CommandError: it could not run, timed out or exited non-zero (with its stderr).
    """
    return LocalExecutor(command_timeout=timeout).run(argv)


def executor_for_uri(uri: str, name: Optional[str] = None, connect_timeout: float = 10,
                     mux_dir: Optional[str] = None) -> Executor:
    """How to run a command on the physical host behind a libvirt URI: a
    :class:`LocalExecutor` for a local URI (``qemu:///system``, ``test:///...``), an
    :class:`OpenSSHExecutor` for ``qemu+ssh://[user@]host[:port]/...``.

    :param name: how logs name the host (default: ``local`` or the URI's host name).
    :param mux_dir: share SSH connections through control sockets there
        (:func:`ssh_mux_dir`); None: one SSH connection per command.
    :raises HypervisorError: any other transport.
    """
    u = urlsplit(uri)
    _, _, transport = u.scheme.partition("+")
    if not u.hostname and not transport:
        return LocalExecutor(name or "local")
    if transport == "ssh" and u.hostname:
        dest = ("%s@%s" % (u.username, u.hostname)) if u.username else u.hostname
        key = next((v for k, v in parse_qsl(u.query) if k == "keyfile"), None)
        return OpenSSHExecutor(dest, u.port, name=name or u.hostname, keyfile=key,
                               connect_timeout=connect_timeout, mux_dir=mux_dir)
    raise HypervisorError(host=uri, op="run host commands",
                          detail="only local and qemu+ssh:// hosts are supported")


#: seconds an idle shared SSH connection to a host stays open (OpenSSH ``ControlPersist``)
SSH_PERSIST = 120
#: a shared connection whose host stopped answering dies after about 3 s x 2 (a dead master
#: costs nothing: the next ssh makes a new one)
SSH_ALIVE = ("3", "2")


def ssh_mux_dir(state_dir: str) -> str:
    """The directory of the control sockets VC's SSH connections to its hosts share, made
    (0700, ours) if missing. Under the temp directory, named by a hash of ``state_dir``: a
    socket path must stay under ~100 bytes, and OpenSSH's ``%C`` alone is 40.

    :raises VcError: it exists but is not a directory of ours.
    """
    import tempfile

    h = hashlib.sha1(os.path.abspath(state_dir).encode()).hexdigest()[:12]
    d = os.path.join(tempfile.gettempdir(), "vc-ssh-%d-%s" % (os.getuid(), h))
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(d)
    import stat

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise VcError("%s: not a private directory of this user (SSH control sockets)" % d)
    return d


def close_ssh_mux(mux_dir: str) -> int:
    """End the shared SSH masters whose sockets are in ``mux_dir`` (``ssh -O exit``) and
    remove the directory (``make stop``, the tests' teardown). :returns: masters ended."""
    ended = 0
    try:
        names = os.listdir(mux_dir)
    except FileNotFoundError:
        return 0
    for name in names:
        sock = os.path.join(mux_dir, name)
        r = subprocess.run(["ssh", "-o", "ControlPath=" + sock, "-O", "exit", "vc-mux"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        ended += r.returncode == 0
        if os.path.exists(sock):
            os.unlink(sock)
    os.rmdir(mux_dir)
    return ended


def ssh_mux_options(mux_dir: str) -> List[str]:
    """``ssh`` options that share one connection per host: the first ``ssh`` becomes the
    master and stays :data:`SSH_PERSIST` s in the background (its stdio on /dev/null), the
    next ones open a session on it (no TCP handshake, key exchange or authentication). A
    stale socket is removed by ``ssh`` itself; keepalives end a master whose host is gone."""
    return ["-o", "ControlMaster=auto", "-o", "ControlPath=%s/%%C" % mux_dir,
            "-o", "ControlPersist=%d" % SSH_PERSIST,
            "-o", "ServerAliveInterval=%s" % SSH_ALIVE[0],
            "-o", "ServerAliveCountMax=%s" % SSH_ALIVE[1]]


def ssh_command(state_dir: str, connect_timeout: int = 10) -> str:
    """The ``ssh`` libvirt's ``qemu+ssh://`` transport runs (its URI's ``command=``): a
    script ``<state_dir>/ssh/vc-ssh`` that runs ``ssh`` with :func:`ssh_mux_options`, so
    libvirt's connections and the host commands share one SSH connection per host, and with a
    ``ConnectTimeout`` (libvirt's transport has none). Written (atomically) when it differs."""
    d = os.path.join(state_dir, "ssh")
    os.makedirs(d, 0o700, exist_ok=True)
    path = os.path.join(d, "vc-ssh")
    opts = ["-o", "ConnectTimeout=%d" % connect_timeout] + ssh_mux_options(ssh_mux_dir(state_dir))
    text = "#!/bin/sh\n# made by VC (vc/remote.py ssh_command): libvirt's ssh, sharing " \
        "connections\n" \
        "exec ssh %s \"$@\"\n" % shlex.join(opts)
    try:
        with open(path) as f:
            if f.read() == text:
                return path
    except OSError:
        pass
    tmp = "%s.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o700)
    os.replace(tmp, path)
    return path


def shared_ssh_uri(uri: str, state_dir: str) -> str:
    """``uri`` with ``command=`` :func:`ssh_command` for a ``qemu+ssh://`` URI that names no
    ``command`` of its own; any other URI unchanged."""
    u = urlsplit(uri)
    if not u.scheme.endswith("+ssh") or any(k == "command" for k, _ in parse_qsl(u.query)):
        return uri
    q = (u.query + "&" if u.query else "") + "command=" + quote(ssh_command(state_dir), safe="/")
    return urlunsplit((u.scheme, u.netloc, u.path, q, u.fragment))


##################
# Target hosts   #
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
        return key.get_name(), fingerprint(key)
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise _unreachable(name, where, e) from e
    finally:
        t.close()


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
        got = fingerprint(key)
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
    """Runs commands on an iSCSI target host over one SSH connection, opened on first use and
    reused while it is alive (reopened once if it died).

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
        self.is_target = True
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

"""vc.remote without services: the argv checks, the executors (here, the shell script protocol,
the ``ssh`` CLI one), the fingerprint, the host key policy, the frontend key and the paramiko
error mapping. The real sshd is in tests/real/test_storage_real.py."""

import base64
import os
import socket
import stat
import subprocess
import sys

import pytest

from fakes import RecordingExecutor
from vc import remote
from vc.errors import HypervisorError, VcError
from vc.remote import (AuthFailed, CommandError, HostKeyChanged, HostKeyUnknown,
                       RemoteCommandError, StorageError, TargetUnreachable)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_check_fingerprint():
    fp = "SHA256:" + "a" * 43
    assert remote.check_fingerprint(" %s\n" % fp) == fp
    for bad in ("", "MD5:aa:bb", "SHA256:short", fp + "x", "sha256:" + "a" * 43):
        with pytest.raises(ValueError):
            remote.check_fingerprint(bad)


# -- argv checks and the shell script protocol ------------------------------------------------


@pytest.mark.parametrize("argv", [[], "tgtadm --op show", ["echo", "a\nrm -rf /"],
                                  ["echo", "a\0b"], ["echo", "a\rb"], ["echo", 3], [b"echo"]])
def test_argv_injection_refused_before_running(argv):
    host = RecordingExecutor()
    with pytest.raises(ValueError):
        host.run_script([["true"], argv])
    with pytest.raises(ValueError):
        host.run(argv)
    assert host.scripts == []


def test_local_executor_quotes_every_argument():
    ex = remote.LocalExecutor()
    nasty = "a; echo pwned $(id) `id` 'q' \"d\" * > /tmp/x | &"
    assert ex.run(["printf", "%s", nasty]) == nasty
    assert ex.run(["printf", "%s|", "", " "]) == "| |"
    # and through the shell, where shlex.join does the quoting
    assert ex.run_script([["printf", "%s", nasty], ["printf", "%s|", "", " "]]) == [nasty, "| |"]


def test_local_executor_splits_outputs_per_command():
    ex = remote.LocalExecutor()
    assert ex.run_script([["printf", "a"], ["printf", "b\\n\\n"], ["true"], ["echo", "c"]]) == \
        ["a", "b\n\n", "", "c\n"]


def test_script_stops_at_first_failure_and_names_it(tmp_path):
    ex = remote.LocalExecutor(name="t9", is_target=True)
    marker = tmp_path / "after"
    with pytest.raises(RemoteCommandError) as ei:
        ex.run_script([["true"], ["sh", "-c", "echo out; echo oops >&2; exit 3"],
                       ["touch", str(marker)]])
    e = ei.value
    assert e.argv == ["sh", "-c", "echo out; echo oops >&2; exit 3"]
    assert e.returncode == 3 and e.stderr.strip() == "oops"
    assert str(e).startswith("iSCSI target t9: sh -c ") and "exit status 3" in str(e)
    assert not marker.exists()
    assert isinstance(e, StorageError) and isinstance(e, VcError)


def test_script_timeout():
    ex = remote.LocalExecutor(name="t9", command_timeout=0.5, is_target=True)
    with pytest.raises(RemoteCommandError) as ei:
        ex.run(["sleep", "5"])
    assert ei.value.returncode is None and "timed out" in str(ei.value)
    with pytest.raises(RemoteCommandError) as ei:
        ex.run_script([["true"], ["sleep", "5"]])
    assert ei.value.argv == ["sleep", "5"] and "timed out" in str(ei.value)


def test_every_command_and_status_is_logged(caplog):
    ex = remote.LocalExecutor(name="t9", is_target=True)
    caplog.set_level("INFO", logger="vc.remote")
    with pytest.raises(RemoteCommandError):
        ex.run_script([["echo", "x y"], ["false"], ["echo", "never"]])
    msgs = [r.getMessage() for r in caplog.records]
    assert "target t9: rc=0 echo 'x y'" in msgs
    assert any(m.startswith("target t9: rc=1 false") for m in msgs)
    assert not any("never" in m for m in msgs)


# -- the local and ssh executors, by URI --------------------------------------------------------


def test_run_local_error_carries_stderr(tmp_path):
    missing = str(tmp_path / "missing.img")
    with pytest.raises(CommandError) as ei:
        remote.run_local(["qemu-img", "info", missing])
    assert ei.value.returncode == 1
    assert "qemu-img info %s failed (exit status 1)" % missing in str(ei.value)
    assert "No such file or directory" in str(ei.value)
    assert isinstance(ei.value, HypervisorError)


def test_run_local_missing_program():
    with pytest.raises(CommandError, match="could not run"):
        remote.run_local(["/nonexistent/qemu-img", "info"])


def test_a_plain_executor_raises_command_error():
    ex = remote.LocalExecutor()
    with pytest.raises(CommandError) as ei:
        ex.run_script([["true"], ["sh", "-c", "exit 4"]])
    assert not isinstance(ei.value, StorageError)
    assert ei.value.argv == ["sh", "-c", "exit 4"] and ei.value.returncode == 4
    assert str(ei.value) == "sh -c 'exit 4' failed (exit status 4): no error output"
    # a target's failure is the protocol's error too
    e = RemoteCommandError("t9", ["false"], 1, "")
    assert isinstance(e, CommandError) and isinstance(e, HypervisorError)
    assert str(e) == "iSCSI target t9: false failed (exit status 1): no error output"
    assert e.target == "t9" and e.cause == "false failed (exit status 1): no error output"


def test_an_executor_is_an_execute_callable():
    ex = RecordingExecutor(outputs={("echo",): "hi\n", ("echo", "x"): lambda a: a[1]})
    assert ex(["echo", "y"]) == "hi\n" and ex.run(["echo", "x"]) == "x"
    assert ex(["other"]) == ""
    assert ex.calls == [["echo", "y"], ["echo", "x"], ["other"]]
    assert ex.scripts == [[["echo", "y"]], [["echo", "x"]], [["other"]]]


def test_executor_for_uri():
    for uri in ("qemu:///system", "test:///default", "qemu:///session"):
        ex = remote.executor_for_uri(uri)
        assert isinstance(ex, remote.LocalExecutor) and ex.name == "local"
    ex = remote.executor_for_uri("qemu+ssh://root@h2:2222/system")
    assert isinstance(ex, remote.OpenSSHExecutor) and ex.name == "h2"
    assert ex.ssh == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", "2222"]
    assert ex.dest == "root@h2"
    ex = remote.executor_for_uri("qemu+ssh://h3/system", name="host3")
    assert (ex.dest, ex.name, ex.ssh[-1]) == ("h3", "host3", "ConnectTimeout=10")
    for uri in ("qemu+tcp://h/system", "qemu+tls://h/system", "xen+ssh:///"):
        with pytest.raises(HypervisorError, match="only local and qemu\\+ssh:// hosts"):
            remote.executor_for_uri(uri)


def test_openssh_executor_runs_the_marker_script_over_ssh(monkeypatch):
    """One ``ssh ... -- <script>`` per batch; its output split per command, its failure named
    (the script runs here with /bin/sh in place of the remote shell)."""
    seen = []

    def fake_spawn(argv, timeout):
        seen.append((argv, timeout))
        assert argv[-2] == "--"
        return real_spawn(["/bin/sh", "-c", "echo motd from .bashrc; " + argv[-1]], timeout)

    real_spawn = remote._spawn
    monkeypatch.setattr(remote, "_spawn", fake_spawn)
    ex = remote.OpenSSHExecutor("root@h2", 2222, name="h2", command_timeout=30)
    assert ex.run_script([["echo", "a b"], ["printf", "%s", "x'y"]]) == ["a b\n", "x'y"]
    assert ex.run(["echo", "one"]) == "one\n"
    assert len(seen) == 2 and seen[0][1] == 30
    assert seen[0][0][:-1] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p",
                               "2222", "root@h2", "--"]
    assert "echo 'a b'" in seen[0][0][-1] and seen[0][0][-1].startswith("set -e\n")
    with pytest.raises(CommandError) as ei:
        ex.run_script([["true"], ["sh", "-c", "echo no >&2; exit 5"], ["echo", "never"]])
    assert ei.value.argv == ["sh", "-c", "echo no >&2; exit 5"] and ei.value.returncode == 5
    assert not isinstance(ei.value, StorageError)


def test_openssh_executor_unreachable_host(monkeypatch):
    monkeypatch.setattr(remote, "_spawn", lambda argv, timeout: (
        255, "", "ssh: connect to host h2 port 22: Connection refused\n"))
    with pytest.raises(CommandError) as ei:
        remote.OpenSSHExecutor("h2").run(["ip", "link"])
    assert ei.value.returncode == 255 and "Connection refused" in str(ei.value)
    assert "the remote shell failed before the first command" in str(ei.value)


# -- host keys, the frontend key, paramiko errors ---------------------------------------------


class FakeKey:
    def __init__(self, blob):
        self.blob = blob

    def asbytes(self):
        return self.blob

    def get_name(self):
        return "ssh-ed25519"


@pytest.fixture(scope="module")
def keypair(tmp_path_factory):
    state = str(tmp_path_factory.mktemp("state"))
    return remote.frontend_key(state), state


def test_fingerprint_matches_ssh_keygen(keypair):
    (path, pub), _ = keypair
    blob = base64.b64decode(pub.split()[1])
    want = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", path + ".pub"],
                          capture_output=True, text=True, check=True).stdout.split()[1]
    assert remote.fingerprint(FakeKey(blob)) == want
    # the one helper: of a key, of its blob, of its OpenSSH line
    assert remote.fingerprint(blob) == remote.fingerprint(pub) == want
    with pytest.raises(ValueError):
        remote.fingerprint("ssh-ed25519")
    assert remote.check_fingerprint(want) == want


def test_frontend_key_is_made_once_with_private_modes(keypair):
    (path, pub), state = keypair
    assert path == os.path.join(state, "ssh", "id_ed25519")
    assert pub.startswith("ssh-ed25519 ") and pub.endswith(" vc-frontend")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # the web pages (www-data) read the public half only: traverse, no listing
    assert stat.S_IMODE(os.stat(path + ".pub").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o711
    before = open(path).read()
    assert remote.frontend_key(state) == (path, pub)
    assert open(path).read() == before
    os.unlink(path + ".pub")  # a lost public half is derived again, not a new pair
    assert remote.frontend_key(state) == (path, pub)
    assert open(path).read() == before


def test_host_key_policy():
    key = FakeKey(b"\x00\x00\x00\x0bssh-ed25519" + b"k" * 36)
    fp = remote.fingerprint(key)
    remote.PinnedHostKeyPolicy("st1", fp).missing_host_key(None, "[h]:22", key)
    with pytest.raises(HostKeyUnknown) as ei:
        remote.PinnedHostKeyPolicy("st1", None).missing_host_key(None, "[h]:22", key)
    assert str(ei.value).startswith("iSCSI target st1: ") and fp in str(ei.value)
    assert "vc_ctl.py target trust st1" in str(ei.value)
    other = "SHA256:" + "B" * 43
    with pytest.raises(HostKeyChanged) as ei:
        remote.PinnedHostKeyPolicy("st1", other).missing_host_key(None, "[h]:22", key)
    assert ei.value.expected == other and ei.value.got == fp
    assert "expected %s, got %s" % (other, fp) in str(ei.value)
    assert str(ei.value).startswith("iSCSI target st1: ")


def test_module_imports_paramiko_lazily_and_never_auto_adds():
    code = "import sys, vc.remote, vc.iscsi; print('paramiko' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "False"
    src = open(os.path.join(ROOT, "vc", "remote.py")).read()
    assert "AutoAddPolicy" not in src and "load_system_host_keys()" not in src.replace(
        "no load_system_host_keys()", "")
    # the only module that imports paramiko
    users = []
    for d, _, files in os.walk(os.path.join(ROOT, "vc")):
        for f in files:
            if f.endswith(".py") and "import paramiko" in open(os.path.join(d, f)).read():
                users.append(os.path.relpath(os.path.join(d, f), ROOT))
    assert users == ["vc/remote.py"]


@pytest.fixture
def target():
    return remote.Target("st1", "192.0.2.10", 2222, fingerprint="SHA256:" + "A" * 43)


def _connect_raising(monkeypatch, exc):
    import paramiko

    seen = {}

    def fake_connect(self, hostname, **kw):
        seen.update(kw, hostname=hostname)
        raise exc

    monkeypatch.setattr(paramiko.SSHClient, "connect", fake_connect)
    return seen


def test_connect_options(monkeypatch, keypair, target):
    import paramiko

    seen = _connect_raising(monkeypatch, paramiko.AuthenticationException("Authentication failed."))
    ex = remote.SSHExecutor(target, keypair[0][0], connect_timeout=7, command_timeout=9)
    with pytest.raises(AuthFailed) as ei:
        ex.run(["true"])
    assert seen["hostname"] == "192.0.2.10" and seen["port"] == 2222
    assert seen["username"] == "root" and seen["look_for_keys"] is False
    assert seen["allow_agent"] is False
    assert seen["timeout"] == seen["banner_timeout"] == seen["auth_timeout"] == 7
    msg = str(ei.value)
    assert msg.startswith("iSCSI target st1: ") and "authorized_keys" in msg
    assert keypair[0][0] + ".pub" in msg


@pytest.mark.parametrize("make_exc,cls,text", [
    (lambda p: p.ssh_exception.NoValidConnectionsError(
        {("192.0.2.10", 2222): ConnectionRefusedError(111, "refused")}),
     TargetUnreachable, "connection refused"),
    (lambda p: socket.timeout("timed out"), TargetUnreachable, "timed out"),
    (lambda p: p.SSHException("Error reading SSH protocol banner"), TargetUnreachable,
     "protocol banner"),
    (lambda p: OSError(113, "No route to host"), TargetUnreachable, "No route to host"),
    (lambda p: p.BadAuthenticationType("Bad authentication type", ["password"]), AuthFailed,
     "refused the frontend's SSH key"),
    (lambda p: HostKeyChanged("st1", "SHA256:a", "SHA256:b"), HostKeyChanged, "CHANGED"),
])
def test_connect_errors_are_mapped(monkeypatch, keypair, target, make_exc, cls, text):
    import paramiko

    _connect_raising(monkeypatch, make_exc(paramiko))
    with pytest.raises(cls) as ei:
        remote.SSHExecutor(target, keypair[0][0]).run(["true"])
    assert str(ei.value).startswith("iSCSI target st1: ") and text in str(ei.value)


def test_unreadable_frontend_key(target, tmp_path):
    with pytest.raises(StorageError, match="^iSCSI target st1: cannot read the frontend's SSH"):
        remote.SSHExecutor(target, str(tmp_path / "missing")).run(["true"])


def test_probe_host_key_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(TargetUnreachable, match="^iSCSI target st9: .*refused"):
            remote.probe_host_key("127.0.0.1", port, timeout=2, name="st9")


def test_pool_gives_one_executor_per_target(keypair, target):
    with remote.SSHPool(keypair[0][0]) as pool:
        a = pool.get(target)
        assert pool.get(remote.Target(**vars(target))) is a
        assert pool.get(remote.Target("st2", "192.0.2.11")) is not a


def test_target_portal():
    assert remote.Target("a", "10.0.0.5", iscsi_port=3261).portal == "10.0.0.5:3261"
    assert remote.Target("a", "fd00::5").portal == "[fd00::5]:3260"

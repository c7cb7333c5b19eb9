"""vc.iscsi and vc.remote against a real target host: the project's own sshd (127.0.0.1, a free
port, key only, its own host key) and tgtd (portal on 127.0.0.1, a free port, its own control
socket), started by tools/storage.sh under a throw-away VC_VAR and stopped by their pid files at
the end. Checked from the outside with the userspace initiator tools (libiscsi's iscsi-ls and
iscsi-readcapacity16, qemu-io over iscsi://; CHAP credentials go in the URL,
``iscsi://USER%SECRET@host:port/iqn/lun``). If the services cannot start, these tests FAIL.
"""

import logging
import os
import random
import socket
import stat
import subprocess
import time

import pytest

from vc import iscsi, remote
from vc.iscsi import Chap, OutOfSpace, VolumeSpec
from vc.remote import (AuthFailed, HostKeyChanged, HostKeyUnknown, RemoteCommandError,
                       TargetUnreachable)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "storage.sh")
GIB = 1024 ** 3
PREFIX = "iqn.2026-11.vc.test%d" % random.randrange(10 ** 6)
NAME = "st-real"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_control_port():
    """A tgtd control socket number nobody uses (/var/run/tgtd/socket.N is per machine)."""
    for _ in range(100):
        n = random.randrange(1000, 30000)
        if not any(os.path.exists("/var/run/tgtd/socket.%d%s" % (n, x)) for x in ("", ".lock")):
            return n
    raise RuntimeError("no free tgtd control port")


class Services:
    def __init__(self, var):
        self.var = var
        self.ssh_port, self.iscsi_port = free_port(), free_port()
        self.control = free_control_port()
        self.env = dict(os.environ, VC_VAR=var, VC_SSH_PORT=str(self.ssh_port),
                        VC_ISCSI_PORT=str(self.iscsi_port), VC_TGT_CONTROL=str(self.control))
        self.portal = "127.0.0.1:%d" % self.iscsi_port
        self.backing = os.path.join(var, "storage", "backing")

    def tool(self, *args, check=True):
        r = subprocess.run(["bash", TOOL] + list(args), env=self.env, capture_output=True,
                           text=True, timeout=300)
        if check and r.returncode:
            pytest.fail("tools/storage.sh %s failed (%d): %s" % (" ".join(args), r.returncode,
                                                                  r.stderr.strip()[-2000:]))
        return r

    def read_env(self):
        out = {}
        with open(os.path.join(self.var, "storage", "storage.env")) as f:
            for line in f:
                k, sep, v = line.strip().partition("=")
                if sep and not k.startswith("#"):
                    out[k] = v
        return out

    def target(self, fingerprint="pinned", **kw):
        return remote.Target(NAME, "127.0.0.1", self.ssh_port, "root", self.iscsi_port,
                              self.fingerprint if fingerprint == "pinned" else fingerprint, **kw)

    def executor(self, **kw):
        return remote.SSHExecutor(self.target(), self.key, **kw)

    def backend(self, ex, backing_dir=None):
        return iscsi.TgtBackend(ex, backing_dir or self.backing, control_port=self.control)


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    var = str(tmp_path_factory.mktemp("storage-var"))
    s = Services(var)
    r = s.tool("start", check=False)
    try:
        if r.returncode:
            pytest.fail("cannot start the test sshd/tgtd with tools/storage.sh start: %s"
                        % r.stderr.strip()[-2000:])
        env = s.read_env()
        if env.get("VC_STORAGE_TGTD_OURS") != "1":
            pytest.fail("tools/storage.sh did not start a tgtd of its own: %s" % r.stderr)
        s.host_fp = env["VC_STORAGE_FINGERPRINT"]
        assert r.stdout.strip().splitlines()[-1] == s.host_fp
        # the frontend's key, authorized on the target host like an admin would
        s.key, s.pub = remote.frontend_key(os.path.join(var, "state"))
        s.tool("authorize", s.key + ".pub")
        # "test connection": what an admin compares with the target host before trusting it
        kind, fp = remote.probe_host_key("127.0.0.1", s.ssh_port, timeout=10, name=NAME)
        assert (kind, fp) == ("ssh-ed25519", s.host_fp)
        s.fingerprint = fp
        yield s
    finally:
        s.tool("stop", check=False)
        for pf in ("ssh/sshd.pid", "tgt/tgtd.pid"):
            assert not os.path.exists(os.path.join(var, "storage", pf)), pf


def run(*argv, timeout=60):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)


def url(svc, iqn=None, chap=None):
    """libiscsi's URL: with ``chap``, ``iscsi://USER%SECRET@portal/...``."""
    who = "%s%%%s@" % (chap.user, chap.secret) if chap else ""
    return "iscsi://%s%s/%s" % (who, svc.portal, "%s/1" % iqn if iqn else "")


def iscsi_ls(svc, chap=None):
    r = run("iscsi-ls", "-s", url(svc, chap=chap))
    return r.stdout if r.returncode == 0 else ""  # rc 10 when no target at all


def capacity(svc, iqn, chap=None):
    r = run("iscsi-readcapacity16", url(svc, iqn, chap))
    assert r.returncode == 0, r.stderr
    return int(next(ln for ln in r.stdout.splitlines() if ln.startswith("Total size:"))
               .split(":")[1])


def qemu_io(svc, iqn, cmd, chap=None):
    r = run("qemu-io", "-f", "raw", "-c", cmd, url(svc, iqn, chap))
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, \
        (cmd, r.stdout, r.stderr)
    return r.stdout


def spec(svc, rack, mount, size_gb, backing_dir=None):
    name = iscsi.volume_name(rack, mount)
    return VolumeSpec(iscsi.iqn_for(PREFIX, rack, mount),
                      "%s/%s.img" % (backing_dir or svc.backing, name), size_gb)


# -- the whole life of a reservation's volumes ------------------------------------------------


def test_create_two_volumes_seen_by_the_initiator_with_their_sizes(svc):
    with svc.executor() as ex:
        be = svc.backend(ex)
        v1, v2 = spec(svc, 31, "/data", 1), spec(svc, 31, "/home/shared", 2)
        hidden = spec(svc, 31, "/other", 1)
        assert be.ensure_volumes([v1, v2], ["127.0.0.1"]) == {v1.iqn: True, v2.iqn: True}
        # an ACL that admits only other hosts: this initiator (127.0.0.1) must not see it
        assert be.ensure_volume(hidden.iqn, hidden.backing, 1, ["192.0.2.7"]) is True
        listing = iscsi_ls(svc)
        for v in (v1, v2):
            assert "Target:%s Portal:%s" % (v.iqn, svc.portal) in listing, listing
        assert hidden.iqn not in listing
        assert capacity(svc, v1.iqn) == 1 * GIB
        assert capacity(svc, v2.iqn) == 2 * GIB
        assert os.path.getsize(v2.backing) == 2 * GIB
        # found, not duplicated; over the one connection
        assert be.ensure_volumes([v1, v2], ["127.0.0.1"]) == {v1.iqn: False, v2.iqn: False}
        shown = be.show()
        assert [shown[v.iqn]["luns"][1]["backing"] for v in (v1, v2)] == [v1.backing, v2.backing]
        assert shown[v1.iqn]["acl"] == ["127.0.0.1"]
        assert ex.connects == 1
        for v in (v1, v2, hidden):
            assert be.remove_volume(v.iqn, v.backing) is True


def test_data_survives_stop_and_a_tgtd_restart_then_delete_removes_all(svc):
    with svc.executor() as ex:
        be = svc.backend(ex)
        keep = spec(svc, 32, "/keep", 1)  # keeps iscsi-ls non-empty (rc 10 with no target)
        v = spec(svc, 32, "/data", 1)
        be.ensure_volumes([keep, v], ["127.0.0.1"])
        assert "wrote 1048576/1048576" in qemu_io(svc, v.iqn, "write -P 0xab 0 1M")
        qemu_io(svc, v.iqn, "write -P 0xcd 512M 1M")
        # "stop": the gateway detaches; storage does nothing, the LUN stays
        assert v.iqn in iscsi_ls(svc)
        # next start: found as it is
        assert be.ensure_volume(v.iqn, v.backing, 1, ["127.0.0.1"]) is False
        assert "read 1048576/1048576" in qemu_io(svc, v.iqn, "read -P 0xab 0 1M")
        # tgtd restarts and forgets every target; the next start recreates it around the file
        svc.tool("stop", "tgtd")
        svc.tool("start", "tgtd")
        assert be.show() == {}
        assert be.ensure_volume(v.iqn, v.backing, 1, ["127.0.0.1"]) is True
        assert os.path.getsize(v.backing) == GIB
        qemu_io(svc, v.iqn, "read -P 0xab 0 1M")
        qemu_io(svc, v.iqn, "read -P 0xcd 512M 1M")
        assert capacity(svc, v.iqn) == GIB
        # growing keeps the data too; shrinking is refused
        assert be.ensure_volume(v.iqn, v.backing, 2, ["127.0.0.1"]) is True
        assert capacity(svc, v.iqn) == 2 * GIB
        qemu_io(svc, v.iqn, "read -P 0xab 0 1M")
        with pytest.raises(remote.StorageError, match="^iSCSI target %s: .*cannot shrink" % NAME):
            be.ensure_volume(v.iqn, v.backing, 1, ["127.0.0.1"])
        # reservation deleted: LUN and backing file gone
        assert be.ensure_volume(keep.iqn, keep.backing, 1, ["127.0.0.1"]) is True  # restart
        assert be.remove_volume(v.iqn, v.backing) is True
        listing = iscsi_ls(svc)
        assert keep.iqn in listing and v.iqn not in listing
        assert not os.path.exists(v.backing)
        assert be.remove_volume(v.iqn, v.backing) is False
        assert be.remove_volume(keep.iqn, keep.backing) is True
        assert v.iqn not in be.show() and keep.iqn not in be.show()


def test_a_failed_batch_is_continued_by_the_next_try(svc):
    with svc.executor() as ex:
        be = svc.backend(ex)
        a, b = spec(svc, 33, "/a", 1), spec(svc, 33, "/b", 1)
        os.makedirs(b.backing)  # in the way: truncate fails on b, after a is made
        try:
            with pytest.raises(RemoteCommandError) as ei:
                be.ensure_volumes([a, b], ["127.0.0.1"])
            assert ei.value.argv[0] == "truncate" and str(ei.value).startswith(
                "iSCSI target %s: truncate" % NAME)
            assert a.iqn in be.show() and b.iqn not in be.show()
        finally:
            os.rmdir(b.backing)
        assert be.ensure_volumes([a, b], ["127.0.0.1"]) == {a.iqn: False, b.iqn: True}
        shown = be.show()
        assert sorted(k for k in shown if k.startswith(PREFIX + ":rack33.")) == [a.iqn, b.iqn]
        assert len({t["tid"] for t in shown.values()}) == len(shown)
        for v in (a, b):
            be.remove_volume(v.iqn, v.backing)


# -- CHAP and file modes ----------------------------------------------------------------------


def refused(svc, iqn, chap=None):
    """An initiator on an admitted host (127.0.0.1) without (the right) credentials: tgtd
    refuses the login."""
    r = run("iscsi-readcapacity16", url(svc, iqn, chap))
    return r.returncode != 0 and "Authentication failure" in r.stderr


def test_chap_refuses_an_initiator_without_the_credentials(svc, caplog):
    caplog.set_level(logging.DEBUG, logger="vc")
    chap = iscsi.new_chap()
    wrong = Chap(chap.user, "x" + chap.secret[1:])
    with svc.executor() as ex:
        be = svc.backend(ex)
        v = spec(svc, 36, "/data", 1)
        v = VolumeSpec(v.iqn, v.backing, v.size_gb, chap)
        assert be.ensure_volumes([v], ["127.0.0.1"]) == {v.iqn: True}
        # the ACL admits this host, yet without CHAP nobody here gets in: not a capacity, not
        # the LUN listing (discovery still names the target; logging in to it is what fails)
        assert refused(svc, v.iqn) and refused(svc, v.iqn, wrong)
        listing = iscsi_ls(svc) or run("iscsi-ls", "-s", url(svc)).stdout
        assert "Target:%s" % v.iqn in listing
        assert "Target:%s Portal:%s,1\nLun:" % (v.iqn, svc.portal) not in listing, listing
        r = run("qemu-io", "-f", "raw", "-c", "read 0 512", url(svc, v.iqn))
        assert r.returncode != 0
        # with them: the LUN, its size, its data
        assert capacity(svc, v.iqn, chap) == GIB
        assert "Lun:1" in iscsi_ls(svc, chap).split("Target:%s" % v.iqn)[1]
        qemu_io(svc, v.iqn, "write -P 0x3c 0 64k", chap)
        qemu_io(svc, v.iqn, "read -P 0x3c 0 64k", chap)
        # found as it is; tgtd restarts (forgets targets and accounts): made again, still CHAP
        assert be.ensure_volume(v.iqn, v.backing, 1, ["127.0.0.1"], chap) is False
        svc.tool("stop", "tgtd")
        svc.tool("start", "tgtd")
        assert be.ensure_volume(v.iqn, v.backing, 1, ["127.0.0.1"], chap) is True
        assert refused(svc, v.iqn)
        qemu_io(svc, v.iqn, "read -P 0x3c 0 64k", chap)
        # new credentials replace the old ones
        other = iscsi.new_chap()
        assert be.ensure_volume(v.iqn, v.backing, 1, ["127.0.0.1"], other) is True
        assert refused(svc, v.iqn, chap) and capacity(svc, v.iqn, other) == GIB
        assert be.show()[v.iqn]["accounts"] == [other.user]
        # removal takes the account with the target
        assert be.remove_volume(v.iqn, v.backing) is True
        accounts = ex.run(be.tgtadm("--mode", "account", "--op", "show"))
        assert other.user not in accounts and chap.user not in accounts
    # the secret went to tgtadm over SSH, but no log line shows it
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "--mode account --op new --user %s --password" % chap.user in text
    for secret in (chap.secret, wrong.secret, other.secret):
        assert secret not in text


def test_lun_files_are_private(svc):
    with svc.executor() as ex:
        be = svc.backend(ex)
        v = spec(svc, 37, "/data", 1)
        # a file left by an older VC, world-readable, with its directory
        os.makedirs(svc.backing, exist_ok=True)
        os.chmod(svc.backing, 0o755)
        old = spec(svc, 37, "/old", 1)
        with open(old.backing, "wb") as f:
            f.write(b"cluster data")
        os.chmod(old.backing, 0o644)
        assert be.ensure_volumes([v, old], ["127.0.0.1"]) == {v.iqn: True, old.iqn: True}
        for path in (v.backing, old.backing):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        assert stat.S_IMODE(os.stat(svc.backing).st_mode) == 0o700
        # another local account cannot read a cluster's data
        r = run("runuser", "-u", "nobody", "--", "head", "-c", "64", v.backing)
        assert r.returncode != 0 and "Permission denied" in r.stderr, r
        # tgtd (root) still serves them
        assert capacity(svc, v.iqn) == GIB and capacity(svc, old.iqn) == GIB
        for x in (v, old):
            assert be.remove_volume(x.iqn, x.backing) is True


# -- failures ---------------------------------------------------------------------------------


def test_wrong_pinned_host_key_is_refused(svc):
    wrong = "SHA256:" + "A" * 43
    with pytest.raises(HostKeyChanged) as ei:
        remote.SSHExecutor(svc.target(fingerprint=wrong), svc.key).run(["true"])
    msg = str(ei.value)
    assert msg.startswith("iSCSI target %s: " % NAME) and wrong in msg and svc.fingerprint in msg


def test_unconfirmed_host_key_is_refused(svc):
    with pytest.raises(HostKeyUnknown) as ei:
        remote.SSHExecutor(svc.target(fingerprint=None), svc.key).run(["true"])
    assert str(ei.value).startswith("iSCSI target %s: " % NAME)
    assert "vc_ctl.py target trust %s" % NAME in str(ei.value)


def test_unauthorized_key_is_refused(svc, tmp_path):
    other, _ = remote.frontend_key(str(tmp_path))
    with pytest.raises(AuthFailed) as ei:
        remote.SSHExecutor(svc.target(), other).run(["true"])
    assert str(ei.value).startswith("iSCSI target %s: " % NAME)
    assert "authorized_keys" in str(ei.value)


def test_stopped_sshd_is_unreachable(svc):
    svc.tool("stop", "sshd")
    try:
        t0 = time.monotonic()
        with pytest.raises(TargetUnreachable) as ei:
            remote.SSHExecutor(svc.target(), svc.key, connect_timeout=5).run(["true"])
        assert time.monotonic() - t0 < 5
        assert str(ei.value).startswith("iSCSI target %s: " % NAME)
        assert "connection refused" in str(ei.value)
    finally:
        svc.tool("start", "sshd")
    # same host key after the restart: the pin still holds
    assert remote.SSHExecutor(svc.target(), svc.key).run(["echo", "back"]) == "back\n"


def test_stopped_tgtd_is_a_tgtadm_error(svc):
    v = spec(svc, 34, "/data", 1)
    with svc.executor() as ex:
        be = svc.backend(ex)
        svc.tool("stop", "tgtd")
        try:
            with pytest.raises(RemoteCommandError) as ei:
                be.ensure_volume(v.iqn, v.backing, 1, ["127.0.0.1"])
            msg = str(ei.value)
            assert msg.startswith("iSCSI target %s: tgtadm " % NAME), msg
            assert ei.value.argv[0] == "tgtadm" and ei.value.returncode != 0
        finally:
            svc.tool("start", "tgtd")
        assert be.ensure_volume(v.iqn, v.backing, 1, ["127.0.0.1"]) is True
        assert be.remove_volume(v.iqn, v.backing) is True


def test_full_disk_is_out_of_space(svc, tmp_path):
    mnt = str(tmp_path / "small")
    os.makedirs(mnt)
    r = run("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt)
    if r.returncode:
        pytest.fail("cannot mount an 8M tmpfs for the full-disk test: %s" % r.stderr)
    try:
        with svc.executor() as ex:
            be = svc.backend(ex, backing_dir=mnt)
            v = spec(svc, 35, "/big", 1, backing_dir=mnt)
            with pytest.raises(OutOfSpace) as ei:
                be.ensure_volume(v.iqn, v.backing, 1, ["127.0.0.1"])
            msg = str(ei.value)
            assert msg.startswith("iSCSI target %s: " % NAME) and mnt in msg, msg
            assert os.listdir(mnt) == [] and v.iqn not in be.show()
    finally:
        run("umount", mnt)


def test_a_lost_connection_is_reopened_once(svc):
    with svc.executor() as ex:
        assert ex.run(["echo", "one"]) == "one\n"
        ex.transport().close()  # the connection dies between two commands
        assert ex.run(["echo", "two"]) == "two\n"
        assert ex.connects == 2

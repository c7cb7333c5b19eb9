"""vc.storage without services: exact command lines through a recording executor over a small
simulated target host (files, df, tgtd), the naming rules, argv checks, the host key policy and
the paramiko error mapping. The real sshd/tgtd/initiator checks are in tests/real/."""

import base64
import math
import os
import shlex
import socket
import stat
import subprocess
import sys

import pytest

from vc import storage
from vc.errors import VcError
from vc.storage import (AuthFailed, HostKeyChanged, HostKeyUnknown, OutOfSpace,
                        RemoteCommandError, StorageError, TargetUnreachable, VolumeSpec)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1024 ** 3
BD = "/srv/vc"
IQN1 = "iqn.2026-11.vc.frontend:rack3.data"
IQN2 = "iqn.2026-11.vc.frontend:rack3.home"
IMG1 = BD + "/vc-rack3-data.img"
IMG2 = BD + "/vc-rack3-home.img"
PROBE = [["mkdir", "-p", BD], ["df", "-B1", "--output=avail", BD],
         ["find", BD, "-maxdepth", "1", "-type", "f", "-printf", "%s %p\\n"],
         ["tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show"]]


def tgt(*args):
    return ["tgtadm", "--lld", "iscsi"] + [str(a) for a in args]


# -- a simulated target host ------------------------------------------------------------------


class FakeHost(storage.Executor):
    """Records every script and plays a target host: files with sizes, free space, and tgtd's
    targets. ``fail_on`` (a predicate on argv) makes that command fail (rc 22) once."""

    def __init__(self, free=100 * GIB, name="t1"):
        self.name = name
        self.free = free
        self.files = {}
        self.targets = {}  # iqn -> {"tid", "luns": {lun: (path, size)}, "acl": [], "sessions"}
        self.scripts = []
        self.fail_on = None
        self.fail_stderr = "tgtadm: invalid request"
        self.mb = round  # how tgtadm rounds sizes to MB

    @property
    def commands(self):
        return [c for s in self.scripts for c in s]

    def mutations(self):
        """Scripts that changed something (all but the read-only probes)."""
        return [s for s in self.scripts if s != PROBE and s != [PROBE[-1]]]

    def _run_script(self, cmds):
        self.scripts.append(cmds)
        outs = []
        for c in cmds:
            if self.fail_on and self.fail_on(c):
                self.fail_on = None
                raise RemoteCommandError(self.name, c, 22, self.fail_stderr)
            outs.append(self.run1(c))
        return outs

    def by_tid(self, tid):
        return next(k for k, t in self.targets.items() if t["tid"] == int(tid))

    def run1(self, c):
        if c[0] == "mkdir":
            return ""
        if c[0] == "df":
            return "  Avail\n%d\n" % self.free
        if c[0] == "find":
            return "".join("%d %s\n" % (s, p) for p, s in sorted(self.files.items()))
        if c[0] == "truncate":
            size = int(c[2].lstrip(">"))
            self.free -= max(0, size - self.files.get(c[3], 0))
            self.files[c[3]] = max(size, self.files.get(c[3], 0))
            return ""
        if c[0] == "rm":
            self.free += self.files.pop(c[-1], 0)
            return ""
        if c[0] == "tgtadm":
            a = [x for x in c[1:] if x != "--force"]
            if a[0] == "-C":
                a = a[2:]
            opt = dict(zip(a[::2], a[1::2]))
            mode, op = opt["--mode"], opt["--op"]
            if mode == "target" and op == "show":
                return self.render()
            if mode == "target" and op == "new":
                assert opt["--targetname"] not in self.targets, "duplicate target"
                assert all(t["tid"] != int(opt["--tid"]) for t in self.targets.values())
                self.targets[opt["--targetname"]] = {"tid": int(opt["--tid"]), "luns": {},
                                                     "acl": [], "sessions": 0}
                return ""
            t = self.targets[self.by_tid(opt["--tid"])]
            if mode == "target" and op == "delete":
                del self.targets[self.by_tid(opt["--tid"])]
            elif mode == "logicalunit" and op == "new":
                path = opt["--backing-store"]
                self.files[path]  # tgtadm: invalid request on a missing file
                t["luns"][int(opt["--lun"])] = (path, self.files[path])
            elif mode == "logicalunit" and op == "delete":
                del t["luns"][int(opt["--lun"])]
            elif op == "bind":
                who = opt.get("--initiator-address") or opt["--initiator-name"]
                t["acl"].append(who)
            elif op == "unbind":
                who = opt.get("--initiator-address") or opt["--initiator-name"]
                t["acl"].remove(who)
            return ""
        raise AssertionError("unexpected command %r" % c)

    def render(self):
        """tgtadm's --op show, in its real layout (abridged)."""
        out = []
        for iqn, t in sorted(self.targets.items(), key=lambda kv: kv[1]["tid"]):
            out += ["Target %d: %s" % (t["tid"], iqn), "    System information:",
                    "        Driver: iscsi", "        State: ready",
                    "    I_T nexus information:"]
            for n in range(t["sessions"]):
                out += ["        I_T nexus: %d" % (n + 1),
                        "            Initiator: iqn.2008-11.org.linux-kvm alias: h1",
                        "            Connection: 0", "                IP Address: 127.0.0.1"]
            out += ["    LUN information:", "        LUN: 0", "            Type: controller",
                    "            Size: 0 MB, Block size: 1",
                    "            Backing store path: None"]
            for lun, (path, size) in sorted(t["luns"].items()):
                out += ["        LUN: %d" % lun, "            Type: disk",
                        "            Size: %d MB, Block size: 512" % self.mb(size / 1e6),
                        "            Backing store type: rdwr",
                        "            Backing store path: %s" % path,
                        "            Backing store flags: "]
            out += ["    Account information:", "    ACL information:"]
            out += ["        %s" % a for a in t["acl"]]
        return "\n".join(out) + ("\n" if out else "")


@pytest.fixture
def host():
    return FakeHost()


@pytest.fixture
def be(host):
    return storage.TgtBackend(host, BD)


def vols(*specs):
    return [VolumeSpec(i, p, g) for i, p, g in specs]


# -- names ------------------------------------------------------------------------------------


def test_iqn_and_backing_names():
    assert storage.iqn_for("iqn.2026-11.vc.frontend", 3, "/data") == IQN1
    assert storage.iqn_for("iqn.2026-11.vc.frontend", 3, "/home/shared/") == \
        "iqn.2026-11.vc.frontend:rack3.home-shared"
    assert storage.volume_name(3, "/data") == "vc-rack3-data"
    assert storage.TgtBackend(FakeHost(), BD).backing_for("vc-rack3-data") == IMG1
    assert storage.TgtBackend(FakeHost(), backing="lvm", vg="vg0").backing_for("vc-rack3-data") \
        == "/dev/vg0/vc-rack3-data"


@pytest.mark.parametrize("mount", ["/data", "/Data", "/a_b", "/a-b", "/a/b", "/x" * 150,
                                   "/ünï/cøde", "/v1.2"])
def test_slug_is_deterministic_valid_and_bounded(mount):
    iqn = storage.iqn_for(storage.DEFAULT_IQN_PREFIX, 12, mount)
    assert iqn == storage.iqn_for(storage.DEFAULT_IQN_PREFIX, 12, mount)
    assert len(iqn) <= 223
    assert all(ch in "abcdefghijklmnopqrstuvwxyz0123456789.-:" for ch in iqn), iqn


def test_slugs_never_collide():
    mounts = ["/a_b", "/a-b", "/a/b", "/A/b", "/a.b", "/ab"]
    assert len({storage.slug(m) for m in mounts}) == len(mounts)
    assert storage.slug("/a/b") == "a-b" and storage.slug("/a.b") == "a.b"
    assert storage.slug("/a-b").startswith("a-b-") and len(storage.slug("/a-b")) == 12


@pytest.mark.parametrize("prefix", ["iqn.2026-11", "IQN.2026-11.vc", "iqn.26-11.vc", "eui.123",
                                    "iqn.2026-11.vc:x"])
def test_bad_iqn_prefix(prefix):
    with pytest.raises(ValueError):
        storage.iqn_for(prefix, 1, "/data")


def test_check_fingerprint():
    fp = "SHA256:" + "a" * 43
    assert storage.check_fingerprint(" %s\n" % fp) == fp
    for bad in ("", "MD5:aa:bb", "SHA256:short", fp + "x", "sha256:" + "a" * 43):
        with pytest.raises(ValueError):
            storage.check_fingerprint(bad)


# -- argv checks and the shell script protocol ------------------------------------------------


@pytest.mark.parametrize("argv", [[], "tgtadm --op show", ["echo", "a\nrm -rf /"],
                                  ["echo", "a\0b"], ["echo", "a\rb"], ["echo", 3], [b"echo"]])
def test_argv_injection_refused_before_running(argv, host):
    with pytest.raises(ValueError):
        host.run_script([["true"], argv])
    assert host.scripts == []


def test_local_executor_quotes_every_argument():
    ex = storage.LocalExecutor()
    nasty = "a; echo pwned $(id) `id` 'q' \"d\" * > /tmp/x | &"
    assert ex.execute(["printf", "%s", nasty]) == nasty
    assert ex.execute(["printf", "%s|", "", " "]) == "| |"


def test_local_executor_splits_outputs_per_command():
    ex = storage.LocalExecutor()
    assert ex.run_script([["printf", "a"], ["printf", "b\\n\\n"], ["true"], ["echo", "c"]]) == \
        ["a", "b\n\n", "", "c\n"]


def test_script_stops_at_first_failure_and_names_it(tmp_path):
    ex = storage.LocalExecutor(name="t9")
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
    ex = storage.LocalExecutor(name="t9", command_timeout=0.5)
    with pytest.raises(RemoteCommandError) as ei:
        ex.execute(["sleep", "5"])
    assert ei.value.returncode is None and "timed out" in str(ei.value)


def test_every_command_and_status_is_logged(caplog):
    ex = storage.LocalExecutor(name="t9")
    caplog.set_level("INFO", logger="vc.storage")
    with pytest.raises(RemoteCommandError):
        ex.run_script([["echo", "x y"], ["false"], ["echo", "never"]])
    msgs = [r.getMessage() for r in caplog.records]
    assert "target t9: rc=0 echo 'x y'" in msgs
    assert any(m.startswith("target t9: rc=1 false") for m in msgs)
    assert not any("never" in m for m in msgs)


# -- tgt: create, find, grow, refuse ----------------------------------------------------------


def test_create_two_volumes_in_one_batched_script(host, be):
    changed = be.ensure_volumes(vols((IQN1, IMG1, 1), (IQN2, IMG2, 2)), ["10.0.0.1", "10.0.0.2"])
    assert changed == {IQN1: True, IQN2: True}
    assert host.scripts == [PROBE, [
        ["truncate", "-s", ">%d" % GIB, IMG1],
        tgt("--mode", "target", "--op", "new", "--tid", 1, "--targetname", IQN1),
        tgt("--mode", "logicalunit", "--op", "new", "--tid", 1, "--lun", 1,
            "--backing-store", IMG1),
        tgt("--mode", "target", "--op", "bind", "--tid", 1, "--initiator-address", "10.0.0.1"),
        tgt("--mode", "target", "--op", "bind", "--tid", 1, "--initiator-address", "10.0.0.2"),
        ["truncate", "-s", ">%d" % (2 * GIB), IMG2],
        tgt("--mode", "target", "--op", "new", "--tid", 2, "--targetname", IQN2),
        tgt("--mode", "logicalunit", "--op", "new", "--tid", 2, "--lun", 1,
            "--backing-store", IMG2),
        tgt("--mode", "target", "--op", "bind", "--tid", 2, "--initiator-address", "10.0.0.1"),
        tgt("--mode", "target", "--op", "bind", "--tid", 2, "--initiator-address", "10.0.0.2"),
    ]]
    assert host.files == {IMG1: GIB, IMG2: 2 * GIB}
    # the remote side sees exactly this quoting
    assert shlex.join(host.scripts[1][0]) == "truncate -s '>1073741824' " + IMG1


def test_existing_volumes_are_found_not_duplicated(host, be):
    be.ensure_volumes(vols((IQN1, IMG1, 1), (IQN2, IMG2, 2)), ["10.0.0.1"])
    host.scripts.clear()
    assert be.ensure_volumes(vols((IQN1, IMG1, 1), (IQN2, IMG2, 2)), ["10.0.0.1"]) == \
        {IQN1: False, IQN2: False}
    assert host.scripts == [PROBE]
    assert be.ensure_volume(IQN1, IMG1, 1, ["10.0.0.1"]) is False


def test_new_tids_follow_the_highest(host, be):
    host.targets["iqn.other:x"] = {"tid": 7, "luns": {}, "acl": [], "sessions": 0}
    be.ensure_volume(IQN1, IMG1, 1, ["10.0.0.1"])
    assert host.targets[IQN1]["tid"] == 8


def test_tgtd_restart_recreates_the_target_around_the_existing_file(host, be):
    be.ensure_volume(IQN1, IMG1, 5, ["10.0.0.1"])
    host.targets.clear()  # tgtd restarted: targets are in memory only
    host.scripts.clear()
    assert be.ensure_volume(IQN1, IMG1, 5, ["10.0.0.1"]) is True
    assert host.mutations() == [[
        tgt("--mode", "target", "--op", "new", "--tid", 1, "--targetname", IQN1),
        tgt("--mode", "logicalunit", "--op", "new", "--tid", 1, "--lun", 1,
            "--backing-store", IMG1),
        tgt("--mode", "target", "--op", "bind", "--tid", 1, "--initiator-address", "10.0.0.1"),
    ]]  # no truncate: the data is not touched


def test_grow_extends_the_file_and_re_adds_the_lun(host, be):
    be.ensure_volume(IQN1, IMG1, 1, ["10.0.0.1"])
    host.scripts.clear()
    assert be.ensure_volume(IQN1, IMG1, 3, ["10.0.0.1"]) is True
    assert host.mutations() == [[
        ["truncate", "-s", ">%d" % (3 * GIB), IMG1],
        tgt("--mode", "logicalunit", "--op", "delete", "--tid", 1, "--lun", 1),
        tgt("--mode", "logicalunit", "--op", "new", "--tid", 1, "--lun", 1,
            "--backing-store", IMG1),
    ]]
    assert host.targets[IQN1]["luns"][1] == (IMG1, 3 * GIB)


def test_grow_refused_while_an_initiator_is_logged_in(host, be):
    be.ensure_volume(IQN1, IMG1, 1, ["10.0.0.1"])
    host.targets[IQN1]["sessions"] = 1
    host.scripts.clear()
    with pytest.raises(StorageError, match="^iSCSI target t1: volume .* is in use"):
        be.ensure_volume(IQN1, IMG1, 2, ["10.0.0.1"])
    assert host.mutations() == [] and host.files[IMG1] == GIB


def test_a_grown_file_with_a_stale_lun_is_completed(host, be):
    """A grow that died after truncate: the next try re-adds the LUN only."""
    be.ensure_volume(IQN1, IMG1, 1, ["10.0.0.1"])
    host.fail_on = lambda c: "delete" in c
    with pytest.raises(RemoteCommandError):
        be.ensure_volume(IQN1, IMG1, 2, ["10.0.0.1"])
    assert host.files[IMG1] == 2 * GIB
    host.scripts.clear()
    assert be.ensure_volume(IQN1, IMG1, 2, ["10.0.0.1"]) is True
    assert host.mutations() == [[
        tgt("--mode", "logicalunit", "--op", "delete", "--tid", 1, "--lun", 1),
        tgt("--mode", "logicalunit", "--op", "new", "--tid", 1, "--lun", 1,
            "--backing-store", IMG1)]]


@pytest.mark.parametrize("rounding", [round, math.floor, math.ceil])
def test_tgtadm_mb_rounding_does_not_look_stale(host, be, rounding):
    host.mb = rounding
    for gb in (1, 4, 7):  # 4294.97 MB and 7516.19 MB round differently
        be.ensure_volume(IQN1, IMG1, gb, ["10.0.0.1"])
        host.scripts.clear()
        assert be.ensure_volume(IQN1, IMG1, gb, ["10.0.0.1"]) is False


def test_shrink_is_refused(host, be):
    be.ensure_volume(IQN1, IMG1, 4, ["10.0.0.1"])
    host.scripts.clear()
    with pytest.raises(StorageError) as ei:
        be.ensure_volume(IQN1, IMG1, 2, ["10.0.0.1"])
    assert str(ei.value).startswith("iSCSI target t1: ") and "cannot shrink" in str(ei.value)
    assert host.mutations() == [] and host.files[IMG1] == 4 * GIB


def test_out_of_space_is_checked_before_anything_is_made(host, be):
    host.free = 3 * GIB - 1
    with pytest.raises(OutOfSpace) as ei:
        be.ensure_volumes(vols((IQN1, IMG1, 1), (IQN2, IMG2, 2)), ["10.0.0.1"])
    msg = str(ei.value)
    assert msg.startswith("iSCSI target t1: ") and BD in msg and "3.00 GB needed" in msg
    assert host.scripts == [PROBE] and host.files == {} and host.targets == {}


def test_growth_counts_only_the_new_bytes(host, be):
    be.ensure_volume(IQN1, IMG1, 2, ["10.0.0.1"])
    host.free = GIB
    assert be.ensure_volume(IQN1, IMG1, 3, ["10.0.0.1"]) is True
    with pytest.raises(OutOfSpace):
        be.ensure_volume(IQN1, IMG1, 5, ["10.0.0.1"])


def test_no_space_from_the_host_is_out_of_space(host, be):
    host.fail_on = lambda c: c[0] == "truncate"
    host.fail_stderr = "truncate: failed to truncate 'x' at 1073741824 bytes: " \
        "No space left on device"
    with pytest.raises(OutOfSpace, match="^iSCSI target t1: out of space in /srv/vc"):
        be.ensure_volume(IQN1, IMG1, 1, ["10.0.0.1"])


def test_a_failed_batch_keeps_what_it_made_and_the_retry_continues(host, be):
    host.fail_on = lambda c: c[-1] == "10.0.0.2" and "2" in c[c.index("--tid") + 1]
    with pytest.raises(RemoteCommandError) as ei:
        be.ensure_volumes(vols((IQN1, IMG1, 1), (IQN2, IMG2, 1)), ["10.0.0.1", "10.0.0.2"])
    assert "tgtadm" in str(ei.value) and str(ei.value).startswith("iSCSI target t1: ")
    assert host.targets[IQN2]["acl"] == ["10.0.0.1"]  # half done
    host.scripts.clear()
    assert be.ensure_volumes(vols((IQN1, IMG1, 1), (IQN2, IMG2, 1)),
                             ["10.0.0.1", "10.0.0.2"]) == {IQN1: False, IQN2: True}
    assert host.mutations() == [[tgt("--mode", "target", "--op", "bind", "--tid", 2,
                                     "--initiator-address", "10.0.0.2")]]
    assert sorted(t["tid"] for t in host.targets.values()) == [1, 2]


def test_acl_admits_exactly_the_given_initiators(host, be):
    be.ensure_volume(IQN1, IMG1, 1, ["10.0.0.1", "10.0.0.9"])
    host.scripts.clear()
    assert be.ensure_volume(IQN1, IMG1, 1, ["10.0.0.1", "iqn.2008-11.org.linux-kvm:h2"]) is True
    assert host.mutations() == [[
        tgt("--mode", "target", "--op", "bind", "--tid", 1, "--initiator-name",
            "iqn.2008-11.org.linux-kvm:h2"),
        tgt("--mode", "target", "--op", "unbind", "--tid", 1, "--initiator-address",
            "10.0.0.9")]]


@pytest.mark.parametrize("bad", [[], ["frontend.example"], ["10.0.0.1", "1.2.3"]])
def test_initiators_must_be_addresses_or_names(be, bad):
    with pytest.raises(StorageError, match="^iSCSI target t1: "):
        be.ensure_volume(IQN1, IMG1, 1, bad)


def test_a_lun_on_another_backing_store_is_not_touched(host, be):
    host.files["/srv/vc/other.img"] = GIB
    host.targets[IQN1] = {"tid": 1, "luns": {1: ("/srv/vc/other.img", GIB)}, "acl": [],
                          "sessions": 0}
    with pytest.raises(StorageError, match="not touching it"):
        be.ensure_volume(IQN1, IMG1, 1, ["10.0.0.1"])
    with pytest.raises(StorageError, match="is not in /srv/vc"):
        be.ensure_volume(IQN2, "/etc/passwd", 1, ["10.0.0.1"])


def test_remove_volume(host, be):
    be.ensure_volumes(vols((IQN1, IMG1, 1), (IQN2, IMG2, 1)), ["10.0.0.1"])
    host.scripts.clear()
    assert be.remove_volume(IQN1, IMG1) is True
    assert host.mutations() == [[
        tgt("--mode", "target", "--op", "delete", "--force", "--tid", 1),
        ["rm", "-f", "--", IMG1]]]
    assert IQN1 not in host.targets and IMG1 not in host.files and IQN2 in host.targets
    host.scripts.clear()
    assert be.remove_volume(IQN1, IMG1) is False
    assert host.mutations() == []
    # tgtd forgot the target (restart): only the file is left to remove
    host.targets.clear()
    assert be.remove_volume(IQN2, IMG2) is True
    assert host.mutations()[-1] == [["rm", "-f", "--", IMG2]]


def test_show_parses_tgtadm(host, be):
    be.ensure_volume(IQN1, IMG1, 1, ["127.0.0.1", "10.1.2.3"])
    host.targets[IQN1]["sessions"] = 2
    assert be.show() == {IQN1: {"tid": 1, "sessions": 2, "acl": ["127.0.0.1", "10.1.2.3"],
                                "luns": {0: {"size_bytes": 0, "backing": None},
                                         1: {"size_bytes": 1074000000, "backing": IMG1}}}}


REAL_SHOW = """Target 1: iqn.2026-11.vc.frontend:rack3.data
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 3
            Initiator: iqn.2008-11.org.linux-kvm alias: none
            Connection: 0
                IP Address: 127.0.0.1
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00010000
            SCSI SN: beaf10
            Size: 0 MB, Block size: 1
            Online: Yes
            Backing store type: null
            Backing store path: None
            Backing store flags: 
        LUN: 1
            Type: disk
            SCSI ID: IET     00010001
            SCSI SN: beaf11
            Size: 1074 MB, Block size: 512
            Online: Yes
            Backing store type: rdwr
            Backing store path: /tmp/stx/b1.img
            Backing store flags: 
    Account information:
    ACL information:
        127.0.0.1
        10.0.0.0/24
        iqn.1994-05.com.redhat:abc
Target 4: iqn.x:y
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            Size: 0 MB, Block size: 1
            Backing store path: None
    Account information:
    ACL information:
"""  # noqa: W291 (tgtadm's own trailing spaces)


def test_parse_real_tgtadm_output():
    got = storage.parse_tgtadm_show(REAL_SHOW)
    assert got["iqn.2026-11.vc.frontend:rack3.data"] == {
        "tid": 1, "sessions": 1, "acl": ["127.0.0.1", "10.0.0.0/24", "iqn.1994-05.com.redhat:abc"],
        "luns": {0: {"size_bytes": 0, "backing": None},
                 1: {"size_bytes": 1074 * 10 ** 6, "backing": "/tmp/stx/b1.img"}}}
    assert got["iqn.x:y"] == {"tid": 4, "sessions": 0, "acl": [],
                              "luns": {0: {"size_bytes": 0, "backing": None}}}
    assert storage.parse_tgtadm_show("") == {}


def test_control_port_reaches_a_second_tgtd(host):
    be = storage.TgtBackend(host, BD, control_port=5)
    be.ensure_volume(IQN1, IMG1, 1, ["10.0.0.1"])
    assert host.scripts[0][-1] == ["tgtadm", "-C", "5", "--lld", "iscsi", "--mode", "target",
                                   "--op", "show"]
    assert all(c[:3] == ["tgtadm", "-C", "5"] for c in host.commands if c[0] == "tgtadm")


# -- LVM backing (command level) --------------------------------------------------------------


class FakeLvm(FakeHost):
    def __init__(self, lvs=None, free=10 * GIB):
        super().__init__(free=free)
        self.lvs = dict(lvs or {})

    def run1(self, c):
        if c[0] == "vgs":
            return "  %d\n" % self.free
        if c[0] == "lvs":
            return "".join("  %s %d\n" % (n, s) for n, s in self.lvs.items())
        if c[0] == "lvcreate":
            self.files["/dev/%s/%s" % (c[-1], c[3])] = int(c[5].rstrip("b"))
            return ""
        if c[0] == "lvextend":
            self.files[c[-1]] = int(c[2].rstrip("b"))
            return ""
        if c[0] == "lvremove":
            self.files.pop(c[-1], None)
            return ""
        return super().run1(c)


def test_lvm_backing_commands():
    lv1, lv2 = "/dev/vg0/vc-rack3-data", "/dev/vg0/vc-rack3-home"
    host = FakeLvm(lvs={"vc-rack3-home": GIB})
    host.files[lv2] = GIB
    be = storage.backend_for("tgt", host, backing="lvm", vg="vg0")
    be.ensure_volumes(vols((IQN1, lv1, 2), (IQN2, lv2, 3)), ["10.0.0.1"])
    assert host.scripts[0] == [
        ["vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_free", "vg0"],
        ["lvs", "--noheadings", "--units", "b", "--nosuffix", "--separator", " ", "-o",
         "lv_name,lv_size", "vg0"],
        tgt("--mode", "target", "--op", "show")]
    muts = host.scripts[1]
    assert muts[0] == ["lvcreate", "-y", "-n", "vc-rack3-data", "-L", "%db" % (2 * GIB), "vg0"]
    assert ["lvextend", "-L", "%db" % (3 * GIB), lv2] in muts
    with pytest.raises(StorageError, match="cannot shrink"):
        storage.TgtBackend(FakeLvm(lvs={"vc-rack3-home": 3 * GIB}), backing="lvm",
                           vg="vg0").ensure_volume(IQN2, lv2, 1, ["10.0.0.1"])
    with pytest.raises(OutOfSpace, match="/dev/vg0"):
        storage.TgtBackend(FakeLvm(free=GIB), backing="lvm", vg="vg0").ensure_volume(
            IQN1, lv1, 2, ["10.0.0.1"])
    host2 = FakeLvm(lvs={"vc-rack3-data": GIB})
    storage.TgtBackend(host2, backing="lvm", vg="vg0").remove_volume(IQN1, lv1)
    assert host2.scripts[-1] == [["lvremove", "-y", lv1]]


def test_backend_options_are_checked():
    with pytest.raises(ValueError):
        storage.TgtBackend(FakeHost(), "relative/dir")
    with pytest.raises(ValueError):
        storage.TgtBackend(FakeHost(), BD, backing="zfs")
    with pytest.raises(ValueError):
        storage.TgtBackend(FakeHost(), backing="lvm", vg="-bad")
    with pytest.raises(ValueError, match="unknown iSCSI backend"):
        storage.backend_for("iet", FakeHost())
    assert isinstance(storage.backend_for("targetcli", FakeHost(), backing_dir=BD),
                      storage.TargetcliBackend)


# -- targetcli / LIO (command level) ----------------------------------------------------------

KVM1 = "iqn.2008-11.org.linux-kvm:h1"
KVM2 = "iqn.2008-11.org.linux-kvm:h2"

TARGETCLI_LS = """o- / ..................................................................... [...]
  o- backstores .............................................................. [...]
  | o- block .................................................. [Storage Objects: 0]
  | o- fileio ................................................. [Storage Objects: 1]
  | | o- vc-rack3-data ............ [/srv/vc/vc-rack3-data.img (1.0GiB) write-thru activated]
  | |   o- alua ................................................... [ALUA Groups: 1]
  | |     o- default_tg_pt_gp ....................... [ALUA state: Active/optimized]
  | o- pscsi .................................................. [Storage Objects: 0]
  | o- ramdisk ................................................ [Storage Objects: 0]
  o- iscsi ............................................................ [Targets: 1]
  | o- iqn.2026-11.vc.frontend:rack3.data ................................ [TPGs: 1]
  |   o- tpg1 ............................................... [no-gen-acls, no-auth]
  |     o- acls .......................................................... [ACLs: 1]
  |     | o- iqn.2008-11.org.linux-kvm:h1 ....................... [Mapped LUNs: 1]
  |     |   o- mapped_lun0 ................. [lun0 fileio/vc-rack3-data (rw)]
  |     o- luns .......................................................... [LUNs: 1]
  |     | o- lun0 ..... [fileio/vc-rack3-data (/srv/vc/vc-rack3-data.img) (default_tg_pt_gp)]
  |     o- portals .................................................... [Portals: 1]
  |       o- 0.0.0.0:3260 ..................................................... [OK]
  o- loopback ......................................................... [Targets: 0]
"""


class FakeLio(FakeHost):
    def __init__(self, ls="", **kw):
        super().__init__(**kw)
        self.ls = ls

    def run1(self, c):
        if c[0] == "targetcli":
            return self.ls if c[1:] == ["ls", "/"] else ""
        return super().run1(c)


def test_parse_targetcli_tree():
    got = storage.parse_targetcli_ls(TARGETCLI_LS)
    assert got == {"backstores": {"fileio/vc-rack3-data": {"kind": "fileio",
                                                           "path": IMG1}},
                   "targets": {IQN1: {"luns": {0: "fileio/vc-rack3-data"}, "acl": [KVM1]}}}


def test_targetcli_create_commands():
    host = FakeLio()
    be = storage.TargetcliBackend(host, BD)
    assert be.lun == 0
    assert be.ensure_volumes(vols((IQN1, IMG1, 1)), [KVM1, KVM2]) == {IQN1: True}
    assert host.scripts[0][-1] == ["targetcli", "ls", "/"]
    assert host.scripts[1] == [
        ["truncate", "-s", ">%d" % GIB, IMG1],
        ["targetcli", "/backstores/fileio", "create", "name=vc-rack3-data",
         "file_or_dev=" + IMG1, "write_back=false"],
        ["targetcli", "/iscsi", "create", IQN1],
        ["targetcli", "/iscsi/%s/tpg1/luns" % IQN1, "create", "/backstores/fileio/vc-rack3-data"],
        ["targetcli", "/iscsi/%s/tpg1/acls" % IQN1, "create", KVM1],
        ["targetcli", "/iscsi/%s/tpg1/acls" % IQN1, "create", KVM2],
        ["targetcli", "saveconfig"]]


def test_targetcli_finds_existing_and_completes():
    host = FakeLio(TARGETCLI_LS)
    host.files[IMG1] = GIB
    be = storage.TargetcliBackend(host, BD)
    assert be.ensure_volume(IQN1, IMG1, 1, [KVM1]) is False
    assert len(host.scripts) == 1
    assert be.ensure_volume(IQN1, IMG1, 1, [KVM1, KVM2]) is True
    assert host.scripts[-1] == [["targetcli", "/iscsi/%s/tpg1/acls" % IQN1, "create", KVM2],
                                ["targetcli", "saveconfig"]]
    assert be.ensure_volume(IQN1, IMG1, 2, [KVM1]) is True
    assert host.scripts[-1] == [
        ["truncate", "-s", ">%d" % (2 * GIB), IMG1],
        ["targetcli", "/backstores/fileio", "delete", "vc-rack3-data"],
        ["targetcli", "/backstores/fileio", "create", "name=vc-rack3-data",
         "file_or_dev=" + IMG1, "write_back=false"],
        ["targetcli", "/iscsi/%s/tpg1/luns" % IQN1, "create", "/backstores/fileio/vc-rack3-data"],
        ["targetcli", "saveconfig"]]


def test_targetcli_remove_and_refusals():
    host = FakeLio(TARGETCLI_LS)
    host.files[IMG1] = GIB
    be = storage.TargetcliBackend(host, BD)
    assert be.remove_volume(IQN1, IMG1) is True
    assert host.scripts[-1] == [["targetcli", "/iscsi", "delete", IQN1],
                                ["targetcli", "/backstores/fileio", "delete", "vc-rack3-data"],
                                ["rm", "-f", "--", IMG1], ["targetcli", "saveconfig"]]
    with pytest.raises(StorageError, match="IQNs"):
        be.ensure_volume(IQN1, IMG1, 1, ["10.0.0.1"])
    host.files[IMG1] = 2 * GIB
    with pytest.raises(StorageError, match="cannot shrink"):
        be.ensure_volume(IQN1, IMG1, 1, [KVM1])


def test_targetcli_lvm_uses_a_block_backstore():
    host = FakeLio()
    host.run1 = lambda c, _r=host.run1: FakeLvm.run1(host, c) if c[0] in (
        "vgs", "lvs", "lvcreate") else _r(c)
    host.lvs = {}
    be = storage.TargetcliBackend(host, backing="lvm", vg="vg0")
    be.ensure_volume(IQN1, "/dev/vg0/vc-rack3-data", 1, [KVM1])
    assert ["targetcli", "/backstores/block", "create", "name=vc-rack3-data",
            "dev=/dev/vg0/vc-rack3-data"] in host.scripts[-1]


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
    return storage.frontend_key(state), state


def test_fingerprint_matches_ssh_keygen(keypair):
    (path, pub), _ = keypair
    blob = base64.b64decode(pub.split()[1])
    want = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", path + ".pub"],
                          capture_output=True, text=True, check=True).stdout.split()[1]
    assert storage.fingerprint_of(FakeKey(blob)) == want
    assert storage.check_fingerprint(want) == want


def test_frontend_key_is_made_once_with_private_modes(keypair):
    (path, pub), state = keypair
    assert path == os.path.join(state, "ssh", "id_ed25519")
    assert pub.startswith("ssh-ed25519 ") and pub.endswith(" vc-frontend")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # the web pages (www-data) read the public half only: traverse, no listing
    assert stat.S_IMODE(os.stat(path + ".pub").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o711
    before = open(path).read()
    assert storage.frontend_key(state) == (path, pub)
    assert open(path).read() == before
    os.unlink(path + ".pub")  # a lost public half is derived again, not a new pair
    assert storage.frontend_key(state) == (path, pub)
    assert open(path).read() == before


def test_host_key_policy():
    key = FakeKey(b"\x00\x00\x00\x0bssh-ed25519" + b"k" * 36)
    fp = storage.fingerprint_of(key)
    storage.PinnedHostKeyPolicy("st1", fp).missing_host_key(None, "[h]:22", key)
    with pytest.raises(HostKeyUnknown) as ei:
        storage.PinnedHostKeyPolicy("st1", None).missing_host_key(None, "[h]:22", key)
    assert str(ei.value).startswith("iSCSI target st1: ") and fp in str(ei.value)
    assert "vc_ctl.py target trust st1" in str(ei.value)
    other = "SHA256:" + "B" * 43
    with pytest.raises(HostKeyChanged) as ei:
        storage.PinnedHostKeyPolicy("st1", other).missing_host_key(None, "[h]:22", key)
    assert ei.value.expected == other and ei.value.got == fp
    assert "expected %s, got %s" % (other, fp) in str(ei.value)
    assert str(ei.value).startswith("iSCSI target st1: ")


def test_module_imports_paramiko_lazily_and_never_auto_adds():
    code = "import sys, vc.storage; print('paramiko' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "False"
    src = open(os.path.join(ROOT, "vc", "storage.py")).read()
    assert "AutoAddPolicy" not in src and "load_system_host_keys()" not in src.replace(
        "no load_system_host_keys()", "")


@pytest.fixture
def target():
    return storage.Target("st1", "192.0.2.10", 2222, fingerprint="SHA256:" + "A" * 43)


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
    ex = storage.SSHExecutor(target, keypair[0][0], connect_timeout=7, command_timeout=9)
    with pytest.raises(AuthFailed) as ei:
        ex.execute(["true"])
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
        storage.SSHExecutor(target, keypair[0][0]).execute(["true"])
    assert str(ei.value).startswith("iSCSI target st1: ") and text in str(ei.value)


def test_unreadable_frontend_key(target, tmp_path):
    with pytest.raises(StorageError, match="^iSCSI target st1: cannot read the frontend's SSH"):
        storage.SSHExecutor(target, str(tmp_path / "missing")).execute(["true"])


def test_probe_host_key_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(TargetUnreachable, match="^iSCSI target st9: .*refused"):
            storage.probe_host_key("127.0.0.1", port, timeout=2, name="st9")


def test_pool_gives_one_executor_per_target(keypair, target):
    with storage.SSHPool(keypair[0][0]) as pool:
        a = pool.get(target)
        assert pool.get(storage.Target(**vars(target))) is a
        assert pool.get(storage.Target("st2", "192.0.2.11")) is not a


def test_target_portal():
    assert storage.Target("a", "10.0.0.5", iscsi_port=3261).portal == "10.0.0.5:3261"
    assert storage.Target("a", "fd00::5").portal == "[fd00::5]:3260"

"""iSCSI volumes on a target host: the target backends, their backing stores and names.

A backend implements :class:`TargetBackend`: idempotent verbs on one target host, run through
the :class:`vc.remote.Executor` of that host (SSH in production, see :mod:`vc.remote`).
:class:`TgtBackend` (``tgtadm``) and :class:`TargetcliBackend` (LIO) offer the same verbs:
``ensure_volumes`` (create or find each target + LUN + ACL, recreating a target that tgtd forgot
around its existing backing store, growing but never shrinking), ``remove_volume`` and ``show``;
and each contributes its libvirt disk (:meth:`TargetBackend.disk_spec`). Each verb costs two
remote execs whatever the number of volumes: one that reads the state, one batched script that
changes it. A verb that fails half way leaves what it made in place and the next call continues
from there. Volumes live in sparse files (:class:`FileStore`, mode 600 in a directory of mode
700) or logical volumes (:class:`LvmStore`).

CHAP: a volume given :class:`Chap` credentials admits an initiator only with them, on top of
its ACL (tgt: an incoming account bound to the target; LIO: ``set auth`` on each ACL and the
TPG's ``authentication=1``). :func:`chap_credentials` gives each volume row its own random pair,
stored in ``vciscsi`` with the secret sealed by the frontend's key (:func:`seal`), and
:func:`libvirt_secrets` what the gateway's host needs (``vc.virt.Host.ensure_secret``, under
:func:`secret_usage`).

:func:`make_target_backend` is the one factory: it reads ``[storage]`` and names the concrete
classes; nothing else does. Every error names the target (:class:`vc.remote.StorageError`).
"""

import abc
import dataclasses
import fcntl
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import string
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from vc.domainxml import IscsiDiskSpec
from vc.errors import ConfigError, VcError
from vc.remote import Argv, CommandError, Executor, StorageError
from vc.remote import shown as _shown

LOG = logging.getLogger(__name__)

GIB = 1024 ** 3
DEFAULT_IQN_PREFIX = "iqn.2026-11.vc.frontend"
IQN_PREFIX_RE = re.compile(r"^iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*$")
IQN_MAX = 223


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


##################
# Backing stores #
##################


@dataclasses.dataclass(frozen=True)
class Chap:
    """One volume's CHAP credentials (the initiator's, one-way). ``fresh``: made in this run,
    so a backend that cannot show which credentials a target holds (LIO) sets them again."""

    user: str
    secret: str = dataclasses.field(repr=False)
    fresh: bool = dataclasses.field(default=False, compare=False)


@dataclasses.dataclass(frozen=True)
class VolumeSpec:
    """One volume to ensure: target name, backing path (file or LV), size in GiB, and the CHAP
    credentials its target demands (None: the target's accounts are left as they are)."""

    iqn: str
    backing: str
    size_gb: int
    chap: Optional[Chap] = None

    @property
    def size_bytes(self) -> int:
        return int(self.size_gb) * GIB


class FileStore:
    """Volumes backed by sparse files in one directory on the target host.

    Space is checked before anything is made: the ``df`` free space must cover every new byte
    the batch asks for (files are sparse, so this is a check, not a reservation). The files
    hold the clusters' data: mode 600 (tgtd/LIO run as root), their directory 700, so that no
    other account on the target host reads them; a looser file is tightened when it is ensured.
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
        return [["mkdir", "-p", "-m", "700", d], ["chmod", "700", d],
                ["df", "-B1", "--output=avail", d],
                ["find", d, "-maxdepth", "1", "-type", "f", "-printf", "%s %m %p\\n"]]

    @staticmethod
    def parse_probe(outs: List[str]) -> Tuple[int, Dict[str, int], Set[str]]:
        """-> (free bytes, {path: size in bytes}, {path readable by others than root})"""
        free = int(outs[-2].split()[-1])
        sizes, loose = {}, set()
        for line in outs[-1].splitlines():
            if line.strip():
                size, _, rest = line.partition(" ")
                mode, _, path = rest.partition(" ")
                sizes[path] = int(size)
                if int(mode, 8) & 0o077:
                    loose.add(path)
        return free, sizes, loose

    def grow_cmds(self, path: str, size: int, exists: bool) -> List[Argv]:
        # '>' = "at least": creates a missing file, grows a smaller one, never truncates data.
        # truncate creates it 644 (umask): 600 at once, in a directory nobody else can enter
        return [["truncate", "-s", ">%d" % size, path]] + (
            [] if exists else self.private_cmds(path))

    @staticmethod
    def private_cmds(path: str) -> List[Argv]:
        return [["chmod", "600", path]]

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

    def parse_probe(self, outs: List[str]) -> Tuple[int, Dict[str, int], Set[str]]:
        """-> (free bytes, {path: size}, set()): device nodes are udev's (root:disk 660)."""
        free = int(outs[0].split()[0])
        sizes = {}
        for line in outs[1].splitlines():
            f = line.split()
            if len(f) == 2:
                sizes[self.path_for(f[0])] = int(f[1])
        return free, sizes, set()

    @staticmethod
    def private_cmds(path: str) -> List[Argv]:
        return []

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


def make_store(backing: str, backing_dir: Optional[str] = None, vg: Optional[str] = None):
    """The backing store of ``[storage] backing``: ``file`` in ``backing_dir``, ``lvm`` in the
    volume group ``vg``. :raises ValueError:"""
    if backing == "file":
        return FileStore(backing_dir or "")
    if backing == "lvm":
        return LvmStore(vg)
    raise ValueError("backing must be file or lvm, got %r" % backing)


##################
# The contract   #
##################


class TargetBackend(abc.ABC):
    """Volumes on one iSCSI target host, through ``executor`` (whose ``name`` names the target
    in every message).

    :param executor: a :class:`vc.remote.Executor` on the target host (``run_script`` batches).
    :param backing_dir: ``file`` backing: the directory of the backing files (absolute).
    :param backing: ``file`` (sparse files) or ``lvm`` (logical volumes of ``vg``).
    :param vg: ``lvm`` backing: the volume group.
    :param iqn_prefix, name_prefix: how :meth:`volume_spec` names a reservation's volumes.

    A backend says how its target lists what it serves (:meth:`_list_cmd`, :meth:`_parse`) and
    what its verbs change.
    """

    #: the LUN a volume is served as
    lun = 1

    def __init__(self, executor: Executor, backing_dir: Optional[str] = None,
                 backing: str = "file", vg: Optional[str] = None,
                 iqn_prefix: str = DEFAULT_IQN_PREFIX, name_prefix: str = "vc"):
        self.ex = executor
        self.store = make_store(backing, backing_dir, vg)
        self.iqn_prefix, self.name_prefix = iqn_prefix, name_prefix

    @property
    def target_name(self) -> str:
        return getattr(self.ex, "name", "?")

    def backing_for(self, name: str) -> str:
        """The backing path of volume ``name`` (see :func:`volume_name`)."""
        return self.store.path_for(name)

    def volume_spec(self, rack: int, mount_point: str, size_gb: int) -> VolumeSpec:
        """Reservation ``rack``'s volume mounted at ``mount_point``: its IQN and backing store."""
        return VolumeSpec(iqn_for(self.iqn_prefix, rack, mount_point),
                          self.backing_for(volume_name(rack, mount_point, self.name_prefix)),
                          size_gb)

    def ensure_volume(self, iqn: str, backing_path: str, size_gb: int,
                      initiators: Sequence[str], chap: Optional[Chap] = None) -> bool:
        """Create or find one volume; True if anything changed. See :meth:`ensure_volumes`."""
        return self.ensure_volumes([VolumeSpec(iqn, backing_path, size_gb, chap)],
                                   initiators)[iqn]

    @abc.abstractmethod
    def ensure_volumes(self, volumes: Sequence[VolumeSpec],
                       initiators: Sequence[str]) -> Dict[str, bool]:
        """Make each volume exist with at least its size, admitting exactly ``initiators`` (and,
        for a volume with :class:`Chap` credentials, only with them).

        :returns: ``{iqn: changed}``.
        :raises OutOfSpace: before anything is made, when the new bytes do not fit.
        :raises StorageError: a shrink, or a target/LUN that is not VC's to touch.
        :raises RemoteCommandError: a command failed; what ran stays (the next call completes).
        """

    @abc.abstractmethod
    def remove_volume(self, iqn: str, backing_path: str) -> bool:
        """Remove the target and its backing store. Idempotent; True if anything was there."""

    def show(self) -> Dict[str, dict]:
        """What the target serves now (the backend's :meth:`_parse` of its listing)."""
        return self._parse(self.ex.run(self._list_cmd()))

    def _state_cmds(self) -> List[Argv]:
        """What the probe reads of the target (after the backing store's commands)."""
        return [self._list_cmd()]

    def _parse_state(self, outs: List[str]):
        """:meth:`_state_cmds`' outputs, parsed."""
        return self._parse(outs[0])

    @abc.abstractmethod
    def _list_cmd(self) -> Argv:
        """The command that lists what the target serves."""

    @abc.abstractmethod
    def _parse(self, listing: str) -> Dict[str, dict]:
        """:meth:`_list_cmd`'s output, parsed."""

    def _probe(self) -> Tuple[int, Dict[str, int], Set[str], object]:
        """One exec: ``(free bytes, {backing: size}, {backing too open}, the parsed state)``."""
        state = self._state_cmds()
        outs = self.ex.run_script(self.store.probe_cmds() + state)
        free, sizes, loose = self.store.parse_probe(outs[:-len(state)])
        return free, sizes, loose, self._parse_state(outs[-len(state):])

    def disk_spec(self, volume: dict, target_dev: str, **options) -> IscsiDiskSpec:
        """The libvirt disk of a ready volume (a ``vciscsi`` row joined with its target's
        ``address`` and ``iscsi_port``) as guest disk ``target_dev``.

        :param options: more :class:`vc.domainxml.IscsiDiskSpec` fields (``bus``, ...).
        """
        lun = self.lun if volume.get("lun") is None else volume["lun"]
        if volume.get("chap_user"):
            options = dict(options, auth_user=volume["chap_user"],
                           secret_usage=secret_usage(volume))
        return IscsiDiskSpec(volume["iqn"], volume["address"], volume["iscsi_port"], lun,
                             target=target_dev, **options)

    def _run(self, cmds: List[Argv]) -> List[str]:
        """The batched change script; "no space" from the host is :class:`OutOfSpace`."""
        try:
            return self.ex.run_script(cmds)
        except CommandError as e:
            if "No space left" in e.stderr or "Insufficient free space" in e.stderr:
                raise OutOfSpace(self.target_name, "out of space in %s: %s failed: %s" % (
                    self.store.backing_dir, _shown(e.argv), e.stderr.strip())) from e
            raise

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


##################
# tgt backend    #
##################


def parse_tgtadm_show(text: str) -> Dict[str, dict]:
    """``tgtadm --lld iscsi --mode target --op show`` -> ``{iqn: {"tid": int, "luns": {lun:
    {"size_bytes": int, "backing": str or None}}, "acl": [str], "accounts": [str], "sessions":
    int}}``: ``accounts`` are the incoming (CHAP) accounts bound to the target. (tgtadm prints
    sizes in rounded decimal MB, so ``size_bytes`` is approximate.)"""
    targets: Dict[str, dict] = {}
    cur = lun = None
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"^Target (\d+): (\S+)$", raw)
        if m:
            cur = targets[m.group(2)] = {"tid": int(m.group(1)), "luns": {}, "acl": [],
                                         "accounts": [], "sessions": 0}
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
        elif section == "Account information" and not line.endswith("(outgoing)"):
            cur["accounts"].append(line)
    return targets


def parse_tgtadm_accounts(text: str) -> List[str]:
    """``tgtadm --lld iscsi --mode account --op show`` -> the account names (tgtd's accounts are
    global: a target admits those bound to it)."""
    return [ln.strip() for ln in text.splitlines()
            if ln.strip() and not ln.strip().endswith(":")]


def _acl_opt(initiator: str) -> str:
    return "--initiator-name" if initiator.startswith(("iqn.", "eui.", "naa.")) \
        else "--initiator-address"


class TgtBackend(TargetBackend):
    """Volumes on a Linux SCSI target framework daemon (``tgtd``), driven with ``tgtadm``.

    One target per volume, named by its IQN; its LUN 1 is the backing store; the ACL binds the
    given initiator addresses (or iSCSI names). tgtd keeps targets in memory only: a target it
    forgot (restart) is recreated around the existing backing store, whose data is untouched.

    :param control_port: tgtd's ``-C`` (``/var/run/tgtd/socket.N``); 0 is the default daemon.
        The other parameters are :class:`TargetBackend`'s.
    """

    lun = 1

    def __init__(self, executor: Executor, backing_dir: Optional[str] = None,
                 backing: str = "file", vg: Optional[str] = None, control_port: int = 0, **names):
        super().__init__(executor, backing_dir, backing, vg, **names)
        self.control_port = int(control_port)

    def tgtadm(self, *args) -> Argv:
        head = ["tgtadm"] + (["-C", str(self.control_port)] if self.control_port else [])
        return head + ["--lld", "iscsi"] + [str(a) for a in args]

    def _list_cmd(self) -> Argv:
        return self.tgtadm("--mode", "target", "--op", "show")

    def _parse(self, listing):
        """See :func:`parse_tgtadm_show`."""
        return parse_tgtadm_show(listing)

    def _state_cmds(self):
        return [self._list_cmd(), self.tgtadm("--mode", "account", "--op", "show")]

    def _parse_state(self, outs):
        """-> ``(targets, accounts)``: :func:`parse_tgtadm_show`, :func:`parse_tgtadm_accounts`."""
        return parse_tgtadm_show(outs[0]), parse_tgtadm_accounts(outs[1])

    def ensure_volumes(self, volumes: Sequence[VolumeSpec],
                       initiators: Sequence[str]) -> Dict[str, bool]:
        """Make each volume exist: backing store of at least its size, target, LUN 1, ACL, and
        with ``chap`` its CHAP account (made once, bound as the target's only incoming
        account: a new target has it before any initiator is admitted). An account's password
        cannot be read back; accounts are named per credentials pair, so an account of that
        name has that password (new credentials come with a new user).

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
        free, sizes, loose, (shown, accounts) = self._probe()
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
            if v.backing in loose:
                mine += self.store.private_cmds(v.backing)
            if cur is None:
                tid = next_tid
                next_tid += 1
                mine.append(self.tgtadm("--mode", "target", "--op", "new", "--tid", tid,
                                        "--targetname", v.iqn))
            else:
                tid = cur["tid"]
            acl = cur["acl"] if cur else []
            if v.chap is not None:
                # before the LUN and the ACL: a new target never admits anyone without CHAP
                others = {a for k, t in shown.items() if k != v.iqn for a in t["accounts"]}
                chap_cmds, acl = self._chap_cmds(tid, v.chap, accounts,
                                                 cur["accounts"] if cur else [], acl, others)
                mine += chap_cmds
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

    def _chap_cmds(self, tid: int, chap: Chap, accounts: List[str], bound: List[str],
                   acl: List[str], others: Set[str]) -> Tuple[List[Argv], List[str]]:
        """Make ``chap.user`` exist and be the only incoming account of target ``tid``:
        ``(commands, the ACL after them)``; ``accounts`` (tgtd's) is updated. An account it
        replaces is deleted unless another target (``others``: their accounts) has it too.

        Other accounts bound (older credentials) are replaced so that tgtd survives it: tgtd
        (1.0.85) keeps a target's accounts in an array and unbinding one that is not the last
        leaves a hole its next ``show`` or login dereferences (segfault). So every bound account
        is unbound last first, and the new one bound after; meanwhile the target's ACL is
        emptied, so that no initiator gets in without CHAP in between (the caller binds the
        ACL again; sessions already logged in are not affected)."""
        cmds: List[Argv] = []
        if bound == [chap.user]:
            return cmds, acl
        if bound:
            cmds += [self.tgtadm("--mode", "target", "--op", "unbind", "--tid", tid,
                                 _acl_opt(a), a) for a in acl]
            acl = []
            cmds += [self.tgtadm("--mode", "account", "--op", "unbind", "--tid", tid,
                                 "--user", a) for a in reversed(bound)]
        if chap.user not in accounts:
            cmds.append(self.tgtadm("--mode", "account", "--op", "new", "--user", chap.user,
                                    "--password", chap.secret))
            accounts.append(chap.user)
        cmds.append(self.tgtadm("--mode", "account", "--op", "bind", "--tid", tid,
                                "--user", chap.user))
        cmds += [self.tgtadm("--mode", "account", "--op", "delete", "--user", a)
                 for a in bound if a != chap.user and a in accounts and a not in others]
        return cmds, acl

    def remove_volume(self, iqn: str, backing_path: str) -> bool:
        """Delete the target (``--force``: sessions, LUN and ACL go with it), the CHAP accounts
        only it had, and its backing store. Idempotent; True if anything was there."""
        free, sizes, _, (shown, accounts) = self._probe()
        cmds: List[Argv] = []
        cur = shown.get(iqn)
        if cur is not None:
            if any(lu["backing"] not in (None, backing_path) for lu in cur["luns"].values()):
                raise StorageError(self.target_name, "target %s serves a LUN that is not %s: "
                                   "not removing it" % (iqn, backing_path))
            cmds.append(self.tgtadm("--mode", "target", "--op", "delete", "--force", "--tid",
                                    cur["tid"]))
            elsewhere = {a for k, t in shown.items() if k != iqn for a in t["accounts"]}
            for user in cur["accounts"]:
                if user in accounts and user not in elsewhere:
                    cmds.append(self.tgtadm("--mode", "account", "--op", "delete", "--user",
                                            user))
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


##################
# LIO backend    #
##################


def parse_targetcli_ls(text: str) -> Dict[str, dict]:
    """``targetcli ls /`` (the tree) -> ``{"backstores": {name: {"kind", "path"}}, "targets":
    {iqn: {"luns": {n: backstore "kind/name"}, "acl": [initiator], "auth": bool}}}``; ``auth``:
    tpg1 demands CHAP (``authentication=1``: ``auth per-acl``/``tpg-auth``, not ``no-auth``).
    The tree never shows an ACL's userid or password."""
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
            targets[node] = {"luns": {}, "acl": [], "auth": False}
        elif len(path) == 4 and path[1] == "iscsi" and node == "tpg1" and path[2] in targets:
            targets[path[2]]["auth"] = bool(re.search(r"(^|[ ,])(auth per-acl|tpg-auth)($|,)",
                                                      info))
        elif len(path) == 6 and path[1] == "iscsi" and path[4] == "luns":
            lm = re.match(r"^lun(\d+)$", node)
            bm = re.match(r"^(\S+)", info)
            if lm and path[2] in targets:
                targets[path[2]]["luns"][int(lm.group(1))] = bm.group(1) if bm else None
        elif len(path) == 6 and path[1] == "iscsi" and path[4] == "acls":
            if path[2] in targets:
                targets[path[2]]["acl"].append(node)
    return {"backstores": backstores, "targets": targets}


class TargetcliBackend(TargetBackend):
    """Volumes on the kernel's LIO target, driven with ``targetcli`` (targetcli-fb).

    Same verbs as :class:`TgtBackend`. LIO differs: LUNs count from 0, ACLs admit initiator
    *names* (IQNs: libvirt/QEMU's, e.g. ``iqn.2008-11.org.linux-kvm:HOST``), not addresses, and
    the configuration is saved with ``saveconfig`` so that it survives a reboot. CHAP is per ACL
    (explicit ACLs, ``generate_node_acls`` stays 0): ``set auth userid= password=`` on each,
    then the TPG's ``authentication=1``. The tree does not show an ACL's credentials, so they
    are set on a new ACL, on a TPG without authentication, and when they are new
    (:attr:`Chap.fresh`). Checked at the command level only (this project's machines have no
    configfs/LIO). It has no control port: the parameters are :class:`TargetBackend`'s.
    """

    lun = 0

    def __init__(self, executor: Executor, backing_dir: Optional[str] = None,
                 backing: str = "file", vg: Optional[str] = None, **names):
        super().__init__(executor, backing_dir, backing, vg, **names)
        self.bs_kind = "block" if self.store.kind == "lvm" else "fileio"

    @staticmethod
    def _bs_name(backing: str) -> str:
        base = os.path.basename(backing)
        return base[:-4] if base.endswith(".img") else base

    def _list_cmd(self) -> Argv:
        return ["targetcli", "ls", "/"]

    def _parse(self, listing):
        """See :func:`parse_targetcli_ls`."""
        return parse_targetcli_ls(listing)

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
        free, sizes, loose, state = self._probe()
        grow = self._check_sizes(volumes, free, sizes)
        cmds: List[Argv] = []
        changed = {}
        for v in volumes:
            mine: List[Argv] = []
            if v.backing in loose:
                mine += self.store.private_cmds(v.backing)
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
            auth = bool(cur and cur["auth"])
            if v.chap is not None and not auth:
                # first: from here on an ACL admits only with its credentials (an ACL without
                # them admits nobody), so a new target never admits anyone without CHAP
                mine.append(["targetcli", tpg, "set", "attribute", "authentication=1"])
            luns = cur["luns"] if cur else {}
            if recreated or bs_key not in luns.values():
                mine.append(["targetcli", tpg + "/luns", "create",
                             "/backstores/%s/%s" % (self.bs_kind, bs)])
            acl = cur["acl"] if cur else []
            for i in inits:
                if i not in acl:
                    mine.append(["targetcli", tpg + "/acls", "create", i])
                if v.chap is not None and (i not in acl or not auth or v.chap.fresh):
                    mine.append(["targetcli", "%s/acls/%s" % (tpg, i), "set", "auth",
                                 "userid=%s" % v.chap.user, "password=%s" % v.chap.secret])
            changed[v.iqn] = bool(mine)
            cmds += mine
        if cmds:
            cmds.append(["targetcli", "saveconfig"])
            self._run(cmds)
        return changed

    def remove_volume(self, iqn: str, backing_path: str) -> bool:
        free, sizes, _, state = self._probe()
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
            self._run(cmds)
        return bool(cmds)


##################
# CHAP           #
##################

#: a CHAP secret: 16 letters and digits (~95 bits). 12-16 characters is what the strictest
#: initiators (Microsoft's) accept; tgtd, LIO and libiscsi (QEMU) take any length. Letters and
#: digits only: the secret goes through shells, targetcli's key=value and iscsi:// URLs as is.
CHAP_SECRET_CHARS = string.ascii_letters + string.digits
CHAP_SECRET_LEN = 16
SEALED_PREFIX = "fernet:"


def new_chap() -> Chap:
    """Fresh random credentials: user ``vc-<12 hex>`` (tgtd's accounts are global: unique per
    pair), secret of :data:`CHAP_SECRET_LEN` characters."""
    return Chap("vc-" + secrets.token_hex(6),
                "".join(secrets.choice(CHAP_SECRET_CHARS) for _ in range(CHAP_SECRET_LEN)),
                fresh=True)


def chap_key_path(state_dir: str) -> str:
    return os.path.join(state_dir, "chap", "key")


def _chap_key(state_dir: str) -> bytes:
    """The frontend's key that seals CHAP secrets in the database, made once:
    ``<state_dir>/chap/key`` (mode 600, directory 700: root only; the web pages never need
    it)."""
    from cryptography.fernet import Fernet

    path = chap_key_path(state_dir)
    d = os.path.dirname(path)
    if not os.path.exists(path):
        os.makedirs(d, mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
        with open(os.path.join(d, ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two first runs must not make two keys
            if not os.path.exists(path):
                tmp = path + ".tmp"
                with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                    f.write(Fernet.generate_key())
                os.replace(tmp, path)
                LOG.info("made the key that seals CHAP secrets: %s", path)
    with open(path, "rb") as f:
        return f.read().strip()


def seal(state_dir: str, secret: str) -> str:
    """``secret`` as stored in ``vciscsi.chap_secret``: ``fernet:<token>``, readable only with
    the frontend's key (:func:`_chap_key`), not by whoever reads the database."""
    from cryptography.fernet import Fernet

    return SEALED_PREFIX + Fernet(_chap_key(state_dir)).encrypt(secret.encode()).decode()


def unseal(state_dir: str, stored: str) -> str:
    """The secret :func:`seal` sealed. :raises ValueError: not sealed with this frontend's
    key (or not sealed at all)."""
    from cryptography.fernet import Fernet, InvalidToken

    if not stored or not stored.startswith(SEALED_PREFIX):
        raise ValueError("not a sealed secret")
    try:
        return Fernet(_chap_key(state_dir)).decrypt(stored[len(SEALED_PREFIX):].encode()).decode()
    except (InvalidToken, ValueError) as e:
        raise ValueError("sealed with another key than %s" % chap_key_path(state_dir)) from e


def chap_credentials(db, cfg, vols: Sequence[dict]) -> Dict[int, Chap]:
    """Every volume row's CHAP credentials ``{row id: Chap}``; a row without any (made before
    CHAP, or whose secret the frontend's key cannot unseal: a lost key) gets a new random pair,
    stored (secret sealed) before any target sees it, so a crash leaves nothing unrecorded.
    The rows' ``chap_user``/``chap_secret`` are updated in place."""
    out = {}
    for v in vols:
        if v.get("chap_user") and v.get("chap_secret"):
            try:
                out[v["id"]] = Chap(v["chap_user"], unseal(cfg.site.state_dir, v["chap_secret"]))
                continue
            except ValueError as e:
                LOG.warning("volume %s: its CHAP secret cannot be read (%s): giving it new "
                            "credentials", v.get("iqn") or v["mount_point"], e)
        chap = new_chap()
        sealed = seal(cfg.site.state_dir, chap.secret)
        db.transaction(lambda cur, v=v, c=chap, x=sealed: cur.execute(
            "UPDATE vciscsi SET chap_user = %s, chap_secret = %s WHERE id = %s",
            (c.user, x, v["id"])))
        v["chap_user"], v["chap_secret"] = chap.user, sealed
        LOG.info("volume %s: new CHAP user %s", v.get("iqn") or v["mount_point"], chap.user)
        out[v["id"]] = chap
    return out


def secret_usage(volume: dict) -> str:
    """The usage (``<usage type='iscsi'><target>``) of the libvirt secret that holds a volume
    row's CHAP secret on a hypervisor host: the volume's IQN, unique per VC and per target name
    space (``[storage] iqn_prefix``), and what the disk names (``vc.designer.iscsi_disks``)."""
    return volume["iqn"]


def libvirt_secrets(cfg, appliance: str, vols: Sequence[dict]) -> List[Tuple[str, str]]:
    """``[(usage, secret)]``: what a node of ``appliance`` needs on its host before its domain
    is defined (``vc.virt.Host.ensure_secret``) for the volumes it attaches with CHAP.

    :raises VcError: a secret the frontend's key cannot unseal (start the cluster again: the
        storage step gives the volume new credentials).
    """
    out = []
    for v in vols:
        if v["appliance"] != appliance or not v.get("chap_user"):
            continue
        try:
            out.append((secret_usage(v), unseal(cfg.site.state_dir, v["chap_secret"])))
        except ValueError as e:
            raise VcError("volume %s: cannot read its CHAP secret (%s); a stop and start gives "
                          "it new credentials" % (v["iqn"], e)) from e
    return out


def rack_secret_prefix(cfg, rack: int) -> str:
    """What the :func:`secret_usage` of every volume of ``rack`` starts with."""
    return "%s:rack%d." % (cfg.storage.iqn_prefix, int(rack))


##################
# The factory    #
##################


def make_target_backend(cfg, executor: Executor) -> TargetBackend:
    """The ``[storage] backend`` on the target host behind ``executor``, with what that backend
    reads from the configuration: ``tgt`` its tgtd control port, ``targetcli`` none; both the
    backing store and the volume names (``[storage] iqn_prefix``, ``[virt] name_prefix``).

    :raises ConfigError: an unknown backend.
    """
    st = cfg.storage
    common = dict(backing_dir=st.backing_dir, backing=st.backing, vg=st.volume_group,
                  iqn_prefix=st.iqn_prefix, name_prefix=cfg.virt.name_prefix)
    if st.backend == "tgt":
        return TgtBackend(executor, control_port=st.tgt_control_port, **common)
    if st.backend == "targetcli":
        return TargetcliBackend(executor, **common)
    raise ConfigError(cfg.path, "[storage] backend", "unknown iSCSI backend %r (known: tgt, "
                      "targetcli)" % st.backend)

"""Node registration: the Rocks ``insert-ethers --dump`` format and the registrars that apply it.

This module owns the dump line format (``vc_ctl`` writes one dump per cluster: rack = cluster
number, rank = node index) and the two ways of applying a dump:

- ``rocks``: run the lines on a Rocks frontend through an injected ``execute(argv)``, then one
  ``insert-ethers --update`` (which regenerates dhcpd.conf, /etc/hosts and DNS);
- ``builtin`` (default): write the Rocks-compatible ``nodes``/``networks`` rows itself, add DHCP
  host entries to the cluster's network, and keep an /etc/hosts-style file.

Both implement :class:`Registrar` and are made by :func:`make_registrar`, the one place that
reads ``[register] registrar``. Both apply a dump idempotently (replaying it changes nothing),
refuse what insert-ethers refuses (a duplicate MAC, IP or (appliance, rack, rank)), and undo
exactly what they added. Each step is
safe to run again after a crash at any point: that is how a half-done start or stop is repaired.

Every string that reaches a dump line is checked against a strict pattern, so a quote or a shell
metacharacter can never appear in a line that a Rocks frontend will run.
"""

import abc
import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import logging
import os
import re
import shlex
import tempfile
from typing import Dict, Iterable, Iterator, List, Optional, Union

from vc.errors import ConfigError, VcError
from vc.remote import Execute

LOG = logging.getLogger(__name__)

ROCKS_ARGV0 = "/opt/rocks/sbin/insert-ethers"
ROCKS_UPDATE = "--update"
ROCKS_REMOVE = "--remove"
INT_MAX = 2**31 - 1  # the Rocks columns are signed INT

# re.ASCII everywhere: \w and [0-9]-like classes must not admit non-ASCII look-alikes.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME_RE = re.compile(r"%s(?:\.%s)*" % (_LABEL, _LABEL), re.ASCII)
# membership names: no spaces, because hostname() builds '<appliance>-<rack>-<rank>' from them
APPLIANCE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}", re.ASCII)
DEVICE_RE = re.compile(r"[a-z][a-z0-9_.:-]{0,31}", re.ASCII)
MODULE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}", re.ASCII)
# 6 octets for Ethernet; Rocks also stores 20-octet InfiniBand hardware addresses
MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5,19}", re.ASCII)
DOTTED_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}", re.ASCII)
ARGV0_RE = re.compile(r"(?:[A-Za-z0-9_.+-]*/)*insert-ethers", re.ASCII)

# The whole line, in the one order insert-ethers --dump prints it. Field values are checked by
# NodeEntry afterwards; the line is then re-printed and compared, so only canonical lines pass.
LINE_RE = re.compile(
    r'(?P<argv0>\S+) --hostname="(?P<hostname>[^"]*)" --rack=(?P<rack>[0-9]+)'
    r' --rank=(?P<rank>[0-9]+) --cpus=(?P<cpus>[0-9]+) --appliance="(?P<appliance>[^"]*)"'
    r' --mac="(?P<mac>[^"]*)" --device="(?P<device>[^"]*)" --module="(?P<module>[^"]*)"'
    r' --ipaddr="(?P<ipaddr>[^"]*)" --netmask="(?P<netmask>[^"]*)" --norestart --batch',
    re.ASCII)
LINE_FMT = ('%s --hostname="%s" --rack=%d --rank=%d --cpus=%d --appliance="%s" --mac="%s"'
            ' --device="%s" --module="%s" --ipaddr="%s" --netmask="%s" --norestart --batch')
# Rocks prints an empty column as the Python None it read from the database.
NONE = "None"


class RegistrationError(VcError):
    """A dump line or a registration was refused (bad field, duplicate MAC/IP/slot, ...)."""


# ------------------------------------------------------------------------------- the format
@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeEntry:
    """One node of a dump: the fields of one ``insert-ethers --dump`` line.

    Keyword-only (two adjacent ints, rack and rank, are too easy to swap by position). Every
    field is validated on construction, so a NodeEntry is always printable as a safe line.
    ``appliance`` is the membership name (``Gateway``, ``Compute``); ``module`` may be empty.
    """

    hostname: str
    rack: int
    rank: int
    cpus: int
    appliance: str
    mac: str
    device: str = "eth0"
    module: str = ""
    ipaddr: str
    netmask: str

    def __post_init__(self):
        validate(self)

    @property
    def slot(self):
        """``(appliance, rack, rank)``: insert-ethers allows one node per slot."""
        return (self.appliance.lower(), self.rack, self.rank)

    def same_as(self, other: "NodeEntry") -> bool:
        """Identical registration (MAC and membership name compared case-insensitively, as the
        database compares them)."""
        def norm(x):
            return dataclasses.replace(x, mac=x.mac.lower(), appliance=x.appliance.lower())

        return norm(self) == norm(other)


def _check_str(name, value, pattern, empty_ok=False, max_len=None):
    if not isinstance(value, str):
        raise RegistrationError("%s must be a string, not %r" % (name, value))
    if value == "":
        if empty_ok:
            return
        raise RegistrationError("%s is empty" % name)
    if not pattern.fullmatch(value) or (max_len and len(value) > max_len):
        raise RegistrationError("bad %s %r" % (name, value))
    if value == NONE:
        # it would read back as an empty column
        raise RegistrationError("bad %s %r: 'None' means an empty column" % (name, value))


def _check_int(name, value, low):
    if type(value) is not int or not low <= value <= INT_MAX:
        raise RegistrationError("bad %s %r: an integer from %d to %d is required"
                                % (name, value, low, INT_MAX))


def _check_ipv4(name, value, netmask=False):
    _check_str(name, value, DOTTED_RE)
    try:
        addr = ipaddress.IPv4Address(value)  # refuses octets > 255 and leading zeros
    except ValueError:
        raise RegistrationError("bad %s %r" % (name, value)) from None
    if netmask:
        host_bits = ~int(addr) & 0xFFFFFFFF
        if host_bits & (host_bits + 1):
            raise RegistrationError("bad %s %r: not a contiguous netmask" % (name, value))


def validate(e: NodeEntry) -> None:
    """Check every field of ``e``.

    :raises RegistrationError: naming the first bad field.
    """
    _check_str("hostname", e.hostname, HOSTNAME_RE, max_len=128)
    _check_int("rack", e.rack, 0)
    _check_int("rank", e.rank, 0)
    _check_int("cpus", e.cpus, 1)
    _check_str("appliance", e.appliance, APPLIANCE_RE)
    _check_str("mac", e.mac, MAC_RE)
    _check_str("device", e.device, DEVICE_RE)
    _check_str("module", e.module, MODULE_RE, empty_ok=True)
    _check_ipv4("ipaddr", e.ipaddr)
    _check_ipv4("netmask", e.netmask, netmask=True)


def _check_argv0(argv0):
    if not isinstance(argv0, str) or not ARGV0_RE.fullmatch(argv0):
        raise RegistrationError("bad insert-ethers program %r: must be 'insert-ethers' or a path "
                                "ending in '/insert-ethers'" % (argv0,))


def hostname(appliance_label: str, rack: int, rank: int) -> str:
    """The Rocks host name of a node: ``<appliance>-<rack>-<rank>``, e.g. ``compute-3-0``.

    :param appliance_label: membership or appliance name, any case (``Compute``, ``gateway``).
    """
    _check_str("appliance", appliance_label, APPLIANCE_RE)
    _check_int("rack", rack, 0)
    _check_int("rank", rank, 0)
    name = "%s-%d-%d" % (appliance_label.lower(), rack, rank)
    _check_str("hostname", name, HOSTNAME_RE, max_len=128)
    return name


def dump_line(e: NodeEntry, argv0: str = "insert-ethers") -> str:
    """One line exactly as ``insert-ethers --dump`` prints it (no newline).

    :param argv0: the program as the line will run it: ``insert-ethers`` or a path to it.
    :raises RegistrationError: on a field or argv0 that does not pass validation.
    """
    if not isinstance(e, NodeEntry):
        raise RegistrationError("not a NodeEntry: %r" % (e,))
    validate(e)
    _check_argv0(argv0)
    col = lambda v: v if v != "" else NONE  # noqa: E731
    return LINE_FMT % (argv0, e.hostname, e.rack, e.rank, e.cpus, e.appliance, e.mac,
                       e.device, col(e.module), e.ipaddr, e.netmask)


def check_unique(entries: Iterable[NodeEntry]) -> None:
    """Refuse a batch that names a host, MAC, IP or (appliance, rack, rank) twice: insert-ethers
    would stop at the second line with the first one already applied."""
    seen: Dict[tuple, str] = {}
    for e in entries:
        for key, what in ((("host", e.hostname), "host name %s" % e.hostname),
                          (("mac", e.mac.lower()), "MAC %s" % e.mac),
                          (("ip", e.ipaddr), "IP %s" % e.ipaddr),
                          (("slot",) + e.slot, "appliance/rack/rank %s/%d/%d"
                           % (e.appliance, e.rack, e.rank))):
            if key in seen:
                raise RegistrationError("duplicate %s in the dump (%s and %s)"
                                        % (what, seen[key], e.hostname))
            seen[key] = e.hostname


def dump(entries: Iterable[NodeEntry], argv0: str = "insert-ethers") -> str:
    """The dump of ``entries``: one line each, in order, each ending in a newline."""
    entries = list(entries)
    check_unique(entries)
    return "".join(dump_line(e, argv0) + "\n" for e in entries)


def parse_line(line: str) -> NodeEntry:
    """Read one dump line back; the inverse of :func:`dump_line`.

    Only the exact canonical form is accepted (the argv0 may be ``insert-ethers`` or any path
    ending in ``/insert-ethers``); ``None`` reads as an empty column.

    :raises RegistrationError: naming the line.
    """
    text = line.strip() if isinstance(line, str) else line
    m = LINE_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise RegistrationError("not an insert-ethers dump line: %r" % (line,))
    f = m.groupdict()
    argv0 = f.pop("argv0")
    try:
        _check_argv0(argv0)
        for k in ("rack", "rank", "cpus"):
            f[k] = int(f[k])
        for k, v in f.items():
            if v == NONE:
                f[k] = ""
        entry = NodeEntry(**f)
        if dump_line(entry, argv0) != text:
            # e.g. --rack=03: it parses, but no dump ever printed it
            raise RegistrationError("not in canonical form")
    except RegistrationError as err:
        raise RegistrationError("bad insert-ethers dump line %r: %s" % (line, err)) from None
    return entry


def parse_dump(text: str) -> List[NodeEntry]:
    """All entries of a dump; blank lines and ``#`` comment lines are ignored.

    :raises RegistrationError: naming the line number and the line.
    """
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            out.append(parse_line(line))
        except RegistrationError as err:
            raise RegistrationError("dump line %d: %s" % (n, err)) from None
    return out


# ------------------------------------------------------------------------------- helpers
def _conflict(e: NodeEntry, existing: Iterable[NodeEntry]) -> Optional[NodeEntry]:
    """The registered entry identical to ``e`` (then ``e`` is a no-op), or None.

    :raises RegistrationError: when ``e`` collides with another registration, worded as
        insert-ethers words it.
    """
    same = None
    for x in existing:
        if x.hostname == e.hostname:
            if not x.same_as(e):
                raise RegistrationError("host %s is already registered with different settings;"
                                        " unregister it first" % e.hostname)
            same = x
        elif x.mac.lower() == e.mac.lower():
            raise RegistrationError("duplicate MAC %s: already registered to %s"
                                    % (e.mac, x.hostname))
        elif x.ipaddr == e.ipaddr:
            raise RegistrationError("duplicate IP %s: already registered to %s"
                                    % (e.ipaddr, x.hostname))
        elif x.slot == e.slot:
            raise RegistrationError("duplicate appliance/rack/rank %s/%d/%d: already registered "
                                    "to %s" % (e.appliance, e.rack, e.rank, x.hostname))
    return same


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` (the file itself is replaced, so it cannot hold one):
    the cron and vc_ctl may register different clusters at the same moment."""
    with open(path + ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _atomic_write(path: str, text: str) -> None:
    """Replace ``path`` by ``text`` all at once: a reader (or a crash) sees the old or the new
    file, never half of one. Keeps the old file's permissions (0644 for a new file)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


# ------------------------------------------------------------------------------- contract
class Registrar(abc.ABC):
    """Applies a cluster's dump entries and undoes exactly them; both idempotent.

    :attr dump_argv0: the program the cluster's dump file names in its lines.
    """

    dump_argv0 = "insert-ethers"

    @abc.abstractmethod
    def register(self, entries: Iterable[NodeEntry], network_name: str) -> List[str]:
        """Register ``entries`` (the nodes of one cluster, whose libvirt network is
        ``network_name``). :returns: the host names newly registered (empty on a replay).
        :raises RegistrationError: a duplicate, before anything is changed."""

    @abc.abstractmethod
    def unregister(self, entries: Iterable[NodeEntry], network_name: str) -> List[str]:
        """Remove exactly these registrations (anything already gone is fine).
        :returns: the host names removed."""


# ------------------------------------------------------------------------------- rocks
class RocksRegistrar(Registrar):
    """Apply dumps on a real Rocks frontend by running insert-ethers.

    insert-ethers itself is not idempotent (a second identical line is refused as a duplicate),
    so what has been applied is kept in a JSON state file::

        {"applied": [<dump line>, ...], "update_pending": true|false}

    It is rewritten after every command; ``update_pending`` is set *before* a command runs, so a
    crash between the lines and the final ``--update`` still gets its ``--update`` on the rerun.

    :param execute: ``execute(argv) -> str``; runs one command (locally or over SSH: any
        :class:`vc.remote.Executor`) and raises a :class:`VcError` (``CommandError``) when it
        fails.
    :param argv0: the insert-ethers program on the frontend.
    :param applied_path: the state file.
    """

    def __init__(self, execute: Execute, argv0: str = ROCKS_ARGV0, *,
                 applied_path: str):
        _check_argv0(argv0)
        self.execute = execute
        self.argv0 = argv0
        self.applied_path = applied_path

    @property
    def dump_argv0(self) -> str:
        return self.argv0

    # state file
    def _load(self) -> dict:
        text = _read(self.applied_path)
        if text is None:
            return {"applied": [], "update_pending": False}
        try:
            state = json.loads(text)
            applied = [str(line) for line in state["applied"]]
            pending = bool(state["update_pending"])
        except (ValueError, KeyError, TypeError) as e:
            raise RegistrationError("corrupt registrar state file %s: %s"
                                    % (self.applied_path, e)) from None
        for line in applied:
            parse_line(line)  # a line we did not write must not be trusted
        return {"applied": applied, "update_pending": pending}

    def _save(self, state: dict) -> None:
        _atomic_write(self.applied_path, json.dumps(state, indent=1) + "\n")

    def _run(self, argv: List[str]) -> str:
        LOG.debug("rocks registrar: %s", shlex.join(argv))
        return self.execute(argv)

    def _update_if_pending(self, state: dict) -> None:
        if state["update_pending"]:
            self._run([self.argv0, ROCKS_UPDATE])
            state["update_pending"] = False
            self._save(state)

    def registered(self) -> List[NodeEntry]:
        """The entries this registrar has applied (from its state file)."""
        return [parse_line(line) for line in self._load()["applied"]]

    def register(self, entries: Iterable[NodeEntry], network_name: Optional[str] = None
                 ) -> List[str]:
        """Run the dump lines not yet applied, then one ``insert-ethers --update``.

        :param network_name: unused (Rocks' own dhcpd serves the nodes); accepted so that both
            registrars are called alike.
        :returns: the host names newly registered (empty on a replay).
        :raises RegistrationError: on a duplicate, before any command runs.
        """
        entries = list(entries)
        check_unique(entries)
        with _locked(self.applied_path):
            state = self._load()
            have = [parse_line(line) for line in state["applied"]]
            todo = [e for e in entries if _conflict(e, have) is None]
            done = []
            for e in todo:
                line = dump_line(e, self.argv0)
                if not state["update_pending"]:
                    state["update_pending"] = True
                    self._save(state)
                self._run(shlex.split(line))
                state["applied"].append(line)
                self._save(state)
                done.append(e.hostname)
                LOG.info("registered %s (rack %d) with insert-ethers", e.hostname, e.rack)
            self._update_if_pending(state)
        return done

    def unregister(self, entries: Iterable[NodeEntry], network_name: Optional[str] = None
                   ) -> List[str]:
        """``insert-ethers --remove <host>`` for each of ``entries`` that this registrar
        registered, then one ``--update``. Hosts never registered are skipped.

        :returns: the host names removed.
        """
        names = [e.hostname for e in entries]
        with _locked(self.applied_path):
            state = self._load()
            done = []
            for name in names:
                lines = [x for x in state["applied"] if parse_line(x).hostname == name]
                if not lines:
                    continue
                if not state["update_pending"]:
                    state["update_pending"] = True
                    self._save(state)
                self._run([self.argv0, ROCKS_REMOVE, name])
                state["applied"] = [x for x in state["applied"] if x not in lines]
                self._save(state)
                done.append(name)
                LOG.info("removed %s with insert-ethers", name)
            self._update_if_pending(state)
        return done


# ------------------------------------------------------------------------------- builtin
class BuiltinRegistrar(Registrar):
    """Apply dumps without Rocks: the cluster DB rows, DHCP host entries and a hosts file.

    :param db: a :class:`vc.db.Database` whose schema holds ``memberships``/``nodes``/
        ``networks`` (sql/002).
    :param dhcp: an object with ``add_dhcp_host(network_name, mac, ip, name) -> bool`` and
        ``remove_dhcp_host(network_name, mac, ip, name) -> bool`` (True when it changed
        something; an entry already present/absent is not an error).
    :param hosts_file: the /etc/hosts-style file; each rack owns the lines between
        ``# vc rack <N> begin`` and ``# vc rack <N> end``, and nothing else in it is touched.
    """

    def __init__(self, db, dhcp, hosts_file: str):
        self.db = db
        self.dhcp = dhcp
        self.hosts_file = hosts_file

    def register(self, entries: Iterable[NodeEntry], network_name: str) -> List[str]:
        """Write the rows (one transaction), add the DHCP entries, rewrite the racks' blocks.

        Order matters for crash safety: the rows are the record of what is registered, and the
        later steps are re-done from the entries on every call, so a rerun completes them.

        :returns: the host names whose rows were newly written (empty on a replay).
        :raises RegistrationError: unknown appliance, or a duplicate MAC, IP or
            (appliance, rack, rank) held by another node; nothing is written then.
        """
        entries = list(entries)
        check_unique(entries)
        added = self.db.transaction(lambda cur: self._insert(cur, entries))
        for e in entries:
            if self.dhcp.add_dhcp_host(network_name, e.mac, e.ipaddr, e.hostname):
                LOG.info("DHCP host %s %s %s added to %s", e.hostname, e.mac, e.ipaddr,
                         network_name)
        self._rewrite_hosts(sorted({e.rack for e in entries}))
        return added

    def unregister(self, entries: Iterable[NodeEntry], network_name: str) -> List[str]:
        """Remove the DHCP entries, the rows of exactly these host names (in their rack) and
        rewrite their racks' hosts-file blocks. Anything already gone is fine.

        :returns: the host names whose rows were deleted.
        """
        entries = list(entries)
        for e in entries:
            if self.dhcp.remove_dhcp_host(network_name, e.mac, e.ipaddr, e.hostname):
                LOG.info("DHCP host %s %s %s removed from %s", e.hostname, e.mac, e.ipaddr,
                         network_name)
        removed = self.db.transaction(lambda cur: self._delete(cur, entries))
        self._rewrite_hosts(sorted({e.rack for e in entries}))
        return removed

    # database
    @staticmethod
    def _memberships(cur, entries) -> Dict[str, int]:
        cur.execute("SELECT ID, Name FROM memberships")
        ids = {row["Name"].lower(): row["ID"] for row in cur.fetchall()}
        for e in entries:
            if e.appliance.lower() not in ids:
                raise RegistrationError("unknown appliance %r for %s: no such membership"
                                        % (e.appliance, e.hostname))
        return ids

    @staticmethod
    def _node(cur, name) -> Union[NodeEntry, str, None]:
        """The registered entry named ``name`` as a NodeEntry, or None. A node whose rows do not
        fit one dump line (several interfaces, no MAC) is returned as a string describing it."""
        cur.execute("SELECT n.ID, n.Name, n.CPUs, n.Rack, n.`Rank`, m.Name AS Membership"
                    " FROM nodes n JOIN memberships m ON m.ID = n.Membership"
                    " WHERE n.Name = %s FOR UPDATE", (name,))
        node = cur.fetchone()
        if node is None:
            return None
        cur.execute("SELECT MAC, IP, Netmask, Name, Device, Module FROM networks"
                    " WHERE Node = %s FOR UPDATE", (node["ID"],))
        nets = cur.fetchall()
        try:
            (net,) = nets
            return NodeEntry(hostname=node["Name"], rack=node["Rack"], rank=node["Rank"],
                             cpus=node["CPUs"], appliance=node["Membership"],
                             mac=net["MAC"] or "", device=net["Device"] or "",
                             module=net["Module"] or "", ipaddr=net["IP"] or "",
                             netmask=net["Netmask"] or "")
        except (ValueError, RegistrationError):
            return "%s (%d interfaces)" % (name, len(nets))

    def _owner(self, cur, sql, args) -> Optional[str]:
        cur.execute(sql, args)
        row = cur.fetchone()
        return row["Name"] if row else None

    def _insert(self, cur, entries) -> List[str]:
        ids = self._memberships(cur, entries)
        added = []
        for e in entries:
            mid = ids[e.appliance.lower()]
            old = self._node(cur, e.hostname)
            if old is not None:
                if isinstance(old, NodeEntry) and old.same_as(e):
                    continue
                raise RegistrationError("host %s is already registered with different settings;"
                                        " unregister it first" % e.hostname)
            owner = self._owner(cur, "SELECT n.Name FROM networks w JOIN nodes n ON n.ID = w.Node"
                                " WHERE w.MAC = %s", (e.mac,))
            if owner:
                raise RegistrationError("duplicate MAC %s: already registered to %s"
                                        % (e.mac, owner))
            owner = self._owner(cur, "SELECT n.Name FROM networks w JOIN nodes n ON n.ID = w.Node"
                                " WHERE w.IP = %s", (e.ipaddr,))
            if owner:
                raise RegistrationError("duplicate IP %s: already registered to %s"
                                        % (e.ipaddr, owner))
            owner = self._owner(cur, "SELECT Name FROM nodes WHERE Membership = %s AND Rack = %s"
                                " AND `Rank` = %s", (mid, e.rack, e.rank))
            if owner:
                raise RegistrationError("duplicate appliance/rack/rank %s/%d/%d: already "
                                        "registered to %s" % (e.appliance, e.rack, e.rank, owner))
            try:
                cur.execute("INSERT INTO nodes (Name, Membership, CPUs, Rack, `Rank`)"
                            " VALUES (%s, %s, %s, %s, %s)",
                            (e.hostname, mid, e.cpus, e.rack, e.rank))
                cur.execute("INSERT INTO networks (Node, MAC, IP, Netmask, Name, Device, Module)"
                            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            (cur.lastrowid, e.mac, e.ipaddr, e.netmask, e.hostname, e.device,
                             e.module or None))
            except Exception as err:
                # a concurrent registration won the race between our checks and the insert
                if getattr(err, "args", (None,))[0] == 1062:
                    raise RegistrationError("duplicate registration of %s: %s"
                                            % (e.hostname, err.args[-1])) from err
                raise
            added.append(e.hostname)
            LOG.info("registered %s (rack %d) in the cluster DB", e.hostname, e.rack)
        return added

    @staticmethod
    def _delete(cur, entries) -> List[str]:
        removed = []
        for e in entries:
            cur.execute("SELECT ID FROM nodes WHERE Name = %s AND Rack = %s FOR UPDATE",
                        (e.hostname, e.rack))
            row = cur.fetchone()
            if row is None:
                continue
            cur.execute("DELETE FROM networks WHERE Node = %s", (row["ID"],))
            cur.execute("DELETE FROM nodes WHERE ID = %s", (row["ID"],))
            removed.append(e.hostname)
            LOG.info("removed %s (rack %d) from the cluster DB", e.hostname, e.rack)
        return removed

    # hosts file
    def _rack_lines(self, rack: int) -> List[str]:
        rows = self.db.query(
            "SELECT w.IP, COALESCE(w.Name, n.Name) AS Name FROM nodes n"
            " JOIN networks w ON w.Node = n.ID WHERE n.Rack = %s AND w.IP IS NOT NULL"
            " ORDER BY INET_ATON(w.IP), Name", (rack,))
        return ["%s\t%s" % (r["IP"], r["Name"]) for r in rows]

    def _rewrite_hosts(self, racks: List[int]) -> None:
        """Rewrite each rack's block from the database (what is registered now); a rack with
        no nodes loses its block. The file is replaced only when its text changes."""
        if not racks:
            return
        with _locked(self.hosts_file):
            old = _read(self.hosts_file)
            text = old or ""
            for rack in racks:
                text = replace_block(text, rack, self._rack_lines(rack), self.hosts_file)
            if text != (old or "") or (old is None and text):
                _atomic_write(self.hosts_file, text)
                LOG.info("hosts file %s: rewrote rack(s) %s", self.hosts_file,
                         ", ".join(map(str, racks)))


def replace_block(text: str, rack: int, lines: List[str], where: str = "hosts file") -> str:
    """``text`` with rack ``rack``'s ``# vc rack <N> begin``/``end`` block holding ``lines``
    (appended at the end when absent, removed when ``lines`` is empty). Everything else is kept
    as it is.

    :raises RegistrationError: when the rack's markers are unbalanced (a hand edit went wrong:
        better to stop than to guess which lines are ours).
    """
    begin, end = "# vc rack %d begin" % rack, "# vc rack %d end" % rack
    src = text.splitlines()
    block = [begin] + list(lines) + [end] if lines else []
    out, i, placed = [], 0, False
    while i < len(src):
        line = src[i].strip()
        if line == end:
            raise RegistrationError("%s: %r without %r" % (where, end, begin))
        if line != begin:
            out.append(src[i])
            i += 1
            continue
        j = i + 1
        while j < len(src) and src[j].strip() not in (begin, end):
            j += 1
        if j == len(src) or src[j].strip() != end:
            raise RegistrationError("%s: %r without %r" % (where, begin, end))
        if not placed:  # a second block of the same rack (never ours) is dropped
            out.extend(block)
            placed = True
        i = j + 1
    if not placed:
        out.extend(block)
    return "".join(line + "\n" for line in out)


# ------------------------------------------------------------------------------- factory
KINDS = ("builtin", "rocks")


def make_registrar(cfg, *, db=None, dhcp=None, execute=None) -> Registrar:
    """The registrar of ``[register] registrar``, with what it needs: ``builtin`` the database,
    the DHCP seam and ``[register] hosts_file``; ``rocks`` an executor on the Rocks frontend,
    ``[register] insert_ethers`` and its state file ``<state_dir>/rocks-applied.json``.

    :raises ConfigError: for an unknown kind.
    """
    reg = cfg.register
    if reg.registrar == "builtin":
        return BuiltinRegistrar(db, dhcp, reg.hosts_file)
    if reg.registrar == "rocks":
        return RocksRegistrar(execute, reg.insert_ethers, applied_path=os.path.join(
            cfg.site.state_dir, "rocks-applied.json"))
    raise ConfigError(cfg.path, "registrar", "unknown registrar %r (known: %s)"
                      % (reg.registrar, ", ".join(KINDS)))

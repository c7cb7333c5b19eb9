"""Configuration: one INI file turned into one typed, validated :class:`Config`.

The file is ``$VC_CONFIG`` if set, else ``/etc/vc/vc.conf``; in a development checkout with neither,
``<checkout>/var/vc.conf`` (what ``make demo`` writes).

Every key is declared once, below, as a field of its section's frozen dataclass (:class:`Virt` is
``[virt]``, ...): the field's name is the key, its default the default (a field without one is
REQUIRED), and its metadata the parser and a one-line help (:func:`key`). :func:`parse` derives the
rest from these declarations: the parsing, the unknown-section/unknown-key errors (a typo must not
silently fall back to a default) and the :class:`Config` object, whose fields are the sections
(``cfg.virt.boot_timeout``, ``cfg.storage.backend``), the repeated ``[host:NAME]`` sections
(``cfg.hosts``) and the resolved appliance profiles (``cfg.appliance("gateway")``).
``etc/vc.conf.example`` documents every key (tests/test_config.py checks that it names them all).
Every problem is reported as one :class:`~vc.errors.ConfigError` naming the file and the key.
"""

# the annotations stay strings: no typing import (this module is on every CGI page's path), and
# ``str | None`` works on Python 3.9
from __future__ import annotations

import configparser
import ipaddress
import os
import re
from dataclasses import (MISSING, FrozenInstanceError, dataclass, field, fields,
                         is_dataclass, replace)

from vc.errors import ConfigError

DEFAULT_PATH = "/etc/vc/vc.conf"
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# the parsers' patterns are compiled (and cached by re) when a key that needs one is given
MAC_PREFIX_RE = r"^[0-9a-f]{2}(:[0-9a-f]{2}){2}$"
USER_RE = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
URL_PREFIX_RE = r"^(/[A-Za-z0-9._~-]+)+$"
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = r"^(?=.{1,253}$)%s(?:\.%s)*$" % (LABEL, LABEL)
NETWORK_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
IFNAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$"

APPLIANCES = ("gateway", "compute")


# ---------------------------------------------------------------------------------- parsers
# A parser turns the raw text of a key into its value, or raises ValueError with a short reason.

def _int(lo, hi):
    """An integer in ``[lo, hi]`` (:func:`vc.numbers.parse_int`: ASCII digits only, bounded
    length). Every integer key has an upper bound: the values feed datetime arithmetic
    (``max_hours``, the tick's back-off) and INT UNSIGNED columns."""
    def parse(s):
        # imported when a key is parsed: importing vc.config loads vc.errors only
        from vc.numbers import NumberError, parse_int

        try:
            return parse_int(s, "value", lo, hi)
        except NumberError as e:
            if e.kind == "syntax":
                raise ValueError("must be an integer, got %r" % s.strip()[:40]) from None
            raise ValueError("must be between %d and %d, got %s" % (lo, hi, e.shown)) from None

    parse.bounds = (lo, hi)
    return parse


_BOOLS = {"1": True, "yes": True, "true": True, "on": True,
          "0": False, "no": False, "false": False, "off": False}


def _bool(s):
    v = _BOOLS.get(s.strip().lower())
    if v is None:
        raise ValueError("must be yes or no, got %r" % s)
    return v


def _str(s):
    s = s.strip()
    if not s:
        raise ValueError("must not be empty")
    return s


def _optstr(s):
    return s.strip() or None


def _anystr(s):
    return s


def _optany(s):
    """Any text; empty = not given."""
    return s if s.strip() else None


def _mac_prefix(s):
    s = s.strip().lower()
    if not re.match(MAC_PREFIX_RE, s):
        raise ValueError("must be three hex octets like 52:54:00, got %r" % s)
    if int(s[:2], 16) & 1:
        raise ValueError("the first octet must be unicast (even), got %r" % s)
    return s


def _network(s):
    try:
        net = ipaddress.IPv4Network(s.strip(), strict=True)
    except ValueError as e:
        raise ValueError("must be an IPv4 network like 10.200.0.0/16 (%s)" % e) from None
    return net


def _pool(s):
    """A public pool: a CIDR (all its host addresses) or ranges ``A-B`` and single addresses,
    comma separated."""
    out = []
    for part in [p.strip() for p in s.split(",") if p.strip()]:
        try:
            if "/" in part:
                out.extend(ipaddress.IPv4Network(part, strict=True).hosts())
            elif "-" in part:
                a, b = (ipaddress.IPv4Address(x.strip()) for x in part.split("-", 1))
                if b < a:
                    raise ValueError("range end before start")
                out.extend(ipaddress.IPv4Address(i) for i in range(int(a), int(b) + 1))
            else:
                out.append(ipaddress.IPv4Address(part))
        except ValueError as e:
            raise ValueError("bad address or range %r (%s)" % (part, e)) from None
    if not out:
        raise ValueError("must list at least one address")
    if len(set(out)) != len(out):
        raise ValueError("lists an address twice")
    return tuple(out)


def _id_range(s):
    from vc.numbers import NumberError, parse_int

    m = re.match(r"^\s*([0-9]+)\s*-\s*([0-9]+)\s*$", s)
    if not m:
        raise ValueError("must be a range like 100-4094, got %r" % s[:40])
    try:
        a, b = (parse_int(x, "id", 1, 16777215) for x in m.groups())
    except NumberError:
        a = b = None
    if a is None or not a <= b:
        raise ValueError("must satisfy 1 <= first <= last <= 16777215, got %r" % s[:40])
    return a, b


def _timezone(s):
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    s = s.strip()
    try:
        ZoneInfo(s)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown time zone %r (use a name like UTC or Asia/Tokyo)" % s) from None
    return s


def _names(s):
    names = tuple(n.strip() for n in s.replace(",", " ").split() if n.strip())
    for n in names:
        if not NAME_RE.match(n):
            raise ValueError("bad user name %r" % n)
    return names


def _choice(*choices):
    def parse(s):
        s = s.strip()
        if s not in choices:
            raise ValueError("must be one of %s, got %r" % (", ".join(choices), s))
        return s

    return parse


def _optional(parser):
    """``parser``, but an empty value = not given (None)."""
    def parse(s):
        return parser(s) if s.strip() else None

    return parse


def _prefix(s):
    s = s.strip()
    if not re.match(r"^[a-z][a-z0-9]{0,7}$", s):
        raise ValueError("must be 1-8 lower-case letters/digits starting with a letter "
                         "(it names domains, networks and bridges), got %r" % s)
    return s


def _path(s):
    s = s.strip()
    if s and not s.startswith("/"):
        raise ValueError("must be an absolute path, got %r" % s)
    return s or None


def _matching(pattern, what):
    """A parser: the stripped value if it matches ``pattern``, else "must be/look like …"."""
    def parse(s):
        s = s.strip()
        if not re.match(pattern, s):
            raise ValueError("%s, got %r" % (what, s))
        return s

    return parse


_label = _matching(r"^[A-Za-z][A-Za-z0-9]{0,31}$",
                   "must be a Rocks membership name of letters and digits")
_iqn_prefix = _matching(r"^iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*$",
                        "must look like iqn.2026-11.org.example")
_uri = _matching(r"^[a-z][a-z0-9+]*:///?[^\s]*$", "must be a libvirt URI like qemu:///system")


def _address(kind, what):
    """A parser of an optional address (empty = None), normalised by ``ipaddress.<kind>``."""
    def parse(s):
        s = s.strip()
        if not s:
            return None
        try:
            return str(getattr(ipaddress, kind)(s))
        except ValueError:
            raise ValueError("must be %s, got %r" % (what, s)) from None

    return parse


_ipaddr = _address("ip_address", "an IP address")
_ipv4 = _address("IPv4Address", "an IPv4 address")


def _initiator(s):
    s = s.strip()
    if not s:
        return None
    if re.match(r"^iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.:-]*$", s):
        return s
    try:
        return str(ipaddress.ip_network(s, strict=False)) if "/" in s else \
            str(ipaddress.ip_address(s))
    except ValueError:
        raise ValueError("must be an IP address, a CIDR or an IQN, got %r" % s) from None


def _hostname(s):
    """A host name or address; empty = None."""
    s = s.strip()
    if not s:
        return None
    try:
        return str(ipaddress.ip_address(s))
    except ValueError:
        pass
    if not re.match(HOSTNAME_RE, s):
        raise ValueError("must be a host name or an IP address, got %r" % s)
    return s


def _domain(s):
    s = s.strip().rstrip(".").lower()
    if not re.match(HOSTNAME_RE, s):
        raise ValueError("must be a DNS domain like vc.internal, got %r" % s)
    return s


def _public_network(s):
    s = s.strip()
    if s.startswith("bridge:"):
        bridge = s[len("bridge:"):].strip()
        if not re.match(IFNAME_RE, bridge):
            raise ValueError("bridge:NAME needs a host bridge name (up to 15 letters, digits, "
                             ". _ -), got %r" % bridge)
        return "bridge:" + bridge
    if not re.match(NETWORK_NAME_RE, s):
        raise ValueError("must be a libvirt network name or bridge:NAME, got %r" % s)
    return s


def _user(s):
    s = s.strip()
    if not re.match(USER_RE, s):
        raise ValueError("must be a user name (letters, digits, . _ @ -), got %r" % s)
    return s


def _url_prefix(s):
    s = s.strip().rstrip("/")
    if not re.match(URL_PREFIX_RE, s):
        raise ValueError("must be a path like /vc (segments of letters, digits, . _ ~ -), "
                         "got %r" % s)
    return s


# ---------------------------------------------------------------------------- declarations
REQUIRED = object()


def key(parser, default, help, under_state=None):
    """Declare one INI key as a dataclass field.

    :param parser: raw text -> value; raises ValueError with a short reason.
    :param default: the value when the key is absent (already parsed), or :data:`REQUIRED`.
    :param help: one line for the reader of the example file.
    :param under_state: default None stands for ``<[site] state_dir>/<under_state...>``,
        resolved by :func:`parse` (the section object holds the resolved path).
    """
    meta = {"parser": parser, "help": help}
    if under_state:
        meta["under_state"] = under_state
    if default is REQUIRED:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def keys(cls):
    """The INI keys of a section class: its fields declared with :func:`key`, in order."""
    return [f for f in fields(cls) if "parser" in f.metadata]


class _Record:
    """What ``@dataclass(frozen=True)`` would generate for the classes below, written once:
    read-only instances (assigning or deleting raises ``dataclasses.FrozenInstanceError``),
    ``==``, ``hash()`` and ``repr()``. Generated, these cost an ``exec`` per class and method when
    the module is imported, which every CGI page does (5 of 6 per class: ``_frozen_dataclass`` has
    ``@dataclass`` generate only ``__init__``)."""

    __slots__ = ()

    def __setattr__(self, name, value):
        # the generated __init__ sets every field once; nothing is set after that
        if name in self.__dict__ or name not in self.__dataclass_fields__:
            raise FrozenInstanceError("cannot assign to field %r" % name)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        raise FrozenInstanceError("cannot delete field %r" % name)

    def _values(self):
        return tuple(getattr(self, f.name) for f in fields(self))

    def __eq__(self, other):
        if other.__class__ is self.__class__:
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self):
        return hash(self._values())

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (f.name, getattr(self, f.name)) for f in fields(self)))


# a frozen dataclass (frozen by _Record)
_frozen_dataclass = dataclass(eq=False, repr=False)

# Required keys come first in a class: a dataclass field without a default cannot follow one with
# a default (``kw_only`` needs Python 3.10).

@_frozen_dataclass
class Database(_Record):
    """``[database]``: MariaDB/MySQL (give unix_socket, or host + port)."""

    user: str = key(_str, REQUIRED, "database user (needs ALL on the database)")
    name: str = key(_str, REQUIRED, "database name")
    unix_socket: str | None = key(_optstr, None, "the server's socket (or give host)")
    host: str | None = key(_optstr, None, "the server's address (with port), if no unix_socket")
    port: int = key(_int(1, 65535), 3306, "the server's TCP port (with host)")
    password: str = key(_anystr, "", "password (may be empty for socket authentication)")
    connect_timeout: int = key(_int(1, 300), 10, "seconds to wait for a connection")


@_frozen_dataclass
class Addresses(_Record):
    """``[addresses]``: what VC hands out to the clusters."""

    public_pool: tuple[ipaddress.IPv4Address, ...] = key(
        _pool, REQUIRED, "one public address per gateway: a CIDR, or ranges A-B and addresses, "
        "comma separated")
    mac_prefix: str = key(_mac_prefix, "52:54:00",
                          "MACs are this prefix + a counter kept in the database")
    private_pool: ipaddress.IPv4Network = key(
        _network, ipaddress.IPv4Network("10.200.0.0/16"),
        "each running cluster gets its own subnet from this pool")
    private_prefix: int = key(_int(8, 29), 24, "prefix length of one cluster's subnet")
    isolation_ids: tuple[int, int] = key(_id_range, (100, 4094),
                                         "VLAN ids / VXLAN VNIs, one per running cluster")


@_frozen_dataclass
class Limits(_Record):
    """``[limits]``: what one reservation may ask for."""

    max_hours: int = key(_int(1, 87600), 168, "longest reservation, hours")
    max_nodes: int = key(_int(1, 65536), 64, "gateways + computes per reservation")
    max_gateways: int = key(_int(1, 1024), 4, "gateways per reservation")
    max_memory_mb: int = key(_int(64, 16777216), 16384, "memory per node, MB")
    max_disk_gb: int = key(_int(1, 1048576), 500, "disk per node, GB")
    max_vcpus: int = key(_int(1, 4096), 16, "vCPUs per node")
    max_volumes: int = key(_int(0, 256), 8, "iSCSI volumes per reservation")
    max_volume_gb: int = key(_int(1, 1048576), 1000, "size of one iSCSI volume, GB")
    max_days_ahead: int = key(_int(1, 3650), 365, "how far ahead a start may be, days")


@_frozen_dataclass
class Defaults(_Record):
    """``[defaults]``: per node, when a reservation does not say."""

    memory_mb: int = key(_int(64, 16777216), 512, "memory per node, MB")
    disk_gb: int = key(_int(1, 1048576), 10, "disk per node, GB")
    vcpus: int = key(_int(1, 4096), 1, "vCPUs per node")


@_frozen_dataclass
class Site(_Record):
    """``[site]``: this installation."""

    timezone: str = key(_timezone, "UTC", "zone of times typed without an offset and shown")
    admins: tuple[str, ...] = key(_names, ("root",),
                                  "users who may change every reservation (root always may)")
    state_dir: str = key(_str, "/var/lib/vc", "where VC keeps its files (an absolute path)")
    log_file: str | None = key(_path, None, "log file; empty = warnings to stderr")
    frontend: str | None = key(_hostname, None, "the name users 'ssh -J' through; empty = this "
                               "machine's FQDN")
    cluster_domain: str = key(_domain, "vc.internal", "DNS domain of the nodes' fqdns")
    frontend_id: str | None = key(_hostname, None, "this frontend's name on its database leases "
                                  "(unique per frontend sharing the database); empty = this "
                                  "machine's host name")
    lease_seconds: int = key(_int(2, 3600), 60, "a lease on a rack or on the tick lasts this "
                             "long unless renewed (every third of it); then another frontend "
                             "takes the work over")

    def frontend_name(self) -> str:
        """``frontend``, or this machine's FQDN."""
        if self.frontend:
            return self.frontend
        import socket

        return socket.getfqdn()


@_frozen_dataclass
class Virt(_Record):
    """``[virt]``: the virtual nodes (the [appliance:NAME] profiles fall back to these)."""

    domain_type: str = key(_choice("qemu", "kvm"), "qemu", "libvirt domain type: qemu or kvm")
    name_prefix: str = key(_prefix, "vc", "names of what VC creates in libvirt start with this")
    disk_dir: str = key(_path, None, "node disks (qcow2 overlays); empty = <state_dir>/disks",
                        under_state=("disks",))
    console_dir: str = key(_path, None, "serial console logs; empty = <state_dir>/console",
                           under_state=("console",))
    gateway_image: str = key(_path, None, "gateways' base image; empty = "
                             "<state_dir>/images/base.qcow2",
                             under_state=("images", "base.qcow2"))
    compute_image: str = key(_path, None, "computes' base image; empty = "
                             "<state_dir>/images/base.qcow2",
                             under_state=("images", "base.qcow2"))
    kernel: str | None = key(_path, None, "direct kernel boot: the kernel (with initrd)")
    initrd: str | None = key(_path, None, "direct kernel boot: the initrd (with kernel)")
    cmdline: str = key(_anystr, "console=ttyS0 panic=-1 quiet", "kernel command line")
    boot_timeout: int = key(_int(1, 3600), 60, "seconds until a node must be running")
    ready_timeout: int = key(_int(1, 7200), 300,
                             "seconds a node may take to be up (SSH answering) after boot")
    shutdown_timeout: int = key(_int(0, 3600), 30, "seconds of ACPI shutdown before destroy")
    boot_parallel: int = key(_int(1, 256), 8, "compute nodes booted at once")
    rng: bool = key(_bool, True, "give nodes a virtio RNG (fed by the host's /dev/urandom)")


@_frozen_dataclass
class Register(_Record):
    """``[register]``: how nodes are made known (Rocks-compatible)."""

    registrar: str = key(_choice("builtin", "rocks"), "builtin", "builtin or rocks")
    insert_ethers: str | None = key(_path, "/opt/rocks/sbin/insert-ethers",
                                    "the Rocks insert-ethers (registrar = rocks)")
    gateway_membership: str = key(_label, "Gateway", "Rocks membership of gateways")
    compute_membership: str = key(_label, "Compute", "Rocks membership of computes")
    hosts_file: str = key(_path, None, "hosts file of the builtin registrar; empty = "
                          "<state_dir>/hosts", under_state=("hosts",))


@_frozen_dataclass
class Storage(_Record):
    """``[storage]``: iSCSI volumes on the registered targets (over SSH)."""

    backend: str = key(_choice("tgt", "targetcli"), "tgt", "tgt (tgtadm) or targetcli (LIO)")
    backing: str = key(_choice("file", "lvm"), "file", "file (under backing_dir) or lvm")
    backing_dir: str | None = key(_path, "/var/lib/vc/iscsi",
                                  "on the target host: where file-backed LUNs live")
    volume_group: str | None = key(_optstr, None, "backing = lvm: the volume group")
    iqn_prefix: str = key(_iqn_prefix, "iqn.2026-11.vc.frontend",
                          "target names are <iqn_prefix>:rack<N>.<mount point>")
    tgt_control_port: int = key(_int(0, 65535), 0, "tgtadm -C: tgtd's control port (0 = default)")
    connect_timeout: int = key(_int(1, 300), 10, "seconds, SSH connect to a target")
    command_timeout: int = key(_int(1, 3600), 60, "seconds, one command on a target")


@_frozen_dataclass
class Network(_Record):
    """``[network]``: the clusters' networks."""

    public_network: str = key(_public_network, REQUIRED, "where the gateways' public NIC is: a "
                              "libvirt network name, or bridge:NAME (an existing host bridge)")
    public_prefix: int = key(_int(8, 30), 24, "prefix length of the public addresses")
    public_gateway: str | None = key(_ipv4, None, "default route given to the gateways; "
                                     "empty = none")
    isolation: str = key(_choice("vxlan", "8021q", "ovs", "none"), "vxlan",
                         "L2 isolation across hosts: vxlan, 8021q, ovs or none")
    underlay_mtu: int = key(_int(576, 65535), 1500, "MTU of the network between the hosts")
    vxlan_port: int = key(_int(1, 65535), 4789, "UDP port of VXLAN")
    trunk_nic: str | None = key(_optstr, None, "isolation = 8021q: the hosts' trunk NIC")
    ovs_bridge: str | None = key(_optstr, None, "isolation = ovs: the Open vSwitch bridge")
    ovs_transport: str = key(_choice("trunk", "vxlan"), "trunk",
                             "isolation = ovs: how a cluster's VLAN crosses hosts: trunk (the "
                             "hosts' OVS bridges hold a trunk NIC on a shared switch) or vxlan "
                             "(tunnels between the hosts' OVS bridges)")

    @property
    def public_interface(self) -> tuple[str, str]:
        """``public_network`` as a libvirt interface type and source: ``("network", NAME)`` or
        ``("bridge", NAME)``."""
        if self.public_network.startswith("bridge:"):
            return "bridge", self.public_network[len("bridge:"):]
        return "network", self.public_network


@_frozen_dataclass
class Web(_Record):
    """``[web]``: the web pages (also read on its own by ``python -m vc.web.settings``)."""

    user: str = key(_user, "root", "who acts in single-user mode (auth = single-user) when "
                    "Apache authenticates nobody")
    port: int = key(_int(1, 65535), 8080, "the demo Apache's port on 127.0.0.1 (tools/web.sh)")
    url_prefix: str = key(_url_prefix, "/vc", "where the pages live on the web server")
    auth: str = key(_choice("pam", "htpasswd", "single-user"), "pam",
                    "who is the user: pam or htpasswd = Apache authenticates (REMOTE_USER, "
                    "required); single-user = everyone acts as [web] user")
    htpasswd: str | None = key(_path, None, "the password file of auth = htpasswd; empty = "
                               "<state_dir>/web/htpasswd")


@_frozen_dataclass
class Cron(_Record):
    """``[cron]``: the tick."""

    max_start_retries: int = key(_int(0, 20), 5, "a failed start is retried at most this often")
    ha_max_restarts: int = key(_int(0, 1000), 3,
                               "restarts of a stopped node of a running cluster per hour")
    preboot_minutes: int = key(_int(0, 120), 5, "start a cluster this early (when no running "
                               "reservation needs the capacity) so it is ready at its start; "
                               "0 = start at the start time")
    preflight_minutes: int = key(_int(0, 10080), 15, "check hosts, images, iSCSI targets and "
                                 "pools this long before a start (and mail problems); 0 = never")



DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _durations(s):
    """``60m,10m,1m`` -> ``(3600, 600, 60)``: comma-separated durations, each a whole number and
    a unit (s, m, h or d; a number alone is seconds), from 1 s to 7 days, at most 10, no
    duplicates (``10m,600s`` is one twice); longest first. Empty = none."""
    if not s.strip():
        return ()
    out, seen = [], {}
    for part in s.split(","):
        p = part.strip()
        m = re.match(r"^([0-9]{1,6})([smhd]?)$", p)
        if p.startswith("-"):
            raise ValueError("durations must not be negative, got %r" % p[:40])
        if not m:
            raise ValueError("must be durations like 60m,10m,1m (a whole number and s, m, h "
                             "or d), got %r" % p[:40])
        n = int(m.group(1)) * DURATION_UNITS[m.group(2)]
        if not 1 <= n <= 7 * 86400:
            raise ValueError("each duration must be from 1s to 7d, got %r" % p)
        if n in seen:
            raise ValueError("lists the same duration twice (%s and %s)" % (seen[n], p))
        seen[n] = p
        out.append(n)
    if len(out) > 10:
        raise ValueError("at most 10 durations, got %d" % len(out))
    return tuple(sorted(out, reverse=True))


_mail_address = _matching(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}"
                          r"[A-Za-z0-9])?$", "must be a mail address like vc@frontend.example.org")


@_frozen_dataclass
class Notify(_Record):
    """``[notify]``: what tells a cluster's owner and users about its lease: warnings before the
    end and notices that it failed or was stopped early (mail to the owner, ``wall`` on every
    node; :mod:`vc.notify`, :mod:`vc.mail`), and the lease service inside the clusters
    (``sbin/vc_metad.py``)."""

    before_end: tuple[int, ...] = key(_durations, (3600, 600, 60),
                                      "warn the owner (mail) and the cluster's users (wall) this "
                                      "long before the end, e.g. 60m,10m,1m (s, m, h, d); "
                                      "empty = no warnings")
    mail: bool = key(_bool, True, "send the notices by mail (to the owner; a failure also to "
                     "[site] admins)")
    smtp_host: str | None = key(_hostname, None, "SMTP server for the mails; empty = the local "
                                "sendmail")
    smtp_port: int = key(_int(1, 65535), 25, "its port (plain SMTP, no login)")
    smtp_timeout: int = key(_int(1, 300), 20, "seconds one mail may take (SMTP or sendmail)")
    sendmail: str | None = key(_path, "/usr/sbin/sendmail", "without smtp_host: the local "
                               "sendmail, run as 'sendmail -t -i'")
    mail_from: str | None = key(_optional(_mail_address), None,
                                "From: of the mails; empty = vc@<this machine's FQDN>")
    mail_domain: str | None = key(_optional(_domain), None,
                                  "owners are local user names: alice gets alice@mail_domain "
                                  "(an owner name with @ is used as it is); empty = this "
                                  "machine's FQDN (its local mailbox)")
    wall: bool = key(_bool, True, "also warn inside the cluster: wall on every node of a "
                     "running cluster, over SSH with the cluster's own key")
    metad_bind: str = key(_ipaddr, "0.0.0.0", "where the lease service listens; it answers "
                          "only a node of a running cluster, on its cluster's .1")
    metad_port: int = key(_int(1, 65535), 8775, "the lease service's TCP port")


@_frozen_dataclass
class Host(_Record):
    """``[host:NAME]`` (repeated): a physical host VC may place nodes on."""

    name: str
    uri: str = key(_uri, REQUIRED, "libvirt URI, e.g. qemu:///system or qemu+ssh://root@h/system")
    memory_mb: int = key(_int(64, 1073741824), REQUIRED, "memory VC may hand out on it, MB")
    vcpus: int = key(_int(1, 65536), REQUIRED, "vCPUs VC may hand out on it (may overcommit)")
    underlay_ip: str | None = key(_ipaddr, None, "its address between the hosts (VXLAN)")
    trunk_nic: str | None = key(_optstr, None, "its trunk NIC (isolation = 8021q)")
    initiator: str | None = key(_initiator, None, "how iSCSI targets see it (IP, CIDR or IQN); "
                                "empty = underlay_ip, else 127.0.0.1")


@_frozen_dataclass
class Appliance(_Record):
    """``[appliance:gateway]``, ``[appliance:compute]``: how a node of that appliance boots.

    In the file every key is optional (empty = the ``[virt]`` value); ``cfg.appliance(name)``
    gives the resolved profile: ``boot`` is ``kernel`` (direct kernel boot: kernel, initrd and
    cmdline) or ``disk`` (the image's own bootloader; kernel and initrd are then None)."""

    name: str
    image: str = key(_path, None, "base image; empty = [virt] gateway_image / compute_image")
    kernel: str | None = key(_path, None, "direct kernel boot; empty = [virt] kernel")
    initrd: str | None = key(_path, None, "with kernel; empty = [virt] initrd")
    cmdline: str = key(_optany, None, "kernel command line; empty = [virt] cmdline")
    boot: str = key(_optional(_choice("kernel", "disk")), None,
                    "kernel or disk; empty = kernel when there is a kernel, else disk")


@_frozen_dataclass
class Config(_Record):
    """The whole configuration: one object per section, the hosts and the appliance profiles."""

    path: str
    # the INI sections, in file order (SECTIONS below is derived from these fields)
    database: Database
    addresses: Addresses
    limits: Limits
    defaults: Defaults
    site: Site
    virt: Virt
    register: Register
    storage: Storage
    network: Network
    web: Web
    cron: Cron
    notify: Notify
    # [host:NAME] sections, in file order
    hosts: tuple[Host, ...]
    # the resolved [appliance:NAME] profiles, one per name in APPLIANCES
    appliances: tuple[Appliance, ...]

    # ---------------------------------------------------------------- derived figures
    @property
    def subnet_count(self) -> int:
        """How many per-cluster subnets the private pool holds."""
        a = self.addresses
        return 2 ** (a.private_prefix - a.private_pool.prefixlen)

    @property
    def nodes_per_subnet(self) -> int:
        """Usable node addresses in one cluster subnet (network, broadcast and the host's bridge
        address are not usable)."""
        return 2 ** (32 - self.addresses.private_prefix) - 3

    @property
    def isolation_count(self) -> int:
        lo, hi = self.addresses.isolation_ids
        return hi - lo + 1

    def appliance(self, name: str) -> Appliance:
        """The resolved boot profile of ``gateway`` or ``compute``."""
        for a in self.appliances:
            if a.name == name:
                return a
        raise KeyError("no appliance %r (known: %s)" % (name, ", ".join(APPLIANCES)))

    def membership(self, appliance: str) -> str:
        r = self.register
        return r.gateway_membership if appliance == "gateway" else r.compute_membership

    def tzinfo(self):
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.site.timezone)



# section name -> class: the Config fields whose type is a section dataclass
SECTIONS = {f.name: globals()[f.type] for f in fields(Config)
            if is_dataclass(globals().get(f.type))}


def _host_name(name):
    if not NAME_RE.match(name):
        raise ValueError("bad host name %r" % name)


def _appliance_name(name):
    if name not in APPLIANCES:
        raise ValueError("unknown appliance %r (known: %s)" % (name, ", ".join(APPLIANCES)))


# repeated sections [KIND:NAME]: kind -> (class, check of NAME)
REPEATED = {"host": (Host, _host_name), "appliance": (Appliance, _appliance_name)}


# ---------------------------------------------------------------------------------- reading
def default_path() -> str:
    """``$VC_CONFIG``, else ``/etc/vc/vc.conf``, else the checkout's ``var/vc.conf``."""
    env = os.environ.get("VC_CONFIG")
    if env:
        return env
    if os.path.exists(DEFAULT_PATH):
        return DEFAULT_PATH
    dev = os.path.join(CHECKOUT, "var", "vc.conf")
    if os.path.exists(dev):
        return dev
    return DEFAULT_PATH


def read(path: str) -> configparser.ConfigParser:
    """The INI file at ``path``, unvalidated.

    :raises ConfigError: the file is missing, unreadable or not INI.
    """
    cp = configparser.ConfigParser(interpolation=None, default_section="__none__")
    try:
        with open(path, encoding="utf-8") as f:
            cp.read_file(f, source=path)
    except FileNotFoundError:
        raise ConfigError(path, "(file)", "not found (set VC_CONFIG or create it from "
                          "etc/vc.conf.example)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, "(file)", "cannot read: %s" % e) from None
    except configparser.Error as e:
        raise ConfigError(path, "(syntax)", str(e).splitlines()[0]) from None
    return cp


def load(path: str | None = None) -> Config:
    """Read and validate the configuration file.

    :raises ConfigError: naming the file and the first bad key.
    """
    path = path or default_path()
    return parse(read(path), path)


def parse_section(cls, section: str, given, path: str, **extra):
    """One section as an instance of its class. ``given`` maps keys to raw text (a
    configparser section, a dict, or None = empty); absent keys take their defaults.

    :param section: its name in messages (``web``, ``host:h1``).
    :param extra: fields that are not keys (``name`` of a repeated section).
    :raises ConfigError: an unknown key, a missing required one, a bad value.
    """
    given = given or {}
    declared = keys(cls)
    names = [f.name for f in declared]
    for k in given:
        if k not in names:
            raise ConfigError(path, "[%s] %s" % (section, k), "unknown key (known: %s)"
                              % ", ".join(names))
    values = dict(extra)
    for f in declared:
        if f.name in given:
            try:
                values[f.name] = f.metadata["parser"](given[f.name])
            except ValueError as e:
                raise ConfigError(path, "[%s] %s" % (section, f.name), str(e)) from None
        elif f.default is MISSING:
            raise ConfigError(path, "[%s] %s" % (section, f.name), "missing")
    return cls(**values)


def parse(cp: configparser.ConfigParser, path: str) -> Config:
    known = list(SECTIONS) + ["%s:NAME" % kind for kind in REPEATED]
    for section in cp.sections():
        kind, colon, _ = section.partition(":")
        if section not in SECTIONS and not (colon and kind in REPEATED):
            raise ConfigError(path, "[%s]" % section, "unknown section (known: %s)"
                              % ", ".join(known))
    s = {name: parse_section(cls, name, cp[name] if cp.has_section(name) else None, path)
         for name, cls in SECTIONS.items()}
    repeated = {kind: {} for kind in REPEATED}
    for section in cp.sections():
        kind, colon, name = section.partition(":")
        if not colon or section in SECTIONS:
            continue
        cls, check = REPEATED[kind]
        name = name.strip()
        try:
            check(name)
        except ValueError as e:
            raise ConfigError(path, "[%s]" % section, str(e)) from None
        if name in repeated[kind]:
            raise ConfigError(path, "[%s]" % section, "a second section for %s %r"
                              % (kind, name))
        repeated[kind][name] = parse_section(cls, section, cp[section], path, name=name)
    hosts = tuple(repeated["host"].values())
    if not hosts:
        raise ConfigError(path, "[host:NAME]", "at least one physical host section is required")

    site, virt, net = s["site"], s["virt"], s["network"]
    state = site.state_dir
    if not state.startswith("/"):
        raise ConfigError(path, "[site] state_dir", "must be an absolute path, got %r" % state)
    if s["storage"].backing == "lvm" and not s["storage"].volume_group:
        raise ConfigError(path, "[storage] volume_group", "required with backing = lvm")
    iso = net.isolation
    lo, hi = s["addresses"].isolation_ids
    if iso in ("8021q", "ovs") and not (2 <= lo and hi <= 4094):
        raise ConfigError(path, "[addresses] isolation_ids", "VLAN ids must lie in 2-4094 with "
                          "isolation = %s, got %d-%d" % (iso, lo, hi))
    if iso == "8021q" and not net.trunk_nic:
        raise ConfigError(path, "[network] trunk_nic", "required with isolation = 8021q")
    if iso == "ovs" and not net.ovs_bridge:
        raise ConfigError(path, "[network] ovs_bridge", "required with isolation = ovs")
    if len(virt.name_prefix) + 2 + len(str(hi)) > 15:
        raise ConfigError(path, "[virt] name_prefix", "too long for isolation ids up to %d: "
                          "'<prefix>vx<id>' must fit the 15 characters of a Linux interface "
                          "name" % hi)
    if bool(virt.kernel) != bool(virt.initrd):
        raise ConfigError(path, "[virt] initrd", "kernel and initrd go together (direct kernel "
                          "boot): set both or neither")
    if not s["database"].unix_socket and not s["database"].host:
        raise ConfigError(path, "[database] unix_socket", "set unix_socket or host")
    pool, prefix = s["addresses"].private_pool, s["addresses"].private_prefix
    if prefix < pool.prefixlen:
        raise ConfigError(path, "[addresses] private_prefix", "must be at least the pool's "
                          "prefix length /%d, got /%d" % (pool.prefixlen, prefix))
    usable = 2 ** (32 - prefix) - 3
    limits = s["limits"]
    if limits.max_nodes > usable:
        raise ConfigError(path, "[limits] max_nodes", "a /%d cluster subnet holds only %d nodes, "
                          "got %d" % (prefix, usable, limits.max_nodes))
    for k in ("memory_mb", "disk_gb", "vcpus"):
        if getattr(s["defaults"], k) > getattr(limits, "max_" + k):
            raise ConfigError(path, "[defaults] %s" % k, "exceeds [limits] max_%s" % k)
    if net.public_gateway:
        gw = ipaddress.IPv4Address(net.public_gateway)
        public = s["addresses"].public_pool
        if gw in public:
            raise ConfigError(path, "[network] public_gateway", "is in [addresses] public_pool")
        for a in public:
            lan = ipaddress.IPv4Network("%s/%d" % (a, net.public_prefix), strict=False)
            if gw not in lan:
                raise ConfigError(path, "[network] public_gateway", "%s is not on %s (public "
                                  "address %s, public_prefix /%d)"
                                  % (gw, lan, a, net.public_prefix))

    # defaults under state_dir become resolved paths on the section objects
    for name, cls in SECTIONS.items():
        derived = {f.name: os.path.join(state, *f.metadata["under_state"]) for f in keys(cls)
                   if "under_state" in f.metadata and getattr(s[name], f.name) is None}
        if derived:
            s[name] = replace(s[name], **derived)
    appliances = tuple(_resolve(path, repeated["appliance"].get(a) or Appliance(a), s["virt"])
                       for a in APPLIANCES)
    return Config(path=path, hosts=hosts, appliances=appliances, **s)


def _resolve(path: str, given: Appliance, virt: Virt) -> Appliance:
    """An appliance profile with the [virt] values filled in where its section gave none."""
    where = "[appliance:%s]" % given.name
    kernel = given.kernel or virt.kernel
    initrd = given.initrd or virt.initrd
    boot = given.boot or ("kernel" if kernel or initrd else "disk")
    if boot == "disk":
        for k in ("kernel", "initrd"):
            if getattr(given, k):
                raise ConfigError(path, "%s %s" % (where, k), "not used with boot = disk")
        kernel = initrd = None
    elif not kernel and given.boot:
        raise ConfigError(path, "%s kernel" % where, "required with boot = kernel (or set "
                          "[virt] kernel)")
    elif not (kernel and initrd):
        raise ConfigError(path, "%s %s" % (where, "initrd" if kernel else "kernel"),
                          "kernel and initrd go together (direct kernel boot): set both or "
                          "neither")
    return Appliance(
        name=given.name,
        image=given.image or getattr(virt, "%s_image" % given.name),
        kernel=kernel, initrd=initrd,
        cmdline=virt.cmdline if given.cmdline is None else given.cmdline,
        boot=boot)


def main(argv=None):
    """``python -m vc.config [FILE]``: check a file (prints nothing when it is valid)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        load(args[0] if args else None)
    except ConfigError as e:
        sys.stderr.write("%s\n" % e)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

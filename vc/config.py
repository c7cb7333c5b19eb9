"""Configuration: one INI file turned into one typed, validated :class:`Config`.

The file is ``$VC_CONFIG`` if set, else ``/etc/vc/vc.conf``; in a development checkout with neither,
``<checkout>/var/vc.conf`` (what ``make demo`` writes). Every section and key is listed in
``SCHEMA`` below and documented in ``etc/vc.conf.example``; an unknown section or key is an error
too (a typo must not silently fall back to a default). Every problem is reported as one
:class:`~vc.errors.ConfigError` naming the file and the key.
"""

import configparser
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from vc.errors import ConfigError
from vc.web.settings import KEYS as WEB_KEYS

DEFAULT_PATH = "/etc/vc/vc.conf"
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MAC_PREFIX_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){2}$")


@dataclass(frozen=True)
class Host:
    """A physical host VC may place nodes on."""

    name: str
    uri: str
    memory_mb: int
    vcpus: int
    underlay_ip: Optional[str] = None
    trunk_nic: Optional[str] = None
    initiator: Optional[str] = None


@dataclass(frozen=True)
class Config:
    path: str
    # [database]
    db_socket: Optional[str]
    db_host: Optional[str]
    db_port: int
    db_user: str
    db_password: str
    db_name: str
    db_connect_timeout: int
    # [host:NAME] sections, in file order
    hosts: Tuple[Host, ...]
    # [addresses]
    mac_prefix: str
    private_pool: ipaddress.IPv4Network
    private_prefix: int
    public_pool: Tuple[ipaddress.IPv4Address, ...]
    isolation_ids: Tuple[int, int]
    # [limits]
    max_hours: int
    max_nodes: int
    max_gateways: int
    max_memory_mb: int
    max_disk_gb: int
    max_vcpus: int
    max_volumes: int
    max_volume_gb: int
    # [defaults]
    default_memory_mb: int
    default_disk_gb: int
    default_vcpus: int
    # [site]
    timezone: str
    admins: Tuple[str, ...]
    state_dir: str
    log_file: Optional[str]
    # [virt]
    domain_type: str
    name_prefix: str
    disk_dir: str
    console_dir: str
    gateway_image: str
    compute_image: str
    kernel: Optional[str]
    initrd: Optional[str]
    cmdline: str
    boot_timeout: int
    shutdown_timeout: int
    boot_parallel: int
    # [register]
    registrar: str
    insert_ethers: str
    gateway_membership: str
    compute_membership: str
    hosts_file: str
    # [storage]
    storage_backend: str
    storage_backing: str
    storage_backing_dir: str
    storage_vg: Optional[str]
    iqn_prefix: str
    tgt_control_port: int
    ssh_connect_timeout: int
    ssh_command_timeout: int
    # [network]
    isolation: str
    underlay_mtu: int
    vxlan_port: int
    trunk_nic: Optional[str]
    ovs_bridge: Optional[str]
    # [web]
    web_user: str
    web_port: int
    web_url_prefix: str
    # [cron]
    max_start_retries: int
    ha_max_restarts: int

    # ---------------------------------------------------------------- derived figures
    @property
    def subnet_count(self) -> int:
        """How many per-cluster subnets the private pool holds."""
        return 2 ** (self.private_prefix - self.private_pool.prefixlen)

    @property
    def nodes_per_subnet(self) -> int:
        """Usable node addresses in one cluster subnet (network, broadcast and the host's bridge
        address are not usable)."""
        return 2 ** (32 - self.private_prefix) - 3

    @property
    def isolation_count(self) -> int:
        return self.isolation_ids[1] - self.isolation_ids[0] + 1

    def image(self, appliance: str) -> str:
        return self.gateway_image if appliance == "gateway" else self.compute_image

    def membership(self, appliance: str) -> str:
        return self.gateway_membership if appliance == "gateway" else self.compute_membership

    def tzinfo(self):
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.timezone)


# section -> key -> (parser, default or REQUIRED). Parsers raise ValueError with a short reason.
REQUIRED = object()


def _int(lo, hi=None):
    def parse(s):
        try:
            v = int(s.strip())
        except ValueError:
            raise ValueError("must be an integer, got %r" % s) from None
        if v < lo or (hi is not None and v > hi):
            raise ValueError("must be between %d and %s, got %d" % (lo, hi if hi else "…", v))
        return v

    return parse


def _str(s):
    s = s.strip()
    if not s:
        raise ValueError("must not be empty")
    return s


def _optstr(s):
    return s.strip() or None


def _anystr(s):
    return s


def _mac_prefix(s):
    s = s.strip().lower()
    if not MAC_PREFIX_RE.match(s):
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
    m = re.match(r"^\s*(\d+)\s*-\s*(\d+)\s*$", s)
    if not m:
        raise ValueError("must be a range like 100-4094, got %r" % s)
    a, b = int(m.group(1)), int(m.group(2))
    if not (1 <= a <= b <= 16777215):
        raise ValueError("must satisfy 1 <= first <= last <= 16777215, got %r" % s)
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


def _label(s):
    s = s.strip()
    if not re.match(r"^[A-Za-z][A-Za-z0-9]{0,31}$", s):
        raise ValueError("must be a Rocks membership name of letters and digits, got %r" % s)
    return s


def _ipaddr(s):
    s = s.strip()
    if not s:
        return None
    try:
        return str(ipaddress.ip_address(s))
    except ValueError:
        raise ValueError("must be an IP address, got %r" % s) from None


def _iqn_prefix(s):
    s = s.strip()
    if not re.match(r"^iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*$", s):
        raise ValueError("must look like iqn.2026-11.org.example, got %r" % s)
    return s


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


def _uri(s):
    s = s.strip()
    if not re.match(r"^[a-z][a-z0-9+]*:///?[^\s]*$", s):
        raise ValueError("must be a libvirt URI like qemu:///system, got %r" % s)
    return s


SCHEMA = {
    "database": {
        "unix_socket": (_optstr, ""),
        "host": (_optstr, ""),
        "port": (_int(1, 65535), "3306"),
        "user": (_str, REQUIRED),
        "password": (_anystr, ""),
        "name": (_str, REQUIRED),
        "connect_timeout": (_int(1, 300), "10"),
    },
    "addresses": {
        "mac_prefix": (_mac_prefix, "52:54:00"),
        "private_pool": (_network, "10.200.0.0/16"),
        "private_prefix": (_int(8, 29), "24"),
        "public_pool": (_pool, REQUIRED),
        "isolation_ids": (_id_range, "100-4094"),
    },
    "limits": {
        "max_hours": (_int(1), "168"),
        "max_nodes": (_int(1), "64"),
        "max_gateways": (_int(1), "4"),
        "max_memory_mb": (_int(64), "16384"),
        "max_disk_gb": (_int(1), "500"),
        "max_vcpus": (_int(1), "16"),
        "max_volumes": (_int(0), "8"),
        "max_volume_gb": (_int(1), "1000"),
    },
    "defaults": {
        "memory_mb": (_int(64), "512"),
        "disk_gb": (_int(1), "10"),
        "vcpus": (_int(1), "1"),
    },
    "site": {
        "timezone": (_timezone, "UTC"),
        "admins": (_names, "root"),
        "state_dir": (_str, "/var/lib/vc"),
        "log_file": (_path, ""),
    },
    "virt": {
        "domain_type": (_choice("qemu", "kvm"), "qemu"),
        "name_prefix": (_prefix, "vc"),
        # empty = <state_dir>/disks, <state_dir>/console, <state_dir>/images/base.qcow2
        "disk_dir": (_path, ""),
        "console_dir": (_path, ""),
        "gateway_image": (_path, ""),
        "compute_image": (_path, ""),
        "kernel": (_path, ""),
        "initrd": (_path, ""),
        "cmdline": (_anystr, "console=ttyS0 panic=-1 quiet"),
        "boot_timeout": (_int(1, 3600), "60"),
        "shutdown_timeout": (_int(0, 3600), "30"),
        "boot_parallel": (_int(1, 256), "8"),
    },
    "register": {
        "registrar": (_choice("builtin", "rocks"), "builtin"),
        "insert_ethers": (_path, "/opt/rocks/sbin/insert-ethers"),
        "gateway_membership": (_label, "Gateway"),
        "compute_membership": (_label, "Compute"),
        "hosts_file": (_path, ""),
    },
    "storage": {
        "backend": (_choice("tgt", "targetcli"), "tgt"),
        "backing": (_choice("file", "lvm"), "file"),
        # on the target host: where file-backed LUNs live
        "backing_dir": (_path, "/var/lib/vc/iscsi"),
        "volume_group": (_optstr, ""),
        "iqn_prefix": (_iqn_prefix, "iqn.2026-11.vc.frontend"),
        "tgt_control_port": (_int(0, 65535), "0"),
        "connect_timeout": (_int(1, 300), "10"),
        "command_timeout": (_int(1, 3600), "60"),
    },
    "network": {
        "isolation": (_choice("vxlan", "8021q", "ovs", "none"), "vxlan"),
        "underlay_mtu": (_int(576, 65535), "1500"),
        "vxlan_port": (_int(1, 65535), "4789"),
        "trunk_nic": (_optstr, ""),
        "ovs_bridge": (_optstr, ""),
    },
    # user (single-user mode), port (the demo Apache), url_prefix: see vc/web/settings.py
    "web": dict(WEB_KEYS),
    "cron": {
        "max_start_retries": (_int(0, 100), "5"),
        "ha_max_restarts": (_int(0, 1000), "3"),
    },
}
HOST_SCHEMA = {
    "uri": (_uri, REQUIRED),
    "memory_mb": (_int(64), REQUIRED),
    "vcpus": (_int(1), REQUIRED),
    # address on the network between the hosts (VXLAN source/peer); needed when clusters span
    # several hosts with [network] isolation = vxlan
    "underlay_ip": (_ipaddr, ""),
    "trunk_nic": (_optstr, ""),
    # how iSCSI targets see this host (IP or IQN) in their ACLs; default: underlay_ip, else
    # 127.0.0.1 (a target on the frontend itself)
    "initiator": (_initiator, ""),
}


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


def load(path: Optional[str] = None) -> Config:
    """Read and validate the configuration file.

    :raises ConfigError: naming the file and the first bad key.
    """
    path = path or default_path()
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
    return parse(cp, path)


def parse(cp: configparser.ConfigParser, path: str) -> Config:
    values = {}
    hosts: List[Host] = []
    for section in cp.sections():
        if section.startswith("host:"):
            continue
        if section not in SCHEMA:
            raise ConfigError(path, "[%s]" % section, "unknown section (known: %s, host:NAME)"
                              % ", ".join(SCHEMA))
    for section, keys in SCHEMA.items():
        given = cp[section] if cp.has_section(section) else {}
        for key in given:
            if key not in keys:
                raise ConfigError(path, "[%s] %s" % (section, key), "unknown key (known: %s)"
                                  % ", ".join(keys))
        for key, (parser, default) in keys.items():
            raw = given.get(key) if key in given else None
            if raw is None:
                if default is REQUIRED:
                    raise ConfigError(path, "[%s] %s" % (section, key), "missing")
                raw = default
            try:
                values[(section, key)] = parser(raw)
            except ValueError as e:
                raise ConfigError(path, "[%s] %s" % (section, key), str(e)) from None

    for section in cp.sections():
        if not section.startswith("host:"):
            continue
        name = section[5:].strip()
        if not NAME_RE.match(name):
            raise ConfigError(path, "[%s]" % section, "bad host name %r" % name)
        hv = {}
        for key in cp[section]:
            if key not in HOST_SCHEMA:
                raise ConfigError(path, "[%s] %s" % (section, key), "unknown key (known: %s)"
                                  % ", ".join(HOST_SCHEMA))
        for key, (parser, default) in HOST_SCHEMA.items():
            if key not in cp[section]:
                if default is REQUIRED:
                    raise ConfigError(path, "[%s] %s" % (section, key), "missing")
                hv[key] = parser(default)
                continue
            try:
                hv[key] = parser(cp[section][key])
            except ValueError as e:
                raise ConfigError(path, "[%s] %s" % (section, key), str(e)) from None
        hosts.append(Host(name=name, **hv))
    if not hosts:
        raise ConfigError(path, "[host:NAME]", "at least one physical host section is required")

    v = values
    state = v[("site", "state_dir")]
    if not state.startswith("/"):
        raise ConfigError(path, "[site] state_dir", "must be an absolute path, got %r" % state)
    if v[("storage", "backing")] == "lvm" and not v[("storage", "volume_group")]:
        raise ConfigError(path, "[storage] volume_group", "required with backing = lvm")
    iso = v[("network", "isolation")]
    lo, hi = v[("addresses", "isolation_ids")]
    if iso in ("8021q", "ovs") and not (2 <= lo and hi <= 4094):
        raise ConfigError(path, "[addresses] isolation_ids", "VLAN ids must lie in 2-4094 with "
                          "isolation = %s, got %d-%d" % (iso, lo, hi))
    if iso == "8021q" and not v[("network", "trunk_nic")]:
        raise ConfigError(path, "[network] trunk_nic", "required with isolation = 8021q")
    if iso == "ovs" and not v[("network", "ovs_bridge")]:
        raise ConfigError(path, "[network] ovs_bridge", "required with isolation = ovs")
    if len(v[("virt", "name_prefix")]) + 2 + len(str(hi)) > 15:
        raise ConfigError(path, "[virt] name_prefix", "too long for isolation ids up to %d: "
                          "'<prefix>vx<id>' must fit the 15 characters of a Linux interface "
                          "name" % hi)
    if bool(v[("virt", "kernel")]) != bool(v[("virt", "initrd")]):
        raise ConfigError(path, "[virt] initrd", "kernel and initrd go together (direct kernel "
                          "boot): set both or neither")
    if not v[("database", "unix_socket")] and not v[("database", "host")]:
        raise ConfigError(path, "[database] unix_socket", "set unix_socket or host")
    pool, prefix = v[("addresses", "private_pool")], v[("addresses", "private_prefix")]
    if prefix < pool.prefixlen:
        raise ConfigError(path, "[addresses] private_prefix", "must be at least the pool's "
                          "prefix length /%d, got /%d" % (pool.prefixlen, prefix))
    usable = 2 ** (32 - prefix) - 3
    if v[("limits", "max_nodes")] > usable:
        raise ConfigError(path, "[limits] max_nodes", "a /%d cluster subnet holds only %d nodes, "
                          "got %d" % (prefix, usable, v[("limits", "max_nodes")]))
    for key, lim in (("memory_mb", "max_memory_mb"), ("disk_gb", "max_disk_gb"),
                     ("vcpus", "max_vcpus")):
        if v[("defaults", key)] > v[("limits", lim)]:
            raise ConfigError(path, "[defaults] %s" % key, "exceeds [limits] %s" % lim)

    return Config(
        path=path,
        db_socket=v[("database", "unix_socket")],
        db_host=v[("database", "host")],
        db_port=v[("database", "port")],
        db_user=v[("database", "user")],
        db_password=v[("database", "password")],
        db_name=v[("database", "name")],
        db_connect_timeout=v[("database", "connect_timeout")],
        hosts=tuple(hosts),
        mac_prefix=v[("addresses", "mac_prefix")],
        private_pool=pool,
        private_prefix=prefix,
        public_pool=v[("addresses", "public_pool")],
        isolation_ids=v[("addresses", "isolation_ids")],
        max_hours=v[("limits", "max_hours")],
        max_nodes=v[("limits", "max_nodes")],
        max_gateways=v[("limits", "max_gateways")],
        max_memory_mb=v[("limits", "max_memory_mb")],
        max_disk_gb=v[("limits", "max_disk_gb")],
        max_vcpus=v[("limits", "max_vcpus")],
        max_volumes=v[("limits", "max_volumes")],
        max_volume_gb=v[("limits", "max_volume_gb")],
        default_memory_mb=v[("defaults", "memory_mb")],
        default_disk_gb=v[("defaults", "disk_gb")],
        default_vcpus=v[("defaults", "vcpus")],
        timezone=v[("site", "timezone")],
        admins=v[("site", "admins")],
        state_dir=v[("site", "state_dir")],
        log_file=v[("site", "log_file")],
        domain_type=v[("virt", "domain_type")],
        name_prefix=v[("virt", "name_prefix")],
        disk_dir=v[("virt", "disk_dir")] or os.path.join(state, "disks"),
        console_dir=v[("virt", "console_dir")] or os.path.join(state, "console"),
        gateway_image=v[("virt", "gateway_image")] or os.path.join(state, "images",
                                                                    "base.qcow2"),
        compute_image=v[("virt", "compute_image")] or os.path.join(state, "images",
                                                                    "base.qcow2"),
        kernel=v[("virt", "kernel")],
        initrd=v[("virt", "initrd")],
        cmdline=v[("virt", "cmdline")],
        boot_timeout=v[("virt", "boot_timeout")],
        shutdown_timeout=v[("virt", "shutdown_timeout")],
        boot_parallel=v[("virt", "boot_parallel")],
        registrar=v[("register", "registrar")],
        insert_ethers=v[("register", "insert_ethers")],
        gateway_membership=v[("register", "gateway_membership")],
        compute_membership=v[("register", "compute_membership")],
        hosts_file=v[("register", "hosts_file")] or os.path.join(state, "hosts"),
        storage_backend=v[("storage", "backend")],
        storage_backing=v[("storage", "backing")],
        storage_backing_dir=v[("storage", "backing_dir")],
        storage_vg=v[("storage", "volume_group")],
        iqn_prefix=v[("storage", "iqn_prefix")],
        tgt_control_port=v[("storage", "tgt_control_port")],
        ssh_connect_timeout=v[("storage", "connect_timeout")],
        ssh_command_timeout=v[("storage", "command_timeout")],
        isolation=v[("network", "isolation")],
        underlay_mtu=v[("network", "underlay_mtu")],
        vxlan_port=v[("network", "vxlan_port")],
        trunk_nic=v[("network", "trunk_nic")],
        ovs_bridge=v[("network", "ovs_bridge")],
        web_user=v[("web", "user")],
        web_port=v[("web", "port")],
        web_url_prefix=v[("web", "url_prefix")],
        max_start_retries=v[("cron", "max_start_retries")],
        ha_max_restarts=v[("cron", "ha_max_restarts")],
    )

"""libvirt domain and network XML as small objects: VC's only XML builder and parser.

Each spec is a dataclass with ``to_element()`` (an ``xml.etree.ElementTree`` element) and
``to_xml()`` (pretty, deterministic text). Optional elements are emitted only when set, as in
Nova's ``format_dom()``; there are no string templates, so ElementTree does all the escaping.
This module never imports libvirt: :mod:`vc.virt` feeds the XML to it.

VC marks its own domains with one element in its namespace inside ``<metadata>``::

    <metadata><vc:node xmlns:vc="https://vc.example.org/xmlns/vc/1" rack="3" node="n"/></metadata>

:func:`domain_metadata` reads it back, and :func:`domain_fingerprint` reduces a domain XML to the
parts VC controls so that VC's XML and libvirt's re-formatted copy of it compare equal.
"""

import ipaddress
import logging
import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, List, Optional

LOG = logging.getLogger(__name__)

VC_NS = "https://vc.example.org/xmlns/vc/1"
VC_PREFIX = "vc"

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# attribute names of the metadata element: plain XML names without a namespace prefix
_XML_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*$")
# Linux interface names are at most IFNAMSIZ - 1 = 15 bytes; the test driver accepts longer
# ones, so without this check the error would first appear on a real host
_MAX_BRIDGE = 15

_UNITS = {
    "b": 1, "bytes": 1,
    "kb": 1000, "k": 1024, "kib": 1024,
    "mb": 1000 ** 2, "m": 1024 ** 2, "mib": 1024 ** 2,
    "gb": 1000 ** 3, "g": 1024 ** 3, "gib": 1024 ** 3,
    "tb": 1000 ** 4, "t": 1024 ** 4, "tib": 1024 ** 4,
}


def _mac(value: str) -> str:
    """``value`` in libvirt's canonical form (lower case); ValueError when it is not a MAC."""
    mac = str(value).strip().lower()
    if not _MAC_RE.match(mac):
        raise ValueError("not a MAC address: %r" % (value,))
    return mac


def _sub(parent: ET.Element, tag: str, text=None, **attrs) -> ET.Element:
    """A child element; ``attrs`` keep their keyword order, so the output is deterministic."""
    el = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})
    if text is not None:
        el.text = str(text)
    return el


class _XmlObject:
    """``to_xml()`` for a class that has ``to_element()``."""

    def to_element(self) -> ET.Element:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_xml(self) -> str:
        """Pretty XML ending in a newline (as libvirt's own XMLDesc does)."""
        el = self.to_element()
        ET.indent(el, space="  ")
        return ET.tostring(el, encoding="unicode") + "\n"


##################
# Domains        #
##################


@dataclass
class InterfaceSpec(_XmlObject):
    """One NIC, on a libvirt network (``network=``) or on a host bridge (``bridge=``)."""

    mac: str
    network: Optional[str] = None
    bridge: Optional[str] = None
    model: str = "virtio"

    def __post_init__(self):
        self.mac = _mac(self.mac)
        if (self.network is None) == (self.bridge is None):
            raise ValueError("interface %s: give exactly one of network or bridge" % self.mac)

    def to_element(self) -> ET.Element:
        kind = "network" if self.network is not None else "bridge"
        el = ET.Element("interface", {"type": kind})
        _sub(el, "mac", address=self.mac)
        _sub(el, "source", **{kind: self.network if kind == "network" else self.bridge})
        _sub(el, "model", type=self.model)
        return el


@dataclass
class DiskSpec(_XmlObject):
    """A disk backed by an image file on the host (VC's node disks are qcow2 overlays)."""

    path: str
    target: str = "vda"
    bus: str = "virtio"
    fmt: str = "qcow2"
    device: str = "disk"
    readonly: bool = False
    # what the guest sees as the disk's id (/dev/disk/by-id/virtio-<serial>; at most 20 chars)
    serial: Optional[str] = None

    def to_element(self) -> ET.Element:
        el = ET.Element("disk", {"type": "file", "device": self.device})
        _sub(el, "driver", name="qemu", type=self.fmt)
        _sub(el, "source", file=self.path)
        _sub(el, "target", dev=self.target, bus=self.bus)
        if self.device == "cdrom" or self.readonly:
            _sub(el, "readonly")
        if self.serial:
            _sub(el, "serial", self.serial)
        return el


@dataclass
class IscsiDiskSpec(_XmlObject):
    """An iSCSI LUN attached as a network disk (QEMU's own initiator, no host initiator needed):
    how the gateway gets its reservation's volumes.

    With ``auth_user`` QEMU logs in with CHAP as that user, the secret being the value of the
    libvirt secret whose iSCSI usage is ``secret_usage`` (:class:`SecretSpec`, defined on the
    host before the domain): the XML names the secret, never holds it.
    """

    iqn: str
    host: str
    port: int = 3260
    lun: int = 1
    target: str = "vdb"
    bus: str = "virtio"
    serial: Optional[str] = None
    auth_user: Optional[str] = None
    secret_usage: Optional[str] = None

    def __post_init__(self):
        if (self.auth_user is None) != (self.secret_usage is None):
            raise ValueError("iSCSI disk %s: give both auth_user and secret_usage, or neither"
                             % self.iqn)

    def to_element(self) -> ET.Element:
        el = ET.Element("disk", {"type": "network", "device": "disk"})
        # cache none: the LUN is the only copy of the user's data, write through to the target
        _sub(el, "driver", name="qemu", type="raw", cache="none")
        src = _sub(el, "source", protocol="iscsi", name="%s/%d" % (self.iqn, self.lun))
        _sub(src, "host", name=self.host, port=str(self.port))
        if self.auth_user is not None:
            auth = _sub(src, "auth", username=self.auth_user)
            _sub(auth, "secret", type="iscsi", usage=self.secret_usage)
        _sub(el, "target", dev=self.target, bus=self.bus)
        if self.serial:
            _sub(el, "serial", self.serial)
        return el


@dataclass
class SecretSpec(_XmlObject):
    """A libvirt secret of usage type ``iscsi`` (``<usage type='iscsi'><target>USAGE``): what
    an :class:`IscsiDiskSpec` names with ``secret_usage``. Persistent (``ephemeral='no'``: it
    survives a libvirtd restart, so a restarted domain can log in again) and private (libvirt
    never hands its value back). The value itself is not XML: :meth:`vc.virt.Host.ensure_secret`
    sets it with ``virSecretSetValue``. ``uuid`` is set to redefine an existing secret."""

    usage: str
    description: Optional[str] = None
    uuid: Optional[str] = None

    def __post_init__(self):
        if not self.usage or not self.usage.strip():
            raise ValueError("a secret needs a usage")
        if self.uuid is not None:
            self.uuid = str(uuidlib.UUID(str(self.uuid)))

    def to_element(self) -> ET.Element:
        el = ET.Element("secret", {"ephemeral": "no", "private": "yes"})
        if self.uuid:
            _sub(el, "uuid", self.uuid)
        if self.description:
            _sub(el, "description", self.description)
        _sub(_sub(el, "usage", type="iscsi"), "target", self.usage)
        return el

    @classmethod
    def from_xml(cls, secret_xml: str) -> "SecretSpec":
        """An iSCSI secret's XML (``virSecretGetXMLDesc``) read back. :raises ValueError: a
        secret of another usage type."""
        root = ET.fromstring(secret_xml)
        usage = root.find("usage")
        if usage is None or usage.get("type") != "iscsi":
            raise ValueError("not an iSCSI secret")
        return cls(_text(usage, "target") or "", _text(root, "description"),
                   _text(root, "uuid"))


@dataclass
class DomainSpec(_XmlObject):
    """A VC guest: direct kernel boot when ``kernel`` is set, else boot from the first disk.

    ``domain_type`` is ``qemu`` (TCG) by default because the hosts VC was built on have no
    usable KVM; a real KVM host sets ``kvm``. A power-off or crash ends in ``destroy``, so the
    guest stays off until VC (HA) starts it again; ``on_reboot`` says whether a reboot restarts
    it (VC's nodes: yes) or destroys it too.
    ``console_log`` sends the serial console to a file (else a pty).
    """

    name: str
    memory_mb: int
    vcpus: int
    domain_type: str = "qemu"
    kernel: Optional[str] = None
    initrd: Optional[str] = None
    cmdline: Optional[str] = None
    disks: List[object] = field(default_factory=list)  # DiskSpec, IscsiDiskSpec
    interfaces: List[InterfaceSpec] = field(default_factory=list)
    console_log: Optional[str] = None
    uuid: Optional[str] = None
    metadata: Dict[str, object] = field(default_factory=dict)
    # a reboot inside the guest is normal (restart); a power-off or crash stays off for HA
    on_reboot: str = "destroy"
    # a virtio RNG fed from the host's /dev/urandom (without it the first SSH login waits for
    # entropy: 1.2 s against 0.2 s measured)
    rng: bool = False

    def __post_init__(self):
        if self.on_reboot not in ("destroy", "restart"):
            raise ValueError("domain %s: on_reboot must be destroy or restart" % self.name)
        if not self.name or "/" in self.name:
            raise ValueError("bad domain name %r" % (self.name,))
        if int(self.memory_mb) <= 0 or int(self.vcpus) <= 0:
            raise ValueError("domain %s: memory_mb and vcpus must be positive" % self.name)
        if self.uuid is not None:
            self.uuid = str(uuidlib.UUID(str(self.uuid)))
        for key in self.metadata:
            if not _XML_NAME_RE.match(str(key)):
                raise ValueError("domain %s: bad metadata key %r" % (self.name, key))

    def to_element(self) -> ET.Element:
        dom = ET.Element("domain", {"type": self.domain_type})
        _sub(dom, "name", self.name)
        if self.uuid:
            _sub(dom, "uuid", self.uuid)
        attrs = {k: v for k, v in sorted(self.metadata.items()) if v is not None}
        if attrs:
            md = _sub(dom, "metadata")
            # The namespace is declared on vc:node itself, as libvirt formats metadata, so that
            # the element stays self-contained. ElementTree would hoist a registered namespace
            # to <domain> (and register_namespace is process-global), hence the literal prefix.
            node = {"xmlns:%s" % VC_PREFIX: VC_NS}
            node.update((k, str(v)) for k, v in attrs.items())
            ET.SubElement(md, "%s:node" % VC_PREFIX, node)
        _sub(dom, "memory", int(self.memory_mb), unit="MiB")
        _sub(dom, "vcpu", int(self.vcpus))
        os_el = _sub(dom, "os")
        _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
        if self.kernel:
            _sub(os_el, "kernel", self.kernel)
            if self.initrd:
                _sub(os_el, "initrd", self.initrd)
            if self.cmdline:
                _sub(os_el, "cmdline", self.cmdline)
        else:
            _sub(os_el, "boot", dev="hd")
        # without ACPI, virDomainShutdown has nothing to press and only destroy stops a guest
        _sub(_sub(dom, "features"), "acpi")
        for event in ("on_poweroff", "on_reboot", "on_crash"):
            _sub(dom, event, self.on_reboot if event == "on_reboot" else "destroy")
        devices = _sub(dom, "devices")
        for disk in self.disks:
            devices.append(disk.to_element())
        for nic in self.interfaces:
            devices.append(nic.to_element())
        if self.console_log:
            serial = _sub(devices, "serial", type="file")
            _sub(serial, "source", path=self.console_log)
        else:
            serial = _sub(devices, "serial", type="pty")
        _sub(serial, "target", port=0)
        if self.rng:
            rng = _sub(devices, "rng", model="virtio")
            _sub(rng, "backend", "/dev/urandom", model="random")
        # no balloon: VC sizes guests at define time and never reclaims memory from them
        _sub(devices, "memballoon", model="none")
        return dom


##################
# Networks       #
##################


@dataclass(frozen=True)
class DhcpHost(_XmlObject):
    """A fixed DHCP reservation: ``mac`` gets ``ip`` and the host name ``name``."""

    mac: str
    ip: str
    name: Optional[str] = None

    def __post_init__(self):
        # frozen: normalise through object.__setattr__ so equality ignores MAC case
        object.__setattr__(self, "mac", _mac(self.mac))
        object.__setattr__(self, "ip", str(ipaddress.IPv4Address(self.ip)))

    def to_element(self) -> ET.Element:
        attrs = {"mac": self.mac}
        if self.name:
            attrs["name"] = self.name
        attrs["ip"] = self.ip
        return ET.Element("host", attrs)

    def to_xml(self) -> str:
        """The single ``<host .../>`` element, as ``virNetworkUpdate`` takes it."""
        return ET.tostring(self.to_element(), encoding="unicode")


@dataclass
class NetworkSpec(_XmlObject):
    """An isolated libvirt network (no ``<forward>``): one bridge, one IPv4 subnet, DHCP.

    ``address``/``prefix`` is the host side of the bridge (the guests' DHCP server). Without an
    address the network is a bare bridge (no ``<ip>``, no dnsmasq): a cluster's segment on a
    host other than the one serving its DHCP.
    """

    name: str
    bridge: str
    address: Optional[str] = None
    prefix: Optional[int] = None
    dhcp_start: Optional[str] = None
    dhcp_end: Optional[str] = None
    hosts: List[DhcpHost] = field(default_factory=list)
    mtu: Optional[int] = None

    def __post_init__(self):
        if not self.bridge or len(self.bridge) > _MAX_BRIDGE:
            raise ValueError("network %s: bridge name %r is not 1-%d characters"
                             % (self.name, self.bridge, _MAX_BRIDGE))
        if self.address is None:
            if self.hosts or self.dhcp_start is not None:
                raise ValueError("network %s: DHCP needs an address" % self.name)
            return
        iface = ipaddress.IPv4Interface("%s/%s" % (self.address, self.prefix))
        if (self.dhcp_start is None) != (self.dhcp_end is None):
            raise ValueError("network %s: give both dhcp_start and dhcp_end, or neither"
                             % self.name)
        for addr in (self.dhcp_start, self.dhcp_end) + tuple(h.ip for h in self.hosts):
            if addr is not None and ipaddress.IPv4Address(addr) not in iface.network:
                raise ValueError("network %s: %s is outside %s" % (self.name, addr, iface.network))

    @property
    def netmask(self) -> Optional[str]:
        if self.address is None:
            return None
        return str(ipaddress.IPv4Interface("%s/%s" % (self.address, self.prefix)).netmask)

    def to_element(self) -> ET.Element:
        net = ET.Element("network")
        _sub(net, "name", self.name)
        # stp off, delay 0: the bridge forwards at once instead of listening for 2 x 15 s
        _sub(net, "bridge", name=self.bridge, stp="off", delay=0)
        if self.mtu:
            _sub(net, "mtu", size=int(self.mtu))
        if self.address is None:
            return net
        ip = _sub(net, "ip", address=self.address, netmask=self.netmask)
        if self.dhcp_start is not None or self.hosts:
            dhcp = _sub(ip, "dhcp")
            if self.dhcp_start is not None:
                _sub(dhcp, "range", start=self.dhcp_start, end=self.dhcp_end)
            for host in self.hosts:
                dhcp.append(host.to_element())
        return net


##################
# Parsing        #
##################


def parse_dhcp_hosts(network_xml: str) -> List[DhcpHost]:
    """The ``<host>`` reservations of every IPv4 ``<ip>`` of a network XML, in document order.

    Entries without a MAC (IPv6 ``id=`` reservations) are not VC's and are left out.
    """
    out = []
    for el in ET.fromstring(network_xml).iterfind("./ip/dhcp/host"):
        if el.get("mac") and el.get("ip"):
            out.append(DhcpHost(el.get("mac"), el.get("ip"), el.get("name")))
    return out


def domain_metadata(domain_xml: str) -> Dict[str, str]:
    """The attributes of VC's ``<vc:node>`` metadata element; ``{}`` for a domain not VC's."""
    el = ET.fromstring(domain_xml).find("./metadata/{%s}node" % VC_NS)
    return dict(el.attrib) if el is not None else {}


def _kib(el: Optional[ET.Element]) -> Optional[int]:
    if el is None or not (el.text or "").strip():
        return None
    unit = (el.get("unit") or "KiB").lower()
    return int(el.text.strip()) * _UNITS[unit] // 1024


def _attrs(el: Optional[ET.Element], *names: str) -> tuple:
    return tuple(el.get(n) if el is not None else None for n in names)


def _text(root: ET.Element, path: str) -> Optional[str]:
    el = root.find(path)
    return el.text if el is not None else None


def domain_fingerprint(domain_xml: str) -> dict:
    """The settings of a domain XML that VC controls, normalised, for "has it changed?".

    libvirt re-formats what it is given: it converts memory to KiB, adds a UUID, ``<boot>``,
    PCI addresses, controllers, a ``<console>`` mirroring the serial port, and expands the
    machine type ``pc`` to a versioned one. Comparing the raw text would call every domain
    changed, so both sides are reduced to this dict first. The UUID and machine type are not
    part of it (:class:`DomainSpec` does not choose them).
    """
    root = ET.fromstring(domain_xml)
    disks = []
    for d in root.iterfind("./devices/disk"):
        src = d.find("source")
        # CHAP: libvirt accepts <auth> in <source> (where VC puts it) or in <disk>
        auth = d.find("source/auth") if d.find("source/auth") is not None else d.find("auth")
        disks.append((d.get("type"), d.get("device"))
                     + _attrs(d.find("driver"), "name", "type")
                     + (tuple(sorted(src.attrib.items())) if src is not None else (),)
                     + _attrs(d.find("target"), "dev", "bus")
                     + (d.find("readonly") is not None, _text(d, "serial"))
                     + _attrs(auth, "username")
                     + _attrs(auth.find("secret") if auth is not None else None, "type",
                              "usage"))
    nics = []
    for n in root.iterfind("./devices/interface"):
        mac = n.find("mac")
        nics.append((n.get("type"), (mac.get("address") or "").lower() if mac is not None else None)
                    + _attrs(n.find("source"), "network", "bridge")
                    + _attrs(n.find("model"), "type"))
    serials = []
    for s in root.iterfind("./devices/serial"):
        serials.append((s.get("type"),) + _attrs(s.find("source"), "path"))
    vcpu = _text(root, "vcpu")
    return {
        "type": root.get("type"),
        "name": _text(root, "name"),
        "memory_kib": _kib(root.find("memory")),
        "vcpus": int(vcpu) if vcpu else None,
        "arch": root.find("./os/type").get("arch") if root.find("./os/type") is not None else None,
        "kernel": _text(root, "./os/kernel"),
        "initrd": _text(root, "./os/initrd"),
        "cmdline": _text(root, "./os/cmdline"),
        "acpi": root.find("./features/acpi") is not None,
        "events": tuple(_text(root, e) for e in ("on_poweroff", "on_reboot", "on_crash")),
        "disks": disks,
        "interfaces": nics,
        "serials": serials,
        "memballoon": _attrs(root.find("./devices/memballoon"), "model"),
        "rng": _attrs(root.find("./devices/rng"), "model"),
        "metadata": domain_metadata(domain_xml),
    }


def network_fingerprint(network_xml: str) -> dict:
    """Bridge, address, netmask, DHCP range and MTU of a network XML (not its DHCP hosts, which
    VC adds and removes while the network runs)."""
    root = ET.fromstring(network_xml)
    ip = root.find("ip")
    return {
        "bridge": _attrs(root.find("bridge"), "name")[0],
        "ip": _attrs(ip, "address", "netmask"),
        "range": _attrs(root.find("./ip/dhcp/range"), "start", "end"),
        "mtu": _attrs(root.find("mtu"), "size")[0],
        "forward": root.find("forward") is not None,
    }

"""vc.domainxml: golden XML, parse round trips, escaping, and acceptance by libvirt's test driver.

Golden files live in tests/data/golden/. A missing file is written from the current output, and
VC_REGENERATE_GOLDEN=1 rewrites them all; either way the test then compares the file with the
output, so a regenerated file must still be reviewed in the diff.
"""

import os
import re
import xml.etree.ElementTree as ET

import libvirt
import pytest

from conftest import assert_golden
from vc import domainxml
from vc.domainxml import (DhcpHost, DiskSpec, DomainSpec, InterfaceSpec, IscsiDiskSpec,
                          NetworkSpec, SecretSpec, domain_fingerprint, domain_metadata,
                          parse_dhcp_hosts)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
# a fresh, empty host on every open (test:///default would keep state for the whole process)
TEST_URI = "test://" + os.path.join(DATA, "testnode.xml")

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def gateway_spec(**kw):
    args = dict(
        name="vc-3-gw", memory_mb=256, vcpus=2,
        kernel="/var/lib/vc/guest/vmlinux", initrd="/var/lib/vc/guest/initrd.img",
        cmdline="console=ttyS0 panic=-1 quiet",
        disks=[DiskSpec("/var/lib/vc/disks/vc-3-gw.qcow2")],
        interfaces=[InterfaceSpec("52:54:00:00:03:01", network="vc-3"),
                    InterfaceSpec("52:54:00:00:03:02", bridge="br-public")],
        console_log="/var/log/vc/console/vc-3-gw.log",
        uuid="6f1c2a3e-55d4-4b7e-9a35-0c1e6a1b2c3d",
        metadata={"rack": 3, "node": "gateway-3-0", "appliance": "gateway"})
    args.update(kw)
    return DomainSpec(**args)


def compute_spec(**kw):
    args = dict(name="vc-3-c0", memory_mb=128, vcpus=1,
                disks=[DiskSpec("/var/lib/vc/disks/vc-3-c0.qcow2")],
                interfaces=[InterfaceSpec("52:54:00:00:03:03", network="vc-3")],
                metadata={"rack": 3, "node": "compute-3-0"})
    args.update(kw)
    return DomainSpec(**args)


def network_spec(**kw):
    args = dict(name="vc-3", bridge="vcbr3", address="10.250.3.1", prefix=24,
                dhcp_start="10.250.3.100", dhcp_end="10.250.3.200",
                hosts=[DhcpHost("52:54:00:00:03:01", "10.250.3.10", "gateway-3-0"),
                       DhcpHost("52:54:00:00:03:03", "10.250.3.11", "compute-3-0")],
                mtu=1450)
    args.update(kw)
    return NetworkSpec(**args)


# -- golden files ---------------------------------------------------------------------------------


def test_gateway_golden():
    assert_golden("gateway.xml", gateway_spec().to_xml())


def test_compute_golden():
    assert_golden("compute.xml", compute_spec().to_xml())


def test_network_golden():
    assert_golden("network.xml", network_spec().to_xml())


def test_output_is_deterministic():
    # metadata given in another order gives the same text
    a = gateway_spec().to_xml()
    b = gateway_spec(metadata={"appliance": "gateway", "node": "gateway-3-0", "rack": 3}).to_xml()
    assert a == b == gateway_spec().to_xml()


# -- structure --------------------------------------------------------------------------------


def test_gateway_structure():
    root = gateway_spec().to_element()
    assert root.get("type") == "qemu"
    assert root.find("memory").attrib == {"unit": "MiB"} and root.find("memory").text == "256"
    assert [e.tag for e in root.find("os")] == ["type", "kernel", "initrd", "cmdline"]
    assert root.find("os/boot") is None
    assert [root.find(t).text for t in ("on_poweroff", "on_reboot", "on_crash")] == ["destroy"] * 3
    nics = root.findall("devices/interface")
    assert [n.get("type") for n in nics] == ["network", "bridge"]
    assert nics[1].find("source").attrib == {"bridge": "br-public"}
    serial = root.find("devices/serial")
    assert serial.get("type") == "file"
    assert serial.find("source").get("path") == "/var/log/vc/console/vc-3-gw.log"
    assert root.find("devices/memballoon").get("model") == "none"


def test_compute_boots_from_disk_with_a_pty_console():
    root = compute_spec().to_element()
    assert root.find("os/boot").get("dev") == "hd"
    assert root.find("os/kernel") is None
    assert root.find("uuid") is None
    assert root.find("devices/serial").get("type") == "pty"


def test_kvm_type_and_no_metadata():
    root = compute_spec(domain_type="kvm", metadata={}).to_element()
    assert root.get("type") == "kvm"
    assert root.find("metadata") is None


def test_network_has_no_forward():
    root = network_spec().to_element()
    assert root.find("forward") is None
    assert root.find("bridge").attrib == {"name": "vcbr3", "stp": "off", "delay": "0"}
    assert root.find("ip").attrib == {"address": "10.250.3.1", "netmask": "255.255.255.0"}


def test_network_without_dhcp_or_mtu():
    root = network_spec(dhcp_start=None, dhcp_end=None, hosts=[], mtu=None, prefix=16).to_element()
    assert root.find("ip/dhcp") is None and root.find("mtu") is None
    assert root.find("ip").get("netmask") == "255.255.0.0"


def test_dhcp_host_xml_for_network_update():
    assert (DhcpHost("52:54:00:AB:00:01", "10.0.0.5", "n1").to_xml()
            == '<host mac="52:54:00:ab:00:01" name="n1" ip="10.0.0.5" />')
    assert DhcpHost("52:54:00:ab:00:01", "10.0.0.5").to_xml() == \
        '<host mac="52:54:00:ab:00:01" ip="10.0.0.5" />'


def test_disk_variants():
    el = DiskSpec("/x.img", target="sdb", bus="scsi", fmt="raw", device="cdrom").to_element()
    assert el.attrib == {"type": "file", "device": "cdrom"}
    assert el.find("driver").attrib == {"name": "qemu", "type": "raw"}
    assert el.find("readonly") is not None


IQN = "iqn.2026-11.vc.frontend:rack3.data"
CHAP_DISK = dict(auth_user="vc-0123456789ab", secret_usage=IQN)


def test_iscsi_disk_with_chap_names_the_secret():
    xml = IscsiDiskSpec(IQN, "192.0.2.7", 3261, 1, target="vdb", serial="vcvol0",
                        **CHAP_DISK).to_xml()
    assert xml == (
        '<disk type="network" device="disk">\n'
        '  <driver name="qemu" type="raw" cache="none" />\n'
        '  <source protocol="iscsi" name="%s/1">\n'
        '    <host name="192.0.2.7" port="3261" />\n'
        '    <auth username="vc-0123456789ab">\n'
        '      <secret type="iscsi" usage="%s" />\n'
        '    </auth>\n'
        '  </source>\n'
        '  <target dev="vdb" bus="virtio" />\n'
        '  <serial>vcvol0</serial>\n'
        '</disk>\n' % (IQN, IQN))
    # without CHAP: exactly as before (no auth element)
    assert "auth" not in IscsiDiskSpec(IQN, "192.0.2.7").to_xml()
    for half in ({"auth_user": "u"}, {"secret_usage": IQN}):
        with pytest.raises(ValueError, match="both auth_user and secret_usage"):
            IscsiDiskSpec(IQN, "192.0.2.7", **half)


def test_secret_xml_and_round_trip():
    spec = SecretSpec(IQN, "VC: CHAP secret", "6f1c2a3e-55d4-4b7e-9a35-0c1e6a1b2c3d")
    assert spec.to_xml() == (
        '<secret ephemeral="no" private="yes">\n'
        '  <uuid>6f1c2a3e-55d4-4b7e-9a35-0c1e6a1b2c3d</uuid>\n'
        '  <description>VC: CHAP secret</description>\n'
        '  <usage type="iscsi">\n'
        '    <target>%s</target>\n'
        '  </usage>\n'
        '</secret>\n' % IQN)
    assert SecretSpec.from_xml(spec.to_xml()) == spec
    # libvirt's own text of one (single quotes, uuid first)
    assert SecretSpec.from_xml(
        "<secret ephemeral='no' private='yes'>\n  <uuid>6f1c2a3e-55d4-4b7e-9a35-0c1e6a1b2c3d"
        "</uuid>\n  <usage type='iscsi'>\n    <target>%s</target>\n  </usage>\n</secret>"
        % IQN) == SecretSpec(IQN, None, "6f1c2a3e-55d4-4b7e-9a35-0c1e6a1b2c3d")
    assert SecretSpec(IQN).to_xml() == ('<secret ephemeral="no" private="yes">\n  <usage '
                                        'type="iscsi">\n    <target>%s</target>\n  </usage>\n'
                                        '</secret>\n' % IQN)
    with pytest.raises(ValueError, match="not an iSCSI secret"):
        SecretSpec.from_xml("<secret><usage type='ceph'><name>x</name></usage></secret>")
    with pytest.raises(ValueError):
        SecretSpec(" ")


def test_fingerprint_sees_the_disks_chap():
    """A shut-off domain defined without CHAP is redefined with it (define compares these)."""
    plain = gateway_spec(disks=[IscsiDiskSpec(IQN, "192.0.2.7")]).to_xml()
    chap = gateway_spec(disks=[IscsiDiskSpec(IQN, "192.0.2.7", **CHAP_DISK)]).to_xml()
    other = gateway_spec(disks=[IscsiDiskSpec(IQN, "192.0.2.7", auth_user="vc-x",
                                              secret_usage=IQN)]).to_xml()
    assert len({repr(domain_fingerprint(x)) for x in (plain, chap, other)}) == 3
    # libvirt's text (single quotes, auth where VC put it) compares equal
    assert domain_fingerprint(chap.replace('"', "'")) == domain_fingerprint(chap)
    # <auth> directly in <disk> (libvirt's older place for it) means the same
    moved = re.sub(r"\s*<auth .*?</auth>", "", chap, flags=re.S).replace(
        "</source>", '</source><auth username="vc-0123456789ab"><secret type="iscsi" '
        'usage="%s"/></auth>' % IQN)
    root = ET.fromstring(moved)
    assert root.find("./devices/disk/source/auth") is None
    assert root.find("./devices/disk/auth") is not None
    assert domain_fingerprint(moved) == domain_fingerprint(chap)


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"network": "n", "bridge": "b"}])
def test_interface_needs_one_source(kw):
    with pytest.raises(ValueError, match="exactly one"):
        InterfaceSpec("52:54:00:00:00:01", **kw)


@pytest.mark.parametrize("mac", ["52:54:00:00:00", "zz:54:00:00:00:01", ""])
def test_bad_mac(mac):
    with pytest.raises(ValueError, match="MAC"):
        InterfaceSpec(mac, network="n")


def test_mac_is_normalised():
    assert InterfaceSpec("52:54:00:AA:BB:CC", network="n").mac == "52:54:00:aa:bb:cc"
    assert DhcpHost("52:54:00:AA:BB:CC", "10.0.0.1") == DhcpHost("52:54:00:aa:bb:cc", "10.0.0.1")


@pytest.mark.parametrize("kw,match", [
    ({"bridge": "a-very-long-bridge"}, "bridge name"),
    ({"dhcp_end": None}, "both"),
    ({"dhcp_start": "10.9.0.5"}, "outside"),
    ({"hosts": [DhcpHost("52:54:00:00:00:01", "10.1.1.1")]}, "outside"),
    ({"address": "10.250.3.300"}, "Octet"),
])
def test_bad_network(kw, match):
    with pytest.raises(ValueError, match=match):
        network_spec(**kw)


@pytest.mark.parametrize("kw", [{"name": "a/b"}, {"memory_mb": 0}, {"vcpus": -1},
                                {"uuid": "not-a-uuid"}, {"metadata": {"vc:rack": 1}},
                                {"metadata": {"1x": 1}}])
def test_bad_domain(kw):
    with pytest.raises(ValueError):
        compute_spec(**kw)


# -- parsing ----------------------------------------------------------------------------------


def test_parse_dhcp_hosts_round_trip():
    spec = network_spec()
    assert parse_dhcp_hosts(spec.to_xml()) == spec.hosts
    assert parse_dhcp_hosts(network_spec(hosts=[]).to_xml()) == []


def test_parse_dhcp_hosts_of_libvirt_text():
    xml = """<network><name>n</name><ip address='10.1.0.1' netmask='255.255.255.0'><dhcp>
      <host mac='52:54:00:01:00:01' name='a' ip='10.1.0.11'/>
      <host mac='52:54:00:01:00:02' ip='10.1.0.12'/>
      </dhcp></ip><ip family='ipv6' address='fd00::1' prefix='64'><dhcp>
      <host id='0:4:7e:7d:f0:7d' ip='fd00::5'/></dhcp></ip></network>"""
    assert parse_dhcp_hosts(xml) == [DhcpHost("52:54:00:01:00:01", "10.1.0.11", "a"),
                                     DhcpHost("52:54:00:01:00:02", "10.1.0.12")]


def test_domain_metadata_round_trip():
    assert domain_metadata(gateway_spec().to_xml()) == {
        "appliance": "gateway", "node": "gateway-3-0", "rack": "3"}
    assert domain_metadata(compute_spec(metadata={}).to_xml()) == {}


def test_metadata_none_values_are_left_out():
    assert domain_metadata(compute_spec(metadata={"rack": 1, "node": None}).to_xml()) == {
        "rack": "1"}


def test_foreign_metadata_is_not_ours():
    xml = """<domain type='qemu'><name>x</name><metadata>
      <other:node xmlns:other="https://example.org/other" rack="9"/></metadata></domain>"""
    assert domain_metadata(xml) == {}


def test_metadata_namespace_is_declared_on_the_element():
    text = gateway_spec().to_xml()
    assert '<domain type="qemu">' in text
    assert '<vc:node xmlns:vc="%s" appliance="gateway"' % domainxml.VC_NS in text


def test_odd_names_are_escaped():
    odd = "vc&<odd>\"'name"
    spec = compute_spec(name=odd, cmdline=None, console_log="/tmp/a&b<c>.log",
                        metadata={"node": "x\"y'z&<>"},
                        interfaces=[InterfaceSpec("52:54:00:00:00:01", network="n&<>\"'")])
    text = spec.to_xml()
    assert "&amp;" in text and "&lt;" in text and odd not in text
    root = ET.fromstring(text)
    assert root.find("name").text == odd
    assert root.find("devices/serial/source").get("path") == "/tmp/a&b<c>.log"
    assert root.find("devices/interface/source").get("network") == "n&<>\"'"
    assert domain_metadata(text) == {"node": "x\"y'z&<>"}
    net = network_spec(name="net&<1>", hosts=[DhcpHost("52:54:00:00:00:09", "10.250.3.9", "a&b")])
    assert ET.fromstring(net.to_xml()).find("name").text == "net&<1>"
    assert parse_dhcp_hosts(net.to_xml())[0].name == "a&b"


def test_fingerprint_ignores_libvirt_normalisation():
    ours = gateway_spec(uuid=None).to_xml()
    # what libvirt makes of it: KiB, uuid, placement, a versioned machine, boot, addresses
    theirs = ours.replace('<memory unit="MiB">256</memory>',
                          "<uuid>6f1c2a3e-55d4-4b7e-9a35-0c1e6a1b2c3d</uuid>"
                          "<memory unit='KiB'>262144</memory>")
    theirs = theirs.replace("<vcpu>2</vcpu>", "<vcpu placement='static'>2</vcpu>")
    theirs = theirs.replace('machine="pc"', 'machine="pc-i440fx-7.2"')
    theirs = theirs.replace("52:54:00:00:03:01", "52:54:00:00:03:01".upper())
    assert theirs != ours
    assert domain_fingerprint(theirs) == domain_fingerprint(ours)
    assert domain_fingerprint(gateway_spec(memory_mb=512).to_xml()) != domain_fingerprint(ours)
    assert domain_fingerprint(gateway_spec(metadata={"rack": 4}).to_xml()) != \
        domain_fingerprint(ours)


# -- accepted by libvirt ----------------------------------------------------------------------


@pytest.fixture
def conn():
    c = libvirt.open(TEST_URI)
    yield c
    c.close()


@pytest.mark.parametrize("make", [gateway_spec, compute_spec])
def test_libvirt_accepts_domain(conn, make):
    """virtinst's check_create: define, start, destroy, undefine on the test driver."""
    spec = make()
    dom = conn.defineXML(spec.to_xml())
    assert dom.name() == spec.name
    dom.create()
    assert dom.isActive()
    back = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert domain_fingerprint(back) == domain_fingerprint(spec.to_xml())
    assert domain_metadata(back) == domain_metadata(spec.to_xml())
    if spec.uuid:
        assert dom.UUIDString() == spec.uuid
    dom.destroy()
    dom.undefine()
    assert conn.listAllDomains(0) == []


def test_libvirt_accepts_a_chap_disk_and_keeps_it(conn):
    spec = gateway_spec(disks=[DiskSpec("/var/lib/vc/disks/vc-3-gw.qcow2"),
                               IscsiDiskSpec(IQN, "192.0.2.7", 3261, 1, target="vdb",
                                             **CHAP_DISK)])
    dom = conn.defineXML(spec.to_xml())
    back = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    auth = ET.fromstring(back).find("./devices/disk[@type='network']/source/auth")
    assert auth.get("username") == "vc-0123456789ab"
    assert auth.find("secret").attrib == {"type": "iscsi", "usage": IQN}
    assert domain_fingerprint(back) == domain_fingerprint(spec.to_xml())
    dom.undefine()


def test_libvirt_accepts_odd_domain_name(conn):
    spec = compute_spec(name="vc&<odd>\"'name")
    dom = conn.defineXML(spec.to_xml())
    assert conn.lookupByName("vc&<odd>\"'name").UUIDString() == dom.UUIDString()
    dom.undefine()


def test_libvirt_accepts_network(conn):
    spec = network_spec()
    net = conn.networkDefineXML(spec.to_xml())
    net.create()
    assert parse_dhcp_hosts(net.XMLDesc(0)) == spec.hosts
    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
               libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
               DhcpHost("52:54:00:00:03:09", "10.250.3.19", "compute-3-1").to_xml(),
               libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)
    assert parse_dhcp_hosts(net.XMLDesc(0))[-1] == DhcpHost("52:54:00:00:03:09", "10.250.3.19",
                                                           "compute-3-1")
    assert domainxml.network_fingerprint(net.XMLDesc(0)) == \
        domainxml.network_fingerprint(spec.to_xml())
    net.destroy()
    net.undefine()

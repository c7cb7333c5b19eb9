"""vc.virt against libvirt's test driver (a fresh host per test) and a small hand-written fake for
the error paths (the node disks are tests/test_disks.py's, the commands tests/test_remote.py's)."""

import logging
import os

import libvirt
import pytest

from vc.domainxml import DhcpHost, DiskSpec, DomainSpec, InterfaceSpec, NetworkSpec, SecretSpec
from vc.errors import NotFound, VcError
from vc.virt import Host, HypervisorError, NotFoundOnHost

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
# every open of test:///<file> starts again from the file: a fresh, empty host per test
TEST_URI = "test://" + os.path.join(DATA, "testnode.xml")

MAC1, MAC2, MAC3 = "52:54:00:00:07:01", "52:54:00:00:07:02", "52:54:00:00:07:03"


@pytest.fixture
def host():
    h = Host(TEST_URI, name="t1")
    yield h
    h.close()


def net_spec(**kw):
    args = dict(name="vc-7", bridge="vcbr7", address="10.250.7.1", prefix=24,
                dhcp_start="10.250.7.100", dhcp_end="10.250.7.200",
                hosts=[DhcpHost(MAC1, "10.250.7.10", "gateway-7-0")])
    args.update(kw)
    return NetworkSpec(**args)


def dom_spec(name="vc-7-c0", **kw):
    args = dict(name=name, memory_mb=128, vcpus=1, kernel="/guest/vmlinux",
                initrd="/guest/initrd.img", cmdline="console=ttyS0",
                disks=[DiskSpec("/disks/%s.qcow2" % name)],
                interfaces=[InterfaceSpec(MAC2, network="vc-7")],
                console_log="/logs/%s.log" % name, metadata={"rack": 7, "node": "compute-7-0"})
    args.update(kw)
    return DomainSpec(**args)


# -- networks ---------------------------------------------------------------------------------


def test_ensure_network_is_idempotent(host):
    assert not host.network_exists("vc-7")
    assert host.ensure_network(net_spec()) is True
    assert host.network_exists("vc-7")
    net = host.conn.networkLookupByName("vc-7")
    assert net.isActive() and net.isPersistent() and not net.autostart()
    assert host.ensure_network(net_spec()) is False


def test_ensure_network_starts_a_defined_one(host):
    host.conn.networkDefineXML(net_spec().to_xml())
    assert host.ensure_network(net_spec()) is True
    assert host.conn.networkLookupByName("vc-7").isActive()
    assert host.ensure_network(net_spec()) is False


def test_ensure_network_turns_autostart_off(host):
    net = host.conn.networkDefineXML(net_spec().to_xml())
    net.create()
    net.setAutostart(1)
    assert host.ensure_network(net_spec()) is True
    assert not net.autostart()


def test_ensure_network_warns_about_other_settings(host, caplog):
    host.ensure_network(net_spec())
    with caplog.at_level(logging.WARNING, logger="vc.virt"):
        assert host.ensure_network(net_spec(bridge="vcbr99")) is False
    assert "other settings" in caplog.text


def test_remove_network(host):
    host.ensure_network(net_spec())
    assert host.remove_network("vc-7") is True
    assert not host.network_exists("vc-7")
    assert host.remove_network("vc-7") is False


def test_remove_inactive_network(host):
    host.conn.networkDefineXML(net_spec().to_xml())
    assert host.remove_network("vc-7") is True
    assert host.list_networks() == []


def test_list_networks_by_prefix(host):
    host.ensure_network(net_spec(name="vc-7"))
    host.ensure_network(net_spec(name="vc-8", bridge="vcbr8", address="10.250.8.1", hosts=[],
                                 dhcp_start=None, dhcp_end=None))
    host.conn.networkDefineXML(net_spec(name="other", bridge="otherbr").to_xml())
    assert host.list_networks("vc-") == ["vc-7", "vc-8"]
    assert host.list_networks() == ["other", "vc-7", "vc-8"]


def test_dhcp_hosts_add_noop_remove(host):
    host.ensure_network(net_spec())
    new = DhcpHost(MAC2, "10.250.7.11", "compute-7-0")
    assert host.add_dhcp_host("vc-7", new) is True
    assert host.dhcp_hosts("vc-7") == [DhcpHost(MAC1, "10.250.7.10", "gateway-7-0"), new]
    assert host.add_dhcp_host("vc-7", new) is False
    # MAC case does not make it another entry
    assert host.add_dhcp_host("vc-7", DhcpHost(MAC2.upper(), "10.250.7.11", "compute-7-0")) is False
    assert host.remove_dhcp_host("vc-7", new) is True
    assert host.dhcp_hosts("vc-7") == [DhcpHost(MAC1, "10.250.7.10", "gateway-7-0")]
    assert host.remove_dhcp_host("vc-7", new) is False
    assert host.remove_dhcp_host("no-such-net", new) is False


@pytest.mark.parametrize("other", [
    DhcpHost(MAC1, "10.250.7.99", "gateway-7-0"),     # same MAC
    DhcpHost(MAC3, "10.250.7.10", "x"),               # same IP
    DhcpHost(MAC3, "10.250.7.99", "gateway-7-0"),     # same name
])
def test_dhcp_host_conflicts(host, other):
    host.ensure_network(net_spec())
    with pytest.raises(HypervisorError, match="conflicts") as ei:
        host.add_dhcp_host("vc-7", other)
    assert "host t1" in str(ei.value)
    assert host.dhcp_hosts("vc-7") == net_spec().hosts


def test_remove_dhcp_host_that_differs_is_absent(host):
    host.ensure_network(net_spec())
    assert host.remove_dhcp_host("vc-7", DhcpHost(MAC1, "10.250.7.99", "gateway-7-0")) is False
    assert host.dhcp_hosts("vc-7") == net_spec().hosts


def test_dhcp_host_on_inactive_network(host):
    # the test driver refuses AFFECT_LIVE on a stopped network: only CONFIG must be passed
    host.conn.networkDefineXML(net_spec().to_xml())
    new = DhcpHost(MAC2, "10.250.7.11", "compute-7-0")
    assert host.add_dhcp_host("vc-7", new) is True
    assert new in host.dhcp_hosts("vc-7")
    assert host.remove_dhcp_host("vc-7", new) is True


def test_dhcp_hosts_of_missing_network(host):
    with pytest.raises(NotFoundOnHost, match="no such network: nope") as ei:
        host.dhcp_hosts("nope")
    assert isinstance(ei.value, NotFound) and isinstance(ei.value, HypervisorError)
    with pytest.raises(NotFoundOnHost):
        host.add_dhcp_host("nope", DhcpHost(MAC1, "10.0.0.1"))


# -- domains ----------------------------------------------------------------------------------


def test_domain_lifecycle_is_idempotent(host):
    spec = dom_spec()
    assert host.state("vc-7-c0") == "absent"
    assert host.define(spec) is True
    assert host.define(spec) is False
    assert host.state("vc-7-c0") == "shutoff"
    assert host.start("vc-7-c0") is True
    assert host.start("vc-7-c0") is False
    assert host.state("vc-7-c0") == "running"
    assert host.shutdown("vc-7-c0") is True      # the test driver stops at once
    assert host.shutdown("vc-7-c0") is False
    assert host.state("vc-7-c0") == "shutoff"
    assert host.destroy("vc-7-c0") is False
    assert host.start("vc-7-c0") is True
    assert host.destroy("vc-7-c0") is True
    assert host.destroy("vc-7-c0") is False
    assert host.undefine("vc-7-c0") is True
    assert host.undefine("vc-7-c0") is False
    assert host.state("vc-7-c0") == "absent"
    assert host.shutdown("vc-7-c0") is False
    assert host.destroy("vc-7-c0") is False


def test_define_redefines_a_shut_off_domain_keeping_its_uuid(host):
    host.define(dom_spec())
    uuid = host.conn.lookupByName("vc-7-c0").UUIDString()
    assert host.define(dom_spec(memory_mb=256)) is True
    dom = host.conn.lookupByName("vc-7-c0")
    assert dom.UUIDString() == uuid
    assert dom.info()[1] == 256 * 1024
    assert host.define(dom_spec(memory_mb=256)) is False


def test_define_leaves_a_running_domain(host, caplog):
    host.define(dom_spec())
    host.start("vc-7-c0")
    with caplog.at_level(logging.WARNING, logger="vc.virt"):
        assert host.define(dom_spec(memory_mb=256, vcpus=2)) is False
    assert "is running with another definition (memory_kib, vcpus differ)" in caplog.text
    dom = host.conn.lookupByName("vc-7-c0")
    assert dom.info()[1] == 128 * 1024
    # unchanged while running: a quiet no-op
    caplog.clear()
    assert host.define(dom_spec()) is False
    assert caplog.text == ""


def test_define_with_another_uuid(host):
    host.define(dom_spec())
    with pytest.raises(HypervisorError, match="exists with UUID"):
        host.define(dom_spec(uuid="6f1c2a3e-55d4-4b7e-9a35-0c1e6a1b2c3d"))


def test_define_with_fixed_uuid(host):
    spec = dom_spec(uuid="6f1c2a3e-55d4-4b7e-9a35-0c1e6a1b2c3d")
    assert host.define(spec) is True
    assert host.define(spec) is False
    assert host.conn.lookupByName("vc-7-c0").UUIDString() == spec.uuid


def test_define_logs_xml(host, caplog):
    with caplog.at_level(logging.DEBUG, logger="vc.virt"):
        host.define(dom_spec())
    assert "<cmdline>console=ttyS0</cmdline>" in caplog.text


def test_start_missing_domain(host):
    with pytest.raises(NotFoundOnHost, match="host t1: no such domain: nope"):
        host.start("nope")


def test_undefine_running_domain_is_refused(host):
    host.define(dom_spec())
    host.start("vc-7-c0")
    with pytest.raises(HypervisorError, match="destroy it first"):
        host.undefine("vc-7-c0")
    assert host.state("vc-7-c0") == "running"


def test_list_domains_by_prefix(host):
    for name in ("vc-7-c1", "vc-7-c0", "vc-8-c0", "other"):
        host.define(dom_spec(name))
    host.start("vc-7-c1")
    assert host.list_domains("vc-7-") == ["vc-7-c0", "vc-7-c1"]
    assert host.list_domains() == ["other", "vc-7-c0", "vc-7-c1", "vc-8-c0"]


def test_domain_metadata(host):
    host.define(dom_spec())
    assert host.domain_metadata("vc-7-c0") == {"node": "compute-7-0", "rack": "7"}
    host.conn.defineXML("<domain type='test'><name>foreign</name><memory>131072</memory>"
                        "<os><type>hvm</type></os></domain>")
    assert host.domain_metadata("foreign") == {}
    with pytest.raises(NotFoundOnHost):
        host.domain_metadata("nope")


def test_free_memory_falls_back_to_node_info(host):
    # the test driver's getFreeMemory answers 0; testnode.xml has 8 GiB
    assert host.free_memory_mb() == 8192


def test_qemu_pid(tmp_path, monkeypatch):
    monkeypatch.setattr(Host, "QEMU_RUN_DIR", str(tmp_path))
    (tmp_path / "vc-7-c0.pid").write_text("4242\n")
    (tmp_path / "bad.pid").write_text("x")
    assert Host("qemu:///system").qemu_pid("vc-7-c0") == 4242
    assert Host("qemu+unix:///system").qemu_pid("vc-7-c0") == 4242
    assert Host("qemu:///system").qemu_pid("nope") is None
    assert Host("qemu:///system").qemu_pid("bad") is None
    assert Host("qemu+ssh://h2/system").qemu_pid("vc-7-c0") is None
    assert Host("qemu:///session").qemu_pid("vc-7-c0") is None
    assert Host(TEST_URI).qemu_pid("vc-7-c0") is None


def test_wait_state_with_injected_clock(host):
    host.define(dom_spec())
    now = [100.0]
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        now[0] += s

    assert host.wait_state("vc-7-c0", "shutoff", 5, clock=lambda: now[0], sleep=sleep) is True
    assert sleeps == []
    assert host.wait_state("vc-7-c0", "running", 1, poll=0.3, clock=lambda: now[0],
                           sleep=sleep) is False
    assert sleeps == pytest.approx([0.3, 0.3, 0.3, 0.1])
    assert host.wait_state("vc-7-c0", ("running", "shutoff"), 0, clock=lambda: now[0],
                           sleep=sleep) is True


def test_libvirt_errors_are_silenced(host, capfd):
    assert host.state("nope") == "absent"
    assert host.remove_network("nope") is False
    out, err = capfd.readouterr()
    assert "libvirt" not in err and err == ""


def test_open_failure():
    with pytest.raises(HypervisorError, match="host bad: cannot connect to test:///nonexistent"):
        Host("test:///nonexistent/node.xml", name="bad").list_domains()


# -- error paths with a fake connection -------------------------------------------------------


def make_libvirt_error(code, msg="fake failure", domain=libvirt.VIR_FROM_QEMU):
    """A libvirtError shaped like a real one (Nova's make_libvirtError)."""
    # libvirtError() adopts the thread's last libvirt error (from an earlier test) as its text
    libvirt.virResetLastError()
    e = libvirt.libvirtError(msg)
    e.err = (code, domain, msg, libvirt.VIR_ERR_ERROR, "", None, None, -1, -1)
    return e


class FakeDomain:
    def __init__(self, name, active=True, fail=None):
        self._name, self.active, self.fail = name, active, fail or {}
        self.calls = []

    def _maybe_fail(self, what):
        self.calls.append(what)
        if what in self.fail:
            exc, stop = self.fail[what]
            if stop:
                self.active = False
            raise exc

    def name(self):
        return self._name

    def isActive(self):
        return self.active

    def XMLDesc(self, flags=0):
        return "<domain type='qemu'><name>%s</name></domain>" % self._name

    def create(self):
        self._maybe_fail("create")
        self.active = True

    def destroy(self):
        self._maybe_fail("destroy")
        self.active = False

    def shutdown(self):
        self._maybe_fail("shutdown")

    def state(self):
        self._maybe_fail("state")
        return [libvirt.VIR_DOMAIN_RUNNING if self.active else libvirt.VIR_DOMAIN_SHUTOFF, 0]


class FakeConn:
    """Just enough of virConnect; ``lookup_error`` makes every lookup fail with it."""

    def __init__(self, domains=(), lookup_error=None, alive=True):
        self.domains = {d.name(): d for d in domains}
        self.lookup_error = lookup_error
        self.alive = alive
        self.defined = []

    def isAlive(self):
        return self.alive

    def close(self):
        pass

    def lookupByName(self, name):
        if self.lookup_error is not None:
            raise self.lookup_error
        if name not in self.domains:
            raise make_libvirt_error(libvirt.VIR_ERR_NO_DOMAIN, "Domain not found")
        return self.domains[name]

    def networkLookupByName(self, name):
        if self.lookup_error is not None:
            raise self.lookup_error
        raise make_libvirt_error(libvirt.VIR_ERR_NO_NETWORK, "Network not found")

    def listAllDomains(self, flags=0):
        if self.lookup_error is not None:
            raise self.lookup_error
        return list(self.domains.values())

    def defineXML(self, xml):
        self.defined.append(xml)
        raise make_libvirt_error(libvirt.VIR_ERR_XML_ERROR, "XML error: bad thing")


def fake_host(conn):
    return Host("qemu+ssh://fake/system", name="fake", opener=lambda uri: conn)


def test_fake_error_is_real_shaped():
    e = make_libvirt_error(libvirt.VIR_ERR_NO_DOMAIN, "Domain not found")
    assert e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
    assert e.get_error_message() == str(e) == "Domain not found"


def test_no_domain_means_already_gone():
    h = fake_host(FakeConn())
    assert h.state("x") == "absent"
    assert h.destroy("x") is False
    assert h.shutdown("x") is False
    assert h.undefine("x") is False
    assert h.remove_network("x") is False
    assert h.network_exists("x") is False


def test_generic_error_becomes_hypervisor_error():
    cause = make_libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, "internal error: boom")
    h = fake_host(FakeConn(lookup_error=cause))
    for call in (lambda: h.state("x"), lambda: h.destroy("x"), lambda: h.undefine("x"),
                 lambda: h.network_exists("x"), lambda: h.list_domains()):
        with pytest.raises(HypervisorError) as ei:
            call()
        assert ei.value.__cause__ is cause
        assert ei.value.code == libvirt.VIR_ERR_INTERNAL_ERROR
        assert str(ei.value).startswith("host fake: cannot ")
        assert "internal error: boom" in str(ei.value)
        assert not isinstance(ei.value, NotFound)
        assert isinstance(ei.value, VcError)
    with pytest.raises(HypervisorError, match="host fake: cannot look up domain x: internal"):
        h.state("x")


def test_destroy_operation_invalid_when_already_off():
    dom = FakeDomain("x", fail={"destroy": (
        make_libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID, "domain is not running"), True)})
    assert fake_host(FakeConn([dom])).destroy("x") is False
    assert dom.calls == ["destroy"]


def test_destroy_no_domain_during_the_call():
    dom = FakeDomain("x", fail={"destroy": (
        make_libvirt_error(libvirt.VIR_ERR_NO_DOMAIN, "Domain not found"), False)})
    assert fake_host(FakeConn([dom])).destroy("x") is False


def test_destroy_failure_of_a_running_domain():
    dom = FakeDomain("x", fail={"destroy": (
        make_libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR, "Device or resource busy"), False)})
    with pytest.raises(HypervisorError, match="cannot destroy domain x: Device or resource busy"):
        fake_host(FakeConn([dom])).destroy("x")


def test_state_no_domain_during_the_call():
    dom = FakeDomain("x", fail={"state": (
        make_libvirt_error(libvirt.VIR_ERR_NO_DOMAIN, "Domain not found"), False)})
    assert fake_host(FakeConn([dom])).state("x") == "absent"


def test_start_failure_logs_the_xml(caplog):
    dom = FakeDomain("x", active=False, fail={"create": (
        make_libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, "qemu unexpectedly closed"), False)})
    with caplog.at_level(logging.ERROR, logger="vc.virt"):
        with pytest.raises(HypervisorError, match="cannot start domain x: qemu unexpectedly"):
            fake_host(FakeConn([dom])).start("x")
    assert "<name>x</name>" in caplog.text
    assert caplog.records[-1].exc_info is not None


def test_start_race_with_another_starter():
    dom = FakeDomain("x", active=False)
    conn = FakeConn([dom])

    def create():
        dom.calls.append("create")
        dom.active = True  # the other starter won
        raise make_libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID, "already running")

    dom.create = create
    assert fake_host(conn).start("x") is False


def test_define_failure_logs_the_xml(caplog):
    conn = FakeConn()
    with caplog.at_level(logging.ERROR, logger="vc.virt"):
        with pytest.raises(HypervisorError, match="cannot define domain vc-7-c0: XML error"):
            fake_host(conn).define(dom_spec())
    assert conn.defined and "<cmdline>console=ttyS0</cmdline>" in caplog.text


def test_reconnects_when_the_connection_died():
    conns = [FakeConn(alive=False), FakeConn()]
    opened = []

    def opener(uri):
        opened.append(uri)
        return conns[len(opened) - 1]

    h = Host("qemu:///system", opener=opener)
    assert h.list_domains() == []
    assert h.list_domains() == []
    assert len(opened) == 2


def test_opener_error():
    def opener(uri):
        raise make_libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR, "Failed to connect socket")

    with pytest.raises(HypervisorError, match="host h9: cannot connect to qemu"):
        Host("qemu+ssh://h9/system", name="h9", opener=opener).state("x")


class FakeNet:
    def __init__(self, active, persistent=True):
        self.active, self.persistent = active, persistent
        self.updates = []

    def isActive(self):
        return self.active

    def isPersistent(self):
        return self.persistent

    def XMLDesc(self, flags=0):
        return net_spec().to_xml()

    def update(self, *args):
        self.updates.append(args)


@pytest.mark.parametrize("active,persistent,flags", [
    (True, True, libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG),
    (False, True, libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG),
    (True, False, libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE),
])
def test_dhcp_update_flags(active, persistent, flags):
    net = FakeNet(active, persistent)
    conn = FakeConn()
    conn.networkLookupByName = lambda name: net
    h = fake_host(conn)
    new = DhcpHost(MAC2, "10.250.7.11", "compute-7-0")
    assert h.add_dhcp_host("vc-7", new) is True
    assert h.remove_dhcp_host("vc-7", net_spec().hosts[0]) is True
    assert net.updates == [
        (libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
         -1, new.to_xml(), flags),
        (libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
         -1, net_spec().hosts[0].to_xml(), flags)]


# -- secrets (CHAP for iSCSI disks) -----------------------------------------------------------

USAGE = "iqn.2026-11.vc.frontend:rack7.data"


class FakeSecret:
    def __init__(self, conn, uuid, xml):
        self.conn, self.uuid, self.xml, self.value = conn, uuid, xml, None

    def UUIDString(self):
        return self.uuid

    def usageType(self):
        return libvirt.VIR_SECRET_USAGE_TYPE_ISCSI

    def usageID(self):
        return SecretSpec.from_xml(self.xml).usage

    def XMLDesc(self, flags=0):
        return self.xml

    def setValue(self, value, flags=0):
        assert isinstance(value, bytes)
        self.conn.calls.append("setValue")
        self.value = value

    def undefine(self):
        self.conn.calls.append("undefine")
        del self.conn.secrets[self.uuid]


class FakeSecretConn(FakeConn):
    """virConnect's secrets as libvirtd keeps them: unique usage, a redefinition (same UUID)
    keeps the value, a private value is never handed back."""

    def __init__(self):
        super().__init__()
        self.secrets, self.calls = {}, []

    def secretDefineXML(self, xml, flags=0):
        spec = SecretSpec.from_xml(xml)
        assert 'private="yes"' in xml and 'ephemeral="no"' in xml
        same = [s for s in self.secrets.values() if s.usageID() == spec.usage]
        if same and same[0].uuid != spec.uuid:
            raise make_libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR,
                                     "a secret with UUID %s already defined for use with %s"
                                     % (same[0].uuid, spec.usage))
        self.calls.append("define")
        if same:
            same[0].xml = xml
            return same[0]
        uuid = "00000000-0000-4000-8000-%012d" % (len(self.calls))
        self.secrets[uuid] = FakeSecret(self, uuid, SecretSpec(
            spec.usage, spec.description, uuid).to_xml())
        return self.secrets[uuid]

    def secretLookupByUsage(self, kind, usage):
        assert kind == libvirt.VIR_SECRET_USAGE_TYPE_ISCSI
        for s in self.secrets.values():
            if s.usageID() == usage:
                return s
        raise make_libvirt_error(libvirt.VIR_ERR_NO_SECRET, "Secret not found")

    def listAllSecrets(self, flags=0):
        return list(self.secrets.values())


def test_secret_is_defined_once_and_its_value_set():
    conn = FakeSecretConn()
    h = fake_host(conn)
    assert h.list_secrets() == []
    assert h.ensure_secret(USAGE, "S3cretS3cretS3cr") is True
    (sec,) = conn.secrets.values()
    assert sec.value == b"S3cretS3cretS3cr"
    assert "S3cretS3cretS3cr" not in sec.XMLDesc()
    assert conn.calls == ["define", "setValue", "define"]
    # the same value again: nothing written (the description tells, the value is private)
    conn.calls.clear()
    assert h.ensure_secret(USAGE, "S3cretS3cretS3cr") is False
    assert conn.calls == []
    # another value: set on the same secret (same UUID)
    assert h.ensure_secret(USAGE, "An0therSecret016") is True
    assert list(conn.secrets.values()) == [sec] and sec.value == b"An0therSecret016"
    assert h.ensure_secret(USAGE, "An0therSecret016") is False
    assert h.list_secrets() == [USAGE] and h.list_secrets("iqn.2026-11.vc.frontend:rack7.") == [
        USAGE] and h.list_secrets("iqn.2026-11.vc.frontend:rack8.") == []
    assert h.remove_secret(USAGE) is True
    assert h.remove_secret(USAGE) is False and conn.secrets == {}


def test_a_secret_whose_value_was_not_set_is_set_again():
    """A failure between define and setValue leaves a description that matches nothing."""
    conn = FakeSecretConn()
    h = fake_host(conn)
    real_set = FakeSecret.setValue

    def boom(self, value, flags=0):
        raise make_libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, "setValue failed")

    FakeSecret.setValue = boom
    try:
        with pytest.raises(HypervisorError, match="define secret %s" % USAGE):
            h.ensure_secret(USAGE, "S3cretS3cretS3cr")
    finally:
        FakeSecret.setValue = real_set
    assert len(conn.secrets) == 1
    assert h.ensure_secret(USAGE, "S3cretS3cretS3cr") is True
    assert list(conn.secrets.values())[0].value == b"S3cretS3cretS3cr"


def test_the_secret_value_is_never_logged(caplog):
    caplog.set_level(logging.DEBUG, logger="vc.virt")
    h = fake_host(FakeSecretConn())
    h.ensure_secret(USAGE, "S3cretS3cretS3cr")
    h.ensure_secret(USAGE, "S3cretS3cretS3cr")
    h.remove_secret(USAGE)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert USAGE in text and "S3cretS3cretS3cr" not in text
    with pytest.raises(ValueError):
        h.ensure_secret(USAGE, "")


def test_secrets_on_the_test_driver_live_in_the_host(host):
    """libvirt's test driver has no secret driver (VIR_ERR_NO_SUPPORT): a test: host keeps them
    itself, with the same answers, so a start on the test driver runs the same steps."""
    with pytest.raises(libvirt.libvirtError):
        host.conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_ISCSI, USAGE)
    assert host.ensure_secret(USAGE, "S3cretS3cretS3cr") is True
    assert host.ensure_secret(USAGE, "S3cretS3cretS3cr") is False
    assert host.list_secrets("iqn.2026-11.") == [USAGE]
    assert host.remove_secret(USAGE) is True and host.remove_secret(USAGE) is False
    assert host.list_secrets() == []


def test_a_lookup_failure_is_a_hypervisor_error():
    conn = FakeSecretConn()
    conn.secretLookupByUsage = lambda kind, usage: (_ for _ in ()).throw(
        make_libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, "secret driver down"))
    with pytest.raises(HypervisorError, match="host fake: cannot look up secret .*driver down"):
        fake_host(conn).ensure_secret(USAGE, "x")


def test_launch_defines_and_starts_and_is_idempotent(host):
    assert host.launch(dom_spec()) is True
    assert host.state("vc-7-c0") == "running"
    assert host.launch(dom_spec()) is False        # running: left alone
    host.destroy("vc-7-c0")
    assert host.launch(dom_spec()) is True         # defined, shut off: started
    assert host.state("vc-7-c0") == "running"


def test_launch_of_a_new_domain_is_three_libvirt_calls():
    """Look up (absent), define, create: no isActive/state round trips, which wait for a
    libvirtd worker while the cluster's other domains are being created."""
    dom = FakeDomain("vc-7-c0", active=False)

    class Conn(FakeConn):
        def __init__(self):
            super().__init__()
            self.lookups = 0

        def lookupByName(self, name):
            self.lookups += 1
            return super().lookupByName(name)

        def defineXML(self, xml):
            self.defined.append(xml)
            return dom

    conn = Conn()
    assert fake_host(conn).launch(dom_spec()) is True
    assert (conn.lookups, len(conn.defined), dom.calls) == (1, 1, ["create"])
    assert dom.active

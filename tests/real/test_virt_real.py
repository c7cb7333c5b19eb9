"""vc.virt against the real libvirtd + QEMU (TCG) with VC's tiny test guest.

Needs ``tools/virt.sh start`` (libvirtd + virtlogd on qemu:///system) and the guest built by
``tools/make-guest.sh var/guest`` (or $VC_GUEST_DIR). When either is missing the test FAILS with
what to run: it must never pass, or skip quietly, without the real stack.

libvirtd is shared with whatever else runs on the machine, so every name this test makes starts
with ``vctest-<random>-`` and only those are cleaned up, in the fixture's finalizer too.
"""

import dataclasses
import ipaddress
import os
import random
import re
import subprocess
import time
import uuid

import pytest

from vc import disks, virt
from vc.domainxml import DhcpHost, DiskSpec, DomainSpec, InterfaceSpec, NetworkSpec
from vc.virt import Host, HypervisorError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUEST_DIR = os.path.abspath(os.environ.get("VC_GUEST_DIR", os.path.join(ROOT, "var", "guest")))
URI = os.environ.get("VC_TEST_LIBVIRT_URI", "qemu:///system")
BOOT_TIMEOUT = 90.0
SHUTDOWN_TIMEOUT = 30.0
DISK_GB = 1


def virsh(*args):
    return subprocess.run(["virsh", "-c", URI] + list(args), check=True, capture_output=True,
                          text=True).stdout.split()


def cleanup(host, prefix):
    """Remove every domain and network whose name starts with ``prefix`` (ours only)."""
    for name in host.list_domains(prefix):
        host.destroy(name)
        host.undefine(name)
    for name in host.list_networks(prefix):
        host.remove_network(name)


@pytest.fixture
def real_host():
    host = Host(URI, name="local")
    yield host
    host.close()


@pytest.fixture
def prefix(real_host):
    p = "vctest-%s-" % uuid.uuid4().hex[:8]
    yield p
    try:
        real_host.list_domains()
    except HypervisorError:
        return  # libvirtd unreachable: the test has failed on that, and nothing of ours exists
    cleanup(real_host, p)
    assert [n for n in virsh("list", "--all", "--name") if n.startswith(p)] == []
    assert [n for n in virsh("net-list", "--all", "--name") if n.startswith(p)] == []


def require_stack(host):
    """Fail (never skip) unless libvirtd answers and the guest is built; returns the guest."""
    if virt.libvirt is None:
        pytest.fail("the libvirt Python binding is not installed in this venv", pytrace=False)
    files = {f: os.path.join(GUEST_DIR, f) for f in ("vmlinux", "initrd.img")}
    missing = [p for p in files.values() if not os.path.isfile(p)]
    if missing:
        pytest.fail("test guest missing: %s (run tools/make-guest.sh %s, or set VC_GUEST_DIR)"
                    % (", ".join(missing), GUEST_DIR), pytrace=False)
    try:
        host.list_domains()
    except HypervisorError as e:
        pytest.fail("libvirtd does not answer on %s (run tools/virt.sh start): %s" % (URI, e),
                    pytrace=False)
    return files


def free_subnet(host):
    """A /24 in 10.254.0.0/16 that no interface and no libvirt network uses (libvirt refuses
    two networks on one subnet, and other work shares this libvirtd)."""
    used = set()
    out = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    for addr in re.findall(r"inet (\S+)", out):
        used.add(ipaddress.IPv4Interface(addr).network)
    for name in host.list_networks():
        xml = host.conn.networkLookupByName(name).XMLDesc(0)
        for a, m in re.findall(r"<ip address='([\d.]+)' netmask='([\d.]+)'", xml):
            used.add(ipaddress.IPv4Interface("%s/%s" % (a, m)).network)
    candidates = list(ipaddress.ip_network("10.254.0.0/16").subnets(new_prefix=24))
    random.shuffle(candidates)
    for net in candidates:
        if not any(net.overlaps(u) for u in used):
            return net
    pytest.fail("no free /24 in 10.254.0.0/16")


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_console(host, name, path, pattern, timeout):
    """Wait for a line matching ``pattern`` on the guest's console file; fail early when the
    guest reports no DHCP lease or stops."""
    want = re.compile(pattern, re.M)
    end = time.monotonic() + timeout
    while True:
        text = read(path)
        m = want.search(text)
        if m:
            return m.group(0)
        tail = "\n  ".join(text.splitlines()[-15:])
        if "VC-DHCP-FAILED" in text:
            pytest.fail("guest reported VC-DHCP-FAILED; console tail:\n  " + tail)
        if host.state(name) != "running":
            pytest.fail("guest stopped (%s) before printing %r; console tail:\n  %s"
                        % (host.state(name), pattern, tail))
        if time.monotonic() > end:
            pytest.fail("no %r on the console within %.0f s; console tail:\n  %s"
                        % (pattern, timeout, tail))
        time.sleep(0.05)


def test_guest_boots_on_a_vc_network_and_stops(real_host, prefix, tmp_path):
    host = real_host
    guest = require_stack(host)
    t = {}
    t_all = time.monotonic()
    subnet = free_subnet(host)
    hosts = list(subnet.hosts())
    netname, domname = prefix + "net", prefix + "c0"
    bridge = "vct" + prefix.split("-")[1]          # 11 characters, under IFNAMSIZ
    mac = "52:54:00:%02x:%02x:%02x" % tuple(random.randrange(256) for _ in range(3))
    ip, hostname = str(hosts[10]), "compute-%s-0" % prefix.split("-")[1]
    net = NetworkSpec(netname, bridge, str(hosts[0]), 24, dhcp_start=str(hosts[99]),
                      dhcp_end=str(hosts[199]))

    # -- network and DHCP reservation -------------------------------------------------------
    t0 = time.monotonic()
    assert host.ensure_network(net) is True
    assert host.ensure_network(net) is False
    t["network ensure"] = time.monotonic() - t0
    t0 = time.monotonic()
    reservation = DhcpHost(mac, ip, hostname)
    assert host.add_dhcp_host(netname, reservation) is True
    assert host.add_dhcp_host(netname, reservation) is False
    t["add DHCP host"] = time.monotonic() - t0
    assert host.dhcp_hosts(netname) == [reservation]
    with pytest.raises(HypervisorError, match="conflicts"):
        host.add_dhcp_host(netname, DhcpHost(mac, str(hosts[11]), hostname))

    # -- disk -------------------------------------------------------------------------------
    t0 = time.monotonic()
    base, disk = str(tmp_path / "base.qcow2"), str(tmp_path / "c0.qcow2")
    assert disks.make_base_image(base, 64) is True
    assert disks.create_cow_disk(disk, base, DISK_GB) is True
    assert disks.create_cow_disk(disk, base, DISK_GB) is False
    t["base + COW disk"] = time.monotonic() - t0

    # -- domain -----------------------------------------------------------------------------
    console = str(tmp_path / "console.log")
    spec = DomainSpec(domname, 128, 1, kernel=guest["vmlinux"], initrd=guest["initrd.img"],
                      cmdline="console=ttyS0 panic=-1 quiet", disks=[DiskSpec(disk)],
                      interfaces=[InterfaceSpec(mac, network=netname)], console_log=console,
                      metadata={"rack": prefix.split("-")[1], "node": hostname})
    t0 = time.monotonic()
    assert host.define(spec) is True
    # the real QEMU driver rewrites the XML (KiB, machine pc-i440fx-*, PCI addresses...):
    # an unchanged spec must still be recognised as unchanged
    assert host.define(spec) is False
    assert host.domain_metadata(domname) == {"rack": prefix.split("-")[1], "node": hostname}
    assert host.list_domains(prefix) == [domname]
    assert host.start(domname) is True
    t_started = time.monotonic()
    t["define + start"] = t_started - t0
    assert host.start(domname) is False
    assert host.state(domname) == "running"
    pid = host.qemu_pid(domname)
    assert pid is not None and os.path.exists("/proc/%d" % pid)

    line = wait_console(host, domname, console, r"^VC-IP eth0 %s hostname=%s mac=%s\s*$"
                        % (re.escape(ip), re.escape(hostname), re.escape(mac)), BOOT_TIMEOUT)
    t["start -> VC-IP"] = time.monotonic() - t_started
    sectors = DISK_GB * 1024 ** 3 // 512
    wait_console(host, domname, console, r"^VC-DISK vda %d\s*$" % sectors, 30)
    # acpid is up before DHCP; VC-READY ends the guest's boot script
    wait_console(host, domname, console, r"^VC-READY\s*$", 30)
    # running with a changed definition: left alone
    assert host.define(dataclasses.replace(spec, memory_mb=256)) is False

    # -- stop -------------------------------------------------------------------------------
    t0 = time.monotonic()
    assert host.shutdown(domname) is True
    acpi = host.wait_state(domname, "shutoff", SHUTDOWN_TIMEOUT)
    if acpi:
        t["ACPI shutdown -> shutoff"] = time.monotonic() - t0
    else:
        t1 = time.monotonic()
        assert host.destroy(domname) is True
        assert host.wait_state(domname, "shutoff", 15)
        t["destroy -> shutoff (fallback)"] = time.monotonic() - t1
    assert host.shutdown(domname) is False
    assert host.destroy(domname) is False
    assert host.qemu_pid(domname) is None
    if acpi:
        assert "VC-ACPI" in read(console)

    t0 = time.monotonic()
    assert host.undefine(domname) is True
    assert host.undefine(domname) is False
    assert host.state(domname) == "absent"
    assert host.remove_dhcp_host(netname, reservation) is True
    assert host.remove_network(netname) is True
    assert host.remove_network(netname) is False
    t["undefine + remove network"] = time.monotonic() - t0
    assert disks.remove_disk(disk) is True

    assert [n for n in virsh("list", "--all", "--name") if n.startswith(prefix)] == []
    assert [n for n in virsh("net-list", "--all", "--name") if n.startswith(prefix)] == []
    t["total"] = time.monotonic() - t_all
    print("\nconsole: %s" % line.strip())
    print("shutdown path: %s" % ("ACPI" if acpi else "destroy fallback"))
    for k, v in t.items():
        print("%-32s %6.2f s" % (k, v))

"""The real tier: libvirtd + QEMU on this machine, the tiny guest from tools/make-guest.sh.

``make test`` starts libvirtd (tools/virt.sh) and builds the guest into var/guest first. When
either is missing these fixtures FAIL: the real tier never passes by skipping.
Every domain, network and bridge a test makes carries a per-run prefix and is removed by it.
"""

import ipaddress
import os
import re
import socket
import subprocess
import time
import uuid

import pytest

from conftest import BASE_CONF, ROOT, VAR, db_overrides, write_conf

GUEST = os.environ.get("VC_GUEST_DIR", os.path.join(VAR, "guest"))
CTL = os.path.join(ROOT, "sbin", "vc_ctl.py")
CRON = os.path.join(ROOT, "sbin", "vc_cron.py")


def _in_use():
    """Addresses this machine already reaches somewhere: its routes (other than the default) and
    what the package mirrors, PyPI and the name servers resolve to. A test network over any of
    them would cut the machine off from it (seen here: deb.debian.org and pypi.org were
    203.0.113.80, the documentation range the real tier first used)."""
    nets, addrs = [], []
    r = subprocess.run(["ip", "-4", "-o", "route", "show"], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        dst = line.split()[0]
        if dst != "default" and not line.startswith(("unreachable", "blackhole")):
            nets.append(ipaddress.ip_network(dst, strict=False))
    for name in ("deb.debian.org", "pypi.org", "files.pythonhosted.org"):
        try:
            addrs += [i[4][0] for i in socket.getaddrinfo(name, 80, socket.AF_INET)]
        except OSError:
            pass
    try:
        with open("/etc/resolv.conf") as f:
            addrs += [ln.split()[1] for ln in f if ln.startswith("nameserver")]
    except OSError:
        pass
    return nets, [ipaddress.ip_address(a) for a in addrs if ":" not in a]


def pick_public_subnet(candidates=("198.18.213.0/24", "100.127.213.0/24", "10.213.250.0/24")):
    """The first candidate /24 that overlaps nothing this machine uses (:func:`_in_use`); a
    network of ours already holding it (a previous run's) counts as free."""
    nets, addrs = _in_use()
    ours = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "vctpub0"],
                          capture_output=True, text=True).stdout
    for c in candidates:
        n = ipaddress.ip_network(c)
        if " %s/" % n[1] in ours:
            return n
        if not any(n.overlaps(x) for x in nets) and not any(a in n for a in addrs):
            return n
    raise RuntimeError("no free /24 for the real tier's public network among %s" % (candidates,))


# the real tier's public network (the gateways' second NIC): isolated, the host holds .1
def pick_isolation_ids(width=64, lo=200, hi=4000):
    """A range of isolation ids (VNIs, VLAN ids) that no link of this machine uses now: a
    cluster of ``make demo`` (VNI 100 up) or of another run may be up beside the tests, and the
    kernel refuses a second VXLAN device with a VNI in use."""
    import random

    out = subprocess.run(["ip", "-d", "-o", "link"], capture_output=True, text=True).stdout
    used = {int(x) for x in re.findall(r"\b(?:vxlan|vlan protocol \S+) id (\d+)", out)}
    starts = [a for a in range(lo, hi - width, width) if not used & set(range(a, a + width))]
    a = random.choice(starts)
    return "%d-%d" % (a, a + width - 1)


ISOLATION_IDS = pick_isolation_ids()
PUBLIC_SUBNET = pick_public_subnet()
PUBLIC_PREFIX = str(PUBLIC_SUBNET[0]).rsplit(".", 1)[0] + "."   # e.g. "198.18.213."
PUBLIC_NET, PUBLIC_BRIDGE, PUBLIC_HOST = "vctpub", "vctpub0", str(PUBLIC_SUBNET[1])
PUBLIC_XML = """<network><name>%s</name><bridge name='%s' stp='off'/>
<ip address='%s' prefix='24'/></network>""" % (PUBLIC_NET, PUBLIC_BRIDGE, PUBLIC_HOST)


def virsh(*args):
    return subprocess.run(["virsh", "-q", "-c", "qemu:///system"] + list(args),
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def libvirtd():
    r = virsh("uri")
    if r.returncode:
        pytest.fail("libvirtd does not answer on qemu:///system (make test starts it with "
                    "tools/virt.sh start): %s" % r.stderr.strip())
    for f in ("vmlinux", "initrd.img"):
        if not os.path.exists(os.path.join(GUEST, f)):
            pytest.fail("test guest missing: %s (make test builds it with tools/make-guest.sh)"
                        % os.path.join(GUEST, f))
    if "'%s'" % PUBLIC_HOST not in virsh("net-dumpxml", PUBLIC_NET).stdout:
        virsh("net-destroy", PUBLIC_NET)      # a previous run's, on another subnet
        virsh("net-undefine", PUBLIC_NET)
    if virsh("net-info", PUBLIC_NET).returncode:
        path = os.path.join(VAR, "vctpub.xml")
        with open(path, "w") as f:
            f.write(PUBLIC_XML)
        virsh("net-define", path)
    if "Active:         yes" not in virsh("net-info", PUBLIC_NET).stdout:
        r = virsh("net-start", PUBLIC_NET)
        assert r.returncode == 0, r.stderr
    yield True
    virsh("net-destroy", PUBLIC_NET)
    virsh("net-undefine", PUBLIC_NET)


class RealEnv:
    def __init__(self, tmp, migrated, prefix, pool, extra=None):
        self.prefix = prefix
        self.state = os.path.join(tmp, "state")
        os.makedirs(os.path.join(self.state, "images"), exist_ok=True)
        self.base = os.path.join(self.state, "images", "base.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", self.base, "64M"], check=True)
        data = {s: dict(v) for s, v in BASE_CONF.items()}
        data.update(db_overrides(migrated))
        data["host:h1"] = {"uri": "qemu:///system", "memory_mb": "4096", "vcpus": "16"}
        data["addresses"]["private_pool"] = pool
        data["addresses"]["isolation_ids"] = ISOLATION_IDS
        data["addresses"]["public_pool"] = "%s10-%s250" % (PUBLIC_PREFIX, PUBLIC_PREFIX)
        data.setdefault("network", {})["public_network"] = PUBLIC_NET
        data["limits"]["max_vcpus"] = "4"
        self.log = os.path.join(tmp, "vc.log")
        data["site"] = {"timezone": "UTC", "state_dir": self.state, "log_file": self.log}
        data["virt"] = {"name_prefix": prefix, "kernel": os.path.join(GUEST, "vmlinux"),
                        "initrd": os.path.join(GUEST, "initrd.img"), "boot_timeout": "60",
                        "shutdown_timeout": "20"}
        # the real tests start clusters at their start time; pre-boot has its own test
        # (test_cron_real.py::test_preboot_starts_before_the_start_time, extra= turns it on)
        data["cron"] = {"preboot_minutes": "0"}
        for section, kv in (extra or {}).items():
            data.setdefault(section, {}).update(kv)
        self.conf = os.path.join(tmp, "vc.conf")
        write_conf(self.conf, data)

    def ctl(self, *args, env=None, timeout=300):
        e = dict(os.environ, VC_CONFIG=self.conf)
        e.update(env or {})
        return subprocess.run(["/usr/bin/python3", CTL] + list(args), env=e,
                              capture_output=True, text=True, timeout=timeout)

    def cron(self, *args, env=None, timeout=300):
        e = dict(os.environ, VC_CONFIG=self.conf)
        e.update(env or {})
        return subprocess.run(["/usr/bin/python3", CRON] + list(args), env=e,
                              capture_output=True, text=True, timeout=timeout)

    def console(self, node):
        p = os.path.join(self.state, "console", "%s-%s.log" % (self.prefix, node))
        try:
            with open(p, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_ip(self, node, timeout=120):
        """The guest's own report of its DHCP address and host name: (ip, hostname)."""
        rx = re.compile(r"VC-IP eth0 (\S+) hostname=(\S*)")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = rx.search(self.console(node))
            if m:
                return m.group(1), m.group(2)
            time.sleep(0.2)
        raise AssertionError("%s printed no VC-IP line in %ds; console:\n%s"
                             % (node, timeout, self.console(node)[-2000:]))

    def traces(self):
        """Everything of this run's prefix left on the machine."""
        doms = [d for d in virsh("list", "--all", "--name").stdout.split()
                if d.startswith(self.prefix + "-")]
        nets = [n for n in virsh("net-list", "--all", "--name").stdout.split()
                if n.startswith(self.prefix + "-")]
        links = [ln.split(":")[1].strip().split("@")[0] for ln in subprocess.run(
            ["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines()]
        bridges = [b for b in links if b.startswith(self.prefix + "br")]
        disks = sorted(os.listdir(os.path.join(self.state, "disks"))) if os.path.isdir(
            os.path.join(self.state, "disks")) else []
        return {"domains": doms, "networks": nets, "bridges": bridges, "disks": disks}

    def cleanup(self):
        for d in self.traces()["domains"]:
            virsh("destroy", d)
            virsh("undefine", d)
        for n in self.traces()["networks"]:
            virsh("net-destroy", n)
            virsh("net-undefine", n)


@pytest.fixture
def real(libvirtd, migrated, db, tmp_path):
    env = RealEnv(str(tmp_path), migrated, "t" + uuid.uuid4().hex[:5], "10.213.0.0/16")
    yield env
    env.cleanup()

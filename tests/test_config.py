"""Configuration: every key validated, one clear error naming the key and the file."""

import dataclasses
import os
import re
import subprocess
import sys

import pytest

from conftest import BASE_CONF, ROOT, make_cfg, write_conf
from vc import config as vconfig
from vc.errors import ConfigError

EXAMPLE = os.path.join(ROOT, "etc", "vc.conf.example")


def test_example_config_loads():
    cfg = vconfig.load(EXAMPLE)
    assert cfg.database.name == "vcluster"
    assert [h.name for h in cfg.hosts] == ["frontend"]
    assert cfg.subnet_count == 256 and cfg.nodes_per_subnet == 253
    assert cfg.isolation_count == 3995
    assert len(cfg.addresses.public_pool) == 41
    assert cfg.network.public_interface == ("bridge", "br0")
    assert cfg.appliance("gateway") == vconfig.Appliance(
        "gateway", "/var/lib/vc/images/base.qcow2", None, None, "console=ttyS0 panic=-1 quiet",
        "disk")


def _example_keys():
    """{section: set of keys} of the example file, commented-out ones (``# key = ...``, under
    ``# [section]`` too) included; repeated sections by kind (``host``, ``appliance``)."""
    out, section = {}, None
    for line in open(EXAMPLE):
        line = line.strip()
        m = re.match(r"^#?\s*\[([^\]]+)\]$", line)
        if m:
            section = m.group(1).partition(":")[0]
            out.setdefault(section, set())
            continue
        m = re.match(r"^#?\s*([a-z_]+) =", line)
        if m and section:
            out[section].add(m.group(1))
    return out


def test_example_documents_every_key():
    given = _example_keys()
    declared = {name: cls for name, cls in vconfig.SECTIONS.items()}
    declared.update((kind, cls) for kind, (cls, _) in vconfig.REPEATED.items())
    assert set(given) == set(declared)
    for section, cls in declared.items():
        names = {f.name for f in vconfig.keys(cls)}
        assert given[section] - names == set(), ("unknown keys in the example", section)
        assert names - given[section] == set(), ("keys missing from the example", section)


def _render(v):
    """A default value written back as INI text."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, tuple):
        if len(v) == 2 and all(isinstance(x, int) for x in v):
            return "%d-%d" % v
        return ", ".join(str(x) for x in v)
    return str(v)


def test_every_key_is_declared_with_parser_default_and_help():
    classes = list(vconfig.SECTIONS.values()) + [c for c, _ in vconfig.REPEATED.values()]
    for cls in classes:
        for f in vconfig.keys(cls):
            where = (cls.__name__, f.name)
            help = f.metadata["help"]
            assert help and "\n" not in help, where
            if f.default is not dataclasses.MISSING:
                # the declared default is what its parser makes of it
                assert f.metadata["parser"](_render(f.default)) == f.default, where


def test_sections_and_fields():
    cfg = make_cfg()
    assert set(vconfig.SECTIONS) == {"database", "addresses", "limits", "defaults", "site",
                                     "virt", "register", "storage", "network", "web", "cron",
                                     "notify"}
    assert cfg.virt.boot_timeout == 60 and cfg.virt.ready_timeout == 300 and cfg.virt.rng is True
    assert cfg.storage.backend == "tgt" and cfg.storage.connect_timeout == 10
    assert cfg.network.isolation == "vxlan" and cfg.network.public_network == "default"
    assert cfg.network.public_prefix == 24 and cfg.network.public_gateway is None
    assert cfg.database.unix_socket == "/x.sock" and cfg.database.port == 3306
    assert cfg.defaults.memory_mb == 256 and cfg.limits.max_days_ahead == 365
    assert cfg.web == vconfig.Web("root", 8080, "/vc")
    assert cfg.site.frontend is None and cfg.site.cluster_domain == "vc.internal"
    assert cfg.path == "test.conf" and cfg.hosts[0].name == "h1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.virt.boot_timeout = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.virt.new_key = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        del cfg.hosts
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hosts[0].vcpus = 1
    assert dataclasses.replace(cfg.web, port=1) == vconfig.Web("root", 1, "/vc")
    assert hash(cfg) == hash(make_cfg()) and cfg == make_cfg() and cfg != make_cfg(path="x")
    assert repr(cfg.web) == ("Web(user='root', port=8080, url_prefix='/vc', auth='pam', "
                             "htpasswd=None)")


def test_defaults_and_derived():
    cfg = make_cfg()
    a = cfg.addresses
    assert a.mac_prefix == "52:54:00"
    assert str(a.private_pool) == "10.200.0.0/16" and a.private_prefix == 24
    assert a.isolation_ids == (100, 4094)
    assert cfg.site.admins == ("root", "alice")
    assert cfg.tzinfo().key == "Asia/Tokyo"
    assert cfg.virt.disk_dir == "/var/lib/vc/disks"
    assert cfg.virt.console_dir == "/var/lib/vc/console"
    assert cfg.virt.gateway_image == cfg.virt.compute_image == "/var/lib/vc/images/base.qcow2"
    assert cfg.register.hosts_file == "/var/lib/vc/hosts"
    cfg = make_cfg({"site": {"state_dir": "/srv/vc"}, "virt": {"disk_dir": "/fast/disks"}})
    assert cfg.virt.disk_dir == "/fast/disks" and cfg.virt.console_dir == "/srv/vc/console"


def test_public_network():
    assert make_cfg({"network": {"public_network": "bridge: br0"}}).network.public_interface \
        == ("bridge", "br0")
    cfg = make_cfg({"network": {"public_gateway": "198.51.100.1", "public_prefix": "24"}})
    assert cfg.network.public_gateway == "198.51.100.1"
    with pytest.raises(ConfigError, match=r"\[network\] public_gateway: .* is not on "):
        make_cfg({"network": {"public_gateway": "198.51.101.1"}})
    with pytest.raises(ConfigError, match=r"\[network\] public_gateway: is in \[addresses\]"):
        make_cfg({"network": {"public_gateway": "198.51.100.10"}})


def test_appliance_profiles_fall_back_to_virt():
    virt = {"kernel": "/boot/vmlinuz", "initrd": "/boot/initrd", "cmdline": "console=ttyS0",
            "gateway_image": "/img/gw.qcow2"}
    cfg = make_cfg({"virt": virt})
    assert cfg.appliance("gateway") == vconfig.Appliance(
        "gateway", "/img/gw.qcow2", "/boot/vmlinuz", "/boot/initrd", "console=ttyS0", "kernel")
    assert cfg.appliance("compute").image == "/var/lib/vc/images/base.qcow2"
    cfg = make_cfg({"virt": virt, "appliance:compute": {
        "image": "/img/full.qcow2", "boot": "disk"}, "appliance:gateway": {
        "cmdline": "quiet", "kernel": "/k2", "initrd": "/i2", "image": ""}})
    assert cfg.appliance("compute") == vconfig.Appliance(
        "compute", "/img/full.qcow2", None, None, "console=ttyS0", "disk")
    assert cfg.appliance("gateway") == vconfig.Appliance(
        "gateway", "/img/gw.qcow2", "/k2", "/i2", "quiet", "kernel")
    # no [virt] kernel: disk boot, unless the profile brings its own kernel
    cfg = make_cfg({"appliance:gateway": {"kernel": "/k", "initrd": "/i"}})
    assert (cfg.appliance("gateway").boot, cfg.appliance("compute").boot) == ("kernel", "disk")
    with pytest.raises(KeyError):
        cfg.appliance("router")


@pytest.mark.parametrize("over,key,needle", [
    ({"appliance:gateway": {"boot": "kernel"}}, "[appliance:gateway] kernel",
     "required with boot = kernel"),
    ({"appliance:compute": {"kernel": "/k"}}, "[appliance:compute] initrd", "go together"),
    ({"appliance:compute": {"initrd": "/i"}}, "[appliance:compute] kernel", "go together"),
    ({"appliance:compute": {"boot": "disk", "kernel": "/k", "initrd": "/i"}},
     "[appliance:compute] kernel", "not used with boot = disk"),
    ({"appliance:compute": {"boot": "pxe"}}, "[appliance:compute] boot", "one of kernel, disk"),
    ({"appliance:compute": {"image": "rel/x"}}, "[appliance:compute] image", "absolute"),
    ({"appliance:compute": {"memory": "1"}}, "[appliance:compute] memory", "unknown key"),
    ({"appliance:router": {}}, "[appliance:router]", "unknown appliance 'router'"),
])
def test_bad_appliance_profiles(over, key, needle):
    with pytest.raises(ConfigError) as ei:
        make_cfg(over)
    assert ei.value.key == key and needle in ei.value.problem, str(ei.value)


def test_config_does_not_import_the_web_package():
    r = subprocess.run([sys.executable, "-c", "import sys, vc.config; "
                        "print(sorted(m for m in sys.modules if m.startswith('vc')))"],
                       capture_output=True, text=True, cwd=ROOT, check=True)
    assert r.stdout.strip() == "['vc', 'vc.config', 'vc.errors']"


def test_web_settings_read_only_the_web_section(tmp_path):
    from vc.web import settings as wsettings

    path = tmp_path / "vc.conf"
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    data["web"] = {"port": "9090"}
    write_conf(path, data)
    assert wsettings.load(str(path)) == vconfig.load(str(path)).web == vconfig.Web(port=9090)
    # the rest of the file is not looked at
    path.write_text("[web]\nuser = alice\n[colour]\nx = 1\n")
    assert wsettings.load(str(path)).user == "alice"


@pytest.mark.parametrize("section,key,value,needle", [
    ("database", "port", "http", "must be an integer"),
    ("database", "port", "70000", "between 1 and 65535"),
    ("database", "connect_timeout", "0", "between 1"),
    ("host:h1", "uri", "not a uri", "libvirt URI"),
    ("host:h1", "memory_mb", "-5", "between 64"),
    ("host:h1", "vcpus", "many", "integer"),
    ("addresses", "mac_prefix", "52:54", "three hex octets"),
    ("addresses", "mac_prefix", "53:54:00", "unicast"),
    ("addresses", "private_pool", "10.200.0.1/16", "IPv4 network"),
    ("addresses", "private_pool", "banana", "IPv4 network"),
    ("addresses", "private_prefix", "30", "between 8 and 29"),
    ("addresses", "private_prefix", "12", "at least the pool's prefix"),
    ("addresses", "public_pool", "198.51.100.20-198.51.100.10", "range end before start"),
    ("addresses", "public_pool", "198.51.100.1, 198.51.100.1", "twice"),
    ("addresses", "public_pool", "  ", "at least one address"),
    ("addresses", "isolation_ids", "4094-100", "1 <= first <= last"),
    ("addresses", "isolation_ids", "abc", "range like"),
    ("limits", "max_hours", "0", "between 1"),
    ("limits", "max_nodes", "1000", "subnet holds only 253"),
    ("limits", "max_memory_mb", "1.5", "integer"),
    ("defaults", "memory_mb", "8192", "exceeds [limits] max_memory_mb"),
    ("site", "timezone", "Mars/Olympus", "unknown time zone"),
    ("site", "admins", "root; rm -rf", "bad user name"),
    ("site", "state_dir", "", "must not be empty"),
    ("database", "bogus", "1", "unknown key"),
    ("host:h1", "ram", "1", "unknown key"),
    ("network", "public_network", "", "libvirt network name or bridge:NAME"),
    ("network", "public_network", "my net", "libvirt network name or bridge:NAME"),
    ("network", "public_network", "bridge:", "host bridge name"),
    ("network", "public_network", "bridge:averyveryverylongname", "host bridge name"),
    ("network", "public_prefix", "31", "between 8 and 30"),
    ("network", "public_gateway", "300.1.1.1", "IPv4 address"),
    ("network", "public_gateway", "::1", "IPv4 address"),
    ("site", "frontend", "bad name!", "host name or an IP address"),
    ("site", "cluster_domain", "-x.internal", "DNS domain"),
    ("site", "cluster_domain", "", "DNS domain"),
    ("virt", "ready_timeout", "0", "between 1 and 7200"),
    ("virt", "rng", "maybe", "yes or no"),
    ("limits", "max_days_ahead", "4000", "between 1 and 3650"),
    ("web", "port", "0", "between 1 and 65535"),
    ("web", "url_prefix", "vc", "a path like /vc"),
])
def test_bad_values_name_the_key(section, key, value, needle):
    with pytest.raises(ConfigError) as ei:
        make_cfg({section: {key: value}}, path="/etc/vc/x.conf")
    msg = str(ei.value)
    assert msg.startswith("config error in /etc/vc/x.conf: ")
    assert key in msg and needle in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize("section,key", [
    ("database", "user"), ("database", "name"), ("addresses", "public_pool"),
    ("network", "public_network"), ("host:h1", "uri"), ("host:h1", "memory_mb"),
    ("host:h1", "vcpus"),
])
def test_missing_required_key(section, key):
    with pytest.raises(ConfigError) as ei:
        make_cfg(drop=[(section, key)])
    assert "[%s] %s: missing" % (section, key) in str(ei.value)


def test_no_host_no_socket_unknown_section():
    with pytest.raises(ConfigError, match=r"\[host:NAME\]: at least one"):
        make_cfg({"host:h1": None})
    with pytest.raises(ConfigError, match="set unix_socket or host"):
        make_cfg({"database": {"unix_socket": ""}})
    with pytest.raises(ConfigError, match=r"\[colour\]: unknown section"):
        make_cfg({"colour": {"x": "1"}})
    with pytest.raises(ConfigError, match="bad host name"):
        make_cfg({"host:bad name!": {"uri": "qemu:///system", "memory_mb": "100", "vcpus": "1"}})
    with pytest.raises(ConfigError, match=r"\[host: h1\]: a second section for host 'h1'"):
        make_cfg({"host: h1": {"uri": "qemu:///system", "memory_mb": "100", "vcpus": "1"}})


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        vconfig.load(str(tmp_path / "none.conf"))
    p = tmp_path / "broken.conf"
    p.write_text("key-before-section = 1\n")
    with pytest.raises(ConfigError, match=r"\(syntax\)"):
        vconfig.load(str(p))


def test_config_path_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("VC_CONFIG", str(tmp_path / "a.conf"))
    assert vconfig.default_path() == str(tmp_path / "a.conf")


@pytest.mark.parametrize("mutation,needle", [
    ({"limits": {"max_hours": "soon"}}, "[limits] max_hours: must be an integer"),
    ({"database": {"user": None}}, "[database] user: missing"),
])
def test_cli_config_error_is_one_line_exit_2(tmp_path, mutation, needle):
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    for s, kv in mutation.items():
        for k, v in kv.items():
            if v is None:
                data[s].pop(k)
            else:
                data[s][k] = v
    path = tmp_path / "vc.conf"
    write_conf(path, data)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "sbin", "vc_ctl.py"), "list"],
                       env=dict(os.environ, VC_CONFIG=str(path), VC_NO_REEXEC="1"),
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and str(path) in lines[0], r.stderr
    assert "Traceback" not in r.stderr

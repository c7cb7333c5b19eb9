"""Configuration: every key validated, one clear error naming the key and the file."""

import os
import subprocess
import sys

import pytest

from conftest import BASE_CONF, ROOT, make_cfg, write_conf
from vc import config as vconfig
from vc.errors import ConfigError


def test_example_config_loads():
    cfg = vconfig.load(os.path.join(ROOT, "etc", "vc.conf.example"))
    assert cfg.db_name == "vcluster"
    assert [h.name for h in cfg.hosts] == ["frontend"]
    assert cfg.subnet_count == 256 and cfg.nodes_per_subnet == 253
    assert cfg.isolation_count == 3995
    assert len(cfg.public_pool) == 41


def test_example_documents_every_key():
    text = open(os.path.join(ROOT, "etc", "vc.conf.example")).read()
    for section, keys in vconfig.SCHEMA.items():
        assert "[%s]" % section in text
        for key in keys:
            assert "\n%s =" % key in text or "\n# %s =" % key in text, (section, key)
    for key in vconfig.HOST_SCHEMA:
        assert "\n%s =" % key in text


def test_defaults_and_derived():
    cfg = make_cfg()
    assert cfg.mac_prefix == "52:54:00"
    assert str(cfg.private_pool) == "10.200.0.0/16" and cfg.private_prefix == 24
    assert cfg.isolation_ids == (100, 4094)
    assert cfg.admins == ("root", "alice")
    assert cfg.tzinfo().key == "Asia/Tokyo"


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
    ("host:h1", "uri"), ("host:h1", "memory_mb"), ("host:h1", "vcpus"),
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

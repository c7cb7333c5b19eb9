"""Shared fixtures: a throw-away database on the project's private MariaDB, configs, a clock.

``make test`` starts the MariaDB under ./var first; when it is not reachable these fixtures fail
(never skip): a test that needs the database must not pass without one.
"""

import configparser
import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vc import config as vconfig  # noqa: E402
from vc.db import Database  # noqa: E402

VAR = os.environ.get("VC_VAR", os.path.join(ROOT, "var"))
NOW = datetime(2026, 12, 1, 0, 0, tzinfo=timezone.utc)


GOLDEN = os.path.join(ROOT, "tests", "data", "golden")


def assert_golden(name, text):
    """Compare ``text`` with ``tests/data/golden/<name>``; the file is (re)written when missing
    or when ``VC_REGENERATE_GOLDEN=1``."""
    path = os.path.join(GOLDEN, name)
    if os.environ.get("VC_REGENERATE_GOLDEN") == "1" or not os.path.exists(path):
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        expected = f.read()
    assert text == expected, "output differs from %s (VC_REGENERATE_GOLDEN=1 rewrites it)" % path

TABLES = ("vcpreflight", "networks", "nodes", "vcevent", "vcalloc", "vcnode", "vciscsi",
          "vcresource", "vcregist", "vciscsitarget", "vchost", "vcsshkey", "vcnotices")


def db_env():
    path = os.path.join(VAR, "db.env")
    if not os.path.exists(path):
        pytest.fail("no private MariaDB: %s is missing (run 'make test', which starts it)" % path)
    env = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            env[k] = v
    return env


BASE_CONF = {
    "database": {"user": "vc", "password": "x", "name": "vcluster", "unix_socket": "/x.sock"},
    "host:h1": {"uri": "test:///default", "memory_mb": "4096", "vcpus": "8"},
    "addresses": {"public_pool": "198.51.100.10-198.51.100.19"},
    "limits": {"max_hours": "48", "max_nodes": "16", "max_gateways": "2",
               "max_memory_mb": "4096", "max_disk_gb": "50", "max_vcpus": "4",
               "max_volumes": "2", "max_volume_gb": "100"},
    "defaults": {"memory_mb": "256", "disk_gb": "5", "vcpus": "1"},
    "site": {"timezone": "Asia/Tokyo", "admins": "root alice"},
    # the libvirt test driver's own network
    "network": {"public_network": "default"},
}


def make_cfg(overrides=None, drop=(), path="test.conf"):
    """A Config from BASE_CONF with ``overrides`` ({section: {key: value or None}}) applied."""
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    for section, keys in (overrides or {}).items():
        if keys is None:
            data.pop(section, None)
            continue
        data.setdefault(section, {})
        for k, v in keys.items():
            if v is None:
                data[section].pop(k, None)
            else:
                data[section][k] = v
    for section, key in drop:
        data[section].pop(key, None)
    cp = configparser.ConfigParser(interpolation=None, default_section="__none__")
    cp.read_dict(data)
    return vconfig.parse(cp, path)


def write_conf(path, cfg_dict):
    cp = configparser.ConfigParser(interpolation=None, default_section="__none__")
    cp.read_dict(cfg_dict)
    with open(path, "w") as f:
        cp.write(f)


@pytest.fixture(scope="session", autouse=True)
def _no_ssh_control_dirs_left():
    """The shared-SSH control directories (``/tmp/vc-ssh-UID-HASH``, one per state_dir) the
    run made are ended and removed at its end."""
    import glob
    import tempfile

    from vc import remote

    pattern = os.path.join(tempfile.gettempdir(), "vc-ssh-%d-*" % os.getuid())
    before = set(glob.glob(pattern))
    yield
    for d in set(glob.glob(pattern)) - before:
        remote.close_ssh_mux(d)


@pytest.fixture(scope="session")
def dbinfo():
    """One throw-away database for the whole run (dropped at the end)."""
    env = db_env()
    name = "vctest_%s" % uuid.uuid4().hex[:10]
    sock = env["VC_DB_SOCKET"]
    r = subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-e",
                        "CREATE DATABASE `%s` CHARACTER SET utf8mb4" % name],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.fail("cannot create test database on %s: %s" % (sock, r.stderr.strip()))
    info = {"socket": sock, "user": env["VC_DB_USER"], "password": env["VC_DB_PASSWORD"],
            "name": name}
    yield info
    subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-e",
                    "DROP DATABASE IF EXISTS `%s`" % name], capture_output=True)


def db_overrides(dbinfo):
    return {"database": {"unix_socket": dbinfo["socket"], "user": dbinfo["user"],
                         "password": dbinfo["password"], "name": dbinfo["name"]}}


@pytest.fixture(scope="session")
def migrated(dbinfo):
    cfg = make_cfg(db_overrides(dbinfo))
    Database(cfg).upgrade(NOW)
    return dbinfo


@pytest.fixture
def cfg(migrated):
    return make_cfg(db_overrides(migrated))


@pytest.fixture
def db(cfg):
    """The migrated test database, emptied before each test."""
    d = Database(cfg)

    def wipe(cur):
        for t in TABLES:
            cur.execute("DELETE FROM %s" % t)
        cur.execute("UPDATE vccounter SET value = 0")

    d.transaction(wipe)
    return d


def count_rows(db):
    """{table: rows} for every VC table: 'nothing written' is checked against this."""
    out = {}

    def run(cur):
        for t in TABLES:
            cur.execute("SELECT COUNT(*) AS n FROM %s" % t)
            out[t] = cur.fetchone()["n"]

    db.transaction(run)
    return out


@pytest.fixture
def smtp_sink():
    """A local SMTP sink on 127.0.0.1 (tests/smtpsink.py), stopped after the test."""
    from smtpsink import SmtpSink

    sink = SmtpSink().start()
    yield sink
    sink.stop()

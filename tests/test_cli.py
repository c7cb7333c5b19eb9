"""sbin/vc_ctl.py as a user runs it: exit codes, one-line errors, --json, nothing written."""

import json
import os
import subprocess

import pytest

from conftest import BASE_CONF, ROOT, count_rows, db_overrides, write_conf

CTL = os.path.join(ROOT, "sbin", "vc_ctl.py")


@pytest.fixture
def ctl(tmp_path, migrated, db):
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    data.update(db_overrides(migrated))
    data["site"]["timezone"] = "UTC"
    path = tmp_path / "vc.conf"
    write_conf(path, data)

    def run(*args):
        # run as a user would: the script finds and re-executes itself in .venv
        env = dict(os.environ, VC_CONFIG=str(path))
        env.pop("VC_NO_REEXEC", None)
        return subprocess.run(["/usr/bin/python3", CTL] + list(args), env=env,
                              capture_output=True, text=True, timeout=60)

    return run


def ok(r):
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return r


def one_line_error(r, code, needle):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    return lines[0]


def test_reserve_list_show_extend_delete(ctl, db):
    r = ok(ctl("reserve", "--start", "now+1h", "--end", "now+3h", "--gateways", "1",
               "--computes", "2", "--memory", "512", "--compute-vcpus", "2", "--json"))
    res = json.loads(r.stdout)
    rack = res["rack"]
    assert res["state"] == "reserved"
    assert res["resources"]["compute"] == {"count": 2, "memory_mb": 512, "disk_gb": 5, "vcpus": 2}
    assert res["start"].endswith("Z")

    rows = json.loads(ok(ctl("list", "--json")).stdout)
    assert [x["rack"] for x in rows] == [rack]
    text = ok(ctl("list")).stdout
    assert "RACK" in text and "reserved" in text and "2 cmp×512MB/5GB/2cpu" in text

    shown = ok(ctl("show", str(rack))).stdout
    assert "state reserved" in shown and "event" in shown

    ext = json.loads(ok(ctl("extend", str(rack), "--end", "now+4h", "--json")).stdout)
    assert ext["rack"] == rack and ext["end"].endswith("Z")

    out = ok(ctl("delete", str(rack))).stdout
    assert out.strip() == "rack %d deleted" % rack
    one_line_error(ctl("show", str(rack)), 1, "no such reservation: %d" % rack)


@pytest.mark.parametrize("args,code,needle", [
    (["reserve", "--start", "yesterday", "--end", "now+1h"], 1, "is not a time"),
    (["reserve", "--start", "now", "--end", "now-1h"], 1, "must be after start"),
    (["reserve", "--start", "now", "--end", "now+1h", "--computes", "-2"], 1,
     "compute nodes must be between 0"),
    (["reserve", "--start", "now", "--end", "now+1h", "--memory", "lots"], 1, "whole number"),
    (["reserve", "--start", "now", "--end", "now+1h", "--iscsi", "/data:nope:1"], 1,
     "unknown iSCSI target"),
    (["reserve", "--start", "now", "--end", "now+1h", "--computes", "5", "--memory", "1024"], 1,
     "refused: not enough memory"),
    (["reserve", "--end", "now+1h"], 2, "the following arguments are required: --start"),
    (["show"], 2, "required: rack"),
    (["show", "abc"], 2, "RACK must be a positive integer"),
    (["show", "-5"], 2, "RACK must be a positive integer"),
    (["extend", "1", "--end", "now+1h", "--bogus"], 2, "unrecognized arguments"),
    (["frobnicate"], 2, "invalid choice"),
    (["db", "downgrade"], 2, "invalid choice"),
])
def test_errors_are_one_line_and_write_nothing(ctl, db, args, code, needle):
    before = count_rows(db)
    one_line_error(ctl(*args), code, needle)
    assert count_rows(db) == before


def test_db_upgrade_idempotent_and_version(ctl):
    r = ok(ctl("db", "upgrade", "--json"))
    out = json.loads(r.stdout)
    assert out["applied"] == [] and out["version"] >= 1
    assert ok(ctl("db", "version")).stdout.strip() == str(out["version"])


def test_schema_missing_is_reported(tmp_path, dbinfo):
    import subprocess as sp

    name = dbinfo["name"] + "_empty"
    sp.run(["mariadb", "--no-defaults", "-S", dbinfo["socket"], "-u", "root", "-e",
            "CREATE DATABASE `%s`" % name], check=True)
    try:
        data = {s: dict(v) for s, v in BASE_CONF.items()}
        data.update(db_overrides(dict(dbinfo, name=name)))
        path = tmp_path / "vc.conf"
        write_conf(path, data)
        r = sp.run(["/usr/bin/python3", CTL, "list"], env=dict(os.environ, VC_CONFIG=str(path)),
                   capture_output=True, text=True)
        one_line_error(r, 2, "has schema version 0, this VC needs")
    finally:
        sp.run(["mariadb", "--no-defaults", "-S", dbinfo["socket"], "-u", "root", "-e",
                "DROP DATABASE `%s`" % name])


def test_database_unreachable_is_one_line(tmp_path):
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    data["database"]["unix_socket"] = str(tmp_path / "nothing.sock")
    path = tmp_path / "vc.conf"
    write_conf(path, data)
    r = subprocess.run(["/usr/bin/python3", CTL, "list"], env=dict(os.environ,
                                                                   VC_CONFIG=str(path)),
                       capture_output=True, text=True)
    one_line_error(r, 1, "cannot connect to the database")

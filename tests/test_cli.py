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


def test_target_commands(ctl, db):
    import socket

    with socket.socket() as sk:  # a loopback port where nothing listens
        sk.bind(("127.0.0.1", 0))
        closed = sk.getsockname()[1]
    r = ok(ctl("target", "add", "t1", "--address", "127.0.0.1", "--port", str(closed)))
    assert "vc_ctl.py target trust t1" in r.stdout
    rows = json.loads(ok(ctl("target", "list", "--json")).stdout)
    assert [(t["name"], t["port"], t["host_key_fingerprint"]) for t in rows] == [
        ("t1", closed, None)]
    before = count_rows(db)
    one_line_error(ctl("target", "add", "t1", "--address", "127.0.0.1"), 1, "exists already")
    one_line_error(ctl("target", "add", "t2", "--address", "bad host!"), 1,
                   "address must be a host name")
    one_line_error(ctl("target", "add", "t3", "--address", "h", "--port", "0"), 1,
                   "SSH port must be a number from 1 to 65535")
    one_line_error(ctl("target", "trust", "nosuch"), 1, "no such iSCSI target: nosuch")
    one_line_error(ctl("target", "trust", "t1", "--fingerprint", "md5:00"), 2,
                   "not a SHA256 host key fingerprint")
    one_line_error(ctl("target", "trust", "t1", "--yes"), 1,
                   "iSCSI target t1: cannot reach 127.0.0.1:%d over SSH" % closed)
    one_line_error(ctl("target", "frob"), 2, "invalid choice")
    assert count_rows(db) == before
    ok(ctl("target", "remove", "t1"))
    assert json.loads(ok(ctl("target", "list", "--json")).stdout) == []


def test_vc_vlan_arguments_and_states(ctl, db, tmp_path):
    vlan = os.path.join(ROOT, "sbin", "vc_vlan.py")
    r = ok(ctl("reserve", "--start", "now+1h", "--end", "now+2h", "--json"))
    rack = json.loads(r.stdout)["rack"]

    def run(*args):
        cfg_path = str(tmp_path / "vc.conf")
        return subprocess.run(["/usr/bin/python3", vlan] + list(args),
                              env=dict(os.environ, VC_CONFIG=cfg_path), capture_output=True,
                              text=True, timeout=60)

    one_line_error(run("add"), 2, "the following arguments are required: rack")
    one_line_error(run("join", "1"), 2, "invalid choice")
    one_line_error(run("add", "x"), 2, "RACK must be a positive integer")
    one_line_error(run("add", "99999"), 1, "no such reservation: 99999")
    one_line_error(run("add", str(rack)), 1, "has no addresses (not started)")
    r = run("del", str(rack))
    assert r.returncode == 0 and r.stdout.strip().endswith("(vxlan, 0 command(s))"), r.stderr


def test_target_update_drops_the_pin_on_a_new_address_or_port(ctl, db):
    pin = "SHA256:" + "a" * 43

    def pinned(fp=pin):
        db.transaction(lambda cur: cur.execute(
            "UPDATE vciscsitarget SET host_key_fingerprint = %s WHERE name = 't1'", (fp,)))

    def row():
        t = db.query("SELECT * FROM vciscsitarget WHERE name = 't1'")[0]
        return t["address"], t["port"], t["ssh_user"], t["iscsi_port"], t["host_key_fingerprint"]

    ok(ctl("target", "add", "t1", "--address", "127.0.0.1", "--port", "2201"))
    pinned()
    # the SSH user or the iSCSI port: the same machine, the pin stays
    r = json.loads(ok(ctl("target", "update", "t1", "--user", "vc", "--iscsi-port", "3261",
                          "--json")).stdout)
    assert r["pin_dropped"] is False and r["name"] == "t1"
    assert row() == ("127.0.0.1", 2201, "vc", 3261, pin)
    # a new address: another machine, the pin goes (as on the target page)
    out = ok(ctl("target", "update", "t1", "--address", "192.0.2.9")).stdout
    assert "pinned host key was dropped" in out and "vc_ctl.py target trust t1" in out
    assert row() == ("192.0.2.9", 2201, "vc", 3261, None)
    # a new SSH port: the pin goes too
    pinned()
    r = json.loads(ok(ctl("target", "update", "t1", "--port", "2202", "--json")).stdout)
    assert r["pin_dropped"] is True and row() == ("192.0.2.9", 2202, "vc", 3261, None)
    before = count_rows(db)
    one_line_error(ctl("target", "update", "nosuch", "--port", "22"), 1,
                   "no such iSCSI target: nosuch")
    one_line_error(ctl("target", "update", "t1"), 2, "give at least one of --address")
    one_line_error(ctl("target", "update", "t1", "--port", "0"), 1,
                   "SSH port must be a number from 1 to 65535")
    one_line_error(ctl("target", "update", "t1", "--address", "bad host!"), 1,
                   "address must be a host name")
    assert count_rows(db) == before and row() == ("192.0.2.9", 2202, "vc", 3261, None)


def test_show_says_what_may_be_done_next(ctl, db):
    r = ok(ctl("reserve", "--start", "now+1h", "--end", "now+3h", "--json"))
    rack = json.loads(r.stdout)["rack"]
    # the tests run as root (an admin who may also start it)
    want = (["start"] if os.geteuid() == 0 else []) + ["extend", "stop", "delete"]
    shown = ok(ctl("show", str(rack))).stdout
    assert "next: %s\n" % ", ".join(want) in shown
    assert json.loads(ok(ctl("show", str(rack), "--json")).stdout)["actions"] == want

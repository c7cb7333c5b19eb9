"""sbin/vc_ctl.py as a user runs it: exit codes, one-line errors, --json, nothing written."""

import json
import os
import subprocess

import pytest

from conftest import BASE_CONF, ROOT, count_rows, db_overrides, make_cfg, write_conf

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
        for k in ("VC_NO_REEXEC", "SUDO_UID", "SUDO_USER"):  # root, not whoever ran sudo
            env.pop(k, None)
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
    # audit: numbers (ASCII digits only, bounded length, in range)
    (["show", "١"], 2, "RACK must be a positive integer"),     # acted on rack 1
    (["show", "²"], 2, "RACK must be a positive integer"),
    (["show", "9" * 5000], 2, "RACK must be a positive integer"),
    (["show", "4294967296"], 2, "RACK must be a positive integer"),
    (["extend", "١", "--end", "now+2h"], 2, "RACK must be a positive integer"),
    (["delete", "1 2"], 2, "RACK must be a positive integer"),
    (["key", "remove", "²"], 2, "ID must be a key number"),     # crashed
    (["key", "remove", "١"], 2, "ID must be a key number"),
    (["key", "remove", "9" * 5000], 2, "ID must be a key number"),
    (["target", "add", "t9", "--address", "127.0.0.1", "--port", "²"], 1,
     "SSH port must be a whole number from 1 to 65535, got '²'"),  # crashed
    (["target", "add", "t9", "--address", "127.0.0.1", "--port", "١"], 1,
     "SSH port must be a whole number"),                        # registered port 1
    (["target", "add", "t9", "--address", "127.0.0.1", "--iscsi-port", "9" * 5000], 1,
     "iSCSI port must be a whole number from 1 to 65535"),
    (["target", "update", "t9", "--iscsi-port", "３２６０"], 1, "iSCSI port must be a whole"),
    (["reserve", "--start", "now", "--end", "now+1h", "--computes", "١"], 1,
     "compute nodes must be a whole number"),
    (["reserve", "--start", "now", "--end", "now+1h", "--gateway-memory", "9" * 5000], 1,
     "gateway memory (MB) must be between 64 and 4096"),
    (["reserve", "--start", "now", "--end", "now+1h", "--vcpus", "²"], 1, "whole number"),
    # audit: dates (the start at most [limits] max_days_ahead away; no overflow)
    (["reserve", "--start", "2038-01-19T04:00Z", "--end", "2038-01-19T05:00Z"], 1,
     "at most 365 days ahead"),
    (["reserve", "--start", "now+366d", "--end", "now+367d"], 1, "at most 365 days ahead"),
    (["reserve", "--start", "now-999999d", "--end", "now+1h"], 1, "out of range"),
    (["reserve", "--start", "now", "--end", "now+99999999d"], 1, "end"),
    (["reserve", "--start", "now", "--end", "9999-12-31T23:59"], 1, "out of range"),
    (["reserve", "--start", "0001-01-01T00:00", "--end", "now+1h"], 1, "out of range"),
    (["extend", "1", "--end", "9999-12-31T23:59"], 1, "out of range"),
    (["extend", "1", "--end", "now-999999d"], 1, "out of range"),
    (["cron", "install", "--file", "/nonexistent-dir/sub/vc"], 1,
     "cannot write /nonexistent-dir/sub/vc"),
    (["cron", "uninstall", "--file", "/"], 1, "cannot remove /"),
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
                   "SSH port must be a whole number from 1 to 65535")
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
                   "SSH port must be a whole number from 1 to 65535")
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


def test_mount_points_that_collide_are_refused_in_words(ctl, db):
    """/data and /DATA: MySQL 1062 -> 'internal error' before; /data and /data.: the same IQN."""
    ok(ctl("target", "add", "demo", "--address", "127.0.0.1"))
    before = count_rows(db)
    for second, needle in (("/DATA", "only in case"), ("/data.", "the same iSCSI name"),
                           ("/data/.", "given twice"), ("/.", "not /"),
                           ("/data/../data", "'..'")):
        line = one_line_error(ctl("reserve", "--start", "now+1h", "--end", "now+2h", "--iscsi",
                                  "/data:demo:1", "--iscsi", second + ":demo:1"), 1, needle)
        assert "internal error" not in line
    assert count_rows(db) == before


# ------------------------------------------------------------------------ who is acting
# The identity is the real uid (os.getuid() -> pwd); SUDO_UID counts only when the real uid is 0
# (sudo really ran). SUDO_USER, USER, LOGNAME count never. Fake uids below are existing accounts.
NOBODY, DAEMON, NO_SUCH_UID = 65534, 1, 54321
SPOOF = {"SUDO_USER": "root", "SUDO_UID": "0", "SUDO_GID": "0", "USER": "root",
         "LOGNAME": "root"}


def _ctx(uid, environ, cfg=None):
    from vc.cmd import Context

    return Context("vc_ctl.py", None, cfg=cfg, uid=uid, environ=environ)


def test_identity_is_the_real_uid_not_the_environment(cfg):
    c = _ctx(NOBODY, SPOOF, cfg)
    assert (c.who, c.root, c.admin) == ("nobody", False, False)
    c = _ctx(NOBODY, {"SUDO_USER": "alice"}, cfg)   # alice is an admin in BASE_CONF
    assert (c.who, c.root, c.admin) == ("nobody", False, False)
    # root through sudo: acts as the caller sudo names by uid, with root's rights
    c = _ctx(0, {"SUDO_UID": str(NOBODY), "SUDO_USER": "alice"}, cfg)
    assert (c.who, c.root, c.admin) == ("nobody", True, True)
    # root without sudo (or a SUDO_UID that names nobody known): root
    for env in ({}, {"SUDO_USER": "alice"}, {"SUDO_UID": "x"}, {"SUDO_UID": str(NO_SUCH_UID)},
                {"SUDO_UID": "١"}, {"SUDO_UID": "9" * 5000}):
        c = _ctx(0, env, cfg)
        assert (c.who, c.root, c.admin) == ("root", True, True), env
    # an admin named in [site] admins who is not root
    c = _ctx(DAEMON, {}, make_cfg({"site": {"admins": "root daemon"}}))
    assert (c.who, c.root, c.admin) == ("daemon", False, True)
    # a uid without a user name is refused in words
    from vc.errors import VcError

    with pytest.raises(VcError, match="uid 54321 has no user name"):
        assert _ctx(NO_SUCH_UID, {}, cfg).who
    # the default is the process's own uid
    import pwd

    from vc.cmd import Context

    assert Context("p", None, environ={}).who == pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def as_uid(cfg, db, capsys):
    """Run vc_ctl in this process as a fake uid; returns (exit code, stdout, stderr)."""
    import io

    from vc.cmd import vc_ctl

    def run(uid, *argv, environ=None, config=None):
        out = io.StringIO()
        capsys.readouterr()
        rc = vc_ctl.main(list(argv), cfg=config or cfg, uid=uid,
                         environ=SPOOF if environ is None else environ, out=out)
        err = capsys.readouterr().err
        return rc, out.getvalue(), err

    return run


def _refused(r, needle, code=1):
    rc, out, err = r
    assert rc == code, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err and "internal error" not in err
    return lines[0]


def test_an_ordinary_user_with_sudo_variables_is_not_root(as_uid, db, cfg, tmp_path):
    from vc import reservations as R
    from vc import timeutil

    rack = R.create(cfg, db, {"owner": "root", "start": "now+1h", "end": "now+2h"},
                    timeutil.utcnow())
    ok_rc, out, _ = as_uid(0, "target", "add", "t1", "--address", "127.0.0.1", environ={})
    assert ok_rc == 0, out
    before = count_rows(db)
    cron = tmp_path / "vc.cron"
    for argv, needle in [
            (["target", "add", "t2", "--address", "127.0.0.1"], "only an admin"),
            (["target", "update", "t1", "--port", "23"], "only an admin"),
            (["target", "remove", "t1"], "only an admin"),
            (["target", "trust", "t1", "--yes"], "only an admin"),
            (["target", "list"], "only an admin"),
            (["target", "key"], "only root"),
            (["cron", "install", "--file", str(cron)], "only root"),
            (["cron", "uninstall", "--file", str(cron)], "only root"),
            (["db", "upgrade"], "only root"),
            (["start", str(rack)], "only root"),
            (["stop", str(rack)], "only root"),
            (["status"], "only root"),
            (["reserve", "--start", "now+3h", "--end", "now+4h", "--owner", "root"],
             "only an admin"),
            (["extend", str(rack), "--end", "now+3h"], "belongs to root"),
            (["delete", str(rack)], "belongs to root"),
            (["show", str(rack)], "belongs to root"),
            (["dump", str(rack)], "belongs to root"),
            (["key", "list", "--owner", "root"], "only an admin"),
            (["key", "list", "--all"], "only an admin"),
            (["key", "add", "-", "--owner", "root"], "only an admin")]:
        _refused(as_uid(NOBODY, *argv), needle)
    assert count_rows(db) == before and not cron.exists()
    # what an ordinary user may do, as itself whatever SUDO_USER says
    rc, out, err = as_uid(NOBODY, "reserve", "--start", "now+3h", "--end", "now+4h", "--json")
    assert rc == 0, err
    mine = json.loads(out)
    assert mine["owner"] == "nobody"
    ev = db.query("SELECT actor FROM vcevent WHERE rack = %s", (mine["rack"],))
    assert [e["actor"] for e in ev] == ["nobody"]
    assert as_uid(NOBODY, "extend", str(mine["rack"]), "--end", "now+5h")[0] == 0
    assert as_uid(NOBODY, "show", str(mine["rack"]))[0] == 0
    assert as_uid(NOBODY, "list")[0] == 0
    assert as_uid(NOBODY, "db", "version")[0] == 0
    assert as_uid(NOBODY, "cron", "show")[0] == 0
    rc, out, _ = as_uid(NOBODY, "delete", str(mine["rack"]))
    assert rc == 0 and "deleted" in out
    # the sudo variables of root's environment count only for root
    rc, out, err = as_uid(0, "reserve", "--start", "now+3h", "--end", "now+4h", "--json",
                          environ={"SUDO_UID": str(NOBODY), "SUDO_USER": "mallory"})
    assert rc == 0 and json.loads(out)["owner"] == "nobody", err


def test_an_admin_that_is_not_root(as_uid, db, migrated, tmp_path):
    """[site] admins change every reservation and the targets (as on the pages); what touches
    the host (start, stop, status, cron, db upgrade, the frontend key) needs root."""
    from conftest import db_overrides
    from vc import reservations as R
    from vc import timeutil

    acfg = make_cfg(dict(db_overrides(migrated), site={"admins": "root daemon"}))
    rack = R.create(acfg, db, {"owner": "bob", "start": "now+1h", "end": "now+2h"},
                    timeutil.utcnow())
    env = {}
    for argv in (["show", str(rack)], ["dump", str(rack)], ["extend", str(rack), "--end",
                                                             "now+3h"],
                 ["target", "add", "t1", "--address", "127.0.0.1"], ["target", "list"],
                 ["target", "update", "t1", "--port", "2222"], ["key", "list", "--all"],
                 ["reserve", "--start", "now+1h", "--end", "now+2h", "--owner", "carol"],
                 ["target", "remove", "t1"], ["delete", str(rack)]):
        rc, out, err = as_uid(DAEMON, *argv, environ=env, config=acfg)
        assert rc == 0 or "no addresses" in err, (argv, err)
    cron = tmp_path / "vc.cron"
    for argv in (["start", "1"], ["stop", "1"], ["status"], ["cron", "install", "--file",
                                                             str(cron)],
                 ["db", "upgrade"], ["target", "key"]):
        _refused(as_uid(DAEMON, *argv, environ=env, config=acfg), "only root")
    ev = db.query("SELECT actor FROM vcevent ORDER BY id")
    assert {e["actor"] for e in ev} >= {"daemon"}


def test_vc_vlan_and_vc_cron_need_root(cfg, db, capsys):
    from vc.cmd import vc_cron, vc_vlan

    for main, argv in ((vc_vlan.main, ["add", "1"]), (vc_cron.main, ["--dry-run"])):
        capsys.readouterr()
        rc = main(argv, cfg=cfg, uid=NOBODY, environ=SPOOF)
        _refused((rc, "", capsys.readouterr().err), "only root")


@pytest.fixture
def throwaway_user():
    """A real ordinary account (removed afterwards) and a config it can read."""
    import shutil
    import tempfile
    import uuid

    if os.geteuid() != 0:
        pytest.fail("this test creates a user: run the tests as root")
    name = "vct" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "--user-group", name], check=True, capture_output=True)
    d = tempfile.mkdtemp(prefix="vc-user-test-")
    os.chmod(d, 0o755)
    try:
        yield name, d
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def test_sudo_user_root_does_not_make_an_ordinary_account_root(throwaway_user, migrated, db):
    """The audit's probe for real: an ordinary account with a readable config runs
    sbin/vc_ctl.py with SUDO_USER=root (and SUDO_UID=0) in its environment."""
    import pwd

    name, d = throwaway_user
    uid = pwd.getpwnam(name).pw_uid
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    data.update(db_overrides(migrated))
    data["site"]["timezone"] = "UTC"
    path = os.path.join(d, "vc.conf")
    write_conf(path, data)
    os.chmod(path, 0o644)

    def run(*args, user=name):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "VC_CONFIG": path, "SUDO_USER": "root",
               "SUDO_UID": "0", "SUDO_GID": "0", "USER": "root", "LOGNAME": "root",
               "HOME": d}
        return subprocess.run(["runuser", "-u", user, "--", "/usr/bin/python3", CTL] +
                              list(args), env=env, capture_output=True, text=True, timeout=60,
                              cwd=d)

    # it really runs as that user, and it can read the config and reach the database
    r = ok(run("list", "--json"))
    assert json.loads(r.stdout) == []
    root_rack = json.loads(ok(run("reserve", "--start", "now+1h", "--end", "now+2h", "--json",
                                  user="root")).stdout)["rack"]
    before = count_rows(db)
    one_line_error(run("target", "add", "evil", "--address", "127.0.0.1"), 1,
                   "target add: only an admin may change iSCSI targets")
    one_line_error(run("extend", str(root_rack), "--end", "now+3h"), 1,
                   "reservation %d belongs to root" % root_rack)
    one_line_error(run("reserve", "--start", "now+1h", "--end", "now+2h", "--owner", "root"), 1,
                   "only an admin may reserve for another owner")
    one_line_error(run("start", str(root_rack)), 1, "only root may start or stop clusters")
    one_line_error(run("db", "upgrade"), 1, "only root")
    assert count_rows(db) == before
    assert db.query("SELECT COUNT(*) AS n FROM vciscsitarget")[0]["n"] == 0
    # as itself, it may book: owner and event actor are its own name
    mine = json.loads(ok(run("reserve", "--start", "now+3h", "--end", "now+4h",
                             "--json")).stdout)
    assert mine["owner"] == name
    assert [e["actor"] for e in db.query("SELECT actor FROM vcevent WHERE rack = %s",
                                         (mine["rack"],))] == [name]
    assert uid != 0

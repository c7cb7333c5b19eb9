"""Pre-flight (vc/preflight.py): the checks over recording executors, the stored result, the
tick's once-per-reservation run with its mail (an injected sender), and ``vc_ctl.py preflight``."""

import io
import json
from datetime import timedelta

import pytest

from conftest import NOW, count_rows, db_overrides, make_cfg
from fakes import RecordingExecutor
from test_iscsi import BD, GIB, FakeHost
from vc import preflight
from vc import reservations as R
from vc.cmd import vc_ctl
from vc.errors import VcError
from vc.remote import TargetUnreachable

M = timedelta(minutes=1)
MEMINFO = "MemTotal:       8388608 kB\nMemFree:        1000 kB\n"


@pytest.fixture
def pcfg(migrated, tmp_path):
    o = db_overrides(migrated)
    # h1: the libvirt test driver (nothing to reach); h2: a remote host behind qemu+ssh
    o["host:h2"] = {"uri": "qemu+ssh://root@h2.invalid/system", "memory_mb": "4096",
                    "vcpus": "8"}
    o["site"] = {"state_dir": str(tmp_path / "state"), "timezone": "UTC",
                 "admins": "root alice"}
    o["storage"] = {"backing_dir": BD}
    o["virt"] = {"kernel": "/srv/k/vmlinux", "initrd": "/srv/k/initrd.img",
                 "gateway_image": "/srv/k/base.qcow2", "compute_image": "/srv/k/base.qcow2"}
    return make_cfg(o)


def add_target(db, name="t1"):
    db.transaction(lambda cur: cur.execute(
        "INSERT INTO vciscsitarget (name, address, created_at, host_key_fingerprint) "
        "VALUES (%s, %s, %s, %s)", (name, "192.0.2.7", "2026-01-01", "SHA256:pinned")))


def book(cfg, db, start, volumes=(), owner="bob"):
    return R.create(cfg, db, {"owner": owner, "start": start.isoformat(),
                              "end": (start + 2 * timedelta(hours=1)).isoformat(),
                              "gateways": "1", "computes": "1", "volumes": list(volumes)}, NOW)


class Host(RecordingExecutor):
    """A physical host: /proc/meminfo and ``test -r FILE`` for the files it holds."""

    def __init__(self, name, files=(), meminfo=MEMINFO):
        super().__init__(name)
        self.files, self.meminfo = set(files), meminfo

    def respond(self, argv):
        if argv[:2] == ["cat", "/proc/meminfo"]:
            return self.meminfo
        if argv[:2] == ["test", "-r"]:
            if argv[2] not in self.files:
                raise VcError("exit 1")
            return ""
        raise AssertionError("unexpected command %r" % argv)


FILES = ("/srv/k/base.qcow2", "/srv/k/vmlinux", "/srv/k/initrd.img")


def test_all_good_is_no_problem_and_nothing_changes(pcfg, db):
    add_target(db)
    rack = book(pcfg, db, NOW + timedelta(hours=1), ["/data:t1:10"])
    h2, t1 = Host("h2", FILES), FakeHost(free=100 * GIB)
    seen = []
    before = count_rows(db)
    problems = preflight.run(pcfg, db, rack, NOW, host_exec=lambda n: h2,
                             target_exec=lambda t: seen.append(t) or t1)
    assert problems == []
    assert count_rows(db) == before                 # run() stores nothing
    assert h2.calls[0] == ["cat", "/proc/meminfo"]
    assert sorted(c[2] for c in h2.calls[1:]) == sorted(FILES)
    # the target is reached with its pinned key; only the read-only probe runs there
    assert [(t.name, t.address, t.fingerprint) for t in seen] == [
        ("t1", "192.0.2.7", "SHA256:pinned")]
    assert all(c[0] in ("mkdir", "chmod", "df", "find", "tgtadm") for c in t1.calls)
    assert not t1.files and not t1.targets


def test_each_problem_names_its_host_or_target(pcfg, db):
    add_target(db)
    add_target(db, "t2")
    rack = book(pcfg, db, NOW + timedelta(hours=1), ["/data:t1:50", "/big:t2:10"])
    # h2 has less memory than promised and lacks the initrd; t1 has no room; t2 refuses SSH
    h2 = Host("h2", FILES[:2], meminfo="MemTotal: 1048576 kB\n")
    t1 = FakeHost(free=20 * GIB)

    def target_exec(t):
        if t.name == "t2":
            raise TargetUnreachable("t2", "cannot reach root@192.0.2.7:22 over SSH: connection "
                                    "refused (is sshd running?)")
        return t1

    problems = preflight.run(pcfg, db, rack, NOW, host_exec=lambda n: h2,
                             target_exec=target_exec)
    got = [(p.kind, p.where) for p in problems]
    assert got == [("host", "h2"), ("image", "h2"), ("target", "t1"), ("target", "t2")], problems
    text = [str(p) for p in problems]
    assert "1024 MB of memory but [host:h2] memory_mb = 4096" in text[0]
    assert "/srv/k/initrd.img is missing" in text[1]
    assert "not enough space" in text[2]
    assert "connection refused" in text[3] and "\n" not in text[3]


def test_an_unreachable_host_and_a_short_pool(pcfg, db):
    rack = book(pcfg, db, NOW + timedelta(hours=1))

    def host_exec(name):
        raise VcError("ssh: connect to host h2.invalid port 22: Connection refused")

    problems = preflight.run(pcfg, db, rack, NOW, host_exec=host_exec)
    assert [(p.kind, p.where) for p in problems] == [("host", "h2")]
    assert "unreachable: ssh: connect to host h2.invalid" in problems[0].detail
    # both hosts disabled: the reservation no longer fits
    db.transaction(lambda cur: cur.executemany(
        "INSERT INTO vchost (name, uri, memory_mb, vcpus, enabled, updated_at) VALUES "
        "(%s, 'x', 1, 1, 0, '2026-01-01') ON DUPLICATE KEY UPDATE enabled = 0",
        [("h1",), ("h2",)]))
    problems = preflight.run(pcfg, db, rack, NOW, host_exec=host_exec)
    assert [(p.kind, p.where) for p in problems] == [("capacity", "pools")]
    assert "no physical host is enabled" in problems[0].detail


def test_record_and_last(pcfg, db):
    rack = book(pcfg, db, NOW + timedelta(hours=1))
    assert preflight.last(db, rack) is None
    preflight.record(db, rack, NOW, preflight.BOOKING, [preflight.Problem("host", "h2", "x")])
    got = preflight.last(db, rack)
    assert got == {"checked_at": NOW, "trigger": "booking",
                   "problems": [{"kind": "host", "where": "h2", "detail": "x"}]}
    preflight.record(db, rack, NOW + M, preflight.MANUAL, [])
    assert preflight.last(db, rack)["problems"] == []
    with pytest.raises(VcError, match="no such reservation"):
        preflight.run(pcfg, db, 999, NOW)


def test_the_tick_runs_it_once_at_preflight_minutes_and_mails_problems(pcfg, db):
    start = NOW + timedelta(hours=1)
    rack = book(pcfg, db, start)
    good = book(pcfg, db, start + 10 * M, owner="alice")
    mails = []
    h2 = {"now": Host("h2", ())}                   # no kernel/initrd on h2 at first

    def send(cfg, recipients, subject, body):
        mails.append((recipients, subject, body))

    def tick(now):
        return preflight.tick(pcfg, db, now, 15, send=send, host_exec=lambda n: h2["now"])

    # 16 minutes before: not yet
    assert tick(start - 16 * M) == []
    assert preflight.last(db, rack) is None
    # 15 minutes before: once, problems stored and mailed to the owner and the admins
    done = tick(start - 15 * M)
    assert [r for r, _ in done] == [rack]
    assert [p.kind for p in done[0][1]] == ["image", "image", "image"]
    assert preflight.last(db, rack)["trigger"] == "tick"
    assert len(mails) == 1
    recipients, subject, body = mails[0]
    assert [a.split("@")[0] for a in recipients] == ["bob", "root", "alice"]
    assert "reservation %d" % rack in subject and "3 problem(s)" in subject
    assert "image h2: /srv/k/vmlinux is missing" in body
    # the next minutes: not again, even after a manual or booking run in between
    preflight.record(db, rack, start - 14 * M, preflight.MANUAL, [])
    assert [r for r, _ in tick(start - 14 * M)] == []
    # the other reservation comes due 10 minutes later; no problems: no mail
    h2["now"] = Host("h2", FILES)
    assert [r for r, _ in tick(start - 5 * M)] == [good]
    assert len(mails) == 1
    assert preflight.last(db, good)["problems"] == []
    # started or past: never
    assert preflight.due(db, start + M, 15) == []
    assert preflight.due(db, start - 15 * M, 0) == []


def test_a_failing_sender_or_check_does_not_stop_the_tick(pcfg, db):
    start = NOW + timedelta(hours=1)
    r1 = book(pcfg, db, start)
    r2 = book(pcfg, db, start + M)

    def host_exec(name):
        raise RuntimeError("boom")                  # not even a VcError

    def send(*a):
        raise OSError("smtp down")

    done = preflight.tick(pcfg, db, start - M, 15, send=send, host_exec=host_exec)
    assert [r for r, _ in done] == [r1, r2]
    assert all(p[0].kind == "host" and "boom" in p[0].detail for _, p in done)
    assert preflight.due(db, start - M, 15) == []


def test_the_scheduler_tick_runs_the_due_preflights(pcfg, db):
    from test_scheduler import Clock
    from vc.scheduler import Scheduler

    start = NOW + timedelta(hours=1)
    rack = book(pcfg, db, start)
    clock = Clock(start - 15 * M)
    mails = []
    s = Scheduler(pcfg, db, ctl=None, clock=clock, sleep=clock.sleep, lookahead=False)
    s.preflight_kw = {"send": lambda cfg, to, subj, body: mails.append(to),
                      "host_exec": lambda n: Host("h2", ())}
    s.tick()
    assert preflight.last(db, rack)["trigger"] == "tick"
    assert [[a.split("@")[0] for a in m] for m in mails] == [["bob", "root", "alice"]]
    s.tick()
    assert len(mails) == 1


# ------------------------------------------------------------------------ the command line
def ctl_run(cfg, *argv):
    out = io.StringIO()
    rc = vc_ctl.main(list(argv), cfg=cfg, now=NOW, out=out, uid=0, environ={})
    return rc, out.getvalue()


@pytest.fixture
def ccfg(migrated, tmp_path):
    """h1 only (the test driver): nothing to reach, so the real checks run without a network."""
    o = db_overrides(migrated)
    o["site"] = {"state_dir": str(tmp_path / "state"), "timezone": "UTC"}
    return make_cfg(o)


def test_vc_ctl_preflight_ok_show_and_json(ccfg, db):
    rack = book(ccfg, db, NOW + timedelta(hours=1))
    rc, out = ctl_run(ccfg, "preflight", str(rack))
    assert (rc, out) == (0, "rack %d: pre-flight ok\n" % rack)
    rc, out = ctl_run(ccfg, "preflight", str(rack), "--json")
    got = json.loads(out)
    assert rc == 0 and got["ok"] is True and got["problems"] == []
    rc, out = ctl_run(ccfg, "show", str(rack), "--json")
    shown = json.loads(out)["preflight"]
    assert shown["trigger"] == "manual" and shown["problems"] == []
    rc, out = ctl_run(ccfg, "show", str(rack))
    assert "preflight " in out and ": ok" in out


def test_vc_ctl_preflight_problems_exit_1(ccfg, db, migrated, tmp_path):
    # a host behind ssh on a loopback port where nothing listens
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        closed = sk.getsockname()[1]
    o = db_overrides(migrated)
    o["site"] = {"state_dir": str(tmp_path / "state"), "timezone": "UTC"}
    o["host:h2"] = {"uri": "qemu+ssh://root@127.0.0.1:%d/system" % closed,
                    "memory_mb": "4096", "vcpus": "8"}
    cfg = make_cfg(o)
    rack = book(cfg, db, NOW + timedelta(hours=1))
    rc, out = ctl_run(cfg, "preflight", str(rack), "--json")
    got = json.loads(out)
    assert rc == 1 and got["ok"] is False
    assert [(p["kind"], p["where"]) for p in got["problems"]] == [("host", "h2")]
    assert "unreachable" in got["problems"][0]["detail"]
    rc, out = ctl_run(cfg, "show", str(rack))
    assert "1 problem(s)" in out and "problem host h2: unreachable" in out


def test_vc_ctl_reserve_runs_it_and_warns(ccfg, db, migrated, tmp_path):
    o = db_overrides(migrated)
    o["site"] = {"state_dir": str(tmp_path / "state"), "timezone": "UTC"}
    o["host:h2"] = {"uri": "qemu+ssh://root@127.0.0.1:1/system", "memory_mb": "4096",
                    "vcpus": "8"}
    cfg = make_cfg(o)
    rc, out = ctl_run(cfg, "reserve", "--start", "now+1h", "--end", "now+2h")
    assert rc == 0 and "reserved rack" in out          # the booking stands
    assert "warning: pre-flight: host h2: unreachable" in out
    rack = R.list_all(db)[0]["rack"]
    assert preflight.last(db, rack)["trigger"] == "booking"


@pytest.mark.parametrize("argv,code,needle", [
    (["preflight", "abc"], 2, "RACK must be a positive integer"),
    (["preflight", "0"], 2, "RACK must be a positive integer"),
    (["preflight", "4242"], 1, "no such reservation"),
    (["preflight"], 2, "the following arguments are required"),
])
def test_vc_ctl_preflight_bad_input(ccfg, db, capsys, argv, code, needle):
    before = count_rows(db)
    rc, out = ctl_run(ccfg, *argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code and out == ""
    assert len(err) == 1 and needle in err[0], err
    assert count_rows(db) == before


# ------------------------------------------------------------------------ the pages
def test_the_register_page_runs_it_and_the_reservation_page_shows_the_last(migrated, db,
                                                                            tmp_path):
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "web"))
    from webutil import Client, make_app, web_config
    from test_app import register_form

    cfg = web_config(migrated, tmp_path)
    client = Client(make_app(cfg))
    r = client.post("/register", register_form(), query="format=json")
    assert r.status == 201 and r.json()["preflight"] == []
    rack = r.json()["rack"]
    got = preflight.last(db, rack)
    assert got["trigger"] == preflight.BOOKING_POOLS and got["problems"] == []
    page = client.get("/reservations/%d" % rack)
    assert 'id="preflight"' in page.text and "(booking (pools)): ok" in page.text
    preflight.record(db, rack, NOW, preflight.TICK,
                     [preflight.Problem("target", "t1", "cannot reach <t1> over SSH")])
    page = client.get("/reservations/%d" % rack)
    assert "1 problem(s)" in page.text
    assert "target t1: cannot reach &lt;t1&gt; over SSH" in page.text   # escaped
    shown = client.get("/reservations/%d" % rack, query="format=json").json()
    assert shown["reservation"]["preflight"]["problems"][0]["where"] == "t1"


def test_the_page_shows_it_to_owner_and_admins_only(migrated, db, tmp_path):
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "web"))
    from webutil import Client, make_app, web_config

    cfg = web_config(migrated, tmp_path)
    rack = book(cfg, db, NOW + timedelta(hours=1))
    path = os.path.join(cfg.site.state_dir, "images", "base.qcow2")
    preflight.record(db, rack, NOW, preflight.TICK,
                     [preflight.Problem("image", "h1", "%s is missing" % path)])
    app = make_app(cfg, auth="htpasswd")
    admin = Client(app, user="alice").get("/reservations/%d" % rack).text
    assert "image h1: %s is missing" % path in admin
    owner = Client(app, user="bob").get("/reservations/%d" % rack).text
    assert "1 problem(s)" in owner and "base.qcow2 is missing" in owner
    assert path not in owner and "image h1:" not in owner       # the frontend's internals
    other = Client(app, user="carol").get("/reservations/%d" % rack).text
    assert 'id="preflight"' not in other and "problem(s)" not in other

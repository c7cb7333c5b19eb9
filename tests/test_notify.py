"""Notices (vc.notify) driven by the tick and a fake clock, on libvirt's test driver and the
real MariaDB: the warnings before the end, each once — across ticks, a restart of the tick and
a second frontend's tick —, fresh ones for an extended end, failed and stopped-early notices,
mail failures retried and never stopping the tick; the wall's SSH command; the config's
refusals. The mail really goes to a local SMTP server (tests/smtpsink.py) where a test says
so, else to a recorder."""

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from conftest import NOW, ROOT, db_overrides, make_cfg, write_conf, BASE_CONF
from test_ctl import Recorder, TESTNODE
from test_scheduler import Clock, book, state
from vc import ctl as vctl
from vc import designer, notify, steps
from vc import reservations as R
from vc.errors import ConfigError
from vc.mail import MailError
from vc.scheduler import Scheduler

M = timedelta(minutes=1)


class Mailer:
    """``send(cfg, recipients, subject, body)`` that records; ``fail`` = how many calls fail."""

    def __init__(self, fail=0):
        self.sent, self.fail, self.calls = [], fail, 0

    def __call__(self, cfg, to, subject, body):
        self.calls += 1
        if self.fail:
            self.fail -= 1
            raise MailError("mail to %s via SMTP 127.0.0.1:1 failed: connection refused"
                            % ", ".join(to))
        self.sent.append((list(to), subject, body))


class Walls:
    def __init__(self):
        self.sent = []

    def __call__(self, rack, text):
        self.sent.append((rack, text))
        return {"gateway-%d-0" % rack: None}


@pytest.fixture
def world(migrated, db, tmp_path):
    o = db_overrides(migrated)
    o["host:h1"] = {"uri": TESTNODE, "memory_mb": "4096", "vcpus": "8"}
    o["site"] = {"state_dir": str(tmp_path / "state"), "timezone": "UTC", "admins": "root carol"}
    o["virt"] = {"name_prefix": "vt", "boot_timeout": "5", "shutdown_timeout": "1"}
    o["network"] = {"isolation": "none"}
    # an SMTP host (the recorder below stands in for it): this machine has no sendmail
    o["notify"] = {"mail_domain": "example.org", "smtp_host": "127.0.0.1"}
    o["cron"] = {"preboot_minutes": "0"}   # starts at the start time (tests/test_preboot.py)
    cfg = make_cfg(o)
    clock = Clock(NOW)
    rec = Recorder()
    c = vctl.Ctl(cfg, db, execute=rec, clock=clock, actor="test")
    w = type("World", (), {})()
    w.cfg, w.ctl, w.clock, w.rec, w.db = cfg, c, clock, rec, db
    w.mail, w.wall = Mailer(), Walls()
    w.sched = lambda: Scheduler(cfg, db, c, clock=clock, sleep=clock.sleep, lookahead=False,
                                notifier=notify.Notifier(cfg, db, clock=clock,
                                                         send_mail=w.mail, wall=w.wall))
    w.s = w.sched()
    return w


def at(w, minute, sched=None):
    w.clock.t = NOW + minute * M
    report = (sched or w.s).tick()
    # the test driver's guests never answer SSH: say they did, or each tick would probe them
    # (0.5 s a node) for readiness
    up(w.db, None)
    return report


def subjects(w):
    return [s for _to, s, _b in w.mail.sent]


def up(db, rack):
    """The nodes answered SSH (the wall goes to nodes that are up)."""
    db.transaction(lambda cur: cur.execute(
        "UPDATE vcnode SET readiness = 'up'" + (" WHERE rack = %d" % rack if rack else "")))


# ------------------------------------------------------------------------ pure
@pytest.mark.parametrize("left_min, sent, want", [
    (70, [], None),          # nothing passed yet
    (60, [], 3600),          # the 60 min threshold, right at it
    (59.5, [], 3600),
    (59.5, [3600], None),    # sent already
    (10, [3600], 600),
    (5, [], 600),            # a missed tick: the smallest passed one only, not a burst
    (5, [600], None),
    (0.9, [3600, 600], 60),
    (0, [], None),           # ended: the stop, not a warning
    (-1, [], None),
])
def test_due_warning(left_min, sent, want):
    start = NOW - timedelta(hours=5)
    end = NOW + timedelta(minutes=left_min)
    assert notify.due_warning(start, end, NOW, (3600, 600, 60), sent) == want


def test_no_warning_as_long_as_the_reservation():
    # a 30-minute booking: no "ends in 30 minutes" at its start; the 10 min warning comes
    start, end = NOW, NOW + 30 * M
    assert notify.due_warning(start, end, NOW, (3600, 600, 60), []) is None
    assert notify.due_warning(start, end, NOW + 20 * M, (3600, 600, 60), []) == 600


def test_left_text():
    assert [notify.left_text(s) for s in (599.7, 60.2, 59.6, 20, 3600, 7260, 86400 * 3)] == [
        "10 minutes", "1 minute", "1 minute", "less than a minute", "60 minutes", "2 h 1 min",
        "3 days"]


# ------------------------------------------------------------------------ the tick
def test_each_warning_once_across_ticks_and_restarts(world, db):
    w = world
    rack = book(w.cfg, db, NOW, NOW + timedelta(hours=2), computes="1")
    at(w, 0)
    assert state(db, rack) == "running"
    up(db, rack)
    sent_at = {}
    for minute in range(1, 122):
        # a restart of the tick (a new process: new Scheduler and Notifier) every 7 minutes, and
        # the same minute ticked twice now and then (cron and a manual run)
        s = w.sched() if minute % 7 == 0 else None
        before = len(w.mail.sent)
        at(w, minute, s)
        if minute % 5 == 0:
            at(w, minute)
        for subj in subjects(w)[before:]:
            sent_at[subj] = minute
    # exactly three, at the first tick at or after end - 60, 10, 1 min
    assert sorted(sent_at.values()) == [60, 110, 119], sent_at
    assert len(w.mail.sent) == 3
    end = "2026-12-01 02:00 UTC"
    assert subjects(w) == ["[VC] rack %d ends in 60 minutes (%s)" % (rack, end),
                           "[VC] rack %d ends in 10 minutes (%s)" % (rack, end),
                           "[VC] rack %d ends in 1 minute (%s)" % (rack, end)]
    to, _s, body = w.mail.sent[1]
    assert to == ["bob@example.org"]
    assert "rack %d ends in 10 minutes, at %s" % (rack, end) in body and "vc-lease extend" in body
    # the wall, once per warning, with the text users see on their terminals
    assert [r for r, _t in w.wall.sent] == [rack] * 3
    assert w.wall.sent[1][1].startswith("VC: reservation ends in 10 minutes (at %s)\n"
                                        "extend with: vc-lease extend 30m" % end)
    assert all(len(line) < 80 for _r, t in w.wall.sent for line in t.splitlines())
    assert state(db, rack) == "stopped"
    rows = db.query("SELECT kind, done, mail_at IS NOT NULL AS m, wall_at IS NOT NULL AS wl "
                    "FROM vcnotices WHERE rack = %s ORDER BY id", (rack,))
    assert [(r["kind"], r["done"], r["m"], r["wl"]) for r in rows] == [
        ("before:3600", 1, 1, 1), ("before:600", 1, 1, 1), ("before:60", 1, 1, 1)]


def test_an_extended_end_gets_fresh_warnings(world, db):
    w = world
    rack = book(w.cfg, db, NOW, NOW + timedelta(hours=2), computes="0")
    for minute in (0, 60, 110):
        at(w, minute)
    assert len(w.mail.sent) == 2
    # 01:55: extended by 30 minutes; the next tick tells the new end, then 10 and 1 min before it
    w.clock.t = NOW + 115 * M
    R.extend(w.cfg, db, rack, (NOW + timedelta(minutes=150)).isoformat(), w.clock.t, "bob")
    for minute in range(115, 152):
        at(w, minute)
    assert subjects(w)[2:] == [
        "[VC] rack %d ends in 35 minutes (2026-12-01 02:30 UTC)" % rack,
        "[VC] rack %d ends in 10 minutes (2026-12-01 02:30 UTC)" % rack,
        "[VC] rack %d ends in 1 minute (2026-12-01 02:30 UTC)" % rack]
    assert state(db, rack) == "stopped"


def test_a_mail_failure_is_retried_and_never_stops_the_tick(world, db):
    w = world
    w.mail.fail = 2
    rack = book(w.cfg, db, NOW, NOW + timedelta(minutes=30), computes="0")
    other = book(w.cfg, db, NOW + 21 * M, NOW + 40 * M, computes="0")
    at(w, 0)
    r = at(w, 20)          # the 10 min warning: the mail fails; the tick goes on
    assert w.mail.sent == [] and all(a.ok for a in r.actions)
    r = at(w, 21)          # retried, fails again; the other reservation still starts
    assert (other, "start") in [(a.rack, a.verb) for a in r.actions]
    assert w.mail.sent == [] and state(db, other) == "running"
    at(w, 22)              # the third attempt goes through
    at(w, 23)
    assert subjects(w) == ["[VC] rack %d ends in 8 minutes (2026-12-01 00:30 UTC)" % rack]
    assert len(w.wall.sent) == 1   # the wall went out once, at the first attempt
    ev = [e["reason"] for e in db.query("SELECT reason FROM vcevent WHERE rack = %s AND "
                                        "reason LIKE 'notice%%' ORDER BY id", (rack,))]
    assert len(ev) == 2 and all("mail failed (attempt" in e and "retried next tick" in e
                                for e in ev), ev
    assert "connection refused" in ev[0]


def test_mail_given_up_after_five_attempts(world, db):
    w = world
    w.mail.fail = 100
    rack = book(w.cfg, db, NOW, NOW + timedelta(hours=2), computes="0")
    for minute in range(0, 70):
        at(w, minute)
    assert w.mail.calls == notify.MAX_ATTEMPTS
    row = db.query("SELECT done, attempts FROM vcnotices WHERE rack = %s", (rack,))[0]
    assert row["done"] == 1 and row["attempts"] == 5
    assert db.query("SELECT COUNT(*) AS n FROM vcevent WHERE rack = %s AND reason LIKE "
                    "'%%given up%%'", (rack,))[0]["n"] == 1


def test_a_warning_not_sent_before_its_end_is_dropped(world, db):
    w = world
    w.mail.fail = 100
    rack = book(w.cfg, db, NOW, NOW + timedelta(minutes=15), computes="0")
    for minute in range(0, 17):
        at(w, minute)
    # 10 min warning at 5 (fails 5 times: given up at 9); the 1 min one at 14 fails, and at the
    # end it is dropped rather than sent late
    rows = db.query("SELECT kind, done, mail_at FROM vcnotices WHERE rack = %s ORDER BY id",
                    (rack,))
    assert [(r["kind"], r["done"], r["mail_at"]) for r in rows] == [
        ("before:600", 1, None), ("before:60", 1, None)]
    assert state(db, rack) == "stopped"


def test_a_retried_warning_gives_way_to_the_next(world, db):
    w = world
    rack = book(w.cfg, db, NOW, NOW + timedelta(minutes=15), computes="0")
    at(w, 0)
    w.mail.fail = 100
    at(w, 5)                # the 10 min warning fails ...
    w.mail.fail = 0
    w.s.notifier.run(NOW + 14 * M + timedelta(seconds=30))   # ... until the 1 min one is due
    assert subjects(w) == ["[VC] rack %d ends in 1 minute (2026-12-01 00:15 UTC)" % rack]
    rows = db.query("SELECT kind, done, mail_at IS NULL AS unsent FROM vcnotices ORDER BY id")
    assert [(r["kind"], r["done"], r["unsent"]) for r in rows] == [
        ("before:600", 1, 1), ("before:60", 1, 0)]


def test_failed_start_is_mailed_once_to_owner_and_admins(world, db):
    w = world
    w.rec.fail_on = "create"
    rack = book(w.cfg, db, NOW, NOW + timedelta(hours=3), computes="0")
    for minute in range(0, 12):    # the start fails, is retried after 1, 2, 4 min and fails
        at(w, minute)
    assert state(db, rack) == "failed"
    assert db.query("SELECT COUNT(*) AS n FROM vcevent WHERE rack = %s AND to_state = "
                    "'failed'", (rack,))[0]["n"] >= 3
    (to, subj, body), = w.mail.sent
    assert subj == "[VC] rack %d: start failed" % rack
    assert to == ["bob@example.org", "root@example.org", "carol@example.org"]
    assert "start failed at step disks" in body and "simulated failure" in body
    assert w.wall.sent == []


def test_stop_now_is_a_stopped_early_notice_and_wall(world, db):
    w = world
    rack = book(w.cfg, db, NOW, NOW + timedelta(hours=3), computes="1")
    at(w, 0)
    up(db, rack)
    # the owner's "stop now" (page, vc-lease release): the next tick tells, then stops
    R.stop_now(w.cfg, db, rack, NOW + 30 * M, "alice", admin=True)
    r = at(w, 31)
    assert (rack, "stop") in [(a.rack, a.verb) for a in r.actions]
    (to, subj, body), = w.mail.sent
    assert subj == "[VC] rack %d was stopped early" % rack and to == ["bob@example.org"]
    assert "booked until 2026-12-01 03:00 UTC" in body and "stop requested by alice" in body
    (wr, text), = w.wall.sent
    assert wr == rack and "being stopped now" in text
    for minute in range(32, 40):
        at(w, minute)
    assert len(w.mail.sent) == 1 and len(w.wall.sent) == 1


def test_vc_ctl_stop_and_delete_before_the_end(world, db):
    w = world
    a = book(w.cfg, db, NOW, NOW + timedelta(hours=3), computes="0")
    b = book(w.cfg, db, NOW, NOW + timedelta(hours=3), computes="0")
    at(w, 0)
    w.clock.t = NOW + 10 * M
    w.ctl.stop(a, "stop")                       # root's vc_ctl stop: at once
    assert R.delete(w.cfg, db, b, w.clock.t, "bob") == "running"   # the tick stops, deletes
    at(w, 11)
    at(w, 12)
    assert state(db, a) == "stopped" and state(db, b) == "deleted"
    assert sorted(subjects(w)) == sorted(["[VC] rack %d was stopped early" % a,
                                          "[VC] rack %d was stopped early" % b])
    body_b = next(bd for _t, s, bd in w.mail.sent if str(b) in s)
    assert "deleted by bob" in body_b
    # a was stopped before the tick ran: no cluster to wall any more; b's wall went out
    assert [r for r, _t in w.wall.sent] == [b]


def test_the_end_reached_is_no_early_stop(world, db):
    w = world
    w.cfg.notify  # noqa: B018
    rack = book(w.cfg, db, NOW, NOW + timedelta(minutes=5), computes="0")
    for minute in range(0, 8):
        at(w, minute)
    assert state(db, rack) == "stopped"
    assert subjects(w) == ["[VC] rack %d ends in 1 minute (2026-12-01 00:05 UTC)" % rack]


def test_two_ticks_of_two_frontends_send_once(world, db):
    w = world
    book(w.cfg, db, NOW, NOW + timedelta(hours=2), computes="0")
    at(w, 0)
    other = notify.Notifier(w.cfg, db, clock=w.clock, send_mail=w.mail, wall=w.wall)
    w.clock.t = NOW + 61 * M
    for _ in range(3):
        other.run(w.clock.t)
        w.s.run_once(w.clock.t)
    assert len(w.mail.sent) == 1


def test_mail_off_and_no_warnings(world, db, migrated, tmp_path):
    w = world
    o = db_overrides(migrated)
    o["notify"] = {"before_end": "", "mail": "no"}
    cfg = make_cfg(o)
    n = notify.Notifier(cfg, db, clock=w.clock, send_mail=w.mail, wall=w.wall)
    rack = book(w.cfg, db, NOW, NOW + timedelta(hours=2), computes="0")
    at(w, 0)
    assert n.run(NOW + 119 * M) == []
    # a failed notice with mail off: nothing to send, done
    row = db.query("SELECT * FROM vcregist WHERE rack = %s", (rack,))[0]
    db.transaction(lambda cur: notify.note(cur, row, notify.FAILED + "start", NOW, "boom"))
    assert n.run(NOW + 119 * M) == ["rack %d: failed:start: nothing to send" % rack]
    assert w.mail.sent == [] and db.query("SELECT done FROM vcnotices")[0]["done"] == 1


def test_no_mta_is_said_once_not_retried(world, db, migrated):
    w = world
    o = db_overrides(migrated)
    o["notify"] = {"sendmail": "/nonexistent/sendmail"}
    cfg = make_cfg(o)
    n = notify.Notifier(cfg, db, clock=w.clock, send_mail=w.mail, wall=w.wall)
    rack = book(w.cfg, db, NOW, NOW + timedelta(hours=2), computes="0")
    at(w, 0)
    for minute in (60, 61, 62):
        n.run(NOW + minute * M)
    assert w.mail.calls == 0 and len(w.wall.sent) == 1
    ev = [e["reason"] for e in db.query("SELECT reason FROM vcevent WHERE rack = %s AND "
                                        "reason LIKE 'notice%%'", (rack,))]
    assert ev == ["notice before:3600: not mailed: no /nonexistent/sendmail on this machine and "
                  "no [notify] smtp_host"]
    assert db.query("SELECT done FROM vcnotices WHERE rack = %s", (rack,))[0]["done"] == 1


# ------------------------------------------------------------------------ the idle cost
class CountingDb:
    def __init__(self, db):
        self.db, self.queries, self.transactions = db, 0, 0

    def query(self, *a, **kw):
        self.queries += 1
        return self.db.query(*a, **kw)

    def transaction(self, *a, **kw):
        self.transactions += 1
        return self.db.transaction(*a, **kw)


def test_an_idle_pass_is_one_query(world, db):
    w = world
    book(w.cfg, db, NOW + timedelta(hours=5), NOW + timedelta(hours=8), computes="0")
    rack = book(w.cfg, db, NOW, NOW + timedelta(hours=3), computes="0")
    at(w, 0)
    cdb = CountingDb(db)
    n = notify.Notifier(w.cfg, cdb, clock=w.clock, send_mail=w.mail, wall=w.wall)
    assert n.run(NOW + M) == [] and (cdb.queries, cdb.transactions) == (1, 0)
    # in the last hour, with the warning sent: still one query, nothing sent
    n.run(NOW + 121 * M)
    cdb.queries = cdb.transactions = 0
    assert n.run(NOW + 122 * M) == [] and (cdb.queries, cdb.transactions) == (1, 0)
    assert len(w.mail.sent) == 1 and state(db, rack) == "running"


def test_the_idle_tick_imports_no_mail_modules(migrated, tmp_path):
    """sbin/vc_cron.py as cron runs it, nothing due: neither smtplib nor email is imported."""
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    data.update(db_overrides(migrated))
    data["host:h1"] = {"uri": TESTNODE, "memory_mb": "4096", "vcpus": "8"}
    data["site"] = {"state_dir": str(tmp_path / "state"), "log_file": str(tmp_path / "log")}
    path = str(tmp_path / "vc.conf")
    write_conf(path, data)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "sbin", "vc_cron.py")],
                       env=dict(os.environ, VC_CONFIG=path, PYTHONPROFILEIMPORTTIME="1"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    imported = {ln.split("|")[-1].strip() for ln in r.stderr.splitlines() if "|" in ln}
    assert "vc.notify" in imported
    assert not imported & {"smtplib", "email.message", "email", "vc.mail", "paramiko"}


# ------------------------------------------------------------------------ the wall's command
def test_wall_runs_ssh_with_the_cluster_key(world, db):
    w = world
    rack = book(w.cfg, db, NOW, NOW + timedelta(hours=3), computes="2")
    at(w, 0)
    up(db, rack)
    calls = []

    def run_input(argv, data):
        key = argv[argv.index("-i") + 1]
        with open(key) as f:
            calls.append((argv, data, key, f.read(), oct(os.stat(key).st_mode & 0o777)))
        if argv[-2].endswith(".4"):
            raise RuntimeError("ssh: connect to host 10.0.0.4 port 22: No route to host")
        return ""

    wall = notify.Wall(w.cfg, db, run_input=run_input)
    nodes = {r["name"]: r["ip"] for r in db.query("SELECT name, ip FROM vcnode WHERE rack=%s",
                                                  (rack,))}
    got = wall(rack, "VC: reservation ends in 10 minutes")
    assert sorted(got) == sorted(nodes)
    ips = sorted(c[0][-2] for c in calls)
    assert ips == sorted("root@" + ip for ip in nodes.values())
    argv, data, key, text, mode = calls[0]
    assert data == b"VC: reservation ends in 10 minutes\n"
    assert argv[-1] == notify.WALL_SCRIPT and "BatchMode=yes" in argv
    assert "StrictHostKeyChecking=no" in argv and "UserKnownHostsFile=/dev/null" in argv
    # the frontend's copy of the cluster's key pair (made at the start)
    assert key == os.path.join(designer.key_dir(w.cfg, rack), "id_ed25519")
    priv, _pub = steps.cluster_key(w.cfg, rack)
    assert text == priv
    # another frontend (no copy here): the database's pair, unsealed into a temporary file
    # that is gone afterwards
    import shutil

    shutil.rmtree(designer.key_dir(w.cfg, rack))
    calls.clear()
    wall(rack, "x")
    keys = {c[2] for c in calls}
    assert len(keys) == 1 and all(c[3] == priv and c[4] == "0o600" for c in calls)
    assert not os.path.exists(keys.pop())
    assert not os.path.exists(designer.key_dir(w.cfg, rack))


def test_wall_failures_are_an_event_not_retried(world, db):
    w = world
    rack = book(w.cfg, db, NOW, NOW + timedelta(hours=2), computes="0")
    at(w, 0)
    up(db, rack)
    w.s.notifier._wall = lambda r, t: {"gateway-%d-0" % r: "ssh: No route to host"}
    at(w, 60)
    at(w, 61)
    assert len(w.mail.sent) == 1
    ev = db.query("SELECT reason FROM vcevent WHERE rack = %s AND reason LIKE 'notice%%'",
                  (rack,))
    assert [e["reason"] for e in ev] == ["notice before:3600: wall failed on gateway-%d-0: "
                                         "ssh: No route to host" % rack]


def test_wall_goes_through_the_remote_host_that_holds_the_segment(world, db, migrated):
    """Several hosts: when the first gateway's host is remote (it holds the segment's .1), the
    frontend reaches the nodes through it (ProxyCommand with that host's own ssh trust)."""
    w = world
    rack = book(w.cfg, db, NOW, NOW + timedelta(hours=3), computes="0")
    at(w, 0)
    db.transaction(lambda cur: cur.execute("UPDATE vcnode SET host = 'h2' WHERE rack = %s",
                                           (rack,)))
    o = db_overrides(migrated)
    o["host:h2"] = {"uri": "qemu+ssh://root@10.230.2.2/system?keyfile=/k/id", "memory_mb": "64",
                    "vcpus": "1"}
    o["site"] = {"state_dir": w.cfg.site.state_dir}
    calls = []
    notify.Wall(make_cfg(o), db, run_input=lambda argv, data: calls.append(argv))(rack, "x")
    (argv,) = calls
    proxy = next(a for a in argv if a.startswith("ProxyCommand="))
    assert proxy == ("ProxyCommand=ssh -o BatchMode=yes -o ConnectTimeout=10 -i /k/id -o "
                     "IdentitiesOnly=yes root@10.230.2.2 -W %h:%p")


# ------------------------------------------------------------------------ configuration
@pytest.mark.parametrize("value, problem", [
    ("10x", "must be durations like 60m,10m,1m"),
    ("-5m", "must not be negative"),
    ("10m,600s", "lists the same duration twice (10m and 600s)"),
    ("0m", "from 1s to 7d"),
    ("8d", "from 1s to 7d"),
    ("60m,,1m", "must be durations like"),
    ("1.5m", "must be durations like"),
    (",".join("%dm" % i for i in range(1, 12)), "at most 10"),
])
def test_bad_before_end_is_a_clean_config_error(value, problem):
    with pytest.raises(ConfigError) as e:
        make_cfg({"notify": {"before_end": value}})
    msg = str(e.value)
    assert "[notify] before_end" in msg and problem in msg and "\n" not in msg


def test_before_end_values():
    assert make_cfg().notify.before_end == (3600, 600, 60)
    assert make_cfg({"notify": {"before_end": "1m, 2h ,30s,1d"}}).notify.before_end == (
        86400, 7200, 60, 30)
    assert make_cfg({"notify": {"before_end": ""}}).notify.before_end == ()


@pytest.mark.parametrize("key, value, problem", [
    ("mail_from", "not an address", "must be a mail address"),
    ("mail_domain", "bad domain!", "must be a DNS domain"),
    ("smtp_port", "0", "between 1 and 65535"),
    ("smtp_host", "bad host!", "host name or an IP address"),
    ("sendmail", "sendmail", "absolute path"),
    ("wall", "maybe", "yes or no"),
])
def test_other_bad_notify_keys(key, value, problem):
    with pytest.raises(ConfigError, match=problem):
        make_cfg({"notify": {key: value}})


def test_vc_ctl_refuses_a_bad_before_end(tmp_path):
    data = {s: dict(v) for s, v in BASE_CONF.items()}
    data["notify"] = {"before_end": "60m,10x"}
    path = str(tmp_path / "vc.conf")
    write_conf(path, data)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "sbin", "vc_ctl.py"), "list"],
                       env=dict(os.environ, VC_CONFIG=path), capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "vc_ctl.py: config error in %s: [notify] before_end: must be durations like 60m,10m,1m "
        "(a whole number and s, m, h or d), got '10x'" % path]

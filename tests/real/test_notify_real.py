"""The warning before the end, the way the owner and the users meet it: a real cluster on QEMU
(the fast busybox guest: 1 gateway + 1 compute), users logged in over SSH on both nodes with a
terminal (``ssh -tt``), and the tick (``sbin/vc_cron.py --now`` ten minutes before the end) with
the mail going to a local SMTP server (aiosmtpd, tests/smtpsink.py). The owner's mail arrives
with the rack, the end and the time left; both terminals show the wall text; a second tick sends
nothing more."""

import json
import os
import subprocess
import threading
import time
import uuid
from datetime import timedelta

import pytest

from realenv import RealEnv, libvirtd  # noqa: F401  (fixture)
from test_cluster_real import EMPTY
from test_cluster_storage_real import ok
from vc.db import aware_utc

SSH = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
       "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]


@pytest.fixture
def env(libvirtd, migrated, db, tmp_path, smtp_sink):  # noqa: F811
    e = RealEnv(str(tmp_path), migrated, "n" + uuid.uuid4().hex[:5], "10.221.0.0/16", extra={
        "notify": {"smtp_host": "127.0.0.1", "smtp_port": str(smtp_sink.port),
                   "mail_domain": "example.org", "mail_from": "vc@frontend.example.org",
                   "before_end": "60m,10m,1m"},
        "virt": {"ready_timeout": "120"}})
    e.key = os.path.join(str(tmp_path), "id_owner")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", e.key], check=True)
    yield e
    e.cleanup()


class Terminal:
    """A user's interactive SSH session (a pseudo-terminal on the node): what reaches it."""

    def __init__(self, argv):
        self.p = subprocess.Popen(argv + ["echo VC-SESSION-UP; exec sleep 300"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        self.buf, self.lock = b"", threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            b = self.p.stdout.read1(4096)
            if not b:
                return
            with self.lock:
                self.buf += b

    def text(self):
        with self.lock:
            return self.buf.decode("utf-8", "replace").replace("\r", "")

    def wait_for(self, s, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if s in self.text():
                return self.text()
            time.sleep(0.2)
        raise AssertionError("%r not on the terminal in %ds; it shows:\n%s" % (
            s, timeout, self.text()[-2000:]))

    def close(self):
        self.p.kill()
        self.p.wait(10)


def test_the_10_minute_warning_reaches_mail_and_terminals(env, db, smtp_sink):
    ok(env.ctl("key", "add", "--owner", "bob", env.key + ".pub"))
    rack = json.loads(ok(env.ctl(
        "reserve", "--owner", "bob", "--start", "now", "--end", "now+30m", "--computes", "1",
        "--memory", "192", "--disk", "1", "--json")).stdout)["rack"]
    t0 = time.monotonic()
    ok(env.ctl("start", str(rack), "--wait-ready", timeout=300))
    boot_s = time.monotonic() - t0
    shown = json.loads(ok(env.ctl("show", str(rack), "--json")).stdout)
    gw = next(n for n in shown["nodes"] if n["appliance"] == "gateway")
    cn = next(n for n in shown["nodes"] if n["appliance"] == "compute")
    end = aware_utc(db.query("SELECT end_at FROM vcregist WHERE rack = %s", (rack,))[0]["end_at"])

    # users logged in with a terminal: on the gateway (its public address) and on the compute
    # (through the gateway, as the README shows)
    key = ["-i", env.key]
    terms = [Terminal(SSH + key + ["-tt", "root@" + gw["public_ip"]]),
             Terminal(SSH + key + ["-tt", "-o", "ProxyCommand=" + " ".join(
                 SSH + key + ["-W", "%h:%p", "root@" + gw["public_ip"]]), "root@" + cn["ip"]])]
    try:
        for t in terms:
            t.wait_for("VC-SESSION-UP")
        # the tick ten minutes before the end (as if it were then)
        t1 = time.monotonic()
        r = env.cron("--now", (end - timedelta(minutes=10)).isoformat())
        assert r.returncode == 0, (r.stdout, r.stderr, open(env.log).read()[-3000:])
        tick_s = time.monotonic() - t1
        at = end.strftime("%Y-%m-%d %H:%M UTC")
        for t in terms:
            seen = t.wait_for("reservation ends in 10 minutes (at %s)" % at)
            assert "vc-lease extend 30m" in seen
        m = smtp_sink.wait(lambda m: "rack %d" % rack in m["Subject"])
        assert m["Subject"] == "[VC] rack %d ends in 10 minutes (%s)" % (rack, at)
        assert m["To"] == "bob@example.org" and m["From"] == "vc@frontend.example.org"
        body = m.get_content()
        assert "your virtual cluster rack %d ends in 10 minutes, at %s" % (rack, at) in body
        assert "vc-lease extend --longest 2h" in body
        # sent once: a second tick at the same time, and one a minute later, send nothing more
        ok(env.cron("--now", (end - timedelta(minutes=10)).isoformat()))
        ok(env.cron("--now", (end - timedelta(minutes=9)).isoformat()))
        time.sleep(2)
        assert len([1 for _to, x in smtp_sink.mails() if "rack %d" % rack in x["Subject"]]) == 1
        for t in terms:
            assert t.text().count("reservation ends in 10 minutes") == 1, t.text()
        print("the gateway's terminal shows:\n" + terms[0].text())
        row = db.query("SELECT kind, done, mail_at IS NOT NULL AS m, wall_at IS NOT NULL AS w "
                       "FROM vcnotices WHERE rack = %s", (rack,))
        assert [(x["kind"], x["done"], x["m"], x["w"]) for x in row] == [("before:600", 1, 1, 1)]
    finally:
        for t in terms:
            t.close()
    print("booted and ready in %.1f s; the warning tick took %.2f s" % (boot_s, tick_s))
    ok(env.ctl("stop", str(rack)))
    assert env.traces() == EMPTY

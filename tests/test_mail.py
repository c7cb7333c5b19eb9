"""vc.mail: one mail to a real local SMTP server (aiosmtpd, tests/smtpsink.py) or through a
sendmail program; addresses of local user names; every failure one line."""

import os
import stat
import subprocess
import sys

import pytest

from conftest import ROOT, make_cfg
from vc import mail


def smtp_cfg(sink, **notify):
    n = {"smtp_host": "127.0.0.1", "smtp_port": str(sink.port), "mail_from": "vc@fe.example.org",
         "mail_domain": "example.org", "smtp_timeout": "5"}
    n.update(notify)
    return make_cfg({"notify": n})


def test_a_mail_reaches_the_smtp_server(smtp_sink):
    cfg = smtp_cfg(smtp_sink)
    mail.send(cfg, ["bob@example.org", "root@example.org"], "[VC] rack 3 ends\nin 10 minutes",
              "Hello bob,\n\nyour cluster ends — soon.\n")
    (to, m), = smtp_sink.mails()
    assert to == ["bob@example.org", "root@example.org"]
    # a subject is one line, whatever it was given
    assert m["Subject"] == "[VC] rack 3 ends in 10 minutes"
    assert m["From"] == "vc@fe.example.org" and m["To"] == "bob@example.org, root@example.org"
    assert m["Auto-Submitted"] == "auto-generated" and m["Message-ID"] and m["Date"]
    assert m.get_content().replace("\r\n", "\n") == "Hello bob,\n\nyour cluster ends — soon.\n"


def test_addresses_of_local_users():
    cfg = make_cfg({"notify": {"mail_domain": "Example.ORG."}})
    assert mail.address(cfg, "alice") == "alice@example.org"
    assert mail.address(cfg, "alice@EXAMPLE.ORG") == "alice@EXAMPLE.ORG"  # used as it is
    # without mail_domain: the user's mailbox on this machine
    import socket

    assert mail.address(make_cfg(), "bob") == "bob@" + socket.getfqdn()
    for bad in ("", "a b", "x@y@z", "bob\n@x", "bob@-bad"):
        with pytest.raises(mail.MailError):
            mail.address(cfg, bad)


def test_server_down_is_one_line():
    from smtpsink import free_port

    cfg = make_cfg({"notify": {"smtp_host": "127.0.0.1", "smtp_port": str(free_port()),
                               "smtp_timeout": "3"}})
    with pytest.raises(mail.MailError) as e:
        mail.send(cfg, ["bob@example.org"], "s", "b")
    msg = str(e.value)
    assert "\n" not in msg and "via SMTP 127.0.0.1:" in msg and "bob@example.org" in msg


def test_refused_recipient(smtp_sink):
    smtp_sink.refuse.add("nobody@example.org")
    cfg = smtp_cfg(smtp_sink)
    with pytest.raises(mail.MailError, match="refused") as e:
        mail.send(cfg, ["nobody@example.org"], "s", "b")
    assert "\n" not in str(e.value) and smtp_sink.mails() == []
    # one of two refused: the other gets it, the refusal is still reported
    with pytest.raises(mail.MailError, match="refused for nobody@example.org"):
        mail.send(cfg, ["bob@example.org", "nobody@example.org"], "s", "b")
    assert [to for to, _m in smtp_sink.mails()] == [["bob@example.org"]]


def test_bad_recipients_and_mail_off_send_nothing(smtp_sink):
    cfg = smtp_cfg(smtp_sink)
    for bad in ([], ["bob@example.org\r\nRCPT TO:<x@y>"], ["not an address"]):
        with pytest.raises(mail.MailError):
            mail.send(cfg, bad, "s", "b")
    with pytest.raises(mail.MailError, match="mail is off"):
        mail.send(smtp_cfg(smtp_sink, mail="no"), ["bob@example.org"], "s", "b")
    with pytest.raises(mail.MailError, match="mail is off"):
        mail.send(make_cfg({"notify": {"sendmail": ""}}), ["bob@example.org"], "s", "b")
    assert smtp_sink.mails() == []


def fake_sendmail(tmp_path, rc=0, err=""):
    """A sendmail stand-in that keeps its argv and stdin (this machine has no MTA)."""
    out = tmp_path / "sent"
    p = tmp_path / "sendmail"
    p.write_text("#!/bin/sh\necho \"$@\" > %s.argv\ncat > %s\necho '%s' >&2\nexit %d\n"
                 % (out, out, err, rc))
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p), out


def test_sendmail_t(tmp_path):
    path, out = fake_sendmail(tmp_path)
    cfg = make_cfg({"notify": {"sendmail": path, "mail_domain": "example.org"}})
    mail.send(cfg, ["bob@example.org"], "[VC] hello", "body text\n")
    assert (tmp_path / "sent.argv").read_text().split() == ["-t", "-i"]
    text = out.read_text()
    assert "To: bob@example.org" in text and "Subject: [VC] hello" in text
    assert text.rstrip().endswith("body text")


def test_sendmail_failures_are_one_line(tmp_path):
    path, _ = fake_sendmail(tmp_path, rc=75, err="queue full")
    with pytest.raises(mail.MailError, match="exited 75: queue full"):
        mail.send(make_cfg({"notify": {"sendmail": path}}), ["bob@example.org"], "s", "b")
    with pytest.raises(mail.MailError, match="no /nonexistent/sendmail"):
        mail.send(make_cfg({"notify": {"sendmail": "/nonexistent/sendmail"}}),
                  ["bob@example.org"], "s", "b")


def test_importing_mail_costs_no_smtplib():
    r = subprocess.run([sys.executable, "-c", "import sys; import vc.mail, vc.notify; "
                        "print(sorted(m for m in ('smtplib', 'email.message', 'email') "
                        "if m in sys.modules))"], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)

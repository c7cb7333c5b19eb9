"""Mail from VC: one function, :func:`send`, for every notice (the warnings before a cluster's
end, failures, pre-flight problems).

How a mail leaves (``[notify]``): to ``smtp_host``:``smtp_port`` with :mod:`smtplib` (plain SMTP,
no login: the site's relay or the frontend's own MTA), else through the local ``sendmail -t -i``
(the message on its stdin: every MTA ships that interface). ``mail = no`` turns mail off.

Who gets it: owners are local user names (what the kernel or Apache says: ``alice``, sometimes
``alice@EXAMPLE.ORG``). :func:`address` makes ``alice`` into ``alice@<mail_domain>``, by default
``alice@<this machine's FQDN>`` — the owner's mailbox on the frontend, which its MTA delivers
locally and forwards as the site configured (``~/.forward``, aliases); a name that already holds
an ``@`` is used as it is. Admins are ``[site] admins``, addressed the same way.

:mod:`smtplib` and :mod:`email` are imported inside :func:`send`: the idle tick, which sends
nothing, must not pay for them.
"""

import logging
import os
import re
import socket
import subprocess
from typing import List

from vc.errors import VcError

LOG = logging.getLogger(__name__)

# what a recipient may look like (no spaces, no line breaks, no second @: nothing a header or
# an SMTP command could be smuggled in with)
ADDRESS_RE = re.compile(r"^[A-Za-z0-9._%+=-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}"
                        r"[A-Za-z0-9])?$")


class MailError(VcError):
    """A mail could not be handed over (one line: how, to whom, why)."""


def _fqdn() -> str:
    return socket.getfqdn() or "localhost"


def address(cfg, user: str) -> str:
    """The mail address of a local user name (see the module docstring).

    :raises MailError: the name cannot be made into an address.
    """
    user = (user or "").strip()
    out = user if "@" in user else "%s@%s" % (user, cfg.notify.mail_domain or _fqdn())
    if not ADDRESS_RE.match(out):
        raise MailError("cannot mail %r: not a mail address" % user[:80])
    return out


def sender(cfg) -> str:
    return cfg.notify.mail_from or "vc@%s" % _fqdn()


def enabled(cfg) -> bool:
    """Is there a way to send mail at all (``mail = yes`` and an SMTP host or a sendmail)?"""
    n = cfg.notify
    return bool(n.mail and (n.smtp_host or n.sendmail))


def unavailable(cfg):
    """Why mail cannot leave this machine although ``mail = yes``, or None: no SMTP host and no
    sendmail program (a frontend without an MTA: the demo). The caller says so once per
    notice instead of failing it at every tick."""
    n = cfg.notify
    if not n.mail or n.smtp_host:
        return None
    if not n.sendmail:
        return "neither [notify] smtp_host nor sendmail is set"
    if not os.path.exists(n.sendmail):
        return "no %s on this machine and no [notify] smtp_host" % n.sendmail
    return None


def message(cfg, recipients: List[str], subject: str, body: str):
    """The :class:`email.message.EmailMessage` :func:`send` hands over."""
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    msg = EmailMessage()
    msg["From"] = sender(cfg)
    msg["To"] = ", ".join(recipients)
    # a subject is one line: a line break in it would start a new header
    msg["Subject"] = " ".join(subject.split())
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender(cfg).rpartition("@")[2])
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    msg.set_content(body)
    return msg


def send(cfg, recipients: List[str], subject: str, body: str) -> None:
    """Send one plain-text mail to ``recipients`` (addresses; see :func:`address`).

    :raises MailError: mail is off, a recipient is not an address, or the SMTP server / the
        sendmail program refused or did not answer within ``[notify] smtp_timeout`` — one line
        naming how and why. Nothing is retried here: the caller decides (the tick retries a
        notice at its next run).
    """
    n = cfg.notify
    if not recipients:
        raise MailError("mail %r: no recipients" % subject[:60])
    for r in recipients:
        if not ADDRESS_RE.match(r):
            raise MailError("mail %r: %r is not a mail address" % (subject[:60], r[:80]))
    if not enabled(cfg):
        raise MailError("mail is off ([notify] mail = no, or neither smtp_host nor sendmail)")
    msg = message(cfg, recipients, subject, body)
    to = ", ".join(recipients)
    if n.smtp_host:
        import smtplib

        where = "%s:%d" % (n.smtp_host, n.smtp_port)
        try:
            with smtplib.SMTP(n.smtp_host, n.smtp_port, timeout=n.smtp_timeout,
                              local_hostname=_fqdn()) as s:
                refused = s.send_message(msg, from_addr=sender(cfg), to_addrs=recipients)
        except smtplib.SMTPRecipientsRefused as e:
            raise MailError("mail to %s via SMTP %s: refused: %s" % (
                to, where, _one_line(e.recipients))) from None
        except (smtplib.SMTPException, OSError) as e:
            raise MailError("mail to %s via SMTP %s failed: %s" % (
                to, where, _one_line(e) or type(e).__name__)) from None
        if refused:
            # some accepted: those got it; the refused ones are the caller's to report
            raise MailError("mail to %s via SMTP %s: refused for %s" % (
                to, where, ", ".join(sorted(refused))))
        LOG.info("mail %r to %s via SMTP %s", msg["Subject"], to, where)
        return
    try:
        p = subprocess.run([n.sendmail, "-t", "-i"], input=msg.as_bytes(), capture_output=True,
                           timeout=n.smtp_timeout)
    except FileNotFoundError:
        raise MailError("mail to %s: no %s (install an MTA, or set [notify] smtp_host)"
                        % (to, n.sendmail)) from None
    except subprocess.TimeoutExpired:
        raise MailError("mail to %s: %s did not finish within %d s" % (
            to, n.sendmail, n.smtp_timeout)) from None
    except OSError as e:
        raise MailError("mail to %s: cannot run %s: %s" % (to, n.sendmail, e)) from None
    if p.returncode:
        raise MailError("mail to %s: %s exited %d: %s" % (
            to, n.sendmail, p.returncode,
            _one_line(p.stderr.decode("utf-8", "replace")) or "no message"))
    LOG.info("mail %r to %s via %s", msg["Subject"], to, n.sendmail)


def _one_line(x) -> str:
    return " ".join(str(x).split())[:300]

"""A local SMTP sink for the tests: aiosmtpd (the maintained asyncio SMTP server of the
aio-libs project; the stdlib's smtpd was removed in Python 3.12) on 127.0.0.1, a free port,
keeping every message it accepts. ``refuse`` names recipients it answers 550.

    def test_x(smtp_sink):          # the fixture (tests/conftest.py)
        ... [notify] smtp_host = 127.0.0.1, smtp_port = smtp_sink.port ...
        msg = smtp_sink.wait(lambda m: "rack 3" in m["Subject"])
"""

import email
import email.policy
import socket
import threading
import time

from aiosmtpd.controller import Controller


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.sink.refuse:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.sink.lock:
            self.sink.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                                       "msg": msg})
        return "250 Message accepted"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class SmtpSink:
    def __init__(self):
        self.messages, self.refuse, self.lock = [], set(), threading.Lock()
        self.port = free_port()
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()

    def mails(self):
        """``[(envelope recipients, EmailMessage)]`` so far."""
        with self.lock:
            return [(m["to"], m["msg"]) for m in self.messages]

    def wait(self, match, timeout=30.0):
        """The first message for which ``match(msg)`` is true, waiting up to ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            for _to, m in self.mails():
                if match(m):
                    return m
            if time.monotonic() >= end:
                raise AssertionError("no such mail in %.0f s; got: %s" % (
                    timeout, [m["Subject"] for _t, m in self.mails()]))
            time.sleep(0.2)

"""A real SMTP server in the test's process: aiosmtpd on a spare port.

It keeps what it receives, parsed, can refuse the next mails with a
temporary error (451), and can stop and start again on the same port, as
a mail server that goes down and comes back.
"""

import contextlib
import email
import re
import socket
import threading
import time
from email import policy

from aiosmtpd.controller import Controller

from postservice.mail import delivery

TOKEN = re.compile(r"token=([A-Za-z0-9_-]{43})")

PUBLIC_URL = "https://posts.example.test"


def mail_app(make_app, smtp, **settings):
    """An app that mails through ``smtp`` (an ``SMTPCatcher``), retrying
    after a second unless ``settings`` say otherwise."""
    defaults = {
        "MAIL_URL": smtp.url,
        "PUBLIC_URL": PUBLIC_URL,
        "MAIL_RETRY_INITIAL": 1,
        "MAIL_RETRY_MAX": 1,
    }
    return make_app(**{**defaults, **settings})


def deliver(app):
    """Deliver every mail due now, in this thread; how many were handled."""
    return delivery.Worker(app).deliver_due()


@contextlib.contextmanager
def workers_running(*apps, poll_interval=0.05):
    """A mail worker for each app, each in a thread of its own, until the
    block ends (stopped, then joined); yields their threads."""
    workers = [delivery.Worker(app) for app in apps]
    threads = [
        threading.Thread(target=worker.run, args=(poll_interval,), daemon=True)
        for worker in workers
    ]
    for thread in threads:
        thread.start()
    try:
        yield threads
    finally:
        for worker in workers:
            worker.stop.set()
        for thread in threads:
            thread.join(30)


def spare_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Inbox:
    """aiosmtpd's handler: every mail taken, in order."""

    def __init__(self):
        self.messages = []
        self.refusals = 0
        self.refused = 0
        self.changed = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        with self.changed:
            if self.refusals > 0:
                self.refusals -= 1
                self.refused += 1
                return "451 4.3.0 Try again later"
            message = email.message_from_bytes(envelope.content, policy=policy.default)
            self.messages.append(message)
            self.changed.notify_all()
        return "250 OK"

    def wait_for(self, count, timeout=30):
        """The mails once there are ``count``; fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.messages)} mail(s), not {count}"
                self.changed.wait(left)
            return list(self.messages)

    def of(self, subject_word):
        return [m for m in self.messages if subject_word in m["Subject"]]


class SMTPCatcher:
    def __init__(self):
        self.port = spare_port()
        self.inbox = Inbox()
        self.controller = None

    @property
    def url(self):
        return f"smtp://127.0.0.1:{self.port}"

    def start(self):
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def text_of(message):
    return message.get_body(("plain",)).get_content()


def html_of(message):
    return message.get_body(("html",)).get_content()


def token_in(message):
    """The token of the link in the mail's plain-text body."""
    return TOKEN.search(text_of(message))[1]

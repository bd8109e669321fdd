"""The worker: takes due mail from the outbox and sends it.

``flask mail deliver`` runs ``Worker.run`` until SIGTERM or SIGINT; the mail
in hand is finished first (sent, or put back with its backoff). The
development server, when no ``MAIL_URL`` is set, runs the same loop in a
thread of its own (``start_in_thread``), writing each mail to the log
(``mail.console``).

A mail that fails (server down, refused, timed out) is tried again after
``MAIL_RETRY_INITIAL`` seconds, doubled each time up to ``MAIL_RETRY_MAX``,
and set aside as failed after ``MAIL_MAX_ATTEMPTS`` tries (``flask mail
status`` lists it, ``flask mail retry`` puts it back). Log lines name a
mail by its id and kind; never its address, body or token.
"""

import logging
import threading

from flask import current_app
from flask_mailman import EmailMultiAlternatives
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from postservice.extensions import db
from postservice.extensions import mail as mailer
from postservice.mail import messages, outbox, smtp, tokens
from postservice.mail.addresses import mailable
from postservice.models import User
from postservice.ops import metrics

log = logging.getLogger("postservice.mail")


class Unmailable(Exception):
    """The recipient is an address mail would not reach as written (an
    account from before ``addresses.mailable`` was required): set aside
    at once, never sent to the address the mailer would make of it."""


# Seconds between looks at the outbox when nothing was due.
POLL_INTERVAL = 1.0


class Worker:
    """Delivers the outbox's due mail, one at a time, until stopped."""

    def __init__(self, app, stop=None):
        self.app = app
        self.stop = stop or threading.Event()
        self.worker_id = outbox.new_worker_id()

    def run(self, poll_interval=POLL_INTERVAL):
        """Deliver until ``stop`` is set; the mail in hand is finished first."""
        while not self.stop.is_set():
            try:
                busy = self.deliver_one()
            except SQLAlchemyError as e:
                log.warning("mail worker: database unavailable: %s", outbox.describe(e))
                with self.app.app_context():
                    db.session.remove()
                busy = False
            except Exception as e:
                # Outside any one mail (claiming, recording a result): the
                # loop goes on, and the mail in hand comes back with its lease.
                log.error("mail worker: %s", outbox.describe(e))
                with self.app.app_context():
                    db.session.remove()
                busy = False
            if not busy:
                self.stop.wait(poll_interval)

    def deliver_due(self):
        """Deliver every mail due now; returns how many were handled."""
        handled = 0
        while not self.stop.is_set() and self.deliver_one():
            handled += 1
        return handled

    def deliver_one(self):
        """Claim one due mail and send it; False when none was due."""
        with self.app.app_context():
            try:
                mail = outbox.claim(self.worker_id)
                if mail is None:
                    return False
                self._handle(mail)
                return True
            finally:
                db.session.remove()

    def _handle(self, mail):
        config = current_app.config
        try:
            if mail.subject is None and not prepare(mail, self.worker_id):
                return
            if not mailable(mail.recipient):
                raise Unmailable()
            send(mail)
        except Exception as e:
            # Any failure is this mail's, never the worker's end: a mail
            # that cannot even be built is tried again and then set aside,
            # and the mails behind it go out.
            db.session.rollback()
            final = outbox.failed(
                mail,
                self.worker_id,
                e,
                initial=config["MAIL_RETRY_INITIAL"],
                most=config["MAIL_RETRY_MAX"],
                max_attempts=(
                    mail.attempts + 1
                    if isinstance(e, Unmailable)
                    else config["MAIL_MAX_ATTEMPTS"]
                ),
            )
            metrics.mail_failed(mail.kind, final)
            log.warning(
                "mail %s (%s) not sent, try %d%s: %s",
                mail.id,
                mail.kind,
                mail.attempts + 1,
                ", set aside" if final else "",
                outbox.describe(e),
            )
            return
        outbox.sent(mail, self.worker_id)
        metrics.mail_sent(mail.kind)
        log.info("mail %s (%s) sent", mail.id, mail.kind)


def prepare(mail, worker_id):
    """Turn a reset request into its mail: look the account up and, if there
    is one, issue its token and render the mail, stored in one commit.

    Returns False when there is no such account (the request is dropped:
    the API answered the same either way).
    """
    user_id = db.session.scalar(select(User.id).where(User.email == mail.recipient))
    if user_id is None:
        outbox.dropped(mail, worker_id)
        metrics.mail_dropped(mail.kind)
        log.info("mail %s (%s) dropped: no such account", mail.id, mail.kind)
        return False
    token = tokens.issue(
        user_id, mail.kind, current_app.config["PASSWORD_RESET_TOKEN_EXPIRES"]
    )
    subject, text, html = messages.render(mail.kind, token)
    if not outbox.prepared(mail, worker_id, subject, text, html):
        # Discarded meanwhile (the password changed): no link, no mail.
        db.session.rollback()
        return False
    db.session.commit()
    mail.subject, mail.body_text, mail.body_html = subject, text, html
    return True


def send(mail):
    """Hand the mail to the server of ``MAIL_URL`` (or to the log without it)."""
    message = EmailMultiAlternatives(
        subject=mail.subject,
        body=mail.body_text,
        from_email=current_app.config["MAIL_DEFAULT_SENDER"],
        to=[mail.recipient],
        connection=mailer.get_connection(),
    )
    message.attach_alternative(mail.body_html, "text/html")
    # Done, or given up, well within the row's lease: no other worker takes
    # a mail while this one may still be sending it.
    with smtp.Deadline(outbox.LEASE_SECONDS / 2):
        message.send()


def start_in_thread(app):
    """Deliver in a daemon thread of this process (the development server
    without ``MAIL_URL``); returns the worker and its thread."""
    worker = Worker(app)
    thread = threading.Thread(target=worker.run, name="mail", daemon=True)
    thread.start()
    return worker, thread

"""The outbox: mail written to the database before anyone is told it will come.

A request that promises a mail adds its row in its own transaction, so the
mail exists exactly when the change it tells about does: a crash, a lost
database connection after the commit, an SMTP server that is down, none
loses it. Workers (``postservice.mail.delivery``) take rows when they are
due and delete them once sent.

Claiming works the same on MariaDB and SQLite: a conditional UPDATE that
moves the row's ``due_at`` a lease ahead and names the worker, only if
``due_at`` is still what the worker read. Of two workers reading the same
row, one UPDATE changes it and the other's changes nothing; the loser goes
on to the next row. A worker that dies with a row in hand lets it go when
the lease runs out, so a mail is sent at least once; it is sent twice only
if a worker dies, or the database fails, between the SMTP server taking the
mail and deleting the row. A send ends within half the lease
(``smtp.Deadline``), so no other worker takes a row while it may be sent.
"""

import re
import smtplib
import time
import uuid

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from postservice.extensions import db
from postservice.models import MAIL_ERROR_MAX_CHARS, OutboxMail, User

# Seconds a claimed row is a worker's: twice the longest SMTP exchange
# (``delivery.send``'s deadline), so no other worker takes it while it is sent.
LEASE_SECONDS = 120
# Rows a worker reads per look for one it can claim.
CANDIDATES = 10


def _now():
    return int(time.time())


def add(kind, recipient, subject=None, text=None, html=None, now=None):
    """Add a mail to the caller's transaction (not committed).

    With ``subject`` and bodies it is ready to send; without, it is a
    request the worker prepares (``delivery.prepare``).
    """
    now = _now() if now is None else now
    db.session.add(
        OutboxMail(
            kind=kind,
            recipient=recipient,
            subject=subject,
            body_text=text,
            body_html=html,
            created_at=now,
            due_at=now,
            attempts=0,
        )
    )


def new_worker_id():
    return str(uuid.uuid4())


def claim(worker_id, now=None):
    """The next due mail, now this worker's for ``LEASE_SECONDS``, or None.

    Commits the claim; no transaction is left open.
    """
    now = _now() if now is None else now
    candidates = db.session.execute(
        select(OutboxMail.id, OutboxMail.due_at)
        .where(OutboxMail.due_at <= now, OutboxMail.failed_at.is_(None))
        .order_by(OutboxMail.due_at, OutboxMail.id)
        .limit(CANDIDATES)
    ).all()
    for mail_id, due_at in candidates:
        taken = db.session.execute(
            update(OutboxMail)
            .where(
                OutboxMail.id == mail_id,
                OutboxMail.due_at == due_at,
                OutboxMail.failed_at.is_(None),
            )
            .values(due_at=now + LEASE_SECONDS, claimed_by=worker_id)
            .execution_options(synchronize_session=False)
        ).rowcount
        if taken:
            # Read before the commit: the row is in hand, and no transaction
            # stays open while the mail goes out.
            mail = db.session.get(OutboxMail, mail_id, populate_existing=True)
            db.session.commit()
            return mail
    db.session.rollback()
    return None


def _ours(mail, worker_id):
    return (OutboxMail.id == mail.id, OutboxMail.claimed_by == worker_id)


def sent(mail, worker_id):
    """The mail was taken by the server: its row goes. Commits."""
    db.session.execute(
        delete(OutboxMail)
        .where(*_ours(mail, worker_id))
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def prepared(mail, worker_id, subject, text, html):
    """Store the rendered mail on its row (the caller commits, with the token).

    Returns False when the row is gone (``discard_requests``): the caller
    rolls its token back and sends nothing.
    """
    return bool(
        db.session.execute(
            update(OutboxMail)
            .where(*_ours(mail, worker_id))
            .values(subject=subject, body_text=text, body_html=html)
            .execution_options(synchronize_session=False)
        ).rowcount
    )


def discard_requests(kind, user_id):
    """Delete the requests of ``kind`` for ``user_id``'s address that no
    worker has prepared yet (not committed): a link they would have become
    is void before it exists."""
    email = select(User.email).where(User.id == user_id).scalar_subquery()
    db.session.execute(
        delete(OutboxMail)
        .where(
            OutboxMail.kind == kind,
            OutboxMail.subject.is_(None),
            OutboxMail.recipient == email,
        )
        .execution_options(synchronize_session=False)
    )


def dropped(mail, worker_id):
    """A request that has no mail to give (no such account). Commits."""
    sent(mail, worker_id)


def retry_delay(attempts, initial, most):
    """Seconds before try ``attempts + 1``: ``initial``, doubled each time,
    at most ``most``."""
    return min(most, initial * 2 ** max(0, attempts - 1))


def failed(mail, worker_id, error, *, initial, most, max_attempts, now=None):
    """A try failed: the mail is due again after the backoff, or set aside
    once it has been tried ``max_attempts`` times. Commits; returns True
    when it was set aside."""
    now = _now() if now is None else now
    attempts = mail.attempts + 1
    final = attempts >= max_attempts
    values = {
        "attempts": attempts,
        "claimed_by": None,
        "last_error": describe(error)[:MAIL_ERROR_MAX_CHARS],
        "due_at": now + retry_delay(attempts, initial, most),
    }
    if final:
        values["failed_at"] = now
    db.session.execute(
        update(OutboxMail)
        .where(*_ours(mail, worker_id))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return final


# Whatever looks like an address in a server's reply (a refusal may quote
# the recipient, anywhere in its text).
ADDRESS = re.compile(r"\S*@\S*")


def describe(error):
    """What went wrong, for the row and the log, in one line: the error's
    class and the server's or the database's words. Never the mail, nor an
    address (a server's reply may quote the recipient's), nor a statement's
    values (a database error's later lines); of any other error (a mail
    that could not be built) the class alone, as its words may quote the
    address."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        replies = list(error.recipients.values())
        code, reply = replies[0] if replies else (None, b"")
        message = _reply("recipient refused:", code, reply)
    elif isinstance(error, smtplib.SMTPResponseException):
        message = _reply("", error.smtp_code, error.smtp_error)
    elif isinstance(error, smtplib.SMTPException):
        message = ADDRESS.sub("<address>", str(error))
    elif isinstance(error, (OSError, SQLAlchemyError)):
        message = (str(error).splitlines() or [""])[0]
    else:
        return type(error).__name__
    return f"{type(error).__name__}: {' '.join(message.split())}"


def _reply(what, code, reply):
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return ADDRESS.sub("<address>", f"{what} {code} {text}".strip())


def release(mail, worker_id):
    """Give a claimed mail back untried (the worker is stopping). Commits."""
    db.session.execute(
        update(OutboxMail)
        .where(*_ours(mail, worker_id))
        .values(due_at=_now(), claimed_by=None)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def state(now=None):
    """``(waiting, failed, age of the oldest waiting mail in seconds)``.

    Ends its read transaction.
    """
    now = _now() if now is None else now
    waiting, oldest = db.session.execute(
        select(func.count(), func.min(OutboxMail.created_at)).where(
            OutboxMail.failed_at.is_(None)
        )
    ).one()
    failed_count = db.session.scalar(
        select(func.count()).where(OutboxMail.failed_at.is_not(None))
    )
    db.session.rollback()
    return waiting, failed_count, (now - oldest if oldest is not None else 0)


def stuck(limit=20):
    """The oldest mails still waiting or set aside, for an operator:
    ``(id, kind, created_at, attempts, due_at, failed_at, last_error)``;
    neither the recipient's address nor the body."""
    rows = db.session.execute(
        select(
            OutboxMail.id,
            OutboxMail.kind,
            OutboxMail.created_at,
            OutboxMail.attempts,
            OutboxMail.due_at,
            OutboxMail.failed_at,
            OutboxMail.last_error,
        )
        .order_by(OutboxMail.created_at, OutboxMail.id)
        .limit(limit)
    ).all()
    db.session.rollback()
    return rows


def retry_failed(now=None):
    """Put every mail set aside back in line; returns how many. Commits."""
    now = _now() if now is None else now
    count = db.session.execute(
        update(OutboxMail)
        .where(OutboxMail.failed_at.is_not(None))
        .values(failed_at=None, attempts=0, due_at=now, claimed_by=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.commit()
    return count

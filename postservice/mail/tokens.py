"""Single-use tokens sent by mail: password resets and email checks.

A token is 32 random bytes (``secrets.token_urlsafe``: 43 characters). The
database keeps only its SHA-256, so a copy of the table opens nothing; the
token itself exists in the mail and nowhere else (never in a log line). A
token is good for one purpose, until it expires, and once: using it marks
its row used in the transaction that does what it allows, with a
conditional UPDATE, so two requests with the same token cannot both win.
"""

import hashlib
import re
import secrets
import time

from sqlalchemy import delete, or_, select, update

from postservice.extensions import db
from postservice.http.errors import APIError
from postservice.models import EmailToken

PASSWORD_RESET = "password_reset"  # noqa: S105 (a purpose, not a secret)
VERIFY_EMAIL = "verify_email"
TOKEN_BYTES = 32
# What token_urlsafe(32) gives; anything else was never issued here.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
INVALID = "Invalid or expired token"


class InvalidToken(APIError):
    def __init__(self):
        super().__init__(400, INVALID)


def digest(token):
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def issue(user_id, purpose, lifetime, now=None):
    """A new token for ``user_id``, its row added to the transaction (not
    committed); returns the token, to be put in a mail and nowhere else."""
    now = int(time.time()) if now is None else now
    token = secrets.token_urlsafe(TOKEN_BYTES)
    db.session.add(
        EmailToken(
            user_id=user_id,
            purpose=purpose,
            token_hash=digest(token),
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


def _good(token_hash, purpose, now):
    return (
        EmailToken.token_hash == token_hash,
        EmailToken.purpose == purpose,
        EmailToken.used_at.is_(None),
        EmailToken.expires_at > now,
    )


def holder(token, purpose):
    """The id of the user whose unused, unexpired ``token`` this is.

    Reads only; ends its read transaction. Raises ``InvalidToken`` for a
    token that is malformed, unknown (altered), expired or used.
    """
    if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
        raise InvalidToken()
    user_id = db.session.scalar(
        select(EmailToken.user_id).where(*_good(digest(token), purpose, time.time()))
    )
    db.session.rollback()
    if user_id is None:
        raise InvalidToken()
    return user_id


def use(token, purpose, now=None):
    """Mark ``token`` used, inside the caller's transaction (not committed).

    Returns the id of its user. Raises ``InvalidToken`` when it is not
    good (any more): of two requests with one token, the second finds it
    used, whichever commits first.
    """
    if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
        raise InvalidToken()
    now = int(time.time()) if now is None else now
    token_hash = digest(token)
    used = db.session.execute(
        update(EmailToken)
        .where(*_good(token_hash, purpose, now))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not used:
        raise InvalidToken()
    return db.session.scalar(
        select(EmailToken.user_id).where(EmailToken.token_hash == token_hash)
    )


def end_all(user_id, purpose, now=None):
    """Mark every unused token of ``user_id`` for ``purpose`` used (not committed)."""
    now = int(time.time()) if now is None else now
    db.session.execute(
        update(EmailToken)
        .where(
            EmailToken.user_id == user_id,
            EmailToken.purpose == purpose,
            EmailToken.used_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )


def purge_expired(now=None):
    """Delete tokens expired or used over a day ago; returns how many. Commits."""
    now = int(time.time()) if now is None else now
    deleted = db.session.execute(
        delete(EmailToken).where(
            or_(EmailToken.expires_at < now, EmailToken.used_at < now - 86400)
        )
    ).rowcount
    db.session.commit()
    return deleted

"""``Idempotency-Key`` on add-post: a retried request stores nothing new.

A client that sent add-post and got no answer cannot know whether the post
was stored. Sent again with the same key (any string of 1 to 255 visible
ASCII characters, one per intended post), the request answers the id of
the post stored the first time. The key is recorded in the transaction
that stores the post, under a primary key of (user, key): of concurrent
requests with one key, one commits and the others find its row. Keys hold
for ``TTL`` seconds; the same key with a different text is refused (422),
as that is a client bug, not a retry. Past ``TTL`` the key is free for one
new post: its record is renewed by a single conditional update, which one
of any number of concurrent copies wins.
"""

import hashlib
import re
import time

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from postservice.cache import generations
from postservice.db import transactions
from postservice.extensions import db
from postservice.http.errors import APIError, Unauthorized
from postservice.models import IDEMPOTENCY_KEY_MAX_CHARS, IdempotencyKey

HEADER = "Idempotency-Key"
TTL = 24 * 3600
# Rows deleted per transaction by ``purge_expired``: short transactions keep
# row locks brief and stay far below a Galera write set's limits.
PURGE_BATCH = 1000
VALID_KEY = re.compile(rf"[\x21-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_CHARS}}}")
# The header as the OpenAPI document describes it.
HEADER_DOC = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": f"Any 1 to {IDEMPOTENCY_KEY_MAX_CHARS} visible ASCII characters, "
    "new for each post. Sent again (within 24 hours, with the same text), the "
    "request answers the post stored the first time and stores nothing.",
    "schema": {
        "type": "string",
        "pattern": f"^[!-~]{{1,{IDEMPOTENCY_KEY_MAX_CHARS}}}$",
    },
}


class InvalidKey(APIError):
    def __init__(self):
        message = f"1 to {IDEMPOTENCY_KEY_MAX_CHARS} visible ASCII characters"
        super().__init__(422, "Invalid input", errors={HEADER: [message]})


class KeyReused(APIError):
    def __init__(self):
        super().__init__(
            422,
            "Invalid input",
            errors={HEADER: ["Already used for a request with another body"]},
        )


def fingerprint(text):
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def run_once(user_id, key, text, insert):
    """``(post_id, created)``: ``insert()`` run and recorded under ``key``, or
    the post recorded under it before (``created`` False).

    ``insert()`` adds the post without committing and returns its id. Raises
    ``InvalidKey``, ``KeyReused``, ``Unauthorized`` (the account is gone)
    and ``transactions.DatabaseBusy``.
    """
    if not VALID_KEY.fullmatch(key):
        raise InvalidKey()
    digest = fingerprint(text)
    # Tried again after a lost commit too: the retry reads the row back.
    # A replay invalidates the listing as the first request did: harmless,
    # and no write path has to decide when it may skip that.
    return transactions.write(
        lambda: _once(user_id, key, digest, insert),
        user_id=user_id,
        invalidates=(generations.POSTS,),
        after_lost_commit=True,
    )


def _recorded(user_id, key, digest, now):
    """The live record of ``key``, ``"expired"``, or None."""
    row = db.session.execute(
        select(
            IdempotencyKey.post_id,
            IdempotencyKey.request_hash,
            IdempotencyKey.created_at,
        ).where(
            IdempotencyKey.user_id == user_id, IdempotencyKey.idempotency_key == key
        )
    ).first()
    if row is None:
        return None
    if row.created_at <= now - TTL:
        return "expired"
    if row.request_hash != digest:
        raise KeyReused()
    return row


def _once(user_id, key, digest, insert):
    now = int(time.time())
    row = _recorded(user_id, key, digest, now)
    if row == "expired":
        return _renew(user_id, key, digest, now, insert)
    if row is not None:
        db.session.rollback()  # nothing to write; end the read
        return row.post_id, False
    post_id = insert()
    db.session.add(
        IdempotencyKey(
            user_id=user_id,
            idempotency_key=key,
            request_hash=digest,
            post_id=post_id,
            created_at=now,
        )
    )
    try:
        db.session.commit()
    except IntegrityError:
        # Another request with this key committed first (or the account is
        # gone): its row decides, read in a new transaction.
        db.session.rollback()
        return _winners(user_id, key, digest, now)
    return post_id, True


def _renew(user_id, key, digest, now, insert):
    """Record ``key`` afresh over its expired row, for one new post.

    Renewing is one conditional ``UPDATE``: of concurrent copies that all
    read the row expired, the first takes its row lock and renews it; the
    others wait for its commit, find the row no longer expired (InnoDB's
    update reads the latest committed row, and SQLite has one writer at a
    time) and change nothing. They then answer the winner's post. Deleting
    and inserting instead would let each copy delete the previous winner's
    row and store a post of its own.
    """
    record = (
        IdempotencyKey.user_id == user_id,
        IdempotencyKey.idempotency_key == key,
    )
    claimed = db.session.execute(
        update(IdempotencyKey)
        .where(*record, IdempotencyKey.created_at <= now - TTL)
        .values(request_hash=digest, created_at=now)
    ).rowcount
    if not claimed:
        # Renewed by another request first, or purged meanwhile.
        db.session.rollback()
        return _winners(user_id, key, digest, now, insert)
    post_id = insert()
    db.session.execute(update(IdempotencyKey).where(*record).values(post_id=post_id))
    db.session.commit()
    return post_id, True


def _winners(user_id, key, digest, now, insert=None):
    """The post another request recorded under ``key``, read afresh.

    ``insert`` given: a row purged meanwhile is recorded anew with it.
    """
    row = _recorded(user_id, key, digest, now)
    db.session.rollback()
    if row is None and insert is not None:
        return _once(user_id, key, digest, insert)
    if row is None or row == "expired":
        raise Unauthorized("Could not validate credentials") from None
    return row.post_id, False


def purge_expired(now=None, batch=PURGE_BATCH):
    """Delete the records of keys older than ``TTL``; returns how many.

    Runs in transactions of at most ``batch`` rows. A key that a request
    renews meanwhile (``_renew``) carries a new ``created_at`` and is kept.
    """
    now = int(time.time()) if now is None else now
    cutoff = now - TTL
    expired = IdempotencyKey.created_at <= cutoff
    pk = tuple_(IdempotencyKey.user_id, IdempotencyKey.idempotency_key)
    deleted = 0
    while True:
        keys = db.session.execute(
            select(IdempotencyKey.user_id, IdempotencyKey.idempotency_key)
            .where(expired)
            .limit(batch)
        ).all()
        if not keys:
            break
        deleted += db.session.execute(
            delete(IdempotencyKey).where(pk.in_([tuple(k) for k in keys]), expired)
        ).rowcount
        db.session.commit()
        if len(keys) < batch:
            break
    db.session.rollback()  # ends the last read
    return deleted

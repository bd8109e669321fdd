"""The unit of work: every write commits, is tried again, then invalidates.

``write()`` is the one way a request changes the database. It names the
user whose cached answers the change affects and which kinds of them
(``cache.generations``); once the work has committed, those are made
stale on every instance. A write path cannot forget the cache: it has to
say what it touches to write at all.

Transactions are tried again when the database rolled them back.

On a Galera cluster two nodes may commit conflicting rows at the same
moment (the same email, say); one of them is refused at commit with 1213,
its transaction rolled back. On one InnoDB server the same code means a
deadlock, and 1205 a lock wait that ran out. Nothing was stored in either
case, so the transaction can run again, and the second run sees the winner's
row and answers as if the requests had come one after the other.

A connection lost before anything was committed (a server restarted, or
a connection it dropped while idle, met by the transaction's first
statement) is tried again too: the server rolls back what a connection
had not committed when it goes. A connection lost during the commit is
different: the commit may or may not have happened. Only work that can
tell (it reads back what it meant to write) is tried again then, with
``after_lost_commit=True``. Which of the two it was, the engines count
(``engines.commits_sent``).
"""

import contextlib
import logging
import random
import time

from flask import current_app
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from postservice.cache import generations
from postservice.db import engines
from postservice.extensions import db
from postservice.http.errors import APIError

log = logging.getLogger(__name__)

DUPLICATE_KEY = 1062
LOCK_WAIT_TIMEOUT = 1205
DEADLOCK = 1213  # also Galera's "certification failed" at commit
ROLLED_BACK = {LOCK_WAIT_TIMEOUT, DEADLOCK}
SERVER_GONE, SERVER_LOST = 2006, 2013
BACKOFF = 0.02  # seconds before the first retry; doubled, with jitter, each time


class DatabaseBusy(APIError):
    """Retries ran out: distinct from the 503 of a database that is down."""

    def __init__(self):
        super().__init__(503, "Database busy, try again", headers={"Retry-After": "1"})


class NotAnnounced(APIError):
    """Committed, but neither Redis nor the database took its invalidation.

    Other instances may go on serving cached answers without the change
    (a token still accepted, a listing without it) for up to
    ``POSTS_CACHE_TTL`` seconds, so the change is not confirmed: the client
    is told to try again, which announces it again.
    """

    def __init__(self):
        super().__init__(
            503,
            "Stored, but not yet in force on every instance; try again",
            headers={"Retry-After": "1"},
        )


def error_code(error):
    args = getattr(error.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def connection_lost(error):
    """Whether ``error`` (a ``DBAPIError``) is the connection's loss: what it
    was running may or may not have happened."""
    lost = (SERVER_GONE, SERVER_LOST)
    return error.connection_invalidated or error_code(error) in lost


def _retryable(error, after_lost_commit, committed):
    """``committed``: whether the try sent anything that commits."""
    if error_code(error) in ROLLED_BACK:
        return True
    if not connection_lost(error):
        return False
    return after_lost_commit or not committed


def run(work, *, after_lost_commit=False):
    """``work()``, which ends with its own commit, tried up to
    ``DATABASE_RETRIES`` more times while the database rolls it back, or
    its connection is lost before it commits (see above).

    Raises ``DatabaseBusy`` when every try was rolled back; any other error
    from ``work`` is raised as it is (after a rollback).
    """
    retries = current_app.config["DATABASE_RETRIES"]
    for attempt in range(retries + 1):
        commits_before = engines.commits_sent()
        try:
            return work()
        except DBAPIError as e:
            with contextlib.suppress(SQLAlchemyError):  # the connection may be gone
                db.session.rollback()
            committed = engines.commits_sent() != commits_before
            if not _retryable(e, after_lost_commit, committed):
                raise
            if connection_lost(e):
                engines.discard_pooled_connections()
            log.info("transaction rolled back (%s), try %d", error_code(e), attempt + 1)
            if attempt < retries:
                pause_before_retry(attempt)
    raise DatabaseBusy()


def read(work):
    """``work()``, which only reads, run again (up to ``DATABASE_RETRIES``
    times) while the connection is lost under it.

    A read can always be repeated. The new connection may fail too while a
    proxy in front of Galera nodes has not yet moved off a dead node, hence
    a few tries with pauses, as for writes; the last try's error is raised.
    """
    for attempt in range(current_app.config["DATABASE_RETRIES"]):
        try:
            return work()
        except DBAPIError as e:
            if not connection_lost(e):
                raise
            log.info("database connection lost under a read, try %d", attempt + 1)
            with contextlib.suppress(SQLAlchemyError):
                db.session.rollback()
            engines.discard_pooled_connections()
            pause_before_retry(attempt)
    return work()


def pause_before_retry(attempt):
    """Wait before try ``attempt + 2``: doubled each time, with jitter, so the
    two sides of a conflict do not meet again."""
    time.sleep(BACKOFF * 2**attempt * (0.5 + random.random()))  # noqa: S311


def write(work, *, user_id, invalidates, drop=(), after_lost_commit=False, extend=None):
    """``work()`` through ``run``, then the user's cached answers invalidated.

    ``invalidates`` names the kinds of cached answers (``generations.POSTS``,
    ``generations.TOKENS``) that the committed change makes stale, for
    ``user_id``; ``drop`` names cache keys to delete as well (what must not
    stay in Redis at all, such as a deleted account's listing). Nothing is
    invalidated when ``work`` raises: nothing was committed. An invalidation
    Redis cannot take now is announced in the database, and every instance
    obeys it within ``generations.TRUST_FOR`` seconds
    (``generations.invalidate``); when the database does not take that
    either, ``NotAnnounced`` is raised (a 503) instead of answering.

    ``extend(result)``, when given, may bring the cached answers up to date
    with the change instead (an added post appended to the cached listing,
    under a new generation) and returns True when it did; otherwise they
    are invalidated.
    """
    result = run(work, after_lost_commit=after_lost_commit)
    if extend is None or not extend(result):
        invalidate(user_id, invalidates, drop)
    return result


def invalidate(user_id, kinds, drop=()):
    """After a commit: make the user's cached answers of ``kinds`` stale.

    For work that decides only once it has run whether it changed what a
    cache holds (``write`` calls it for every change it commits). Raises
    ``NotAnnounced`` when neither Redis nor the database took it.
    """
    if kinds and not generations.invalidate(user_id, *kinds, drop=drop):
        log.warning(
            "cache not told of a change for user %s; it is sent when the cache "
            "answers again",
            user_id,
        )
        raise NotAnnounced()

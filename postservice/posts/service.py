"""Post rules: adding, listing and deleting a user's own posts."""

import random
from functools import cache as built_once

from flask import current_app
from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy import text as sql_text
from sqlalchemy.exc import IntegrityError

from postservice.cache import generations
from postservice.db import transactions
from postservice.db.engines import single_statement, statement_engine
from postservice.extensions import db
from postservice.http.errors import NotFound, Unauthorized
from postservice.models import Post
from postservice.ops import metrics
from postservice.posts import cache, idempotency, listing

# What every write of posts makes stale: the user's cached listing.
POSTS = (generations.POSTS,)


def add_post(*, user_id, text, idempotency_key=None):
    """Store the post and return its id; the user's cached listing is invalidated.

    With an ``idempotency_key`` (see ``idempotency``) a repeated request gets
    the id of the post stored the first time, and nothing new is stored.

    Raises ``Unauthorized`` when the token's user no longer exists,
    ``idempotency.KeyReused`` or ``idempotency.InvalidKey`` (422), and
    ``transactions.DatabaseBusy`` when the database keeps rolling it back.
    """
    if idempotency_key is None:
        return _add_alone(user_id, text)
    post_id, _created = idempotency.run_once(
        user_id, idempotency_key, text, lambda: _insert_in_session(user_id, text)
    )
    return post_id


# The statements of the writes, built once: a statement built per request
# costs SQLAlchemy a new cache key each time, a visible share of the INSERT's CPU.
@built_once
def _insert_statement():
    return insert(Post.__table__)


@built_once
def _delete_statement():
    posts = Post.__table__
    return delete(posts).where(
        posts.c.id == bindparam("post_id"), posts.c.user_id == bindparam("user_id")
    )


@built_once
def _stored_statement(dialect):
    """The id of the post carrying an insert token, read so that it waits for
    a commit of that row still under way.

    On MySQL a locking read (``LOCK IN SHARE MODE``): it waits for the
    lock of a row whose INSERT has not finished committing on this server,
    where a plain read would not see the row yet. On Galera
    ``wsrep_sync_wait`` makes it wait, first, until this node has applied
    every commit the cluster ordered before it, the lost one included if it
    was ordered at all (MariaDB's ``SET STATEMENT``, in a comment that other
    servers skip). SQLite has one writer at a time.
    """
    if dialect in ("mysql", "mariadb"):
        return sql_text(
            "/*M!100101 SET STATEMENT wsrep_sync_wait = 1 FOR */ "
            "SELECT id FROM posts WHERE user_id = :user_id "
            "AND insert_token = :insert_token LOCK IN SHARE MODE"
        )
    posts = Post.__table__
    return select(posts.c.id).where(
        posts.c.user_id == bindparam("user_id"),
        posts.c.insert_token == bindparam("insert_token"),
    )


def _add_alone(user_id, text):
    """The post stored by one INSERT, tried again even after a lost commit.

    A connection lost while the INSERT commits (the node it ran on died, or
    a proxy cut it) leaves the row stored or not. Each request draws a
    random ``insert_token`` that the row carries; every try after the first
    looks for it and answers the stored row's id instead of inserting a
    second one. The token costs the INSERT eight bytes and no index.
    """
    row = {"user_id": user_id, "text": text, "insert_token": _insert_token()}
    tries = []

    def attempt():
        if tries:
            stored = _stored_id(row)
            if stored is not None:
                return stored
        tries.append(1)
        return _insert_alone(row)

    return transactions.write(
        attempt, user_id=user_id, invalidates=POSTS, after_lost_commit=True
    )


def _insert_token():
    # Not a secret, only unique among one user's posts: 63 random bits.
    return random.getrandbits(63)


def _stored_id(row):
    engine = statement_engine()
    with engine.connect() as conn:
        return conn.execute(
            _stored_statement(engine.dialect.name),
            {"user_id": row["user_id"], "insert_token": row["insert_token"]},
        ).scalar()


def _insert_alone(row):
    """One Core INSERT, its own transaction (``database.single_statement``):
    the ORM's unit of work would cost more than the statement for one row."""
    try:
        with single_statement() as conn:
            return conn.execute(_insert_statement(), row).inserted_primary_key[0]
    except IntegrityError:  # the foreign key: the account was deleted
        raise Unauthorized("Could not validate credentials") from None


def _insert_in_session(user_id, text):
    """The INSERT alone, in the session's transaction, for its caller to commit."""
    post = Post(user_id=user_id, text=text)
    db.session.add(post)
    try:
        db.session.flush()
        post_id = post.id
    except IntegrityError:  # the foreign key: the account was deleted
        raise Unauthorized("Could not validate credentials") from None
    return post_id


def delete_post(*, user_id, post_id):
    """Delete the post.

    Raises ``NotFound`` when it does not exist or belongs to someone else:
    the two are indistinguishable so ids of other users' posts do not leak;
    ``transactions.DatabaseBusy`` when the database keeps rolling it back.

    Tried again after a lost commit too: the DELETE runs again, and a try
    after the first that finds no row answers as a delete, since the post
    is gone either way (an id that was never the user's then gets 204
    instead of 404, which still says nothing of other users' posts).
    """
    tries = []

    def attempt():
        first = not tries
        tries.append(1)
        if not _delete(user_id, post_id) and first:
            raise NotFound("Post not found")

    transactions.write(
        attempt, user_id=user_id, invalidates=POSTS, after_lost_commit=True
    )


def listing_body(*, user_id):
    """All the user's posts, oldest first, as the JSON body of the response.

    Bytes when cached or small, otherwise an iterator of chunks streamed
    from the database (see ``listing.started`` for what has already run).
    A listing is cached only when it was read completely and is at most
    ``POSTS_CACHE_MAX_BYTES``.
    """
    body, generation = cache.lookup(user_id)
    if body is not None:
        metrics.cache_result("hit")
        return body
    chunks = _render_listing(user_id)
    if generation is not None:
        chunks = _cached_when_complete(chunks, user_id, generation)
    else:
        metrics.cache_result("bypass")  # Redis failed or is being left alone
    return listing.started(chunks)


def _delete(user_id, post_id):
    """How many rows the DELETE removed: 1 or 0."""
    with single_statement() as conn:
        return conn.execute(
            _delete_statement(), {"post_id": post_id, "user_id": user_id}
        ).rowcount


def page_body(*, user_id, limit, after_id):
    """Up to ``limit`` of the user's posts with ids above ``after_id``.

    Returns ``(body, next_after_id)``; ``next_after_id`` is None on the last
    page. The ids are read first (from the index alone) so that the page's
    end, and whether more follow, are known before its texts are streamed.
    """
    ids = db.session.scalars(
        select(Post.id)
        .where(Post.user_id == user_id, Post.id > after_id)
        .order_by(Post.id)
        .limit(limit + 1)
    ).all()
    db.session.rollback()  # end the read snapshot; nothing was written
    if not ids:
        return b"[]", None
    last = ids[min(limit, len(ids)) - 1]
    statement = (
        select(*listing.columns())
        .where(Post.user_id == user_id, Post.id > after_id, Post.id <= last)
        .order_by(Post.id)
    )
    body = listing.started(listing.json_chunks(statement_engine(), statement))
    return body, (last if len(ids) > limit else None)


def _render_listing(user_id):
    statement = (
        select(*listing.columns()).where(Post.user_id == user_id).order_by(Post.id)
    )
    # One SELECT: on MySQL's autocommit engine no ROLLBACK follows it.
    return listing.json_chunks(statement_engine(), statement)


def _cached_when_complete(chunks, user_id, generation):
    """Pass ``chunks`` through, caching the body if it ends and is small enough.

    A client that goes away mid-stream closes this generator at a ``yield``,
    so an incomplete body is never stored.
    """
    limit = current_app.config["POSTS_CACHE_MAX_BYTES"]
    kept, size = [], 0
    try:
        for chunk in chunks:
            if kept is not None:
                size += len(chunk)
                if size <= limit:
                    kept.append(chunk)
                else:
                    kept = None  # too big to cache; stop holding on to it
            yield chunk
    finally:
        chunks.close()  # its database connection, now and not at garbage collection
        metrics.cache_result("miss" if kept is not None else "bypass")
    if kept is not None:
        cache.store(user_id, generation, b"".join(kept))

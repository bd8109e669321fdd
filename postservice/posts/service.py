"""Post rules: adding, listing and deleting a user's own posts."""

from functools import cache as built_once

from flask import current_app
from sqlalchemy import bindparam, delete, insert, select
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
        return transactions.write(
            lambda: _insert_alone(user_id, text), user_id=user_id, invalidates=POSTS
        )
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


def _insert_alone(user_id, text):
    """One Core INSERT, its own transaction (``database.single_statement``):
    the ORM's unit of work would cost more than the statement for one row."""
    try:
        with single_statement() as conn:
            return conn.execute(
                _insert_statement(), {"user_id": user_id, "text": text}
            ).inserted_primary_key[0]
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
    A lost commit is not tried again: the retry would find nothing and
    answer 404 for a post it had deleted.
    """
    transactions.write(
        lambda: _delete(user_id, post_id), user_id=user_id, invalidates=POSTS
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
    with single_statement() as conn:
        deleted = conn.execute(
            _delete_statement(), {"post_id": post_id, "user_id": user_id}
        ).rowcount
    if not deleted:
        raise NotFound("Post not found")


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

"""Post rules: adding, reading, editing, listing and deleting a user's own posts."""

import collections
import functools
import logging
import random
from functools import cache as built_once
from typing import Any, NamedTuple

from flask import current_app
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy import text as sql
from sqlalchemy.exc import IntegrityError

from postservice.cache import generations, namespace
from postservice.cache import health as cache_health
from postservice.cache.clients import REDIS_ERRORS
from postservice.db import transactions
from postservice.db.engines import single_statement, statement_engine
from postservice.extensions import db
from postservice.http.errors import NotFound, PreconditionFailed, Unauthorized
from postservice.models import Post
from postservice.ops import metrics
from postservice.posts import cache, idempotency, listing, rebuilds, scripts, tags

log = logging.getLogger(__name__)

# A new post's version (the column's default, migration 0007).
FIRST_VERSION = 1
# INSERTs of one add that may meet an id already taken (see _insert_alone).
ID_DRAWS = 3

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
    insert = functools.partial(_insert_in_session, user_id, text)
    # A taken id undoes the whole transaction (the key's record was read in
    # it): it runs again from the start.
    post_id, _created = _drawing_ids(
        lambda: idempotency.run_once(user_id, idempotency_key, text, insert)
    )
    return post_id


class _IdTaken(Exception):
    """The post's INSERT met a duplicate key (see ``_drawing_ids``)."""


def _drawing_ids(work):
    """``work()``, run again while its INSERT meets an id already taken, at
    most ``ID_DRAWS`` times in all, then ``DatabaseBusy``.

    Galera's nodes change how they draw ids (``auto_increment_offset``)
    when one joins or leaves, and for a moment a node may draw an id another
    has just used: that INSERT fails as a duplicate key, having stored
    nothing, and the next one draws another id.
    """
    for _ in range(ID_DRAWS):
        try:
            return work()
        except _IdTaken:
            log.info("post id already taken, drawing another")
    raise transactions.DatabaseBusy()


def _refused_insert(error):
    """What a post's INSERT refused with ``error`` (an ``IntegrityError``)
    means: an id already taken, or the foreign key: the account was deleted."""
    if transactions.error_code(error) == transactions.DUPLICATE_KEY:
        return _IdTaken()
    return Unauthorized("Could not validate credentials")


# The statements of the writes, built once: a statement built per request
# costs SQLAlchemy a new cache key each time, a visible share of the INSERT's CPU.
@built_once
def _insert_statement(returning):
    statement = insert(Post.__table__)
    if returning:  # what the database set: see _appended
        statement = statement.returning(Post.id, Post.created_at)
    return statement


@built_once
def _delete_statement(in_versions=False, not_in_versions=False):
    posts = Post.__table__
    return delete(posts).where(
        posts.c.id == bindparam("post_id"),
        posts.c.user_id == bindparam("user_id"),
        *_version_clauses(in_versions, not_in_versions),
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
        return sql(
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
    appending = cache.worth_appending(user_id)
    tries = []

    def attempt():
        if tries:
            stored = _stored_id(row)
            if stored is not None:
                return (stored,)  # its row as listed is unknown: not appended
        tries.append(1)
        return _insert_alone(row, appending)

    stored = transactions.write(
        attempt,
        user_id=user_id,
        invalidates=POSTS,
        after_lost_commit=True,
        extend=lambda stored: _appended(user_id, text, stored),
    )
    return stored[0]


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


def _insert_alone(row, appending):
    """One Core INSERT, its own transaction (``database.single_statement``):
    the ORM's unit of work would cost more than the statement for one row.
    An id already taken draws another (``_drawing_ids``)."""
    return _drawing_ids(lambda: _insert_once(row, appending))


def _insert_once(row, appending):
    try:
        with single_statement() as conn:
            # Known once the dialect has met the server (MariaDB 10.5+, SQLite).
            returning = appending and conn.dialect.insert_returning
            result = conn.execute(_insert_statement(returning), row)
            return result.one() if returning else result.inserted_primary_key
    except IntegrityError as e:
        raise _refused_insert(e) from None


def _appended(user_id, text, row):
    """Extend the user's cached listing with the post just stored: a listing
    read while posts are added stays cached (``posts.cache.appended``).

    ``row`` is what the INSERT returned: the id and ``created_at``. A new
    post's ``updated_at`` is the same time (one statement's
    CURRENT_TIMESTAMP) and its version 1, so no more columns are read.
    False when it could not be (the database returns no row; no scripts;
    Redis failed): ``transactions.write`` then makes the listing stale the
    usual way.
    """
    if len(row) == 1:
        return False
    post_id, created_at = row
    known = {"id": post_id, "text": text, "created_at": created_at}
    known["updated_at"] = created_at
    if not set(listing.POST_FIELDS) <= known.keys():
        return False  # a field this add does not know: the listing is read again
    post = [known[name] for name in listing.POST_FIELDS]
    try:
        # Extended, or made stale by the script: either way the generation moved.
        cache.appended(user_id, post_id, FIRST_VERSION, listing.encoded(post))
        return True
    except (cache_health.CacheUnavailable, namespace.Unknown):
        return False
    except REDIS_ERRORS as e:
        cache_health.current().failed(e)
        return False


def _insert_in_session(user_id, text):
    """The INSERT alone, in the session's transaction, for its caller to commit."""
    post = Post(user_id=user_id, text=text)
    db.session.add(post)
    try:
        db.session.flush()
    except IntegrityError as e:
        db.session.rollback()
        raise _refused_insert(e) from None
    return post.id


def delete_post(*, user_id, post_id, condition=tags.UNCONDITIONAL):
    """Delete the post, if its version meets ``condition`` (as for
    ``edit_post``: else ``PreconditionFailed``, 412, and it stays).

    Raises ``NotFound`` when it does not exist or belongs to someone else:
    the two are indistinguishable so ids of other users' posts do not leak;
    ``transactions.DatabaseBusy`` when the database keeps rolling it back.

    Tried again after a lost commit too: the DELETE runs again, and a try
    after the first that finds no row answers as a delete, since the post
    is gone either way (an id that was never the user's then gets 204
    instead of 404, which still says nothing of other users' posts). A
    post still there at another version was not deleted: 412.
    """
    tries = []

    def attempt():
        if condition.never:
            raise (
                PreconditionFailed()
                if _owned(user_id, post_id)
                else NotFound("Post not found")
            )
        first = not tries
        tries.append(1)
        if _delete(user_id, post_id, condition):
            return
        if condition.checks_version and _owned(user_id, post_id):
            raise PreconditionFailed()
        if first:
            raise NotFound("Post not found")

    transactions.write(
        attempt, user_id=user_id, invalidates=POSTS, after_lost_commit=True
    )


def _delete(user_id, post_id, condition):
    """How many rows the DELETE removed: 1 or 0."""
    statement = _delete_statement(*condition.shape)
    values = {"post_id": post_id, "user_id": user_id, **_version_values(condition)}
    with single_statement() as conn:
        return conn.execute(statement, values).rowcount


def _owned(user_id, post_id):
    with statement_engine().connect() as conn:
        found = conn.execute(_owned_statement(), {"post_id": post_id, "owner": user_id})
        return found.first() is not None


class Listing(NamedTuple):
    """A listing's answer: its tag, and its body (None: the client has it).

    ``body`` is bytes, or an iterator of chunks streamed from the database
    (see ``listing.started`` for what has already run). ``next_after_id``
    follows a page that is not the last.
    """

    tag: str
    body: Any
    next_after_id: int | None = None


def listing_body(*, user_id, known=None):
    """All the user's posts, oldest first, as a ``Listing``.

    ``known(tag)`` says whether the client holds the listing of that tag
    (``If-None-Match``); the body is then None. A cached listing answers
    without SQL; a miss reads the listing from the database, rebuilt by one
    request at a time (``posts.rebuilds``), and caches it when it was read
    completely and is at most ``POSTS_CACHE_MAX_BYTES``.
    """
    cached = cache.lookup(user_id, body=known is None)
    if cached.link is not None:
        body = cached.body
        if known is not None:
            if known(cached.link):
                metrics.cache_result("hit")
                return Listing(cached.link, None)
            body = cache.read_body(user_id, cached)
        if body is not None:
            metrics.cache_result("hit")
            return Listing(cached.link, body)
        # The tag alone is cached: the listing is too large to cache.
    if cached.generation is None or cached.link is not None:
        if cached.generation is None:
            metrics.cache_result("bypass")  # Redis failed or is being left alone
        return rebuilds.alone(
            user_id,
            lambda done: _read_listing(user_id, known, cached.generation, done),
        )
    return rebuilds.once(
        user_id,
        cached.generation,
        build=lambda generation, done: _read_listing(user_id, known, generation, done),
        served=lambda found: _served(found, known),
    )


def _served(cached, known):
    """The answer from the bytes another request's rebuild stored."""
    metrics.cache_result("shared")
    if known is not None and known(cached.link):
        return Listing(cached.link, None)
    return Listing(cached.link, cached.body)


def _read_listing(user_id, known, generation, done):
    """The listing read from the database, with its tag from the same rows;
    cached under ``generation`` unless None. ``done()`` runs once it is over.

    A listing small enough to cache is read at once, in one SELECT; a
    larger one is streamed, its tag read first in the same snapshot.
    """
    limit = current_app.config["POSTS_CACHE_MAX_BYTES"]
    if limit:
        try:
            read = listing.whole(
                statement_engine(), _listing_statement(user_id), tags.seed("all"), limit
            )
        except BaseException:
            done()
            raise
        if read is not None:
            try:
                if generation is not None:
                    metrics.cache_result("miss")
                    link, last_id, body, tail = read
                    cache.store(user_id, generation, link, last_id, body, tail)
            finally:
                done()
            link, _, body, _ = read
            return Listing(link, None if known is not None and known(link) else body)
    chunks = listing.tagged_chunks(
        statement_engine(), lambda conn: _listing_head(conn, user_id)
    )
    try:
        link, last_id, tail = next(chunks)
    except BaseException:
        done()
        raise
    if known is not None and known(link):
        chunks.close()
        done()
        return Listing(link, None)
    chunks = _cached_when_complete(
        chunks, user_id, generation, (link, last_id, tail), done
    )
    return Listing(link, listing.started(chunks))


def _listing_statement(user_id):
    """The user's posts as listed, and their versions, oldest first."""
    return (
        select(*listing.columns(), Post.version)
        .where(Post.user_id == user_id)
        .order_by(Post.id)
    )


def _pairs(conn, statement):
    return conn.execution_options(stream_results=True, yield_per=1000).execute(
        statement
    )


def _listing_head(conn, user_id):
    """The listing's tag, last id and tail (as ``listing.whole``'s, without
    the places of the bytes), and the statement of its posts."""
    link, last_id = tags.seed("all"), 0
    tail = collections.deque(maxlen=scripts.TAIL)
    ids = select(Post.id, Post.version).where(Post.user_id == user_id).order_by(Post.id)
    for post_id, version in _pairs(conn, ids):
        tail.append((post_id, version, 0, link))
        link, last_id = tags.chain(link, post_id, version), post_id
    statement = (
        select(*listing.columns()).where(Post.user_id == user_id).order_by(Post.id)
    )
    return (link, last_id, list(tail)), statement


def page_body(*, user_id, limit, after_id, known=None):
    """Up to ``limit`` of the user's posts with ids above ``after_id``, as a
    ``Listing`` with its own tag; ``known`` as for ``listing_body``.

    ``next_after_id`` is None on the last page. The ids and versions are read
    first, in the same snapshot as the texts, so that the page's end,
    whether more follow and its tag are known before its texts are streamed.
    """

    def head(conn):
        ids = (
            select(Post.id, Post.version)
            .where(Post.user_id == user_id, Post.id > after_id)
            .order_by(Post.id)
            .limit(limit + 1)
        )
        pairs = conn.execute(ids).all()
        more = len(pairs) > limit
        pairs = pairs[:limit]
        next_after_id = pairs[-1][0] if more else None
        link = tags.page_seed(limit, next_after_id)
        for post_id, version in pairs:
            link = tags.chain(link, post_id, version)
        statement = None
        if pairs:
            statement = (
                select(*listing.columns())
                .where(
                    Post.user_id == user_id,
                    Post.id > after_id,
                    Post.id <= pairs[-1][0],
                )
                .order_by(Post.id)
            )
        return (link, next_after_id), statement

    chunks = listing.tagged_chunks(statement_engine(), head)
    link, next_after_id = next(chunks)
    if known is not None and known(link):
        chunks.close()
        return Listing(link, None, next_after_id)
    return Listing(link, listing.started(chunks), next_after_id)


def _cached_when_complete(chunks, user_id, generation, tag, done):
    """Pass ``chunks`` through, caching the listing if it ends: its tag, and
    its bytes when they are small enough. ``generation`` None: no caching.

    A client that goes away mid-stream closes this generator at a ``yield``,
    so an incomplete body is never stored.
    """
    limit = current_app.config["POSTS_CACHE_MAX_BYTES"]
    kept, size, complete = [], 0, False
    try:
        for chunk in chunks:
            if kept is not None:
                size += len(chunk)
                if size <= limit:
                    kept.append(chunk)
                else:
                    kept = None  # too big to cache; stop holding on to it
            yield chunk
        complete = True
    finally:
        chunks.close()  # its database connection, now and not at garbage collection
        try:
            if generation is not None:
                metrics.cache_result("miss" if kept is not None else "bypass")
                if complete:
                    body = b"".join(kept) if kept is not None else None
                    link, last_id, tail = tag
                    cache.store(user_id, generation, link, last_id, body, tail)
        finally:
            done()


def get_post(*, user_id, post_id):
    """The post's JSON bytes, as listed, and its tag.

    Raises ``NotFound`` as ``delete_post`` does.
    """
    with statement_engine().connect() as conn:
        row = conn.execute(
            _post_statement(), {"post_id": post_id, "owner": user_id}
        ).first()
    if row is None:
        raise NotFound("Post not found")
    return _post(row)


def _post(row):
    """The post's JSON bytes, as in a listing, and its tag."""
    *post, version = row
    return listing.encoded(post), tags.post_tag(post[0], version)


def edit_post(*, user_id, post_id, text, condition=tags.UNCONDITIONAL):
    """Replace the post's text; returns the post's JSON bytes and its new tag.

    The edit goes ahead only if the post's version meets ``condition``
    (``tags.condition``: the request's ``If-Match`` and ``If-None-Match``),
    else ``PreconditionFailed`` (412) and nothing changes. The check and the
    edit are one ``UPDATE``, so no edit can come between.
    ``created_at`` stays; ``updated_at`` becomes the time of the edit, and
    is always later than ``created_at`` (at most a second ahead of the clock
    for an edit in the second the post was stored: times are in whole
    seconds). Raises ``NotFound`` as ``delete_post``. The user's cached
    listings become stale.
    """
    post = {"post_id": post_id, "owner": user_id}

    def work():
        session = db.session
        changed = 0
        if not condition.never:
            edit = _edit_statement(session.get_bind().dialect.name, *condition.shape)
            values = {**post, "new_text": text, **_version_values(condition)}
            changed = session.execute(edit, values).rowcount
        if not changed:
            exists = session.execute(_owned_statement(), post).first() is not None
            session.rollback()
            raise PreconditionFailed() if exists else NotFound("Post not found")
        row = session.execute(_post_statement(), post).one()
        session.commit()
        return row

    row = transactions.write(work, user_id=user_id, invalidates=POSTS)
    return _post(row)


@built_once
def _post_statement():
    """One post of an owner, with its version (the tag)."""
    posts = Post.__table__
    return select(*listing.columns(), posts.c.version).where(
        posts.c.id == bindparam("post_id"), posts.c.user_id == bindparam("owner")
    )


@built_once
def _owned_statement():
    """Whether the owner has the post: its id, without its text."""
    posts = Post.__table__
    return select(posts.c.id).where(
        posts.c.id == bindparam("post_id"), posts.c.user_id == bindparam("owner")
    )


@built_once
def _edit_statement(dialect, in_versions, not_in_versions):
    """The edit of one post of an owner, only at its ``Condition``'s
    versions (``_version_values``). A Core statement: the ORM's would
    evaluate its condition against the session's objects, of which there
    are none."""
    posts = Post.__table__
    statement = update(posts).where(
        posts.c.id == bindparam("post_id"),
        posts.c.user_id == bindparam("owner"),
        *_version_clauses(in_versions, not_in_versions),
    )
    # Not "text": a column's own name is reserved for its value in SET.
    return statement.values(
        text=bindparam("new_text"),
        version=posts.c.version + 1,
        updated_at=_edited_at(dialect),
    )


def _version_clauses(in_versions, not_in_versions):
    """The WHERE clauses of a ``tags.Condition`` (bound by ``_version_values``)."""
    version = Post.__table__.c.version
    clauses = []
    if in_versions:
        clauses.append(version.in_(bindparam("versions", expanding=True)))
    if not_in_versions:
        clauses.append(version.not_in(bindparam("not_versions", expanding=True)))
    return clauses


def _version_values(condition):
    values = {}
    if condition.versions is not None:
        values["versions"] = sorted(condition.versions)
    if condition.not_versions:
        values["not_versions"] = sorted(condition.not_versions)
    return values


def _edited_at(dialect):
    """Now, and later than ``created_at``: a client sees that the post moved."""
    if dialect == "sqlite":
        return sql("MAX(CURRENT_TIMESTAMP, datetime(created_at, '+1 second'))")
    return sql("GREATEST(CURRENT_TIMESTAMP, created_at + INTERVAL 1 SECOND)")

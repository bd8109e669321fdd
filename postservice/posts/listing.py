"""Posts as a JSON array, written a chunk at a time straight from the database.

The body is byte for byte what ``json.dumps(posts, ensure_ascii=False,
separators=(",", ":"))`` gives for the whole list, but a response never
holds more than a few rows: they come through a server-side cursor
(``stream_results``, which is PyMySQL's ``SSCursor`` on MySQL; SQLite steps
its cursor row by row anyway), ``FETCH_ROWS`` at a time, and leave in
chunks of about ``CHUNK_BYTES``. An account of any size therefore costs a
bounded amount of memory to serve.
"""

import collections
import contextlib
import json
from datetime import UTC, datetime

from sqlalchemy.exc import DBAPIError

from postservice.models import Post
from postservice.posts import scripts, tags
from postservice.posts.schemas import POST_FIELDS

# A post may be 1 MiB, so a batch may be FETCH_ROWS MiB (and twice that once
# decoded and encoded). Small batches cost little on a streaming cursor, as
# the rows arrive on one result set either way, and bound the memory of
# large listings read at once (bench/results/decisions.md).
FETCH_ROWS = 2
# Big enough that waitress sends few chunks, small enough to stay bounded.
CHUNK_BYTES = 64 * 1024


def _wire_value(value):
    """A column value JSON has no type for: times as RFC 3339 in UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(timespec="seconds") + "Z"
    raise TypeError(f"{type(value).__name__} is not part of a post's wire format")


# The same encoder json.dumps would build for these arguments on every call.
_encode_post = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=_wire_value
).encode


def columns():
    """The columns a listing selects: the post's wire format, in order."""
    columns = Post.__table__.c  # Core columns: no ORM work where they suffice
    return [columns[name] for name in POST_FIELDS]


def encoded(row):
    """One post's JSON bytes, as it appears in a listing."""
    return _encode_post(dict(zip(POST_FIELDS, row, strict=True))).encode("utf-8")


def json_chunks(engine, statement):
    """Yield ``statement``'s rows as chunks of a JSON array of posts.

    The rows hold the columns of ``POST_FIELDS`` in order (``columns()``).

    A generator on its own connection, so it stays valid after the view has
    returned and its session is gone; the connection goes back to the pool
    when the generator finishes or is closed. The query runs at the first
    ``next()``.
    """
    with engine.connect() as conn:
        yield from _streamed(conn, statement)


def whole(engine, statement, link, limit):
    """``(link, last_id, body, tail)`` of a listing read at once, or None
    when its bytes would be over ``limit``.

    ``statement`` selects ``columns()`` and the version; ``link`` is the
    tag's seed, chained with every post read (``tags.chain``); ``tail``
    holds ``(id, version, offset, link before)`` of the last posts
    (``posts.scripts``). One SELECT: the tag and the bytes come from the
    same rows, so they always agree. A listing over ``limit`` is abandoned
    as soon as that is known, and read again by ``tagged_chunks``, streamed.
    """
    last_id = 0
    tail = collections.deque(maxlen=scripts.TAIL)
    buffer = bytearray(b"[")
    with engine.connect() as conn:
        rows = conn.execution_options(
            stream_results=True, yield_per=FETCH_ROWS
        ).execute(statement)
        try:
            for *post, version in rows:
                if last_id:
                    buffer += b","
                tail.append((post[0], version, len(buffer), link))
                buffer += encoded(post)
                link, last_id = tags.chain(link, post[0], version), post[0]
                if len(buffer) + 1 > limit:
                    return None
        finally:
            rows.close()
    buffer += b"]"
    return link, last_id, bytes(buffer), list(tail)


def tagged_chunks(engine, head):
    """Like ``json_chunks``, but first yield what ``head(conn)`` found.

    ``head(conn)`` returns ``(value, statement)``: ``value`` (a listing's
    tag, read from the posts' ids and versions) is yielded first, then
    ``statement``'s rows as chunks (``[]`` for a statement of None). Both
    reads run in one transaction with a consistent snapshot, so the tag and
    the bytes always agree. On MySQL's autocommit engine the transaction is
    begun and rolled back explicitly.
    """
    with engine.connect() as conn:
        explicit = conn.dialect.name != "sqlite"
        if explicit:
            conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        try:
            value, statement = head(conn)
            yield value
            if statement is None:
                yield b"[]"
            else:
                yield from _streamed(conn, statement)
        finally:
            if explicit:
                # Nothing was written; a connection already lost has no
                # transaction left to end, and its own error is the one raised.
                with contextlib.suppress(DBAPIError):
                    conn.exec_driver_sql("ROLLBACK")


def _streamed(conn, statement):
    rows = conn.execution_options(stream_results=True, yield_per=FETCH_ROWS).execute(
        statement
    )
    try:
        buffer = bytearray(b"[")
        separator = b""
        for row in rows:
            buffer += separator
            buffer += encoded(row)
            separator = b","
            if len(buffer) >= CHUNK_BYTES:
                yield bytes(buffer)
                buffer.clear()
        buffer += b"]"
        yield bytes(buffer)
    finally:
        # A client that left mid-stream leaves rows unread; the cursor
        # must discard them before the connection can be used again.
        rows.close()


def started(chunks):
    """Run ``chunks`` here, in the view, until it has produced its first chunk.

    Once a response has begun its status cannot change, so the query must
    fail (the database is down: a JSON 503) before the view returns. Returns
    the whole body as bytes when that was all of it (it gets a
    Content-Length and no streaming), otherwise an iterator over all the
    chunks, the ones already read first.
    """
    first = next(chunks)
    try:
        second = next(chunks)
    except StopIteration:
        return first
    return Resumed((first, second), chunks)


class Resumed:
    """The chunks already read, then the rest of ``chunks``.

    Closing it closes the rest, however far it was read: when the client
    went away before the end, and when the answer is not sent at all (a
    412), before its first chunk. (A generator closed before its first
    step would skip its own ``finally``: the query would run on until the
    collector took it.)
    """

    def __init__(self, head, rest):
        self.head = list(head)
        self.rest = rest

    def __iter__(self):
        return self

    def __next__(self):
        if self.head:
            return self.head.pop(0)
        return next(self.rest)

    def close(self):
        self.head.clear()
        self.rest.close()

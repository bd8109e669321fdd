"""Posts as a JSON array, written a chunk at a time straight from the database.

The body is byte for byte what ``json.dumps(posts, ensure_ascii=False,
separators=(",", ":"))`` gives for the whole list, but a response never
holds more than a few rows: they come through a server-side cursor
(``stream_results``, which is PyMySQL's ``SSCursor`` on MySQL; SQLite steps
its cursor row by row anyway), ``FETCH_ROWS`` at a time, and leave in
chunks of about ``CHUNK_BYTES``. An account of any size therefore costs a
bounded amount of memory to serve.
"""

import json
from datetime import UTC, datetime

from postservice.models import Post
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
    return [getattr(Post, name) for name in POST_FIELDS]


def json_chunks(engine, statement):
    """Yield ``statement``'s rows as chunks of a JSON array of posts.

    The rows hold the columns of ``POST_FIELDS`` in order (``columns()``).

    A generator on its own connection, so it stays valid after the view has
    returned and its session is gone; the connection goes back to the pool
    when the generator finishes or is closed. The query runs at the first
    ``next()``.
    """
    with engine.connect() as conn:
        rows = conn.execution_options(
            stream_results=True, yield_per=FETCH_ROWS
        ).execute(statement)
        try:
            buffer = bytearray(b"[")
            separator = b""
            for row in rows:
                buffer += separator
                buffer += _encode_post(dict(zip(POST_FIELDS, row, strict=True))).encode(
                    "utf-8"
                )
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
    return _resumed((first, second), chunks)


def _resumed(head, rest):
    try:
        yield from head
        yield from rest
    finally:
        rest.close()  # also when the client went away before the end

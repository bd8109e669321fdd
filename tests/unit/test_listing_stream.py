"""A listing streamed from the database: what the view holds once it began."""

from postservice.posts import listing


def chunks(ended):
    try:
        yield b"[1"
        yield b",2"
        yield b",3]"
    finally:
        ended.append(True)  # where the query's cursor and connection go back


def test_a_stream_closed_before_it_is_sent_ends_its_query():
    """A 412 (If-Match) closes a stream no one read: the query ends at once,
    not when the collector finds the generator."""
    ended = []
    # Held here as a traceback or a log record may hold it: the collector
    # cannot end it early.
    query = chunks(ended)
    body = listing.started(query)
    assert not isinstance(body, bytes)
    body.close()
    assert ended == [True]


def test_a_stream_sends_every_chunk_in_order_then_ends():
    ended = []
    body = listing.started(chunks(ended))
    assert list(body) == [b"[1", b",2", b",3]"]
    assert ended == [True]


def test_a_stream_left_midway_ends_its_query():
    ended = []
    query = chunks(ended)
    body = listing.started(query)
    assert next(body) == b"[1"
    body.close()
    assert ended == [True]


def test_a_listing_of_one_chunk_is_bytes():
    def one():
        yield b"[]"

    assert listing.started(one()) == b"[]"

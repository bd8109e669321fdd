"""The per-user cache of get-posts responses.

Two keys per user: ``posts:gen:<id>``, a random token replaced after every
committed change to the user's posts, and ``posts:list:<id>``, the JSON
listing prefixed with the token it was built under. A hit is one
``get_many`` of both and needs the tokens to agree.

Why a token and not a plain delete: a reader that misses, reads the rows,
and stores them after a writer has committed and invalidated would put the
old rows back. The reader stores under the token it read *before* querying,
so such an entry never matches again. Tokens are random, not counters, so a
generation key lost to eviction or a Redis restart can never line up with
an old entry.

Redis is an optimisation: when it fails, requests are served from the
database, Redis is left alone for a while (``cache_health``), and the tokens
this process could not replace are replaced as soon as it answers again.

The token revocation check of a get-posts request reads its key in the same
``get_many`` (``read_with_listing``), so a hit stays one round trip.
"""

import secrets

from flask import current_app, g

from .. import cache_health, revocation
from ..extensions import cache
from ..redis_client import REDIS_ERRORS

GENERATION_TTL = 7 * 24 * 3600
SEPARATOR = b"\n"


def init_app(app):
    revocation.read_along(app, "posts.get_posts", _revocation_with_listing)


def _revocation_with_listing(jwt_payload, key):
    try:
        user_id = int(jwt_payload["sub"])
    except (KeyError, TypeError, ValueError):
        return revocation.read_alone(jwt_payload, key)  # refused later as 401
    return read_with_listing(user_id, key)[0]


def _gen_key(user_id):
    return f"posts:gen:{user_id}"


def _list_key(user_id):
    return f"posts:list:{user_id}"


def _new_generation():
    return secrets.token_hex(8).encode("ascii")


def _flush_pending(health):
    """Replace the generations that could not be replaced while the cache was down."""
    with health.lock:
        owed, health.pending = health.pending, set()
    try:
        for user_id in owed:
            cache.set(_gen_key(user_id), _new_generation(), timeout=GENERATION_TTL)
    except REDIS_ERRORS:
        with health.lock:
            health.pending.update(owed)
        raise


def _usable(health):
    if not health.available():
        return False
    if health.pending:
        try:
            _flush_pending(health)
        except REDIS_ERRORS as e:
            health.failed(e)
            return False
    return True


def read_with_listing(user_id, *keys):
    """The values of ``keys``, read in the same round trip as the user's listing.

    The listing's keys are kept on ``flask.g`` for ``lookup()`` later in
    the request. Raises one of ``REDIS_ERRORS`` (after recording the failure), or
    ``CacheUnavailable`` while the cache is being left alone.
    """
    health = cache_health.current()
    if not _usable(health):
        raise cache_health.CacheUnavailable()
    try:
        *values, generation, entry = cache.get_many(
            *keys, _gen_key(user_id), _list_key(user_id)
        )
    except REDIS_ERRORS as e:
        health.failed(e)
        raise
    g.posts_listing_read = (user_id, generation, entry)
    return values


def _read(user_id):
    read = g.pop("posts_listing_read", None)
    if read is not None and read[0] == user_id:
        return read[1:]
    return cache.get_many(_gen_key(user_id), _list_key(user_id))


def lookup(user_id):
    """``(body, generation)`` for the user's cached get-posts listing.

    ``body`` is the cached JSON bytes, or None on a miss. On a miss,
    ``generation`` is the token to pass to ``store`` once the listing has
    been read from the database, or None when the cache cannot be used. It
    is read *before* the database is queried, so a listing read across a
    concurrent write is stored under the old token and never served.
    """
    health = cache_health.current()
    if not _usable(health):
        return None, None
    try:
        generation, entry = _read(user_id)
        if generation is not None and entry is not None:
            head, sep, body = entry.partition(SEPARATOR)
            if sep and head == generation:
                return body, generation
        if generation is None:
            cache.add(_gen_key(user_id), _new_generation(), timeout=GENERATION_TTL)
            generation = cache.get(_gen_key(user_id))
    except REDIS_ERRORS as e:
        health.failed(e)
        return None, None
    return None, generation


def store(user_id, generation, body):
    """Cache ``body``: the whole listing, read after ``lookup`` gave ``generation``."""
    health = cache_health.current()
    if not health.available():
        return
    try:
        cache.set(
            _list_key(user_id),
            generation + SEPARATOR + body,
            timeout=current_app.config["POSTS_CACHE_TTL"],
        )
    except REDIS_ERRORS as e:
        health.failed(e)


def invalidate(user_id):
    """Call after a committed change to the user's posts.

    Tried even while reads are leaving Redis alone after a failure: another
    instance may already be filling the cache again, and an invalidation
    held back here would let it serve a listing without this change. It
    costs a write at most one ``REDIS_TIMEOUT``. What cannot be sent now is
    owed, and sent with the next use of the cache.

    The user's own token is replaced here, not left to the owed set: another
    thread flushing that set could still be sending it when this write is
    acknowledged, and the client's next read would miss the change.
    """
    health = cache_health.current()
    try:
        cache.set(_gen_key(user_id), _new_generation(), timeout=GENERATION_TTL)
    except REDIS_ERRORS as e:
        with health.lock:
            health.pending.add(user_id)
        health.failed(e)
        return
    if health.pending:
        try:
            _flush_pending(health)
        except REDIS_ERRORS as e:
            health.failed(e)

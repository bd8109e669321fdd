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
database, Redis is left alone for ``RETRY_AFTER`` seconds, and the tokens
this process could not replace are replaced as soon as it answers again.
"""

import logging
import secrets
import threading
import time

from flask import current_app
from redis.exceptions import RedisError

from ..extensions import cache

log = logging.getLogger(__name__)

RETRY_AFTER = 1.0
GENERATION_TTL = 7 * 24 * 3600
SEPARATOR = b"\n"


class _Health:
    """Whether the cache may be used, and the invalidations it still owes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.down_until = 0.0
        self.pending = set()

    def available(self):
        return time.monotonic() >= self.down_until

    def failed(self, error):
        with self.lock:
            was_up = self.available()
            self.down_until = time.monotonic() + RETRY_AFTER
        if was_up:
            log.warning("cache unavailable, serving from the database: %s", error)


def init_app(app):
    """Give each app its own health state: tests build many apps side by side."""
    app.extensions["posts_cache_health"] = _Health()


def _health():
    return current_app.extensions["posts_cache_health"]


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
    except RedisError:
        with health.lock:
            health.pending.update(owed)
        raise


def _usable(health):
    if not health.available():
        return False
    if health.pending:
        try:
            _flush_pending(health)
        except RedisError as e:
            health.failed(e)
            return False
    return True


def lookup(user_id):
    """``(body, generation)`` for the user's cached get-posts listing.

    ``body`` is the cached JSON bytes, or None on a miss. On a miss,
    ``generation`` is the token to pass to ``store`` once the listing has
    been read from the database, or None when the cache cannot be used. It
    is read *before* the database is queried, so a listing read across a
    concurrent write is stored under the old token and never served.
    """
    health = _health()
    if not _usable(health):
        return None, None
    try:
        generation, entry = cache.get_many(_gen_key(user_id), _list_key(user_id))
        if generation is not None and entry is not None:
            head, sep, body = entry.partition(SEPARATOR)
            if sep and head == generation:
                return body, generation
        if generation is None:
            cache.add(_gen_key(user_id), _new_generation(), timeout=GENERATION_TTL)
            generation = cache.get(_gen_key(user_id))
    except RedisError as e:
        health.failed(e)
        return None, None
    return None, generation


def store(user_id, generation, body):
    """Cache ``body``: the whole listing, read after ``lookup`` gave ``generation``."""
    health = _health()
    if not health.available():
        return
    try:
        cache.set(
            _list_key(user_id),
            generation + SEPARATOR + body,
            timeout=current_app.config["POSTS_CACHE_TTL"],
        )
    except RedisError as e:
        health.failed(e)


def invalidate(user_id):
    """Call after a committed change to the user's posts."""
    health = _health()
    if _usable(health):
        try:
            cache.set(_gen_key(user_id), _new_generation(), timeout=GENERATION_TTL)
            return
        except RedisError as e:
            health.failed(e)
    with health.lock:
        health.pending.add(user_id)

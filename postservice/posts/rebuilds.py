"""Rebuilding a listing once, however many requests miss it at the same time.

Each write to a listing that cannot be appended to the cached bytes (an
edit, a delete) makes it stale, and every request for it then misses. If
each of them read the listing from the database, one busy account would
rebuild it many times over, every miss slower than the last, and take the
instance's threads from every other user. So a miss first claims the
rebuild (``posts.cache.claim_rebuild``: one holder on every instance); the
others wait for the bytes it stores, polling the cache, and are answered
from them: never an older listing than the one the writer's own
acknowledgement promised, since they read under the generation the write
left behind.

A waiter builds the listing itself when the cache fails, when the listing
is too large to be cached (its tag is cached without its bytes), or after
``WAIT_SECONDS`` (its holder is gone or slow).

Bounded: at most ``LISTING_REBUILD_SLOTS`` of this process's threads
read one account's listing from the database at once (more than one only
when it is too large to cache, or the cache failed); a request beyond them
is answered at once with a 503 and ``Retry-After: 1`` (``ListingBusy``),
so one account never holds the threads, connections and CPU of everyone
else. A waiter holds a thread but nothing else, and for one rebuild at
most (``WAIT_SECONDS`` at worst).
"""

import threading
import time
from collections import Counter

from flask import current_app

from postservice.cache import health as cache_health
from postservice.cache import namespace
from postservice.cache.clients import REDIS_ERRORS
from postservice.http.errors import APIError
from postservice.posts import cache

WAIT_SECONDS = 2.0
# How long a claim outlives a holder that died: longer than a rebuild of
# the largest listing that is cached (1 MiB) takes.
CLAIM_MILLISECONDS = 5000
FIRST_POLL, LAST_POLL = 0.002, 0.05


class ListingBusy(APIError):
    def __init__(self):
        super().__init__(
            503,
            "Too many requests for this listing at once, retry shortly",
            headers={"Retry-After": "1"},
        )


class Slots:
    """Threads per account reading its listing from the database, in this process."""

    def __init__(self, limit):
        self.limit = limit
        self.taken = Counter()
        self.lock = threading.Lock()

    def take(self, user_id):
        with self.lock:
            if self.taken[user_id] >= self.limit:
                raise ListingBusy()
            self.taken[user_id] += 1

    def give_back(self, user_id):
        with self.lock:
            self.taken[user_id] -= 1
            if not self.taken[user_id]:
                del self.taken[user_id]


def init_app(app):
    app.extensions["listing_rebuild_slots"] = Slots(app.config["LISTING_REBUILD_SLOTS"])


def once(user_id, generation, *, build, served):
    """The listing's answer, rebuilt by at most one request at a time.

    ``generation`` is the one the miss read. ``build(generation, done)``
    reads the listing from the database, stores it under ``generation``
    (None: not at all) and calls ``done()`` once it has finished,
    streaming included; ``served(cached)`` answers from bytes another
    request stored meanwhile.
    """
    token, generation, found = _claim_or_wait(user_id, generation)
    if found is not None:
        return served(found)
    slots = current_app.extensions["listing_rebuild_slots"]
    try:
        slots.take(user_id)
    except ListingBusy:
        if token is not None:
            cache.release_rebuild(user_id, token)
        raise

    def done():
        if token is not None:
            cache.release_rebuild(user_id, token)
        slots.give_back(user_id)

    return build(generation, done)


def alone(user_id, build):
    """``build(done)`` without waiting for anyone (the cache failed, or the
    listing is too large to be cached), within the account's slots."""
    slots = current_app.extensions["listing_rebuild_slots"]
    slots.take(user_id)
    return build(lambda: slots.give_back(user_id))


def _claim_or_wait(user_id, generation):
    """``(token, generation, None)`` to build under ``generation`` (``token``
    None: without a claim), or ``(None, None, cached)`` when another request
    stored the listing meanwhile.

    A write during the wait moves the generation: the build then uses the
    newest one read, before its query, as every miss does.
    """
    deadline = time.monotonic() + WAIT_SECONDS
    delay = FIRST_POLL
    while True:
        try:
            token = cache.claim_rebuild(user_id, CLAIM_MILLISECONDS)
        except namespace.Unknown:
            return None, None, None
        except REDIS_ERRORS as e:
            cache_health.current().failed(e)
            return None, None, None
        if token is not None:
            # The listing may have been stored between the miss and the claim.
            cached = cache.lookup(user_id)
            if cached.body is not None:
                cache.release_rebuild(user_id, token)
                return None, None, cached
            return token, cached.generation, None
        if time.monotonic() >= deadline:
            return None, generation, None
        time.sleep(delay)
        delay = min(2 * delay, LAST_POLL)
        cached = cache.lookup(user_id)
        if cached.body is not None:
            return None, None, cached
        if cached.generation is None or cached.link is not None:
            # The cache failed, or the listing is too large to be cached.
            return None, cached.generation, None
        generation = cached.generation

"""The per-user cache of get-posts responses.

One key per user, ``posts:{<id>}:list:<format>``: the JSON listing, stored
under the user's posts generation (``posts:{<id>}:gen``, see
``cache.generations``) read before the database was queried, so a listing
read across a concurrent write is never served. ``<format>`` follows from
the post's wire format (``posts.schemas``): after a change of shape, and
while old and new instances run side by side, each reads only the bytes of
its own shape.

The token check of a get-posts request reads the listing in the same
``MGET`` as the token's verdict and the generation (``READ_ALONG``, declared
on the view with ``revocation.reads_along``),
so a hit is one round trip and no SQL. A page (``?limit``, ``?after_id``)
is read from the database and reads nothing along: not the listing's bytes,
which can be a megabyte.
"""

import functools
import hashlib
import json

from flask import current_app, g

from postservice.auth import revocation
from postservice.cache import generations
from postservice.cache import health as cache_health
from postservice.cache.clients import REDIS_ERRORS
from postservice.ops import metrics
from postservice.posts.schemas import LISTING_ENCODING, PAGE_PARAMETERS, POST_FIELDS


def format_digest(encoding, fields):
    """A short digest of a listing's shape: its encoding and its fields."""
    shape = json.dumps([encoding, list(fields)]).encode()
    return hashlib.sha256(shape).hexdigest()[:8]


@functools.cache
def listing_format():
    """This code's listing shape, part of every listing's key."""
    return format_digest(LISTING_ENCODING, POST_FIELDS)


def listing_key(user_id):
    return generations.key(generations.POSTS, user_id, "list:" + listing_format())


def _keys(user_id):
    return [generations.gen_key(generations.POSTS, user_id), listing_key(user_id)]


def _keep(user_id, values):
    """What the token check read of the listing; ``values`` None: Redis failed."""
    if values is None:
        metrics.cache_result("error")
    else:
        g.posts_listing_read = (user_id, *values)


def _whole_listing(request):
    """Whether this get-posts answers the whole listing, not one page."""
    return not request.query_string or PAGE_PARAMETERS.isdisjoint(request.args)


def lookup(user_id):
    """``(body, generation)`` for the user's cached get-posts listing.

    ``body`` is the cached JSON bytes, or None on a miss. On a miss,
    ``generation`` is the token to pass to ``store`` once the listing has
    been read from the database, or None when the cache cannot be used. It
    is read *before* the database is queried, so a listing read across a
    concurrent write is stored under the old token and never served.
    """
    health = cache_health.current()
    try:
        read = g.pop("posts_listing_read", None)
        if read is not None and read[0] == user_id:
            generation, entry = read[1:]
        else:
            generation, entry = generations.read(_keys(user_id))
        body = generations.unwrap(entry, generation)
        if body is not None:
            return body, generation
        if generation is None:
            generation = generations.ensure_generation(generations.POSTS, user_id)
    except cache_health.CacheUnavailable:
        return None, None
    except REDIS_ERRORS as e:
        metrics.cache_result("error")
        health.failed(e)
        return None, None
    return None, generation


def store(user_id, generation, body):
    """Cache ``body``: the whole listing, read after ``lookup`` gave ``generation``."""
    generations.store(
        listing_key(user_id),
        generation,
        body,
        timeout=current_app.config["POSTS_CACHE_TTL"],
    )


def invalidate(user_id):
    """Call after a committed change to the user's posts."""
    generations.invalidate(user_id, generations.POSTS)


# What get-posts reads in its token check's round trip.
READ_ALONG = revocation.ReadAlong(keys=_keys, keep=_keep, wanted=_whole_listing)

"""The per-user cache of get-posts responses.

Three keys per user and wire format (``<format>``, see ``posts.schemas``):

- ``posts:{<id>}:list:<format>``: the JSON listing;
- ``posts:{<id>}:tag:<format>``: its tag's link and the id of its last post
  (``posts.tags``), a few bytes, so a conditional request reads no listing;
- ``posts:{<id>}:rebuild:<format>``: held while one request rebuilds the
  listing (``posts.rebuilds``).

The first two are stored under the user's posts generation
(``posts:{<id>}:gen``, see ``cache.generations``) read before the database
was queried, so a listing read across a concurrent write is never served;
a listing too large to cache keeps its tag alone. After a change of
shape, and while old and new instances run side by side, each reads only
the bytes of its own shape.

An added post does not throw the listing away: a Redis script appends it
to the cached bytes and extends the tag, under a new generation, if the
cached listing is current and ends before the new post (``appended``).
Otherwise the generation is replaced, as after an edit or a delete.

The token check of a get-posts request reads the tag and the listing in
the same ``MGET`` as the token's verdict and the generation
(``READ_ALONG``), so a hit is one round trip and no SQL. With
``If-None-Match`` it reads the tag alone. When this process holds a copy
of the listing (``posts.copies``) that round trip is a script instead,
which reads the tag and only the bytes the copy lacks. A page
(``?limit``, ``?after_id``) is read from the database and reads nothing
along.
"""

import secrets
from typing import NamedTuple

from flask import current_app, g, request

from postservice.auth import revocation
from postservice.cache import generations, namespace
from postservice.cache import health as cache_health
from postservice.cache.clients import REDIS_ERRORS
from postservice.extensions import cache
from postservice.ops import metrics
from postservice.posts import copies, scripts
from postservice.posts.schemas import (
    PAGE_PARAMETERS,
    format_digest,  # noqa: F401  (part of this module's interface)
    listing_format,
)


def listing_key(user_id):
    return generations.key(generations.POSTS, user_id, "list:" + listing_format())


def tag_key(user_id):
    return generations.key(generations.POSTS, user_id, "tag:" + listing_format())


def rebuild_key(user_id):
    return generations.key(generations.POSTS, user_id, "rebuild:" + listing_format())


def log_key(user_id):
    return generations.key(generations.POSTS, user_id, "adds:" + listing_format())


def keys(user_id):
    """Every key of the user's listing, for a caller that drops them all."""
    return [
        listing_key(user_id),
        tag_key(user_id),
        rebuild_key(user_id),
        log_key(user_id),
    ]


def _write_keys(user_id):
    return [*_read_keys(user_id, body=True), log_key(user_id), rebuild_key(user_id)]


# Adds of larger posts are not logged for a rebuild under way: the log
# stays small, and such a rebuild is simply not stored.
LOGGED_POST_BYTES = 16 * 1024


class Cached(NamedTuple):
    """What the cache holds of a listing.

    ``generation`` is None when the cache cannot be used; ``link`` and
    ``last_id`` describe the listing cached under it (``link`` None: none
    is); ``body`` is its bytes, None when not read or not cached.
    """

    generation: bytes | None
    link: str | None = None
    last_id: int = 0
    body: bytes | None = None


UNUSABLE = Cached(None)


def _conditional():
    return "HTTP_IF_NONE_MATCH" in request.environ


def _read_keys(user_id, *, body):
    names = [generations.gen_key(generations.POSTS, user_id), tag_key(user_id)]
    return [*names, listing_key(user_id)] if body else names


def _keys_along(user_id):
    return _read_keys(user_id, body=not _conditional())


def _script_along(user_id):
    """The token check reads the listing's keys with ``READ_WITH_COPY`` when
    this process holds a copy of it; the copy is kept for ``lookup``."""
    if _conditional():
        return None
    held = _held(user_id)
    if held is None:
        return None
    g.posts_listing_copy = held
    return _with_copy(held)


def _with_copy(held):
    return scripts.READ_WITH_COPY, [held.link, len(held.body)]


def _copying():
    """Whether listings read are copied (``posts.copies``): the in-process
    cache already is this process's memory."""
    return getattr(cache.cache, "script", None) is not None


def _held(user_id):
    """This process's copy of the user's listing, or None."""
    return copies.held(user_id) if _copying() else None


def _keep(user_id, values):
    """What the token check read of the listing; ``values`` None: Redis failed."""
    if values is None:
        metrics.cache_result("error")
    else:
        g.posts_listing_read = (user_id, values)


def _whole_listing(request):
    """Whether this get-posts answers the whole listing, not one page."""
    return not request.query_string or PAGE_PARAMETERS.isdisjoint(request.args)


def _parsed(values):
    generation, tag_entry, *rest = values
    tag = generations.unwrap(tag_entry, generation)
    if tag is None:
        return Cached(generation)
    first = tag.split(b"\n", 1)[0].decode("ascii")
    last_id, _, link = first.partition(" ")
    body = generations.unwrap(rest[0], generation) if len(rest) == 1 else None
    return Cached(generation, link, int(last_id), body)


def lookup(user_id, *, body=True):
    """The user's listing as cached (``Cached``), read before any SQL.

    On a miss ``generation`` is the token to ``store`` the listing under
    once it has been read from the database: read *before* the query, so a
    listing read across a concurrent write is stored under the old token
    and never served. ``body=False`` reads the tag alone. The bytes come
    from this process's copy when it holds one (``posts.copies``), and are
    copied otherwise.
    """
    health = cache_health.current()
    try:
        read = g.pop("posts_listing_read", None)
        held = g.pop("posts_listing_copy", None)
        if read is not None and read[0] == user_id and len(read[1]) >= 2 + body:
            values = read[1]
        else:
            held = _held(user_id) if body else None
            keys = _read_keys(user_id, body=body)
            values = generations.read(keys, held and _with_copy(held))
        cached = _parsed(values)
        if cached.generation is None:
            return Cached(generations.ensure_generation(generations.POSTS, user_id))
        if len(values) == 4:  # read with the copy held
            cached = _from_copy(cached, held, *values[2:])
        if body and cached.body is not None and _copying():
            copies.keep(user_id, held, cached.link, cached.body)
        return cached
    except namespace.Unknown:
        return UNUSABLE
    except cache_health.CacheUnavailable:
        return UNUSABLE
    except REDIS_ERRORS as e:
        metrics.cache_result("error")
        health.failed(e)
        return UNUSABLE


def _from_copy(cached, held, kind, data):
    """``cached`` with its bytes, from the copy ``held`` and what
    ``READ_WITH_COPY`` found of the listing: ``kind`` and ``data``."""
    if cached.link is None or kind == scripts.NOT_CACHED:
        return cached
    if kind == scripts.SAME:
        body = held.body
    elif kind == scripts.APPENDED:
        body = b"".join((memoryview(held.body)[:-1], data))  # one copy, not two
    else:
        body = generations.unwrap(data, cached.generation)
    return cached._replace(body=body)


def read_body(user_id, cached):
    """The bytes of the listing ``cached`` names (read without them), or
    None when it is no longer cached under its generation."""
    held = _held(user_id)
    if held is not None and held.link == cached.link:
        return held.body
    try:
        return generations.unwrap(cache.get(listing_key(user_id)), cached.generation)
    except REDIS_ERRORS as e:
        cache_health.current().failed(e)
        return None


def _scripts():
    """The backend's scripts, or None for the in-process cache (one process:
    plain reads and writes do).

    Raises ``namespace.Unknown`` while the deployment's namespace is not
    known: nothing is written to Redis before it is (``cache.namespace``).
    """
    run = getattr(cache.cache, "script", None)
    if run is not None and cache_health.current().shared:
        namespace.prefix()
    return run


def tag_entry(link, last_id, tail):
    """A tag entry's text after its generation (see ``posts.scripts``):
    ``tail`` holds ``(id, version, offset, link before)`` of the last posts."""
    lines = [f"{last_id} {link}"]
    lines += (" ".join(map(str, post)) for post in tail[-scripts.TAIL :])
    return "\n".join(lines).encode("ascii")


def store(user_id, generation, link, last_id, body, tail=()):
    """Cache the listing read after ``lookup`` gave ``generation``: its tag,
    and ``body`` unless None (too large to cache).

    Adds committed meanwhile (logged by ``appended``) are put in place;
    after any other change nothing is stored.
    """
    health = cache_health.current()
    if not health.available():
        return
    config = current_app.config
    ttl = config["POSTS_CACHE_TTL"]
    tag = tag_entry(link, last_id, tail)
    try:
        run = _scripts()
        if run is not None:
            run(scripts.STORE)(
                _write_keys(user_id),
                [
                    generation,
                    tag,
                    body or b"",
                    ttl,
                    config["POSTS_CACHE_MAX_BYTES"],
                    scripts.TAIL,
                ],
            )
            return
        values = {tag_key(user_id): generations.wrap(generation, tag)}
        if body is not None:
            values[listing_key(user_id)] = generations.wrap(generation, body)
        cache.set_many(values, timeout=ttl)
    except namespace.Unknown:
        return  # nothing is written before the namespace is known
    except REDIS_ERRORS as e:
        health.failed(e)


def appended(user_id, post_id, version, post_json):
    """After an added post has committed: extend the cached listing with it,
    or make the listing stale (a new generation) when it cannot be.

    Returns True when the listing was extended. Raises one of
    ``REDIS_ERRORS``; the caller falls back to ``generations.invalidate``.
    Without scripts (the in-process cache) the listing is made stale.
    """
    run = _scripts()
    if run is None or not cache_health.current().available():
        raise cache_health.CacheUnavailable()
    config = current_app.config
    done = run(scripts.APPEND)(
        _write_keys(user_id),
        [
            generations.new_generation(),
            post_id,
            version,
            post_json,
            config["POSTS_CACHE_MAX_BYTES"],
            config["POSTS_CACHE_TTL"],
            generations.GENERATION_TTL,
            scripts.TAIL,
            LOGGED_POST_BYTES,
        ],
    )
    return bool(done)


CLAIM = "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])"
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def claim_rebuild(user_id, milliseconds):
    """A token when this request may rebuild the listing, else None.

    Only one request at a time holds the claim, on every instance; it
    lapses after ``milliseconds`` should its holder die. Without scripts
    (one process) every request may rebuild. Raises one of ``REDIS_ERRORS``.
    """
    run = _scripts()
    token = secrets.token_hex(8)
    if run is None:
        return token
    claimed = run(CLAIM)([rebuild_key(user_id)], [token, milliseconds])
    return token if claimed else None


def release_rebuild(user_id, token):
    try:
        run = _scripts()
        if run is not None:
            run(RELEASE)([rebuild_key(user_id)], [token])
    except namespace.Unknown:
        return
    except REDIS_ERRORS as e:
        cache_health.current().failed(e)  # it lapses by itself


def invalidate(user_id):
    """Call after a committed change to the user's posts."""
    generations.invalidate(user_id, generations.POSTS)


# What get-posts reads in its token check's round trip.
READ_ALONG = revocation.ReadAlong(
    keys=_keys_along, keep=_keep, wanted=_whole_listing, script=_script_along
)


def _add_keys(user_id):
    return [*_read_keys(user_id, body=False), rebuild_key(user_id)]


def _keep_for_add(user_id, values):
    g.posts_add_read = (user_id, values)


def worth_appending(user_id):
    """Whether an add should bring its post to the cached listing: when the
    listing is cached now, or a rebuild of it is under way (from what the
    token check read along, ``ADD_ALONG``), or that is not known.

    Otherwise the add stays the plain INSERT it was, and the listing is made
    stale as after any change: a listing cached between that read and the
    add's commit is then read again, once.
    """
    if getattr(cache.cache, "script", None) is None:
        return False  # no scripts (the in-process cache): nothing to append with
    read = g.pop("posts_add_read", None)
    if read is None or read[0] != user_id or read[1] is None:
        return True
    generation, tag_entry, claim = read[1]
    return claim is not None or generations.unwrap(tag_entry, generation) is not None


# What add-post reads in its token check's round trip: whether its post
# goes into a cached listing (``worth_appending``).
ADD_ALONG = revocation.ReadAlong(keys=_add_keys, keep=_keep_for_add)

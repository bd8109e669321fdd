"""Per-user cache generations: what makes every cached answer about a user safe.

Each user has a generation per kind of cached answer, ``<kind>:{<id>}:gen``,
a random token replaced after every committed change to what that kind
depends on: ``posts`` (the listing) after a post is added or deleted,
``tokens`` (the verdicts on the user's tokens) after a logout, a new
password or a log-out-everywhere, both when the account goes. Every cached
value is stored prefixed with the token it was built under, and is used
only while the tokens agree. Kinds are apart so that a new post does not
make the next request check its token in the database again.

Why a token and not a plain delete: a reader that misses, reads the
database, and stores its answer after a writer has committed and
invalidated would put the old answer back. The reader stores under the
token it read *before* querying, so such an entry never matches again.
Tokens are random, not counters, so a generation lost to eviction or a
Redis restart can never line up with an old entry.

Every key of one user carries ``{<id>}``, a Redis Cluster hash tag, so all
the keys one request reads sit in one slot and go in one ``MGET``.

Redis is an optimisation: when it fails, callers fall back to the database,
Redis is left alone for a while (``cache_health``), and the generations
this process could not replace are replaced as soon as it answers again.
"""

import secrets

from postservice.cache import health as cache_health
from postservice.cache.clients import REDIS_ERRORS
from postservice.extensions import cache

GENERATION_TTL = 7 * 24 * 3600
SEPARATOR = b"\n"


POSTS = "posts"
TOKENS = "tokens"


def key(kind, user_id, name):
    """``<kind>:{<id>}:<name>``: the braces put all of a user's keys in one slot."""
    return f"{kind}:{{{user_id}}}:{name}"


def gen_key(kind, user_id):
    return key(kind, user_id, "gen")


def new_generation():
    return secrets.token_hex(8).encode("ascii")


def read(keys):
    """The values of ``keys`` (one user's: one slot), in one ``MGET``.

    Raises one of ``REDIS_ERRORS`` (after recording the failure), or
    ``CacheUnavailable`` while the cache is being left alone.
    """
    health = cache_health.current()
    if not usable(health):
        raise cache_health.CacheUnavailable()
    try:
        return cache.get_many(*keys)
    except REDIS_ERRORS as e:
        health.failed(e)
        raise


def ensure_generation(kind, user_id):
    """The user's generation, creating one when there is none (new or evicted).

    Raises one of ``REDIS_ERRORS``; the caller records the failure.
    """
    cache.add(gen_key(kind, user_id), new_generation(), timeout=GENERATION_TTL)
    return cache.get(gen_key(kind, user_id))


def unwrap(entry, generation):
    """The value stored in ``entry`` if it was built under ``generation``."""
    if generation is None or entry is None:
        return None
    head, sep, value = entry.partition(SEPARATOR)
    return value if sep and head == generation else None


def wrap(generation, value):
    return generation + SEPARATOR + value


def store(name, generation, value, timeout):
    """Cache ``value`` under the key ``name``, built after ``generation`` was read."""
    health = cache_health.current()
    if not health.available():
        return
    try:
        cache.set(name, wrap(generation, value), timeout=timeout)
    except REDIS_ERRORS as e:
        health.failed(e)


def invalidate(user_id, *kinds, drop=()):
    """Call after a committed change to what ``kinds`` of answers depend on
    (``db.transactions.write`` does); ``drop`` names keys to delete too.

    Tried even while reads are leaving Redis alone after a failure: another
    instance may already be filling the cache again, and an invalidation
    held back here would let it serve an answer without this change. It
    costs a write at most one ``REDIS_TIMEOUT``. What cannot be sent now is
    owed, and sent with the next use of the cache (the keys of ``drop``
    are then left to expire: their generation no longer matches).

    Returns False when the generation could not be replaced now.

    The user's own token is replaced here, not left to the owed set: another
    thread flushing that set could still be sending it when this write is
    acknowledged, and the client's next read would miss the change.
    """
    health = cache_health.current()
    owed = {(kind, user_id) for kind in kinds}
    try:
        _replace(owed)
        if drop:
            cache.delete_many(*drop)
    except REDIS_ERRORS as e:
        with health.lock:
            health.pending.update(owed)
        health.failed(e)
        return False
    _deliver_owed(health)
    return True


def _flush_pending(health):
    """Replace the generations that could not be replaced while the cache was down."""
    with health.lock:
        owed, health.pending = health.pending, set()
    try:
        _replace(owed)
    except REDIS_ERRORS:
        with health.lock:
            health.pending.update(owed)
        raise


def _replace(generations):
    """New tokens for ``(kind, user_id)`` pairs, in one round trip."""
    cache.set_many(
        {gen_key(kind, user_id): new_generation() for kind, user_id in generations},
        timeout=GENERATION_TTL,
    )


def usable(health):
    """Whether the cache may be read now; first delivers what is owed."""
    return health.available() and _deliver_owed(health)


def _deliver_owed(health):
    """Send the owed invalidations, if any; False when Redis failed doing it."""
    if not health.pending:
        return True
    try:
        _flush_pending(health)
    except REDIS_ERRORS as e:
        health.failed(e)
        return False
    return True

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

Redis is an optimisation: when it fails, callers fall back to the database
and Redis is left alone for a while (``cache_health``). A generation that
could not be replaced when its change was made is announced in the
database (``announcements``) before the change is answered; every
instance delivers what is announced, and trusts the cache only for
``TRUST_FOR`` seconds after it last looked. So a change answered 2xx
holds on every instance within ``TRUST_FOR`` seconds, even when the
instance that made it has lost Redis or is gone.
"""

import logging
import secrets
import threading
import time

from flask import current_app
from sqlalchemy.exc import SQLAlchemyError

from postservice.cache import announcements, namespace
from postservice.cache import health as cache_health
from postservice.cache.clients import REDIS_ERRORS
from postservice.extensions import cache

log = logging.getLogger(__name__)

GENERATION_TTL = 7 * 24 * 3600
# Seconds after a look at the announcements before a read looks again (one
# read does, the others go on trusting), and seconds after a look during
# which the cache is trusted at all: the bound on how long an announced
# change can go unseen. A cached read costs one clock reading for this.
CONFIRM_AFTER = 0.5
TRUST_FOR = 1.5
# Seconds a request waits for a look under way when the cache may no
# longer be trusted without one: a look takes milliseconds, unless the
# database is in trouble, and then the request asks it directly.
LOOK_WAIT = 1.0
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


def read(keys, script=None):
    """The values of ``keys`` (one user's: one slot), in one ``MGET``, or
    what ``script``, ``(source, args)``, returns for them (a Redis backend's).

    Raises one of ``REDIS_ERRORS`` (after recording the failure), or
    ``CacheUnavailable`` while the cache is being left alone.
    """
    health = cache_health.current()
    if not usable(health):
        raise cache_health.CacheUnavailable()
    try:
        if script is not None:
            source, args = script
            return cache.cache.script(source)(keys, args)
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
    costs a write at most one ``REDIS_TIMEOUT``. What Redis does not take
    is announced in the database (``announcements``), for whichever
    instance reaches Redis to deliver (the keys of ``drop`` are then left to
    expire: their generation no longer matches).

    Returns False when neither Redis nor the database took it: the change
    may then go unseen by other instances for up to ``POSTS_CACHE_TTL``
    seconds. It is kept in this process and sent with the next use of the
    cache.

    The user's own token is replaced here, not left to the owed set: another
    thread flushing that set could still be sending it when this write is
    acknowledged, and the client's next read would miss the change.
    """
    health = cache_health.current()
    owed = {(kind, user_id) for kind in kinds}
    try:
        if health.shared:
            namespace.prefix()
        _replace(owed)
        if drop:
            cache.delete_many(*drop)
    except (*REDIS_ERRORS, namespace.Unknown) as e:
        if not isinstance(e, namespace.Unknown):
            health.failed(e)
        return _announce(health, user_id, kinds, owed)
    _deliver_owed(health)
    if health.announces_all and not health.shared:
        return _announce(health, user_id, kinds, owed, usual=True)
    return True


def _announce(health, user_id, kinds, owed, usual=False):
    """``usual``: the way this process always tells (a command, without Redis),
    not a fallback worth a log line."""
    try:
        announcements.record(user_id, kinds)
    except SQLAlchemyError as e:
        log.warning("invalidation neither sent nor announced: %s", e.__class__.__name__)
        with health.lock:
            health.pending.update(owed)
        return False
    if not usual:
        log.info("invalidation for user %s announced in the database", user_id)
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
    tokens = {gen_key(kind, user_id): new_generation() for kind, user_id in generations}
    if len(tokens) == 1:
        # Most writes replace one: a plain SET, without building a pipeline.
        cache.set(*tokens.popitem(), timeout=GENERATION_TTL)
    else:
        cache.set_many(tokens, timeout=GENERATION_TTL)


def usable(health):
    """Whether the cache may be read now.

    Only while Redis has not just failed, and within ``TRUST_FOR`` seconds
    of a look at the announced invalidations that delivered them all
    (``_look``); first sends what this process owes. From ``CONFIRM_AFTER``
    seconds after the last look, the next one runs in a thread of its own,
    so no request waits for it; only when the last look is older than
    ``TRUST_FOR`` (an instance that was idle, or just started) and did not
    fail does the request look itself, before it may read.
    """
    now = time.monotonic()
    if now < health.down_until:
        return False
    age = now - health.confirmed_at
    if age >= CONFIRM_AFTER:
        if age < TRUST_FOR:
            _look_soon(health, now)
        elif health.look_failed:
            # Tried again in the background: a request never waits for a
            # database or a Redis that failed the last look.
            _look_soon(health, now)
            return False
        elif not _look_now(health, now):
            return False
    return not health.pending or _deliver_owed(health)


def _look_soon(health, now):
    """Start a look in the background, unless one runs or one failed lately."""
    if now < health.confirm_retry_at or not health.confirming.acquire(blocking=False):
        return
    app = current_app._get_current_object()

    def look():
        try:
            with app.app_context():
                _look(health, app)
        finally:
            health.confirming.release()

    try:
        threading.Thread(target=look, name="cache-look", daemon=True).start()
    except RuntimeError:  # no thread to be had (interpreter exiting)
        health.confirming.release()


def _look_now(health, now):
    """Look in this request; False when it cannot trust the cache after it.

    A look under way (another request's, or the background one) is waited
    for, up to ``LOOK_WAIT``, and its outcome taken: the requests of a burst
    that meets an idle instance all wait for the first one's look, instead
    of all reading the database at once. A look that failed less than a
    second ago is not repeated: the request asks the database instead.
    """
    if now < health.confirm_retry_at:
        return False
    if not health.confirming.acquire(timeout=LOOK_WAIT):
        return False
    try:
        looked = time.monotonic()
        if looked - health.confirmed_at < TRUST_FOR:
            return True  # the look waited for delivered everything announced
        if looked < health.confirm_retry_at:
            return False  # it failed
        return _look(health, current_app._get_current_object())
    finally:
        health.confirming.release()


def _look(health, app):
    """Deliver what is announced; True when nothing is left waiting.

    Needs the namespace, the database and Redis. Only a look that succeeded
    moves ``confirmed_at``: when one fails, the cache is trusted until
    ``TRUST_FOR`` after the last good look, then not at all (the database
    decides) until a look succeeds.
    """
    started = time.monotonic()
    try:
        if health.shared:
            namespace.prefix(app)
        ids, owed, complete = announcements.waiting(app, health.delivered_up_to)
    except (namespace.Unknown, SQLAlchemyError) as e:
        _look_failed(health, started, e)
        return False
    if owed:
        try:
            _replace(owed)
        except REDIS_ERRORS as e:
            health.failed(e)
            health.look_failed = True
            return False
        if health.shared:
            try:
                announcements.forget(app, ids)
            except SQLAlchemyError as e:  # delivered again next time: harmless
                log.info("delivered announcements not deleted: %s", e)
        else:
            # Delivered to this process alone: the rows stay for the
            # instances that share Redis, should any use this database.
            health.delivered_up_to = max(ids)
        if not complete:
            return False
    health.confirmed_at = started
    health.look_failed = False
    return True


def _look_failed(health, started, error):
    """Look again in a second, not on every request."""
    health.confirm_retry_at = started + cache_health.RETRY_AFTER
    warn = not health.look_failed and not isinstance(error, namespace.Unknown)
    health.look_failed = True
    if warn:
        log.warning(
            "announced invalidations cannot be read; the cache is not trusted "
            "from %.1f s after the last look: %s",
            TRUST_FOR,
            error.__class__.__name__,
        )


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

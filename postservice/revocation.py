"""Logged-out tokens: each one's ``jti`` kept in the cache until it would expire.

Redis is shared by every instance, so a logout holds everywhere; under the
embedded default the in-process cache holds it for this process only.

When the cache cannot be asked:

- logout answers 503 (``RevocationUnavailable``): a revocation that was not
  recorded must not look done, and the client can retry;
- every other request fails open and is served, with one warning logged per
  outage (``cache_health``). Redis is an optimisation here as for the
  listings: an outage must not lock every user out, and a logged-out token
  still expires on its own after ``JWT_ACCESS_TOKEN_EXPIRES``.

An endpoint that reads the cache anyway can fold the revocation lookup into
its own round trip with ``read_along``; get-posts does, so a cache hit
stays one ``MGET``.
"""

import time

from flask import current_app, request

from . import cache_health
from .errors import APIError
from .extensions import cache
from .redis_client import REDIS_ERRORS

REVOKED = b"1"


class RevocationUnavailable(APIError):
    def __init__(self):
        super().__init__(503, "Cannot log out right now", headers={"Retry-After": "1"})


def _key(jti):
    return f"revoked:{jti}"


def init_app(app):
    app.extensions["revocation_readers"] = {}


def read_along(app, endpoint, reader):
    """Let ``endpoint`` read the revocation key itself.

    ``reader(jwt_payload, key)`` returns the key's value; it may raise
    one of ``REDIS_ERRORS`` or ``cache_health.CacheUnavailable``.
    """
    app.extensions["revocation_readers"][endpoint] = reader


def revoke(jwt_payload):
    """Record the token as revoked for the rest of its lifetime.

    Raises ``RevocationUnavailable`` when the cache cannot record it.
    """
    expires = jwt_payload.get("exp")
    # Flask-Caching treats 0 as "never expires": only for tokens without exp.
    timeout = max(1, int(expires - time.time()) + 1) if expires else 0
    try:
        stored = cache.set(_key(jwt_payload["jti"]), REVOKED, timeout=timeout)
    except REDIS_ERRORS as e:
        cache_health.current().failed(e)
        raise RevocationUnavailable() from None
    if stored is False:
        raise RevocationUnavailable()


def is_revoked(jwt_header, jwt_payload):
    """Flask-JWT-Extended's blocklist check; fails open when the cache cannot answer."""
    key = _key(jwt_payload.get("jti"))
    readers = current_app.extensions["revocation_readers"]
    reader = readers.get(request.endpoint, read_alone)
    try:
        return reader(jwt_payload, key) is not None
    except (*REDIS_ERRORS, cache_health.CacheUnavailable):
        return False


def read_alone(jwt_payload, key):
    """The revocation key on its own: one cache read."""
    health = cache_health.current()
    if not health.available():
        raise cache_health.CacheUnavailable()
    try:
        return cache.get(key)
    except REDIS_ERRORS as e:
        health.failed(e)
        raise

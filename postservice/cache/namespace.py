"""The deployment's Redis namespace: the first part of every key it writes.

``REDIS_KEY_PREFIX`` when it is set; otherwise ``ps-`` and the identity
stored in the database itself (table ``deployment_identity``, one row with
a random value written by migration 0010). Every instance of a deployment
reads that same row, whichever host it reaches the database by (two Galera
nodes, ``db`` and ``db.internal``, an address), so all of them share one
namespace and see each other's invalidations; another database has been
given another value by its own migrations, so two deployments sharing a
Redis database never meet.

The identity is read when the app is made, if the database answers then,
and otherwise on the first use of Redis, at most once per ``RETRY_AFTER``
seconds until it succeeds; it is then kept for the app's life (it never
changes). ``flask db upgrade`` and an app whose database is down or not yet
migrated start all the same: until the identity is known the app reads
nothing from Redis (the database answers, as when Redis is down), counts
throttled attempts in its own memory, and records its invalidations in the
database for the other instances (``cache.generations``).
"""

import logging
import secrets
import threading
import time

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from postservice.db.engines import side_engine
from postservice.models import DeploymentIdentity

log = logging.getLogger(__name__)

RETRY_AFTER = 1.0
IDENTITY_ROW = 1


class Unknown(Exception):
    """The identity could not be read yet (database down or not migrated)."""

    def __init__(self):
        super().__init__("the cache namespace is not known yet")


class Namespace:
    """One app's prefix, once known."""

    def __init__(self, override):
        self.prefix = override
        self.lock = threading.Lock()
        self.retry_at = 0.0
        self.warned = False
        # Keys are never written before the prefix is known; should one be,
        # it lands in a namespace of this process alone, read by no other.
        self.placeholder = "ps-unknown-" + secrets.token_hex(8)


def prefix_from_identity(identity):
    return "ps-" + identity


def init_app(app):
    """Take ``REDIS_KEY_PREFIX``, or read the identity now if the database answers."""
    namespace = Namespace(app.config["REDIS_KEY_PREFIX"])
    app.extensions["cache_namespace"] = namespace
    if namespace.prefix is None and _redis_configured(app.config):
        _resolve(app, namespace, quiet=True)


def _redis_configured(config):
    storage = config.get("RATELIMIT_STORAGE_URL") or ""
    return bool(config.get("REDIS_URL")) or storage.lower().startswith("redis")


def key_prefix(app):
    """What the cache backend is built with: the prefix, or the placeholder."""
    namespace = app.extensions["cache_namespace"]
    return namespace.prefix or namespace.placeholder


def prefix(app=None):
    """The prefix of every key; raises ``Unknown`` while it cannot be read."""
    app = app or current_app._get_current_object()
    namespace = app.extensions["cache_namespace"]
    if namespace.prefix is not None:
        return namespace.prefix
    with namespace.lock:
        if namespace.prefix is None:
            if time.monotonic() < namespace.retry_at:
                raise Unknown()
            _resolve(app, namespace)
    if namespace.prefix is None:
        raise Unknown()
    return namespace.prefix


def _resolve(app, namespace, quiet=False):
    """Read the identity; on success the prefix is set everywhere it is used."""
    try:
        with side_engine(app).connect() as connection:
            identity = connection.scalar(
                select(DeploymentIdentity.identity).where(
                    DeploymentIdentity.id == IDENTITY_ROW
                )
            )
    except SQLAlchemyError as e:
        identity, reason = None, str(getattr(e, "orig", e)).splitlines()[0]
    else:
        reason = "table deployment_identity is empty"
    if identity is None:
        namespace.retry_at = time.monotonic() + RETRY_AFTER
        if not quiet and not namespace.warned:
            namespace.warned = True
            log.warning(
                "cache namespace unknown until the database answers and is "
                "migrated (flask db upgrade); Redis is not read meanwhile: %s",
                reason,
            )
        return
    resolved = prefix_from_identity(identity)
    app.config["REDIS_KEY_PREFIX"] = resolved
    backend = app.extensions.get("cache", {})
    for store in backend.values():
        store.key_prefix = resolved + ":"
    namespace.prefix = resolved
    if namespace.warned:
        log.warning("cache namespace known: %s", resolved)

"""Whether the shared cache (Redis) may be asked, per app.

Redis is an optimisation: when a call fails, the app goes without it for
``RETRY_AFTER`` seconds (listings come from the database, token revocations
are not checked) and logs one warning per outage, not one per request.
"""

import logging
import math
import threading
import time

from flask import current_app

from postservice.cache.clients import REDIS_ERRORS

log = logging.getLogger(__name__)

RETRY_AFTER = 1.0
# What a failing cache raises, on any topology; callers treat all of it as
# "cache unavailable".
ERRORS = REDIS_ERRORS


class CacheUnavailable(Exception):
    """The cache failed a moment ago and is being left alone."""


class CacheHealth:
    """Whether the cache may be used, and the invalidations it still owes."""

    def __init__(self, shared=True):
        self.lock = threading.Lock()
        self.down_until = 0.0
        self.pending = set()
        # When this app last looked at the announced invalidations and
        # delivered them (``generations.usable``): the cache is trusted for
        # a moment after that only. An in-process cache too: the
        # maintenance commands run in processes of their own, which reach
        # it only through the database (``announces_all``).
        self.confirmed_at = -math.inf
        self.confirming = threading.Lock()
        self.confirm_retry_at = 0.0
        self.shared = shared
        # Every invalidation is announced in the database as well: this
        # process is not the one whose in-process cache serves (a command).
        self.announces_all = False
        # An in-process cache's look delivers announcements to itself and
        # leaves them (they may be owed to instances sharing Redis): the last
        # id it delivered.
        self.delivered_up_to = 0
        # The last look failed: the next ones run in the background.
        self.look_failed = False

    def available(self):
        return time.monotonic() >= self.down_until

    def failed(self, error):
        with self.lock:
            was_up = self.available()
            self.down_until = time.monotonic() + RETRY_AFTER
        if was_up:
            log.warning(
                "cache unavailable, serving from the database, which also "
                "decides on every token meanwhile: %s",
                error,
            )


def init_app(app):
    """Give each app its own state: tests build many apps side by side."""
    app.extensions["cache_health"] = CacheHealth(shared=bool(app.config["REDIS_URL"]))


def current():
    return current_app.extensions["cache_health"]

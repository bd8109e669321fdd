"""Throttling of logins, registrations and password checks, fair to the owner.

Three counts, each a rate limit from the configuration:

- every attempt from one client address (``LOGIN_RATE_LIMIT``,
  ``REGISTER_RATE_LIMIT``), counted before the body is even read, so no
  body, however broken, escapes it;
- failed password checks for one account from one address
  (``LOGIN_FAILURE_RATE_LIMIT``): slows a guesser down without locking the
  owner out, who logs in from another address;
- failed password checks for one account from anywhere
  (``ACCOUNT_FAILURE_RATE_LIMIT``), a much higher ceiling against guessing
  spread over many addresses.

Only failures count toward the per-account limits, so an attacker's
attempts from elsewhere never spend the owner's. A throttled request is
``429 {"detail": ...}`` with ``Retry-After``.

The counts live in ``RATELIMIT_STORAGE_URL`` (by default ``REDIS_URL``), a
store to keep apart from the evictable cache in production; the ``limits``
library talks to it, over TLS with the cache's ``REDIS_SSL_*`` files when
the URL says ``rediss``. When it cannot be asked, one warning is logged and
counting goes on in the process's memory until it answers again: an
outage must neither turn logins into 500s nor lift the limits.
"""

import contextlib
import functools
import logging
import math
import threading
import time

from flask import current_app, request
from limits import parse_many
from limits.errors import ConfigurationError, StorageError
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from config import ConfigError
from postservice.cache import clients
from postservice.cache import health as cache_health
from postservice.http.errors import APIError
from postservice.ops import metrics

log = logging.getLogger(__name__)

# While the shared store is failing, it is left alone this long.
RETRY_AFTER = 5.0


class Throttled(APIError):
    def __init__(self, retry_after):
        super().__init__(
            429,
            "Too many requests, try again later",
            headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
        )


class Throttle:
    """One app's counters: the shared store, and memory for when it fails."""

    def __init__(self, app):
        self.url = app.config["RATELIMIT_STORAGE_URL"]
        if self.url.lower().startswith(("redis+", "rediss+")):
            try:
                clients.parse_url(self.url)
            except clients.RedisURLError as e:
                raise ConfigError(f"RATELIMIT_STORAGE_URL: {e}") from None
        self.prefix = app.config["REDIS_KEY_PREFIX"] + ":throttle"
        self.timeout = app.config["REDIS_TIMEOUT"]
        self.tls = clients.TLS.from_settings(app.config)
        self.build_lock = threading.Lock()
        self.shared = None  # built on first use: the app starts without Redis
        self.local = FixedWindowRateLimiter(MemoryStorage())
        self.shared_down_until = 0.0

    def _shared(self):
        if self.shared is None:
            with self.build_lock:
                if self.shared is None:
                    storage = clients.limits_storage(
                        self.url,
                        timeout=self.timeout,
                        key_prefix=self.prefix,
                        tls=self.tls,
                    )
                    self.shared = FixedWindowRateLimiter(storage)
        return self.shared

    def _run(self, action):
        """``action(limiter)`` on the shared store, or in memory when it fails."""
        if time.monotonic() < self.shared_down_until:
            return action(self.local)
        try:
            return action(self._shared())
        except (StorageError, ConfigurationError, *cache_health.ERRORS) as e:
            self.shared_down_until = time.monotonic() + RETRY_AFTER
            log.warning("throttle store unavailable, counting in memory: %s", e)
            return action(self.local)

    def hit(self, limits, *identity):
        """Count one event; raises ``Throttled`` once a limit is exceeded."""
        for item in limits:
            if not self._run(lambda limiter, item=item: limiter.hit(item, *identity)):
                raise Throttled(self._retry_after(item, identity))

    def count(self, limits, *identity):
        """Count one event, whatever the limits say."""
        for item in limits:
            self._run(lambda limiter, item=item: limiter.hit(item, *identity))

    def check(self, limits, *identity):
        """Raises ``Throttled`` when a limit is used up, without counting."""
        for item in limits:
            if not self._run(lambda limiter, item=item: limiter.test(item, *identity)):
                raise Throttled(self._retry_after(item, identity))

    def _retry_after(self, item, identity):
        metrics.throttled()
        stats = self._run(lambda limiter: limiter.get_window_stats(item, *identity))
        return stats.reset_time - time.time()


def init_app(app):
    app.extensions["throttle"] = Throttle(app)


def _throttle():
    return current_app.extensions["throttle"]


def _limits(setting):
    return parse_many(current_app.config[setting])


def client_address():
    """The caller's address: the peer, or X-Forwarded-For behind trusted proxies.

    ``TRUSTED_PROXY_COUNT`` makes the factory install ProxyFix, which
    rewrites ``remote_addr``; otherwise the header is not believed.
    """
    return request.remote_addr or "unknown"


def limit(setting):
    """Count every call of the view per client address against ``setting``.

    The count comes before the view reads its body, so malformed or
    oversized input is counted like any other attempt.
    """

    def decorate(view):
        @functools.wraps(view)
        def throttled(*args, **kwargs):
            _throttle().hit(_limits(setting), setting, client_address())
            return view(*args, **kwargs)

        return throttled

    return decorate


@contextlib.contextmanager
def password_attempt(account):
    """Around a password check for ``account`` (an email or ``user:<id>``).

    Refuses at once when the account's failure limits are used up, and
    counts a failure when the block raises ``APIError`` with 401 or 404 (a
    wrong password, an unknown email).
    """
    throttle = _throttle()
    address = client_address()
    per_address = _limits("LOGIN_FAILURE_RATE_LIMIT")
    per_account = _limits("ACCOUNT_FAILURE_RATE_LIMIT")
    throttle.check(per_address, "failures", account, address)
    throttle.check(per_account, "failures", account)
    try:
        yield
    except APIError as e:
        if e.status in (401, 404):
            throttle.count(per_address, "failures", account, address)
            throttle.count(per_account, "failures", account)
        raise

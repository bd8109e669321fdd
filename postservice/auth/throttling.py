"""Throttling of logins, registrations and password checks, fair to the owner.

Three counts, each a rate limit from the configuration:

- every attempt from one client (``LOGIN_RATE_LIMIT``,
  ``REGISTER_RATE_LIMIT``), counted before the body is even read, so no
  body, however broken, escapes it;
- failed password checks for one account from one client
  (``LOGIN_FAILURE_RATE_LIMIT``): slows a guesser down without locking the
  owner out, who logs in from another client;
- failed password checks for one account from anywhere
  (``ACCOUNT_FAILURE_RATE_LIMIT``), a much higher ceiling against guessing
  spread over many clients. It holds back only clients new to the
  account: one that logged in to it successfully in the last
  ``LOGIN_KNOWN_ADDRESS_DAYS`` days is remembered (in the same store) and,
  once the ceiling is used up, still checked against its own per-client
  count only. Guesses from elsewhere never lock the owner out of where
  they log in from.

A client is its address as the service sees it (``client_address``): an
IPv4 address, or the /64 network of an IPv6 address (one host usually
holds a whole /64, so counting single IPv6 addresses would give it an
unlimited supply of them); an IPv4-mapped IPv6 address counts as its IPv4
address. The login answer is the token pair and nothing else: no device
token is handed out, so the address is all that recognises a client.

Failures are counted before the password is checked: each attempt takes
one from the counts at once (an atomic increment, ``limits``' ``hit``) and
is refused if that goes past a limit, so concurrent attempts can never get
more checks than the limit. Only a wrong password or an unknown email
keeps what it took; a success, a refusal and an attempt that ends without
a verdict on the password (a 503, say) give it back. A throttled request
is ``429 {"detail": ...}`` with ``Retry-After``.

The counts live in ``RATELIMIT_STORAGE_URL`` (by default ``REDIS_URL``), a
store to keep apart from the evictable cache in production; the ``limits``
library talks to it, over TLS with the cache's ``REDIS_SSL_*`` files when
the URL says ``rediss``. When it cannot be asked, one warning is logged and
counting goes on in the process's memory until it answers again: an
outage must neither turn logins into 500s nor lift the limits.
"""

import contextlib
import functools
import ipaddress
import logging
import math
import threading
import time

from flask import current_app, request
from limits import RateLimitItemPerDay, parse_many
from limits.errors import ConfigurationError, StorageError
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from config import ConfigError
from postservice.cache import clients, namespace
from postservice.cache import health as cache_health
from postservice.http.errors import APIError
from postservice.ops import metrics

log = logging.getLogger(__name__)

# While the shared store is failing, it is left alone this long.
RETRY_AFTER = 5.0
# Takes one back from a count: never below zero, and never by creating the
# key, so a count whose window ended meanwhile stays gone instead of starting
# the next window at -1.
GIVE_BACK = """
local count = tonumber(redis.call('get', KEYS[1]) or '0')
if count > 0 then
    return redis.call('decrby', KEYS[1], 1)
end
return count
"""
# The bits of an IPv6 address that name one client: its /64.
IPV6_CLIENT_PREFIX = 64


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
        try:
            clients.check_url(self.url, memory=True)
        except clients.RedisURLError as e:
            raise ConfigError(f"RATELIMIT_STORAGE_URL: {e}") from None
        self.timeout = app.config["REDIS_TIMEOUT"]
        self.tls = clients.TLS.from_settings(app.config)
        # One marker per account and client, alive this long after a login.
        self.known = RateLimitItemPerDay(1, app.config["LOGIN_KNOWN_ADDRESS_DAYS"])
        self.build_lock = threading.Lock()
        self.shared = None  # built on first use: the app starts without Redis
        self.give_back_script = None
        self.local = FixedWindowRateLimiter(MemoryStorage())
        self.shared_down_until = 0.0

    def _shared(self):
        if self.shared is None:
            with self.build_lock:
                if self.shared is None:
                    # A shared store's keys need the deployment's namespace:
                    # ``namespace.Unknown`` until it is known.
                    memory = self.url.lower().startswith("memory")
                    prefix = "" if memory else namespace.prefix() + ":throttle"
                    storage = clients.limits_storage(
                        self.url,
                        timeout=self.timeout,
                        key_prefix=prefix,
                        tls=self.tls,
                    )
                    if not isinstance(storage, MemoryStorage):
                        self.give_back_script = (
                            storage.get_connection().register_script(GIVE_BACK)
                        )
                    self.shared = FixedWindowRateLimiter(storage)
        return self.shared

    def _run(self, action):
        """``action(limiter)`` on the shared store, or in memory when it fails."""
        if time.monotonic() < self.shared_down_until:
            return action(self.local)
        try:
            return action(self._shared())
        except (
            StorageError,
            ConfigurationError,
            namespace.Unknown,
            *cache_health.ERRORS,
        ) as e:
            self.shared_down_until = time.monotonic() + RETRY_AFTER
            log.warning("throttle store unavailable, counting in memory: %s", e)
            return action(self.local)

    def hit(self, limits, *identity):
        """Count one event; raises ``Throttled`` once a limit is exceeded."""
        for item in limits:
            if not self.take(item, *identity):
                self.refuse(item, *identity)

    def take(self, item, *identity):
        """Count one event in one limit, atomically; False past the limit."""
        return self._run(lambda limiter: limiter.hit(item, *identity))

    def give_back(self, item, *identity):
        """Undo one ``take``, unless its window has ended since."""

        def give_back(limiter):
            key = item.key_for(*identity)
            storage = limiter.storage
            if isinstance(storage, MemoryStorage):
                storage.decr(key)  # never below zero
            else:
                self.give_back_script(keys=[storage.prefixed_key(key)])

        self._run(give_back)

    def refuse(self, item, *identity):
        metrics.throttled()
        stats = self._run(lambda limiter: limiter.get_window_stats(item, *identity))
        raise Throttled(stats.reset_time - time.time())

    def remember(self, account, client):
        """``client`` logged in to ``account``: known for the days to come."""

        def mark(limiter):
            limiter.clear(self.known, "known", account, client)  # a fresh expiry
            limiter.hit(self.known, "known", account, client)

        self._run(mark)

    def is_known(self, account, client):
        """Whether ``client`` logged in to ``account`` lately."""
        return not self._run(
            lambda limiter: limiter.test(self.known, "known", account, client)
        )


def init_app(app):
    app.extensions["throttle"] = Throttle(app)


def _throttle():
    return current_app.extensions["throttle"]


def _limits(setting):
    return parse_many(current_app.config[setting])


def counted_address(address):
    """The client ``address`` stands for: itself for IPv4, its /64 for IPv6.

    An IPv4-mapped IPv6 address is its IPv4 address. What is not an IP
    address (a Unix socket's peer, say) is counted as it is.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    network = ipaddress.IPv6Network((int(ip), IPV6_CLIENT_PREFIX), strict=False)
    return str(network)


def client_address():
    """The caller as the limits count it: ``counted_address`` of the peer, or
    of X-Forwarded-For behind trusted proxies.

    The proxy in front (``postservice.http.proxy``) has rewritten
    ``remote_addr`` from the header it trusts; otherwise the header is not
    believed.
    """
    return counted_address(request.remote_addr or "unknown")


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


def count(setting, *identity):
    """Count one event of ``identity`` (an email, ``user:<id>``) against
    ``setting``, whoever sends it; 429 once past it."""
    _throttle().hit(_limits(setting), setting, *identity)


@contextlib.contextmanager
def password_attempt(account):
    """Around a password check for ``account``: its email, whether a login
    or the account's own routes check it, so that one account has one count.

    Before the block runs, takes one failure from the client's count for the
    account and one from the account's count, and refuses at once (429)
    past either limit; past the account's only, a client the account knows
    (``Throttle.is_known``) goes on. Only a password checked and found
    wrong keeps what it took: the block raising ``APIError`` with 401 or 404
    (a wrong password, an unknown email). A refused attempt, one that ends
    any other way and a success give it back, and a success makes the
    client known to the account. The counts thus hold the failures and the
    checks under way, and no burst gets more checks than a limit allows.
    """
    throttle = _throttle()
    client = client_address()
    taken = []
    refused = _take(throttle, taken, "LOGIN_FAILURE_RATE_LIMIT", account, client)
    if refused is None:
        refused = _take(throttle, taken, "ACCOUNT_FAILURE_RATE_LIMIT", account)
        if refused is not None and throttle.is_known(account, client):
            refused = None  # the client's own count is its limit
    if refused is not None:
        _give_back(throttle, taken)
        throttle.refuse(*refused)
    try:
        yield
    except APIError as e:
        if e.status not in (401, 404):
            _give_back(throttle, taken)
        raise
    except BaseException:
        _give_back(throttle, taken)
        raise
    _give_back(throttle, taken)
    throttle.remember(account, client)


def _take(throttle, taken, setting, *identity):
    """Takes one failure from each of ``setting``'s limits for ``identity``;
    ``(item, *identity)`` of the first limit that was past, or None."""
    refused = None
    identity = ("failures", *identity)
    for item in _limits(setting):
        taken.append((item, identity))
        if not throttle.take(item, *identity) and refused is None:
            refused = (item, *identity)
    return refused


def _give_back(throttle, taken):
    for item, identity in taken:
        throttle.give_back(item, *identity)

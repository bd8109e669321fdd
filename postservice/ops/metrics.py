"""Prometheus metrics: one registry per app, served on a listener of its own.

Every app collects into its own ``CollectorRegistry`` (tests build many apps
side by side, and two registries never mix their counts). The registry is
served at ``/metrics`` only by ``python -m postservice.serve`` and only when
``METRICS_PORT`` is set, on that port: never on the public port, where
``/metrics`` is the usual JSON 404.

The functions other modules call (``cache_result``, ``throttled``,
``revoked``, ...) find the app's metrics themselves and do nothing outside
an app, so they are safe anywhere. The per-request path reuses the request
log's clock, and counts a request and its duration under one lock
(``RequestStats``) rather than through a Counter and a Histogram, which
take three locks and search the buckets one by one; a scrape then sees a
request's count and its duration together. ``bench/metrics_overhead.py``
measures what a cached get-posts pays.

What a scrape reads fresh: whether the database and Redis answer (the
checks ``/readyz`` runs), the database pool's checked-out connections,
and under ``python -m postservice.serve`` the server's queue of requests
waiting for a worker thread (``watch_server``).
"""

import errno
import io
import logging
import socket
import sys
import threading
import time
from bisect import bisect_left
from importlib import metadata
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from flask import current_app, g, has_request_context, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.utils import floatToGoString

from postservice.cache import health as cache_health
from postservice.extensions import db
from postservice.ops import health
from postservice.ops.logs import IntervalLog

log = logging.getLogger("postservice.metrics")
# Errors of accept() that say the process is out of something (descriptors,
# memory): trying again at once fails the same way.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

PATH = "/metrics"
# Scrapes the listener serves at once, a thread each; a connection beyond
# them is answered 503 and closed at once. A scraper needs one; a flood of
# connections holds no more threads and file descriptors than this, however
# many it opens, so it cannot take the public port's descriptors.
LISTENER_CONNECTIONS = 4
# Seconds a scrape has to send its whole request (one deadline for every
# read, not one per read): a connection that sends half a request is
# closed then.
LISTENER_READ_TIMEOUT = 5.0
# Seconds the listener stops accepting after running out of descriptors,
# rather than failing again at once.
LISTENER_ACCEPT_PAUSE = 0.5
# One line a minute at most about connections turned away or failed accepts.
LISTENER_LOG_INTERVAL = 60.0
# What a connection beyond LISTENER_CONNECTIONS gets before it is closed.
_BUSY_BODY = b"Too many scrapes at once.\n"
BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)
# From a cached listing (under a millisecond) to a bcrypt login and a slow
# large listing: each of them lands between two close bounds.
DURATION_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
CACHE_RESULTS = ("hit", "shared", "miss", "error", "bypass")
REVOCATION_KINDS = (
    "logout",
    "logout_all",
    "password_change",
    "account_deleted",
    "password_reset",
)
MAIL_KINDS = ("password_reset", "verify_email")
# Anything else a client sends as a method is counted under one label, so
# invented methods cannot grow the number of series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
# Requests that matched no route (404, 405): one label, never the raw path.
NO_ENDPOINT = "none"
_CACHE_COUNTED = "metrics_cache_counted"


class Metrics:
    """The metrics of one app and the registry that holds them."""

    def __init__(self, app):
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = RequestStats()
        registry.register(self.requests)
        cache = Counter(
            "postservice_cache_requests",
            "Full get-posts listings by how the cache answered: hit, miss "
            "(read from the database and stored), error (Redis failed), "
            "bypass (too big to store, or Redis left alone after a failure).",
            ("result",),
            registry=registry,
        )
        self.cache = {result: cache.labels(result) for result in CACHE_RESULTS}
        self.throttled = Counter(
            "postservice_throttled",
            "Requests turned away with 429 by the login and registration limits.",
            ("endpoint",),
            registry=registry,
        )
        revocations = Counter(
            "postservice_token_revocations",
            "Token revocations recorded, by what caused them.",
            ("kind",),
            registry=registry,
        )
        self.revocations = {kind: revocations.labels(kind) for kind in REVOCATION_KINDS}
        self.mail_queued = Counter(
            "postservice_mail_queued",
            "Mails written to the outbox, by kind (password_reset counts "
            "every reset asked for, an account or not).",
            ("kind",),
            registry=registry,
        )
        self.mail_sent = Counter(
            "postservice_mail_sent",
            "Mails the SMTP server took, by kind (counted by the worker).",
            ("kind",),
            registry=registry,
        )
        self.mail_failed = Counter(
            "postservice_mail_failed",
            "Tries to send a mail that failed, by kind; final is true for "
            "the try after which the mail was set aside.",
            ("kind", "final"),
            registry=registry,
        )
        self.mail_dropped = Counter(
            "postservice_mail_dropped",
            "Password resets asked for an email no account has: no mail.",
            ("kind",),
            registry=registry,
        )
        for kind in MAIL_KINDS:
            for counter in (self.mail_queued, self.mail_sent):
                counter.labels(kind)
        self.hash_slots = Gauge(
            "postservice_password_hash_slots_in_use",
            "Password hashes running or queued (logins and registrations).",
            registry=registry,
        )
        Gauge(
            "postservice_password_hash_slots",
            "PASSWORD_HASH_SLOTS: hashes allowed at once before a quick 503.",
            registry=registry,
        ).set(app.config["PASSWORD_HASH_SLOTS"])
        Gauge(
            "postservice_build_info",
            "Always 1; the version of the running code is the label.",
            ("version",),
            registry=registry,
        ).labels(_version()).set(1)
        registry.register(_StateCollector(app))


class RequestStats:
    """Requests by endpoint, method and status, and their durations.

    Exposed as ``postservice_http_requests_total`` (a counter) and
    ``postservice_http_request_duration_seconds`` (a histogram with
    ``DURATION_BUCKETS``), exactly as prometheus_client's own would be.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}  # (endpoint, method, status) -> requests
        # (endpoint, method) -> [count in each bucket (the last is +Inf), sum]
        self.durations = {}

    def record(self, endpoint, method, status, seconds):
        if method not in METHODS:
            method = OTHER_METHOD
        bucket = bisect_left(DURATION_BUCKETS, seconds)
        key = (endpoint, method, status)
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            durations = self.durations.get(key[:2])
            if durations is None:
                durations = self.durations[key[:2]] = [0] * (len(DURATION_BUCKETS) + 2)
            durations[bucket] += 1
            durations[-1] += seconds

    def collect(self):
        with self.lock:
            counts = dict(self.counts)
            durations = {key: list(value) for key, value in self.durations.items()}
        requests = CounterMetricFamily(
            "postservice_http_requests",
            "HTTP requests answered, by Flask endpoint, method and status.",
            labels=("endpoint", "method", "status"),
        )
        for (endpoint, method, status), count in counts.items():
            requests.add_metric((endpoint, method, str(status)), count)
        histogram = HistogramMetricFamily(
            "postservice_http_request_duration_seconds",
            "Time from a request's arrival to its response being ready "
            "(a streamed listing goes on sending after).",
            labels=("endpoint", "method"),
        )
        bounds = [floatToGoString(b) for b in DURATION_BUCKETS] + ["+Inf"]
        for labels, (*per_bucket, total) in durations.items():
            cumulative, running = [], 0
            for bound, count in zip(bounds, per_bucket, strict=True):
                running += count
                cumulative.append((bound, running))
            histogram.add_metric(labels, cumulative, total)
        yield requests
        yield histogram


class _StateCollector:
    """Values read at scrape time, in the app's context."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        with self.app.app_context():
            # The pools first: the check below borrows a connection itself.
            checked_out = GaugeMetricFamily(
                "postservice_database_pool_checked_out",
                "Database connections lent out by the pool right now.",
                labels=("pool",),
            )
            size = GaugeMetricFamily(
                "postservice_database_pool_size",
                "Connections the database pool keeps (overflow not counted).",
                labels=("pool",),
            )
            for name, engine in _engines():
                checked_out.add_metric([name], _pool_figure(engine.pool, "checkedout"))
                size.add_metric([name], _pool_figure(engine.pool, "size"))
            up = GaugeMetricFamily(
                "postservice_dependency_up",
                "1 when the dependency answers /readyz's check at scrape "
                "time; redis is also 0 while the cache leaves it alone after "
                "a failure.",
                labels=("dependency",),
            )
            # Within /readyz's deadline: a hung server must not hold the scrape.
            checks = health.run_checks(self.app)
            up.add_metric(["database"], checks["database"] == "ok")
            redis = checks["redis"]
            if redis != "not configured":
                usable = cache_health.current().available()
                up.add_metric(["redis"], redis == "ok" and usable)
        yield checked_out
        yield size
        yield up


class _ServerCollector:
    """The waitress server's queue (``serve.GracefulServer``), read at scrape time."""

    def __init__(self, server):
        self.server = server

    def collect(self):
        yield CounterMetricFamily(
            "postservice_server_queued_requests",
            "Requests that found every worker thread busy and waited for one.",
            value=self.server.queued(),
        )
        yield GaugeMetricFamily(
            "postservice_server_queue_depth",
            "Requests received and not yet taken by a worker thread.",
            value=self.server.waiting(),
        )


def watch_server(app, server):
    """Add the queue of ``server`` (a ``serve.GracefulServer``) to the app's metrics."""
    app.extensions["metrics"].registry.register(_ServerCollector(server))


def _engines():
    """``(pool label, engine)``: "transactions" for the session's engine, and
    "autocommit" for the one-statement engine on MySQL (``database.py``)."""
    for key, engine in db.engines.items():
        yield (key or "transactions"), engine


def _pool_figure(pool, name):
    # SQLite in memory uses a pool without counts; report 0 there.
    figure = getattr(pool, name, None)
    return figure() if figure else 0


def _version():
    try:
        return metadata.version("postservice")
    except metadata.PackageNotFoundError:
        return "unknown"


def init_app(app):
    app.extensions["metrics"] = Metrics(app)


def _current():
    try:
        return current_app.extensions.get("metrics")
    except RuntimeError:  # outside an app: nothing to count into
        return None


def request_recorder(app):
    """``record(endpoint, method, status, seconds)`` for the app's requests.

    Bound once per app, so that counting a request needs no context lookup;
    the request log calls it with its own clock. Raises ``RuntimeError``
    when ``init_app`` has not run for ``app``.
    """
    metrics = app.extensions.get("metrics")
    if metrics is None:
        raise RuntimeError("metrics.init_app(app) must run before this")
    return metrics.requests.record


def cache_result(result):
    """Count how the cache answered this request's listing: one of ``CACHE_RESULTS``.

    Only the first result of a request counts: a Redis error seen while the
    token was checked is the request's result, not the bypass that follows.
    """
    metrics = _current()
    if metrics is None:
        return
    # A hit is never preceded or followed by another result (an error means
    # no hit), so the common case skips the bookkeeping.
    if result != "hit":
        if g.get(_CACHE_COUNTED):
            return
        setattr(g, _CACHE_COUNTED, True)
    metrics.cache[result].inc()


def throttled():
    """Count a 429 from the login or registration limits, for this request's view."""
    metrics = _current()
    if metrics is not None:
        endpoint = request.endpoint if has_request_context() else None
        metrics.throttled.labels(endpoint or NO_ENDPOINT).inc()


def revoked(kind):
    """Count a revocation: one of ``REVOCATION_KINDS``."""
    metrics = _current()
    if metrics is not None:
        metrics.revocations[kind].inc()


def mail_queued(kind):
    metrics = _current()
    if metrics is not None:
        metrics.mail_queued.labels(kind).inc()


def mail_sent(kind):
    metrics = _current()
    if metrics is not None:
        metrics.mail_sent.labels(kind).inc()


def mail_failed(kind, final):
    metrics = _current()
    if metrics is not None:
        metrics.mail_failed.labels(kind, "true" if final else "false").inc()


def mail_dropped(kind):
    metrics = _current()
    if metrics is not None:
        metrics.mail_dropped.labels(kind).inc()


def hash_slot_taken():
    metrics = _current()
    if metrics is not None:
        metrics.hash_slots.inc()


def hash_slot_released():
    metrics = _current()
    if metrics is not None:
        metrics.hash_slots.dec()


def exposition(app):
    """The app's metrics in Prometheus's text format, as a scrape gets them."""
    return generate_latest(app.extensions["metrics"].registry).decode("utf-8")


class _ReadWithin(io.RawIOBase):
    """A connection's reading side, with one deadline for all its reads."""

    def __init__(self, sock, seconds):
        self.sock = sock
        self.deadline = time.monotonic() + seconds

    def readable(self):
        return True

    def readinto(self, buffer):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _Handler(WSGIRequestHandler):
    """wsgiref's handler, reading the request within ``LISTENER_READ_TIMEOUT``."""

    timeout = LISTENER_READ_TIMEOUT

    def setup(self):
        super().setup()
        self.rfile.close()
        self.rfile = io.BufferedReader(_ReadWithin(self.connection, self.timeout))

    def get_environ(self):
        # Called once the request line and headers are in: the answer gets
        # a timeout of its own for each write, not what is left of the read's.
        self.connection.settimeout(self.timeout)
        return super().get_environ()

    def log_message(self, format, *args):
        """Scrapes every few seconds would drown the request log."""


class _MetricsServer(ThreadingMixIn, WSGIServer):
    """wsgiref's server, a thread per scrape, at most ``LISTENER_CONNECTIONS``.

    A connection beyond them is answered ``BUSY`` and closed without a
    thread; an accept that fails for want of descriptors pauses the
    listener for ``LISTENER_ACCEPT_PAUSE``. Both are logged once per
    ``LISTENER_LOG_INTERVAL``, with how often they happened.
    """

    # The threads die with the process; stopping waits for none of them.
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64  # the listen backlog

    def __init__(self, *args, **kwargs):
        self.slots = threading.BoundedSemaphore(LISTENER_CONNECTIONS)
        self.turned_away = IntervalLog(log, LISTENER_LOG_INTERVAL)
        self.accept_failures = IntervalLog(log, LISTENER_LOG_INTERVAL)
        super().__init__(*args, **kwargs)

    def get_request(self):
        try:
            return super().get_request()
        except OSError as e:
            if e.errno in OUT_OF_RESOURCES:
                self.accept_failures.happened(
                    "metrics listener: accept() failed: %s", e.strerror
                )
                time.sleep(LISTENER_ACCEPT_PAUSE)
            raise  # socketserver lets it go, and waits for the next

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.turned_away.happened(
                "metrics listener: a connection turned away, %d already being served",
                LISTENER_CONNECTIONS,
            )
            _answer_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()  # no thread started to release it
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):
        """A scraper that went away or sent too slowly: nothing to report."""
        if not isinstance(sys.exc_info()[1], OSError):
            log.exception("metrics listener: a scrape failed")


def _answer_busy(sock):
    """Send ``BUSY`` if the socket takes it at once; never wait for the client."""
    try:
        sock.setblocking(False)
        sock.send(BUSY)
    except OSError:
        pass


class _MetricsServer6(_MetricsServer):
    address_family = socket.AF_INET6


def _only_metrics(app):
    def dispatch(environ, start_response):
        if environ.get("PATH_INFO") == PATH:
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not Found\n"]

    return dispatch


def start_listener(app, host, port):
    """Serve the app's ``/metrics`` on ``host:port`` from a daemon thread,
    at most ``LISTENER_CONNECTIONS`` scrapes at once (``_MetricsServer``).

    Returns the server; ``shutdown()`` stops it. Raises ``OSError`` when the
    port cannot be bound.
    """
    server = make_server(
        host,
        port,
        _only_metrics(make_wsgi_app(app.extensions["metrics"].registry)),
        server_class=_MetricsServer6 if ":" in host else _MetricsServer,
        handler_class=_Handler,
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server

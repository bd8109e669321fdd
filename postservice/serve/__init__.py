"""Serve the app with waitress and stop gracefully: ``python -m postservice.serve``.

waitress's own ``serve()`` dies on SIGTERM with whatever requests it was
handling. Here SIGTERM or SIGINT closes the listening socket (new
connections are refused, so a load balancer moves on), lets the requests
already received or being received finish, then closes the remaining idle
connections and exits 0. Settings come from the environment; see
``server_settings``. With ``METRICS_PORT`` set, the Prometheus metrics are
served there too, on a listener of their own that stays up while the
requests in flight finish.
"""

import json
import logging
import os
import select
import signal
import time

from waitress import create_server, wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.proxy_headers import (
    PROXY_HEADERS,
    MalformedProxyHeader,
    clear_untrusted_headers,
    parse_proxy_headers,
)
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask

from config import (
    DATABASE_MAX_OVERFLOW,
    DEFAULT_WAITRESS_THREADS,
    MAX_BODY_BYTES,
    ConfigError,
    _float,
    _int,
    log_format,
)
from postservice import create_app
from postservice.http import headers
from postservice.ops import logs, metrics

log = logging.getLogger("postservice.serve")  # not __main__ under -m

# How often the loop looks at the stop flag; also the longest delay between a
# signal and the listening socket closing.
POLL_INTERVAL = 0.2
# waitress answers bodies over its own limit with a plain-text 413 before the
# app sees them; keeping it just above MAX_BODY_BYTES means a body slightly
# too large still gets the app's JSON 413, and a huge one is never buffered.
SERVER_BODY_LIMIT = MAX_BODY_BYTES + 1024 * 1024
# Seconds an idle connection is kept (waitress: 120). Idle connections hold
# a slot of WAITRESS_CONNECTION_LIMIT each; clients that keep one open for
# minutes without a request are better made to reconnect.
CHANNEL_TIMEOUT = 30
# How long the main loop pauses on finding a channel's output locked by the
# worker writing it (see ``Channel``): long enough for that worker to take
# the GIL back, short beside a request.
LOCKED_OUTPUT_PAUSE = 0.0002
# Connections a listener accepts in one turn of the main loop at most (see
# ``accept_pending``); a turn is short either way, and the connection limit
# still applies.
ACCEPT_BATCH = 128
# waitress logs "Task queue depth is N" for every request that finds no idle
# worker thread: under steady load that is most requests (thousands of lines
# a minute at 64 connections), and even at 8 connections on 8 threads a
# thread that has just answered is not idle yet. One line per interval says
# the same; the metrics count every such request (``QueueLog``).
QUEUE_LOG_INTERVAL = 60.0


def server_settings(env, pool_size):
    """waitress settings from ``env`` for a process whose pool holds ``pool_size``.

    Raises ``ConfigError`` for unreadable numbers, and when there are more
    threads than database connections: a thread waiting for a connection
    would stall its request for the pool timeout and then fail.
    """
    threads = _int(env, "WAITRESS_THREADS", DEFAULT_WAITRESS_THREADS, 1)
    most = pool_size + DATABASE_MAX_OVERFLOW
    if threads > most:
        raise ConfigError(
            f"WAITRESS_THREADS is {threads} but the database pool holds at most "
            f"{most} connections (DATABASE_POOL_SIZE {pool_size} + "
            f"{DATABASE_MAX_OVERFLOW} overflow): lower WAITRESS_THREADS or raise "
            "DATABASE_POOL_SIZE"
        )
    settings = {
        "host": env.get("HOST") or "127.0.0.1",
        "port": _int(env, "PORT", 8000, 1),
        "threads": threads,
        "connection_limit": _int(env, "WAITRESS_CONNECTION_LIMIT", 100, 1),
        "channel_timeout": _int(env, "WAITRESS_CHANNEL_TIMEOUT", CHANNEL_TIMEOUT, 1),
        "max_request_body_size": SERVER_BODY_LIMIT,
        "ident": "postservice",
    }
    proxy = (env.get("TRUSTED_PROXY") or "").strip()
    if proxy:
        forwarded = (
            env.get("TRUSTED_PROXY_HEADERS") or "x-forwarded-for x-forwarded-proto"
        )
        settings.update(
            trusted_proxy=proxy,
            trusted_proxy_count=_int(env, "TRUSTED_PROXY_COUNT", 1, 1),
            trusted_proxy_headers=forwarded.replace(",", " ").split(),
            clear_untrusted_proxy_headers=True,
        )
    return settings


def shutdown_timeout(env):
    """Seconds a stopping server waits for in-flight requests."""
    return _float(env, "SHUTDOWN_TIMEOUT", 20.0)


# waitress's settings for the proxy in front; ``trusting_proxy`` applies them.
PROXY_SETTINGS = (
    "trusted_proxy",
    "trusted_proxy_count",
    "trusted_proxy_headers",
    "clear_untrusted_proxy_headers",
    "log_untrusted_proxy_headers",
)


def error_body(detail):
    """Byte for byte what the app's ``jsonify`` writes for ``{"detail": detail}``."""
    return (json.dumps({"detail": detail}, separators=(",", ":")) + "\n").encode()


# What the app's own error answers carry (``headers.py``), for answers the
# server gives before the app sees the request.
ERROR_HEADERS = (
    ("Content-Type", "application/json"),
    *headers.ALWAYS,
    ("Content-Security-Policy", headers.API_POLICY),
)


def trusting_proxy(app, settings):
    """``app`` behind waitress's handling of the proxy in front, with JSON errors.

    ``settings`` are waitress's ``PROXY_SETTINGS``. waitress applies them
    in a middleware of its own, outside the app, which answers a malformed
    ``X-Forwarded-*`` or ``Forwarded`` header from the trusted proxy with a
    plain-text 400 no error handler reaches. This is that middleware, made
    of the same parts of waitress (its settings' checks, its parser, its
    clearing of the headers not trusted), answering that 400 in the API's
    error shape.
    """
    adj = Adjustments(**settings)  # waitress's checks and defaults

    def translate(environ, start_response):
        untrusted = PROXY_HEADERS
        peer = environ["REMOTE_ADDR"]
        if adj.trusted_proxy in ("*", peer):
            try:
                untrusted = parse_proxy_headers(
                    environ,
                    trusted_proxy_count=adj.trusted_proxy_count,
                    trusted_proxy_headers=adj.trusted_proxy_headers,
                )
            except MalformedProxyHeader as e:
                # waitress names a bad proto= in Forwarded "Forwarded Proto=".
                header = e.header.split()[0]
                log.warning("malformed %s header from %s: %s", header, peer, e.reason)
                body = error_body(f"Malformed {header} header")
                start_response(
                    "400 Bad Request",
                    [*ERROR_HEADERS, ("Content-Length", str(len(body)))],
                )
                return [body]
        if adj.clear_untrusted_proxy_headers:
            clear_untrusted_headers(
                environ, untrusted, log_warning=adj.log_untrusted_proxy_headers
            )
        return app(environ, start_response)

    return translate


class JsonErrorTask(ErrorTask):
    """waitress's own answers in the API's error shape, ``{"detail": ...}``.

    waitress answers some requests before the app sees them: a malformed
    request line or header (a bare LF, say), headers or a body over its
    limits, a transfer coding it does not know, and an app that raised
    before sending a byte. Its answer is plain text; this one is the
    JSON every other error is, with the same ``detail`` the app gives an
    HTTP error (the status's reason) and the API's security headers. The
    connection still closes after it, as waitress closes it.
    """

    def execute(self):
        error = self.request.error
        body = error_body(error.reason)
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend(ERROR_HEADERS)
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class Channel(HTTPChannel):
    """waitress's connection, without a busy loop that starves the workers.

    While a worker writes a response it holds the connection's output lock,
    and it gives up the GIL for every send. All that time the connection
    has output pending, so the main loop's ``select`` reports it writable at
    once, the loop finds the lock taken, and goes round again: at 64
    connections it spent most of a core that way, holding the GIL while the
    worker that owned the lock waited for it. Pausing for a fraction of a
    millisecond instead hands the GIL over. Nothing else changes: a worker
    that leaves output behind still wakes the loop to send it.

    Its error answers are JSON (``JsonErrorTask``).
    """

    error_task_class = JsonErrorTask

    def _flush_some_if_lockable(self, do_close=True):
        # The lock is reentrant (a Condition's RLock), so waitress's own
        # method, which takes it without waiting, takes it again.
        if not self.outbuf_lock.acquire(blocking=False):
            time.sleep(LOCKED_OUTPUT_PAUSE)
            return
        try:
            super()._flush_some_if_lockable(do_close)
        finally:
            self.outbuf_lock.release()


class QueueLog:
    """Stands in for waitress's queue logger: counts every queued request,
    logs one line per ``interval``.

    waitress calls ``warning`` with its queue's lock held, so the counts
    here need no lock of their own. The line says how deep the queue is,
    how many requests waited since the last line, and the deepest it got;
    those of a burst after the last line are told by the next one, and by
    the metrics at once. waitress counts a task: one request, or the
    requests a client pipelined on its connection.
    """

    def __init__(self, logger, interval=QUEUE_LOG_INTERVAL, clock=time.monotonic):
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.queued = 0  # requests that found every thread busy, all told
        self.unlogged = 0  # of them, since the last line
        self.deepest = 0  # the deepest queue since the last line
        self.quiet_until = None

    def warning(self, message, depth=0, *args):
        # waitress's call: ("Task queue depth is %d", depth); its text is ours.
        self.queued += 1
        self.unlogged += 1
        self.deepest = max(self.deepest, depth)
        now = self.clock()
        if self.quiet_until is not None and now < self.quiet_until:
            return
        self.quiet_until = now + self.interval
        self.logger.warning(
            "Task queue depth is %d: %d request(s) waited for a worker thread "
            "since the last such line, at most %d deep",
            depth,
            self.unlogged,
            self.deepest,
        )
        self.unlogged = self.deepest = 0


def accept_pending(listener, socket_map):
    """``listener``'s ``handle_accept``, made to take every waiting connection.

    waitress accepts one connection per turn of its main loop, and under
    load a turn takes milliseconds: it sends and reads for every ready
    connection and waits for the GIL between them. When 64 clients
    connected at once, the last waited seconds to be accepted, while the
    requests of accepted ones took 100 ms: at 64 connections most of the
    p99 (0.5 to 2 s) was that wait. Each turn now accepts what the kernel
    holds, up to ``ACCEPT_BATCH``, as long as the listener is still
    ``readable`` (below waitress's connection limit) and each accept added
    a connection to ``socket_map``: one that fails (out of file
    descriptors, say) is logged by waitress and ends the turn, as before.
    """
    accept_one = listener.handle_accept
    waiting = select.poll()
    waiting.register(listener.socket, select.POLLIN)

    def handle_accept():
        for _ in range(ACCEPT_BATCH):
            connections = len(socket_map)
            accept_one()
            if len(socket_map) == connections:
                return
            if not (listener.readable() and waiting.poll(0)):
                return

    return handle_accept


class GracefulServer:
    """A waitress server over its own socket map, so it can be drained."""

    def __init__(self, app, settings):
        settings = dict(settings)
        if settings.get("trusted_proxy"):
            proxy = {
                name: settings.pop(name) for name in PROXY_SETTINGS if name in settings
            }
            app = trusting_proxy(app, proxy)
            # Done by trusting_proxy; waitress would clear them before it.
            settings["clear_untrusted_proxy_headers"] = False
        self.map = {}
        self.server = create_server(app, map=self.map, **settings)
        for listener in self._listeners():
            listener.channel_class = Channel
            listener.handle_accept = accept_pending(listener, self.map)
        dispatcher = self.server.task_dispatcher
        # waitress has no hook for its queue warnings; its dispatcher calls
        # this attribute (tests/test_pins.py checks that it still does).
        self.queue_log = dispatcher.queue_logger = QueueLog(dispatcher.queue_logger)
        self.stop_requested = False
        self.accepting = True

    @property
    def port(self):
        return self.server.effective_port

    def request_stop(self, signum=None, frame=None):
        # Only a flag: the signal may arrive while the loop walks the map.
        self.stop_requested = True

    def queued(self):
        """Requests that found every worker thread busy, since the start."""
        return self.queue_log.queued

    def waiting(self):
        """Requests received and not yet taken by a worker thread."""
        return len(self.server.task_dispatcher.queue)

    def _listeners(self):
        return [obj for obj in self.map.values() if isinstance(obj, BaseWSGIServer)]

    def _stop_accepting(self):
        for listener in self._listeners():
            # The dispatcher's close, not the server's: that one also
            # closes the trigger the workers use to hand back responses.
            wasyncore.dispatcher.close(listener)
        self.accepting = False
        log.info("stopping: no new connections, finishing requests in flight")

    def _busy(self):
        """Connections with a request being received, run or sent."""
        return [
            channel
            for channel in list(self.map.values())
            if isinstance(channel, HTTPChannel) and _in_flight(channel)
        ]

    def run(self, grace):
        deadline = None
        while True:
            wasyncore.loop(timeout=POLL_INTERVAL, map=self.map, count=1)
            if not self.stop_requested:
                continue
            if self.accepting:
                self._stop_accepting()
                deadline = time.monotonic() + grace
            busy = self._busy()
            if not busy:
                break
            if time.monotonic() >= deadline:
                log.warning(
                    "stopping with %d request(s) unfinished after %.0f s",
                    len(busy),
                    grace,
                )
                break
        wasyncore.close_all(self.map)
        self.server.task_dispatcher.shutdown(timeout=1)
        log.info("stopped")


def _in_flight(channel):
    return bool(
        channel.request is not None or channel.requests or channel.total_outbufs_len
    )


def metrics_port_setting(env, public_port):
    """``METRICS_PORT``, or None when unset: then no metrics listener runs.

    Raises ``ConfigError`` when it is the public port: the metrics must never
    be served where clients reach the API.
    """
    port = _int(env, "METRICS_PORT", None, 1)
    if port is not None and port == public_port:
        raise ConfigError(
            f"METRICS_PORT must differ from PORT ({public_port}): the metrics "
            "are never served on the public port"
        )
    return port


def main(env=None):
    env = os.environ if env is None else env
    logs.configure(log_format(env))
    app = create_app()
    settings = server_settings(env, app.config["DATABASE_POOL_SIZE"])
    grace = shutdown_timeout(env)
    metrics_port = metrics_port_setting(env, settings["port"])
    server = GracefulServer(app, settings)
    metrics.watch_server(app, server)
    listener = _metrics_listener(app, settings["host"], metrics_port)
    signal.signal(signal.SIGTERM, server.request_stop)
    signal.signal(signal.SIGINT, server.request_stop)
    log.info(
        "serving on http://%s:%s with %d threads",
        settings["host"],
        server.port,
        settings["threads"],
    )
    server.run(grace)
    if listener is not None:
        listener.shutdown()
        listener.server_close()
    return 0


def _metrics_listener(app, host, port):
    if port is None:
        return None
    try:
        listener = metrics.start_listener(app, host, port)
    except OSError as e:
        raise ConfigError(f"METRICS_PORT {port} cannot be used: {e}") from None
    log.info("metrics on http://%s:%s%s", host, port, metrics.PATH)
    return listener

"""Serve the app with waitress and stop gracefully: ``python -m postservice.serve``.

waitress's own ``serve()`` dies on SIGTERM with whatever requests it was
handling. Here SIGTERM or SIGINT drains the server (``drain``): the
listening socket closes (new connections are refused, so a load balancer
moves on), every request already sent is answered, each answer with
``Connection: close``, a kept-alive connection is closed only once quiet
with nothing unread, and the process exits 0 when no connection is left.
Settings come from ``config.server_settings``.
Without ``MAIL_URL`` (development), the outbox is delivered to the log
by a thread of this process, so one command does everything; with it, the
``flask mail deliver`` workers send the mail.
With ``METRICS_PORT`` set, the Prometheus metrics are served there too, on
a listener of their own that stays up while the requests in flight finish.
"""

import logging
import resource
import signal

import config
from config import ConfigError
from postservice import create_app
from postservice.mail import delivery
from postservice.ops import logs, metrics
from postservice.serve.channel import (
    AcceptGuard,
    Channel,
    JsonErrorTask,
    accept_pending,
)
from postservice.serve.queue_log import QueueLog
from postservice.serve.server import GracefulServer, freeze_startup_heap

__all__ = [
    "AcceptGuard",
    "Channel",
    "GracefulServer",
    "JsonErrorTask",
    "QueueLog",
    "accept_pending",
    "freeze_startup_heap",
    "main",
]

log = logging.getLogger("postservice.serve")  # not __main__ under -m
# Descriptors the process holds besides its connections: the interpreter's,
# the database and Redis pools', waitress's trigger, the logs, with room.
DESCRIPTORS_BESIDES_CONNECTIONS = 64
# Seconds the development server waits for the mail in hand as it stops.
MAILER_STOP_TIMEOUT = 15.0


def main():
    """Serve until SIGTERM or SIGINT; exits 1 on a configuration error."""
    settings = config.server_settings()
    logs.configure(settings.log_format)
    app = create_app()
    try:
        server = GracefulServer(app, settings.waitress())
    except (OSError, ValueError) as e:  # in use, not ours to bind, no such host
        raise ConfigError(
            f"HOST {settings.host!r} and PORT {settings.port} cannot be used: {e}"
        ) from None
    metrics.watch_server(app, server)
    listener = _metrics_listener(app, settings.metrics_host, settings.metrics_port)
    _warn_if_descriptors_run_short(settings)
    mailer = None
    if app.config["MAIL_URL"] is None:
        mailer = delivery.start_in_thread(app)
        log.info("no MAIL_URL: each mail is written to this log, not sent")
    stop = server.request_stop
    if mailer is not None:
        # The mail thread stops with the server, finishing the mail in hand
        # while requests in flight finish.
        def stop(signum=None, frame=None):
            mailer[0].stop.set()
            server.request_stop(signum, frame)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "serving on http://%s:%s with %d threads",
        settings.host,
        server.port,
        settings.threads,
    )
    freeze_startup_heap()
    server.run(settings.shutdown_timeout)
    if mailer is not None:
        _stop_mailer(*mailer)
    if listener is not None:
        listener.shutdown()
        listener.server_close()
    return 0


def _stop_mailer(worker, thread):
    worker.stop.set()
    thread.join(MAILER_STOP_TIMEOUT)


def _metrics_listener(app, host, port):
    if port is None:
        return None
    try:
        listener = metrics.start_listener(app, host, port)
    except OSError as e:
        raise ConfigError(
            f"METRICS_PORT {port} on METRICS_HOST {host} cannot be used: {e}"
        ) from None
    log.info("metrics on http://%s:%s%s", host, port, metrics.PATH)
    return listener


def _warn_if_descriptors_run_short(settings):
    """Say at start when the open files limit is below what the connection
    limit needs: accepting would then fail before the limit is reached."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = (
        settings.connection_limit
        + metrics.LISTENER_CONNECTIONS
        + DESCRIPTORS_BESIDES_CONNECTIONS
    )
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "the open files limit (ulimit -n) is %d, below the %d that "
            "WAITRESS_CONNECTION_LIMIT %d needs: connections beyond what it "
            "allows wait until others close",
            soft,
            needed,
            settings.connection_limit,
        )

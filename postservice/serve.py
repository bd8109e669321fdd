"""Serve the app with waitress and stop gracefully: ``python -m postservice.serve``.

waitress's own ``serve()`` dies on SIGTERM with whatever requests it was
handling. Here SIGTERM or SIGINT closes the listening socket (new
connections are refused, so a load balancer moves on), lets the requests
already received or being received finish, then closes the remaining idle
connections and exits 0. Settings come from the environment; see
``config.server_settings``. With ``METRICS_PORT`` set, the Prometheus
metrics are served there too, on a listener of their own that stays up
while the requests in flight finish.
"""

import logging
import os
import signal
import sys
import time

from waitress import create_server, wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer

import config

from . import create_app, logconfig, metrics

log = logging.getLogger("postservice.serve")  # not __main__ under -m

# How often the loop looks at the stop flag; also the longest delay between a
# signal and the listening socket closing.
POLL_INTERVAL = 0.2


class GracefulServer:
    """A waitress server over its own socket map, so it can be drained."""

    def __init__(self, app, settings):
        self.map = {}
        self.server = create_server(app, map=self.map, **settings)
        self.stop_requested = False
        self.accepting = True

    @property
    def port(self):
        return self.server.effective_port

    def request_stop(self, signum=None, frame=None):
        # Only a flag: the signal may arrive while the loop walks the map.
        self.stop_requested = True

    def _stop_accepting(self):
        for obj in list(self.map.values()):
            if isinstance(obj, BaseWSGIServer):
                # The dispatcher's close, not the server's: that one also
                # closes the trigger the workers use to hand back responses.
                wasyncore.dispatcher.close(obj)
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


def main(env=None):
    env = os.environ if env is None else env
    logconfig.configure(config.log_format(env))
    app = create_app()
    settings = config.server_settings(env, app.config["DATABASE_POOL_SIZE"])
    grace = config.shutdown_timeout(env)
    metrics_port = config.metrics_port(env, settings["port"])
    server = GracefulServer(app, settings)
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
        raise config.ConfigError(f"METRICS_PORT {port} cannot be used: {e}") from None
    log.info("metrics on http://%s:%s%s", host, port, metrics.PATH)
    return listener


if __name__ == "__main__":
    sys.exit(main())

"""A waitress server that can be drained: stop accepting, finish, then close."""

import logging
import time

from waitress import create_server, wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer

from postservice.serve import queue_log
from postservice.serve.channel import AcceptGuard, Channel, accept_pending

log = logging.getLogger("postservice.serve")

# How often the loop looks at the stop flag; also the longest delay between a
# signal and the listening socket closing.
POLL_INTERVAL = 0.2


class GracefulServer:
    """A waitress server over its own socket map, so it can be drained."""

    def __init__(self, app, settings):
        """``settings``: waitress's ``create_server`` keyword arguments
        (``config.ServerSettings.waitress()``). The proxy in front is the
        app's concern (``postservice.http.proxy``), under any server."""
        self.map = {}
        # waitress would drop every X-Forwarded-* header before the app: the
        # app decides which to believe (``postservice.http.proxy``).
        settings = {"clear_untrusted_proxy_headers": False, **settings}
        self.server = create_server(app, map=self.map, **settings)
        for listener in self._listeners():
            listener.channel_class = Channel
            listener.handle_accept = accept_pending(listener, self.map)
            AcceptGuard(listener).install(listener)
        # waitress's public queue logger, filtered (see ``queue_log``).
        self.queue_log = queue_log.installed(
            self.server.task_dispatcher.queue_logger.name
        )
        self.queue_log.restart()
        self.queued_before = self.queue_log.queued
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
        return self.queue_log.queued - self.queued_before

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

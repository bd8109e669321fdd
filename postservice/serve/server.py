"""A waitress server that can be drained: stop accepting, finish, then close.

How a drain answers every request a client sent, and closes a connection
only when the client was told or has been quiet: ``drain``.
"""

import gc
import logging
import time

from waitress import create_server, wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer

from postservice.ops import logs, requestlog
from postservice.serve import queue_log
from postservice.serve.channel import (
    AcceptGuard,
    Channel,
    accept_pending,
    close_stalled,
    no_maintenance,
)
from postservice.serve.drain import IDLE_BEFORE_CLOSE, accept_backlog, close_idle, idle

log = logging.getLogger("postservice.serve")

# How often the loop looks at the stop flag; also the longest delay between a
# signal and the listening socket closing.
POLL_INTERVAL = 0.2
# How often connections that moved no bytes for the channel timeout are
# looked for (``close_stalled``): each lives at most twice this longer.
STALLED_INTERVAL = 1.0


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
        self.channel_class = _channel_class(app)
        for listener in self._listeners():
            listener.channel_class = self.channel_class
            # waitress's, for the backlog when the listener closes.
            listener.accept_one = listener.handle_accept
            listener.handle_accept = accept_pending(listener, self.map)
            # Replaced by ``close_stalled``: waitress's would close a client
            # that reads slowly, counting only the bytes it sent itself.
            listener.maintenance = no_maintenance
            AcceptGuard(listener).install(listener)
        # Whatever app it serves, waitress's lines stay one line each.
        logs.escape_waitress_lines()
        # waitress's public queue logger, filtered (see ``queue_log``).
        self.queue_log = queue_log.installed(
            self.server.task_dispatcher.queue_logger.name
        )
        self.queue_log.restart()
        self.queued_before = self.queue_log.queued
        self.channel_timeout = self.server.adj.channel_timeout
        self.stop_requested = False
        self.accepting = True

    @property
    def port(self):
        return self.server.effective_port

    def request_stop(self, signum=None, frame=None):
        # Only flags: the signal may arrive while the loop walks the map.
        # Answers built from now on close their connection, whichever
        # thread builds them.
        self.channel_class.draining = True
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
            accept_backlog(listener, listener.accept_one)
            # The dispatcher's close, not the server's: that one also
            # closes the trigger the workers use to hand back responses.
            wasyncore.dispatcher.close(listener)
        self.accepting = False
        log.info("stopping: no new connections, finishing requests in flight")

    def _channels(self):
        return [obj for obj in list(self.map.values()) if isinstance(obj, HTTPChannel)]

    def run(self, grace):
        deadline = None
        next_sweep = 0.0
        while True:
            wasyncore.loop(timeout=POLL_INTERVAL, map=self.map, count=1)
            # Between turns of the loop, never within one: closing a
            # channel changes the map the loop walks.
            now = time.time()  # the clock of waitress's last_activity
            if now >= next_sweep:
                next_sweep = now + STALLED_INTERVAL
                close_stalled(self._channels(), self.channel_timeout, now)
            if not self.stop_requested:
                continue
            if self.accepting:
                self._stop_accepting()
                deadline = time.monotonic() + grace
            close_idle(self._channels(), IDLE_BEFORE_CLOSE, now)
            channels = self._channels()
            if not channels:
                break
            if time.monotonic() >= deadline:
                busy = [channel for channel in channels if not idle(channel)]
                if busy:
                    log.warning(
                        "stopping with %d request(s) unfinished after %.0f s",
                        len(busy),
                        grace,
                    )
                break
        wasyncore.close_all(self.map)
        self.server.task_dispatcher.shutdown(timeout=1)
        log.info("stopped")


def freeze_startup_heap():
    """Leave what startup built out of the cyclic garbage collector's walks.

    The modules, the app, its settings and compiled statements live as long
    as the process, yet every full collection walks them all, holding every
    thread meanwhile (``bench/results/gc.md``). Collected once first, so
    that no garbage is kept for good.
    For a process that serves from here on, not one that builds apps again
    (tests): what is frozen is never collected.
    """
    gc.collect()
    gc.freeze()


def _channel_class(app):
    """A ``Channel`` of the server's own, which it tells when to drain, and
    whose own answers ``app``'s request log and metrics count
    (``requestlog.early_answers``) when it keeps them."""
    attributes = {"draining": False}
    # Not the service's app: nothing to count into.
    if "metrics" in getattr(app, "extensions", {}):
        attributes["answered"] = staticmethod(requestlog.early_answers(app))
    return type("Channel", (Channel,), attributes)

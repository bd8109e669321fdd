"""Where the logs go and how they look: ``LOG_FORMAT`` is ``text`` or ``json``.

``text`` keeps the readable lines of ``logging.basicConfig``. ``json`` writes
one JSON object per line with ``time`` (UTC, ISO 8601), ``level``,
``logger`` and ``message``; the request log's line adds ``request_id``,
``method``, ``path``, ``endpoint``, ``status`` and ``duration_ms``, and
every other line written while a request runs carries its ``request_id``.
Python warnings become log lines too, so nothing else reaches stderr.

Called by ``python -m postservice.serve`` before the app is built; under
any other server, ``create_app`` sets it up unless logging already is.
"""

import logging
import sys
import threading
import time

from flask import g, has_request_context
from pythonjsonlogger.json import JsonFormatter


class _RequestIdFilter(logging.Filter):
    """Tags lines written during a request with its id, as the request line is."""

    def filter(self, record):
        if not hasattr(record, "request_id") and has_request_context():
            request_id = g.get("request_id")
            if request_id:
                record.request_id = request_id
        return True


def json_handler(stream):
    """A handler writing one JSON object per line to ``stream``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
    )
    handler.addFilter(_RequestIdFilter())
    return handler


def configure(log_format):
    """Send INFO and above to stderr in ``log_format``, replacing any handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_format == "json":
        root.addHandler(json_handler(sys.stderr))
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
    else:
        logging.basicConfig(level=logging.INFO)


def configure_unless_done(log_format):
    """``configure`` unless a server or test runner has set up logging already."""
    if not logging.getLogger().handlers:
        configure(log_format)


class IntervalLog:
    """One line per ``interval`` about something that may happen thousands
    of times a second (an accept that fails for want of file descriptors):
    the first time at once, then at most once an interval, each line saying
    how many times it happened since the one before.
    """

    def __init__(self, logger, interval=60.0, clock=time.monotonic):
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.lock = threading.Lock()
        self.times = 0  # since the last line
        self.quiet_until = None

    def happened(self, message, *args):
        """Count one more; log ``message % args`` with the count if it is time.

        The count is appended as ``(N time(s) since the last such line)``.
        """
        with self.lock:
            self.times += 1
            now = self.clock()
            if self.quiet_until is not None and now < self.quiet_until:
                return
            self.quiet_until = now + self.interval
            times, self.times = self.times, 0
        self.logger.warning(
            message + " (%d time(s) since the last such line)", *args, times
        )

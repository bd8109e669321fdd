"""Where the logs go and how they look: ``LOG_FORMAT`` is ``text`` or ``json``.

``text`` keeps the readable lines of ``logging.basicConfig``. ``json`` writes
one JSON object per line with ``time`` (UTC, ISO 8601), ``level``,
``logger`` and ``message``; the request log's line adds ``request_id``,
``method``, ``path``, ``endpoint``, ``status`` and ``duration_ms``, and
every other line written while a request runs carries its ``request_id``.
Python warnings become log lines too, so nothing else reaches stderr.

Called by ``python -m postservice.serve`` before the app is built; under
any other server, ``create_app`` sets it up unless logging already is.

Every line is one line: the request log escapes the path it writes, and
the lines of waitress, which hold the decoded path of a request in some of
its messages, are escaped the same way (``escape_waitress_lines``).
"""

import logging
import sys
import threading
import time

from flask import g, has_request_context
from pythonjsonlogger.json import JsonFormatter

# The loggers waitress writes through (``waitress.utilities``). A filter on
# a logger applies to its own lines only, not to its children's: each one is
# given its own.
WAITRESS_LOGGERS = ("waitress", "waitress.queue")


def printable(text):
    """``text`` on one line: newlines, other control characters, non-ASCII
    characters and backslashes escaped as in a Python string literal."""
    return text.encode("unicode_escape").decode("ascii")


class PrintableLines(logging.Filter):
    """Escapes a line's message (``printable``) when it needs it.

    waitress writes ``Client disconnected while serving <path>`` and
    ``Exception while serving <path>`` with the request's decoded path: a
    ``%0A`` in it put what followed, a forged request line say, alone on a
    line. A line that needs no escaping is left as it is, its arguments
    too (``serve.QueueLog`` reads the queue's depth from them).
    """

    def filter(self, record):
        message = record.getMessage()
        escaped = printable(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


_install_lock = threading.Lock()


def escape_waitress_lines():
    """Put a ``PrintableLines`` on each of waitress's loggers, once.

    ``create_app`` calls it, so the app under ``waitress-serve`` has it, and
    so does ``python -m postservice.serve``'s server.
    """
    with _install_lock:
        for name in WAITRESS_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, PrintableLines) for f in logger.filters):
                logger.addFilter(PrintableLines())


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

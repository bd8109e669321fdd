"""Where the logs go and how they look: ``LOG_FORMAT`` is ``text`` or ``json``.

``text`` keeps the readable lines of ``logging.basicConfig``. ``json`` writes
one JSON object per line with ``time`` (UTC, ISO 8601), ``level``,
``logger`` and ``message``; the request log's line adds ``request_id``,
``method``, ``path``, ``endpoint``, ``status`` and ``duration_ms``, and
every other line written while a request runs carries its ``request_id``.
Python warnings become log lines too, so nothing else reaches stderr.

Called by ``python -m postservice.serve`` before the app is built; under
any other server, ``create_app`` sets it up unless logging already is.

Lines go through a buffer of ``BUFFER_BYTES`` on stderr's file descriptor,
written when it is full and at least every ``FLUSH_SECONDS``, instead of
one ``write`` per line: a thread that writes gives up the GIL and then
waits behind the other threads to get it back, which under load cost a
cached get-posts more than any other part of its log line. Lines reach
stderr at most ``FLUSH_SECONDS`` late; everything buffered is written when
the process exits, unless it is killed outright (SIGKILL), which loses at
most one buffer.
"""

import io
import logging
import sys
import threading

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


def json_formatter():
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


def json_handler(stream):
    """A handler writing one JSON object per line to ``stream``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(_RequestIdFilter())
    return handler


BUFFER_BYTES = 64 * 1024
FLUSH_SECONDS = 0.2


class BufferedHandler(logging.StreamHandler):
    """A StreamHandler that writes whole buffers, not each line.

    ``stream`` must buffer (not line-buffered); ``emit`` leaves it to fill,
    and a daemon thread flushes it every ``interval`` seconds. ``flush``,
    which logging calls at exit, writes what is left.
    """

    def __init__(self, stream, interval=FLUSH_SECONDS):
        super().__init__(stream)
        self.interval = interval
        self.stopped = threading.Event()
        self.flusher = threading.Thread(
            target=self._flush_regularly, name="postservice-log-flush", daemon=True
        )
        self.flusher.start()

    def emit(self, record):
        # StreamHandler.emit without its flush after every line.
        try:
            self.stream.write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:  # logging must never raise
            self.handleError(record)

    def _flush_regularly(self):
        while not self.stopped.wait(self.interval):
            self.flush()

    def close(self):
        self.stopped.set()
        self.flush()
        super().close()


def buffered_stderr():
    """stderr's file descriptor behind a ``BUFFER_BYTES`` buffer of its own."""
    return io.TextIOWrapper(
        io.BufferedWriter(
            io.FileIO(sys.stderr.fileno(), "w", closefd=False), BUFFER_BYTES
        ),
        encoding=sys.stderr.encoding or "utf-8",
        errors="backslashreplace",
    )


def configure(log_format):
    """Send INFO and above to stderr in ``log_format``, replacing any handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if isinstance(handler, BufferedHandler):
            handler.close()  # its last lines, and its flushing thread
    handler = BufferedHandler(buffered_stderr())
    if log_format == "json":
        handler.setFormatter(json_formatter())
        handler.addFilter(_RequestIdFilter())
        logging.captureWarnings(True)
    else:
        # The lines of logging.basicConfig().
        handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def configure_unless_done(log_format):
    """``configure`` unless a server or test runner has set up logging already."""
    if not logging.getLogger().handlers:
        configure(log_format)

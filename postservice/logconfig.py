"""Where the logs go and how they look: ``LOG_FORMAT`` is ``text`` or ``json``.

``text`` keeps the readable lines of ``logging.basicConfig``. ``json`` writes
one JSON object per line with ``time`` (UTC, ISO 8601), ``level``,
``logger`` and ``message``; the request log's line adds ``request_id``,
``method``, ``path``, ``endpoint``, ``status`` and ``duration_ms``, and
every other line written while a request runs carries its ``request_id``.
Python warnings become log lines too, so nothing else reaches stderr.

Called by ``python -m postservice.serve`` before the app is built; under
any other server, ``create_app`` sets it up unless logging already is.

Lines are formatted by the thread that logs them and written to stderr by
a thread of their own (``LineWriter``), several at a time when they come
quickly. A request thread that wrote its own line would give up the GIL
for the ``write`` and then wait for it behind the other threads' Python
work: with eight threads serving cached answers, that wait cost more than
a fifth of the throughput. The writer is drained when the interpreter
exits (a normal exit or ``serve``'s graceful stop); a process killed
outright loses the lines still queued, a few milliseconds' worth.
"""

import atexit
import logging
import queue
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
    """A handler writing one JSON object per line to ``stream``, synchronously."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(_RequestIdFilter())
    return handler


# Lines waiting for the writer; a full queue makes loggers wait, as a
# blocked stderr would, rather than grow without bound.
QUEUED_LINES = 10_000


class LineWriter:
    """A thread writing queued lines to ``stream``, all that are waiting at once."""

    _STOP = object()

    def __init__(self, stream):
        self.stream = stream
        self.lines = queue.Queue(QUEUED_LINES)
        self.thread = threading.Thread(
            target=self._run, name="postservice-log-writer", daemon=True
        )
        self.thread.start()

    def put(self, line):
        self.lines.put(line)

    def _run(self):
        while True:
            batch = [self.lines.get()]
            while len(batch) < QUEUED_LINES:
                try:
                    batch.append(self.lines.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is self._STOP
            lines = [line for line in batch if line is not self._STOP]
            if lines:
                try:
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
                except (OSError, ValueError):
                    pass  # stderr is gone: nothing else could report it
            if stop:
                return

    def stop(self, timeout=5.0):
        """Write what is queued, then end the thread."""
        if self.thread.is_alive():
            self.lines.put(self._STOP)
            self.thread.join(timeout)


class QueuedLineHandler(logging.Handler):
    """Formats each record here and hands the line to a ``LineWriter``."""

    def __init__(self, writer):
        super().__init__()
        self.writer = writer

    def emit(self, record):
        try:
            self.writer.put(self.format(record))
        except Exception:  # logging must never raise
            self.handleError(record)


_writer = None
_writer_lock = threading.Lock()


def _replace_writer(stream):
    global _writer
    with _writer_lock:
        if _writer is not None:
            _writer.stop()
        _writer = LineWriter(stream)
        return _writer


def _stop_writer():
    with _writer_lock:
        if _writer is not None:
            _writer.stop()


atexit.register(_stop_writer)


def configure(log_format):
    """Send INFO and above to stderr in ``log_format``, replacing any handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = QueuedLineHandler(_replace_writer(sys.stderr))
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

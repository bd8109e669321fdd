"""waitress's connection and its listener, changed where measurement showed a cost.

Each change replaces a waitress method or attribute that has no public hook;
waitress is pinned to 3.0.x for them, ``tests`` check that each still
applies, and the docs' Decisions page says why each exists.
"""

import fcntl
import logging
import select
import struct
import termios
import time

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask
from waitress.utilities import RequestHeaderFieldsTooLarge

from postservice.http.errors import json_error_body
from postservice.http.headers import ERROR_HEADERS
from postservice.ops import requestlog
from postservice.ops.logs import IntervalLog
from postservice.ops.metrics import OUT_OF_RESOURCES
from postservice.serve.drain import ClosingTask

log = logging.getLogger("postservice.serve")

# How long the main loop pauses on finding a channel's output locked by the
# worker writing it (see ``Channel``): long enough for that worker to take
# the GIL back, short beside a request.
LOCKED_OUTPUT_PAUSE = 0.0002
# Connections a listener accepts in one turn of the main loop at most (see
# ``accept_pending``); a turn is short either way, and the connection limit
# still applies.
ACCEPT_BATCH = 128
# Linux's SIOCOUTQ: the bytes of a TCP socket's send queue not yet
# acknowledged by the peer (``kernel_queue``).
_OUTQ = getattr(termios, "TIOCOUTQ", None)
_INT = struct.Struct("i")
# Seconds a listener leaves its waiting connections alone after such an
# error, instead of failing again on every turn of the main loop.
ACCEPT_PAUSE = 0.5
# At most one line a minute says that accepting fails, and how often it did.
ACCEPT_LOG_INTERVAL = 60.0


class JsonErrorTask(ErrorTask):
    """waitress's own answers in the API's error shape, ``{"detail": ...}``.

    waitress answers some requests before the app sees them: a malformed
    request line or header (a bare LF, say), headers or a body over its
    limits, a transfer coding it does not know, and an app that raised
    before sending a byte. Its answer is plain text; this one is the
    JSON every other error is, with the same ``detail`` the app gives an
    HTTP error (the status's reason) and the API's security headers. The
    connection still closes after it, as waitress closes it.

    Served with the app's request log and metrics (the channel's
    ``answered``, see ``requestlog.early_answers``), it is counted and
    logged as any answer of the app, and carries its ``X-Request-ID``.
    """

    def execute(self):
        started = time.perf_counter()
        request = self.request
        error = request.error
        answered = self.channel.answered
        body = json_error_body(error.reason)
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend(ERROR_HEADERS)
        if answered is not None:
            incoming = request.headers.get("X_REQUEST_ID")
            rid = requestlog.incoming_or_new_id(incoming)
            self.response_headers.append(("X-Request-ID", rid))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)
        if answered is not None:
            method, path = request_line(request)
            answered(method, path, error.code, time.perf_counter() - started, rid)


def request_line(request):
    """The method and the path (decoded as the app decodes it) of a request
    waitress refused; None for what it did not read."""
    if isinstance(request.error, RequestHeaderFieldsTooLarge):
        return None, None  # its request line is waitress's stand-in
    method = getattr(request, "command", None)
    path = getattr(request, "path", None)
    if path is not None:  # the WSGI string: bytes as latin-1
        path = path.encode("latin-1").decode(errors="replace")
    return method, path


class Channel(HTTPChannel):
    """waitress's connection, without a busy loop that starves the workers.

    While a worker writes a response it holds the connection's output lock,
    and it gives up the GIL for every send. All that time the connection
    has output pending, so the main loop's ``select`` reports it writable at
    once, the loop finds the lock taken, and goes round again: under many
    connections it spent a large share of a core that way, holding the GIL
    while the worker that owned the lock waited for it. Pausing for a fraction of a
    millisecond instead hands the GIL over. Nothing else changes: a worker
    that leaves output behind still wakes the loop to send it.

    Its error answers are JSON (``JsonErrorTask``). ``answered`` is how they
    are counted and logged, when the app keeps a request log, and
    ``draining`` says that every answer closes its connection
    (``drain.ClosingTask``); ``GracefulServer`` sets both on a class of
    its own.
    """

    task_class = ClosingTask
    error_task_class = JsonErrorTask
    answered = None
    draining = False

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


def accept_pending(listener, socket_map):
    """``listener``'s ``handle_accept``, made to take every waiting connection.

    waitress accepts one connection per turn of its main loop, and under
    load a turn takes milliseconds: it sends and reads for every ready
    connection and waits for the GIL between them. When many clients
    connected at once, the last waited far longer to be accepted than the
    requests of accepted ones took, and that wait made most of the tail
    latency (bench/results/decisions.md). Each turn now accepts what the kernel
    holds, up to ``ACCEPT_BATCH``, as long as the listener is still
    ``readable`` (below waitress's connection limit) and each accept added
    a connection to ``socket_map``: one that fails ends the turn (out of
    file descriptors, ``AcceptGuard`` also pauses the listener).
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


def close_stalled(channels, timeout, now):
    """Close each of ``channels`` that moved no byte for ``timeout`` seconds.

    waitress's own timeout (``BaseWSGIServer.maintenance``) only marks such
    a connection to be closed by its next write, and skips one with a
    request in a worker thread. A client that pipelines requests and never
    reads fills the kernel's buffers and waitress's: that write never
    comes, waitress stops reading the connection, and it held a slot of the
    connection limit (and its output, in temporary files past 1 MiB)
    forever; a worker writing a response over waitress's high watermark to
    it waited with its thread. Here it is closed, its buffers freed at
    once, and a worker waiting on it raises ``ClientDisconnected``.

    Bytes move when waitress reads or sends them, or finishes an answer
    (its ``last_activity``), and when the client takes what the kernel
    holds for it: a client reading a large answer slowly can leave
    waitress no room to send into for longer than the timeout, so past
    the timeout the kernel's queue for the socket is looked at, and a
    queue that shrank since the last look counts as activity. The first
    look past the timeout only notes the queue: a connection with bytes in
    the kernel is closed at the next one if they have not moved. A request
    the app is still working on, with no output waiting, is left alone.
    Returns how many were closed.
    """
    cutoff = now - timeout
    closed = 0
    for channel in channels:
        if channel.last_activity >= cutoff:
            continue
        # Held by a worker writing to it right now: bytes are moving.
        if not channel.outbuf_lock.acquire(blocking=False):
            continue
        try:
            if _stalled(channel, now):
                channel.handle_close()
                closed += 1
        finally:
            channel.outbuf_lock.release()
    return closed


def _stalled(channel, now):
    pending = channel.total_outbufs_len
    if channel.requests and not pending:
        return False  # the app is still working on its answer
    queued = kernel_queue(channel.socket)
    seen = getattr(channel, "kernel_queue_seen", None)
    channel.kernel_queue_seen = (channel.last_activity, queued)
    if queued:
        if seen is None or seen[0] != channel.last_activity:
            return False  # the first look: look again next time
        if seen[1] != queued:
            # The client took bytes from the kernel since the last look.
            channel.last_activity = now
            channel.kernel_queue_seen = (now, queued)
            return False
    unsent = pending + (queued or 0)
    if unsent or channel.requests:
        log.info(
            "closing a connection from %s that moved no bytes for %d s, "
            "with %d bytes of answers unsent",
            channel.addr[0] if channel.addr else "?",
            now - channel.last_activity,
            unsent,
        )
    return True


def no_maintenance(now):
    """A listener's ``maintenance``, left to ``close_stalled``."""


def kernel_queue(sock):
    """Bytes the kernel holds for ``sock`` that the peer has not
    acknowledged; None where that cannot be asked (not Linux)."""
    if _OUTQ is None:
        return None
    try:
        answer = fcntl.ioctl(sock.fileno(), _OUTQ, b"\0" * _INT.size)
    except (OSError, ValueError):  # closed meanwhile
        return None
    return _INT.unpack(answer)[0]


class AcceptGuard:
    """A listener that runs out of file descriptors pauses instead of spinning.

    waitress's ``accept()`` raises when the process has no descriptor left
    (``ulimit -n``); its ``handle_accept`` then logs a traceback and
    returns, and since the connection is still waiting, the main loop calls
    it again at once: a core spent, and tens of thousands of lines a second.
    Here such an error stops the listener for ``ACCEPT_PAUSE`` (its
    connections wait in the kernel's backlog meanwhile, and the
    connections already accepted go on being served), and is logged once
    per ``ACCEPT_LOG_INTERVAL`` with how many times it happened. Other
    accept errors are waitress's own concern, as before.
    """

    def __init__(self, listener, clock=time.monotonic):
        self.accept = listener.accept
        self.readable = listener.readable
        self.port = listener.effective_port
        self.clock = clock
        self.paused_until = 0.0
        self.failures = IntervalLog(log, ACCEPT_LOG_INTERVAL, clock)

    def install(self, listener):
        listener.accept = self.guarded_accept
        listener.readable = self.guarded_readable

    def guarded_accept(self):
        try:
            return self.accept()
        except OSError as e:
            if e.errno not in OUT_OF_RESOURCES:
                raise
            self.paused_until = self.clock() + ACCEPT_PAUSE
            self.failures.happened(
                "accept() failed on port %s: %s; connections wait until "
                "descriptors are free (raise the open files limit, ulimit -n, "
                "or lower WAITRESS_CONNECTION_LIMIT)",
                self.port,
                e.strerror,
            )
            return None  # waitress's handle_accept: nothing to accept

    def guarded_readable(self):
        # waitress's own first: it also closes idle connections.
        return self.readable() and self.clock() >= self.paused_until

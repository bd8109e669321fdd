"""waitress's connection and its listener, changed where measurement showed a cost.

Each change replaces a waitress method or attribute that has no public hook;
waitress is pinned to 3.0.x for them, ``tests`` check that each still
applies, and the docs' Decisions page says why each exists.
"""

import select
import time

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from postservice.http.errors import json_error_body
from postservice.http.headers import ERROR_HEADERS

# How long the main loop pauses on finding a channel's output locked by the
# worker writing it (see ``Channel``): long enough for that worker to take
# the GIL back, short beside a request.
LOCKED_OUTPUT_PAUSE = 0.0002
# Connections a listener accepts in one turn of the main loop at most (see
# ``accept_pending``); a turn is short either way, and the connection limit
# still applies.
ACCEPT_BATCH = 128


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
        body = json_error_body(error.reason)
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
    once, the loop finds the lock taken, and goes round again: under many
    connections it spent a large share of a core that way, holding the GIL
    while the worker that owned the lock waited for it. Pausing for a fraction of a
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

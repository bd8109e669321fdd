"""Draining: after SIGTERM, every request a client sent is answered.

A client on a kept-alive connection sends its next request as soon as it
has read an answer, and may do so at any moment: a server that closes such
a connection while the client is sending on it drops that request (the
client sees the connection closed or reset, and nginx answers a POST sent
on it with a 502, since it never sends one twice). So while the server
drains:

- every answer says ``Connection: close`` (``ClosingTask``), and the
  connection is closed once that answer is sent, as waitress closes it for
  a client that asked to close: a client told so sends nothing more on it.
  Only the answer to the last request the client has sent says so: the
  requests it pipelined behind one are answered first;
- a connection whose last answer was kept alive is closed only when it is
  idle, with nothing of a request unread, and has moved no bytes for
  ``IDLE_BEFORE_CLOSE`` seconds (``close_idle``): a client that was about
  to send its next request has sent it by then, and it is served with
  ``Connection: close``;
- the connections the kernel completed but the server had not accepted yet
  are accepted before the listener closes (``accept_backlog``): closing a
  listener resets them, requests and all.
"""

import select
import socket

from postservice.serve.tasks import KeepAliveTask

# How long a kept-alive connection must have been quiet, once the server
# drains, before it is closed without an answer telling the client: far
# longer than a client takes to send its next request after reading an
# answer. A connection left idle longer than this can still be sent a
# request just as it closes; only a client (or nginx) that closes its idle
# connections first is safe from that, as at any other time.
IDLE_BEFORE_CLOSE = 2.0
# Connections accepted at most from the backlog when the listener closes.
BACKLOG_LIMIT = 1024


class ClosingTask(KeepAliveTask):
    """waitress's task for the app, closing the connection after its answer
    when the server drains (``Channel.draining``) and the client has sent
    nothing more (``more_requests``)."""

    def build_response_header(self):
        if self.channel.draining and not more_requests(self.channel, self.request):
            # As if the client had asked to close: waitress then adds
            # ``Connection: close`` (also to an HTTP/1.0 keep-alive request,
            # where it would have said Keep-Alive) and closes the
            # connection once the answer is sent. The app has read the
            # request's headers already; a streamed answer whose headers
            # went out before the drain began is told nothing, and the
            # client's next request on it gets this.
            self.request.headers["CONNECTION"] = "close"
        return super().build_response_header()


def more_requests(channel, request):
    """Whether the client sent more than ``request`` on ``channel``: further
    requests received (pipelined), one partly received, or bytes unread.

    waitress drops the requests received behind one whose answer closes the
    connection, and resets the connection when bytes are left unread. Each
    of these is answered instead, the last with ``Connection: close``; one
    that comes after this look is answered so as well, as the next request.
    """
    with channel.requests_lock:
        if channel.request is not None:
            return True
        if channel.requests and channel.requests[-1] is not request:
            return True
    return unread(channel.socket)


def idle(channel):
    """No request being received, run or answered on ``channel``, and no
    answer waiting to be sent."""
    return not (
        channel.request is not None
        or channel.requests
        or channel.total_outbufs_len
        or channel.close_when_flushed
        or channel.will_close
    )


def unread(sock):
    """Whether ``sock`` holds bytes the server has not read yet (the start
    of a request); False when the client has closed its end."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False
    except OSError:
        return False  # reset or gone: nothing to answer


def close_idle(channels, quiet, now):
    """Close each of ``channels`` that is ``idle``, quiet for ``quiet``
    seconds, and has nothing unread; returns how many were closed.

    Run by the main loop between its turns, so nothing of the channel's is
    read meanwhile; a worker thread has nothing of an idle channel's. Bytes
    that arrive between the look at the socket and its close are the
    client's race with an idle timeout, not one the drain makes: the
    connection had been quiet for ``quiet`` seconds.
    """
    closed = 0
    for channel in channels:
        if not idle(channel) or now - channel.last_activity < quiet:
            continue
        if unread(channel.socket):
            continue  # read on the loop's next turn, answered, then closed
        channel.handle_close()
        closed += 1
    return closed


def accept_backlog(listener, accept_one, limit=BACKLOG_LIMIT):
    """Accept the connections waiting in ``listener``'s backlog with
    ``accept_one`` (waitress's ``handle_accept``), past the connection
    limit if need be: they are served, with ``Connection: close``, where
    closing the listener would reset them with their requests."""
    waiting = select.poll()
    waiting.register(listener.socket, select.POLLIN)
    for _ in range(limit):
        if not waiting.poll(0):
            return
        accept_one()

"""A connection pool that finds dead MySQL connections without a round trip.

``pool_pre_ping`` sends a ping and waits for the answer on every checkout:
a network round trip, and a wait that hands the GIL to another thread,
before each request's first statement. A connection that died while it
sat idle in the pool (a restarted or killed server, ``wait_timeout``) has
already been told so: the server's goodbye (an error packet, or the end of
the stream) is waiting on its socket. A healthy idle connection has nothing
to read, because the protocol only ever answers. So one non-blocking
``poll`` of the socket on checkout tells the two apart, and costs a system
call. A dead connection is replaced before the request uses it, as with a
ping; a connection that dies while in use fails that statement, SQLAlchemy
then replaces every connection of its pool older than the failure
(``engines.discard_pooled_connections`` those of the other pool), and the
request is tried again where it can tell what happened (a read, and the
writes of ``db.transactions``), otherwise answered 503.

What a ping would catch and this does not: a server whose host vanished
without closing its connections. A ping would then wait for TCP to give up
as the first statement does, so both fail the same request.
"""

import select

from sqlalchemy import event, exc
from sqlalchemy.pool import QueuePool

_DEAD = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


class SocketCheckedPool(QueuePool):
    """A ``QueuePool`` whose connections are checked on checkout (see above)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A pool recreated by ``engine.dispose()`` inherits its listeners.
        if not event.contains(self, "checkout", _refuse_dead):
            event.listen(self, "checkout", _refuse_dead)


def _refuse_dead(dbapi_connection, connection_record, connection_proxy):
    """Raise ``DisconnectionError`` when the server has closed or written to it.

    The pool then opens a new connection in its place and tries again.
    """
    sock = getattr(dbapi_connection, "_sock", None)
    if sock is None:  # PyMySQL closed it after an error
        raise exc.DisconnectionError("connection closed")
    poller = select.poll()
    poller.register(sock, _DEAD)
    if poller.poll(0):
        raise exc.DisconnectionError("the server closed the connection")

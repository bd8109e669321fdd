"""A TCP relay to a real server that can cut a connection at one statement.

Armed with ``cut(marker, after=...)``, the next connection whose client
sends a chunk containing ``marker`` is cut: with ``after=True`` the chunk
reaches the server and the relay waits for the server's answer, then drops
it and closes both ends (the statement ran, and committed if it commits by
itself, but the client never hears so); with ``after=False`` the chunk is
dropped and both ends closed (the statement never ran). Every other byte,
and every later connection, passes through untouched.
"""

import select
import socket
import threading

from .servers import spare_port

CHUNK = 65536


class CuttingProxy:
    def __init__(self, host, port):
        self.target = (host, port)
        self.port = spare_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.lock = threading.Lock()
        self.armed = None  # (marker, after) until a connection is cut
        self.cuts = 0
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, marker, *, after):
        with self.lock:
            self.armed = (marker, after)

    def close(self):
        self.closing = True
        self.listener.close()

    def _accept(self):
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(
                target=self._relay, args=(client, server), daemon=True
            ).start()

    def _take(self, chunk):
        """The armed cut, disarmed, if ``chunk`` holds its marker."""
        with self.lock:
            if self.armed and self.armed[0] in chunk:
                armed, self.armed = self.armed, None
                self.cuts += 1
                return armed
        return None

    def _relay(self, client, server):
        ends = {client: server, server: client}
        try:
            while True:
                readable, _, _ = select.select(list(ends), [], [])
                for source in readable:
                    chunk = source.recv(CHUNK)
                    if not chunk:
                        return
                    armed = self._take(chunk) if source is client else None
                    if armed is not None:
                        if armed[1]:  # after: the server runs it; no answer
                            server.sendall(chunk)
                            server.recv(CHUNK)
                        return
                    ends[source].sendall(chunk)
        except OSError:
            return
        finally:
            for end in ends:
                end.close()

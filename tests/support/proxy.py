"""A TCP proxy that can go silent: a link whose packets are swallowed.

Forwards every byte both ways until ``silence()``; from then on it keeps
accepting connections and reading what arrives on them, and forwards
nothing: the client's writes succeed and no answer ever comes, as when a
link or a firewall drops packets instead of refusing them. ``resume()``
forwards again (on connections opened after it; the silenced ones stay
silent, as a client would have given up on them).
"""

import contextlib
import socket
import threading

CHUNK = 65536


class SilenceableProxy:
    def __init__(self, upstream_host, upstream_port):
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.silent = threading.Event()
        self.closed = threading.Event()
        self.sockets = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, scheme="redis", path="/0"):
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def silence(self):
        self.silent.set()

    def resume(self):
        self.silent.clear()

    def close(self):
        self.closed.set()
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _keep(self, *socks):
        with self.lock:
            self.sockets.extend(socks)

    def _accept(self):
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._keep(client)
            if self.silent.is_set():
                threading.Thread(
                    target=self._swallow, args=(client,), daemon=True
                ).start()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            self._keep(server)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink), daemon=True
                ).start()

    def _pump(self, source, sink):
        """Copy ``source`` to ``sink``; once silent, read and drop."""
        while True:
            try:
                data = source.recv(CHUNK)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            if self.silent.is_set():
                continue
            try:
                sink.sendall(data)
            except OSError:
                return

    def _swallow(self, sock):
        while True:
            try:
                if not sock.recv(CHUNK):
                    return
            except OSError:
                return

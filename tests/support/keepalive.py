"""Writers on kept-alive connections, each sending its next request as soon
as it has read the last answer: the clients a stopping server must not drop.

Each writer adds posts on one ``http.client`` connection, which it keeps
for as long as the answers allow: an answer with ``Connection: close``
makes it close the connection and open a new one for the next request.
A request is *lost* when it was sent, or began to be, and no answer came
back (the connection was closed or reset under it); a connection refused
sends nothing, and ends the writer (the server no longer listens).

``signalled`` is set by the test once it has sent the server SIGTERM: the
answers to requests sent after that are checked for ``Connection: close``.
"""

import http.client
import json
import threading
from collections import Counter
from dataclasses import dataclass

ADD_POST = "/api/v1/posts/add-post"
# Far above any expected answer: a request that takes this long is a hang.
HANG = 15


@dataclass(frozen=True)
class Lost:
    """A request sent and never answered."""

    writer: str
    number: int
    method: str
    path: str
    error: str


class KeepAliveWriter(threading.Thread):
    def __init__(self, name, host, port, headers, load):
        super().__init__(name=name, daemon=True)
        self.host, self.port = host, port
        self.headers = {**headers, "Content-Type": "application/json"}
        self.load = load
        self.connection = None

    def run(self):
        number = 0
        while not self.load.stopping.is_set():
            number += 1
            if self.connection is None:
                self.connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=HANG
                )
                try:
                    self.connection.connect()
                except ConnectionRefusedError:
                    self.load.refused()
                    return  # nothing sent: the server no longer listens
            after_signal = self.load.signalled.is_set()
            body = json.dumps({"text": f"{self.name} post {number}"}).encode()
            try:
                self.connection.request("POST", ADD_POST, body, self.headers)
                self.load.sent_one()
                answer = self.connection.getresponse()
                answer.read()
            except (OSError, http.client.HTTPException) as e:
                # Sent (or begun) on a connection the server closed.
                self.load.lost_one(Lost(self.name, number, "POST", ADD_POST, repr(e)))
                self.connection.close()
                self.connection = None
                continue
            closing = (answer.getheader("Connection") or "").lower() == "close"
            self.load.answered(answer.status, after_signal, closing)
            if answer.will_close:
                self.connection.close()
                self.connection = None
        if self.connection is not None:
            self.connection.close()


class KeepAliveLoad:
    """``headers``' users each writing through a ``KeepAliveWriter`` to
    ``host:port`` until the server stops listening or ``stop()``."""

    def __init__(self, host, port, headers):
        self.lock = threading.Lock()
        self.signalled = threading.Event()
        self.stopping = threading.Event()
        self.progress = threading.Condition(self.lock)
        self.sent = 0
        self.answers = 0
        self.statuses = Counter()
        self.lost = []
        self.refusals = 0
        self.after_signal = 0  # answers to requests sent after the signal
        self.closing_after_signal = 0  # of them, with Connection: close
        self.writers = [
            KeepAliveWriter(f"writer{n}", host, port, h, self)
            for n, h in enumerate(headers)
        ]

    def __enter__(self):
        for writer in self.writers:
            writer.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def sent_one(self):
        with self.lock:
            self.sent += 1

    def answered(self, status, after_signal, closing):
        with self.lock:
            self.answers += 1
            self.statuses[status] += 1
            if after_signal:
                self.after_signal += 1
                self.closing_after_signal += closing
            self.progress.notify_all()

    def lost_one(self, lost):
        with self.lock:
            self.lost.append(lost)

    def refused(self):
        with self.lock:
            self.refusals += 1

    def wait_for_answers(self, count, timeout=60):
        """Until ``count`` answers came, all told."""
        with self.lock:
            done = self.progress.wait_for(lambda: self.answers >= count, timeout)
        assert done, f"only {self.answers} answers in {timeout} s"

    def join(self, timeout=60):
        """Until every writer has ended (the server refused it)."""
        for writer in self.writers:
            writer.join(timeout)
        alive = [writer.name for writer in self.writers if writer.is_alive()]
        assert not alive, f"writers still running: {alive}"

    def stop(self):
        self.stopping.set()
        self.join()

    def summary(self, proxied=False):
        """The counts; ``proxied``: through a proxy, whose answers say
        nothing of the server's connections."""
        statuses = dict(sorted(self.statuses.items()))
        counts = (
            f"{len(self.writers)} keep-alive writers: {self.sent} requests sent, "
            f"{self.answers} answered (statuses {statuses}), "
            f"{len(self.lost)} lost; {self.after_signal} sent after SIGTERM"
        )
        if proxied:
            return counts
        return (
            f"{counts}, {self.closing_after_signal} of their answers with "
            f"Connection: close; {self.refusals} connections refused"
        )

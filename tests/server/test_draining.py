"""SIGTERM drains the server: nothing a client sent goes unanswered.

A response still being sent is sent to its end. A listing of 10 MiB is
streamed, not cached. The server's worker hands it to waitress's output
buffers far faster than a slow client reads it; once the worker is done,
the connection has no request left, only output. A server that counted
only requests as in flight would close that connection on SIGTERM and cut
the body short.

Clients on kept-alive connections are told to close (``Connection: close``
on every answer of the drain), and no connection is closed under a request
its client sent: sent right after the last answer, pipelined, or waiting
in the listener's backlog (``postservice/serve/drain.py``).
"""

import http.client
import json
import signal
import socket
import time

import pytest
import requests
from flask_jwt_extended import decode_token
from sqlalchemy import func, insert, select

from postservice.extensions import db
from postservice.models import Post
from postservice.serve import GracefulServer

from ..support.keepalive import ADD_POST, KeepAliveLoad
from ..support.load import register_users, report
from ..support.servers import AppInstance, serving

GET_POSTS = "/api/v1/posts/get-posts"
# 10 MiB: over the kernel's buffers between the two ends (a send buffer
# grows to 4 MiB at most by default, net.ipv4.tcp_wmem), so most of it is
# still in waitress's output buffers when the signal comes.
POSTS = 10
POST_BYTES = 1024 * 1024 - 16
# Read before the signal: the response has begun and the kernel's buffers
# on both sides are full.
READ_BEFORE = 1024 * 1024
# The client's receive buffer: small, so the rest waits in the server.
RECEIVE_BUFFER = 4096
# How long the client stops reading after the signal: longer than the
# worker takes to hand over the whole listing and the loop to notice the
# signal, so a server that does not wait for output has closed by then.
PAUSE = 2.0


def store_big_listing(make_app, headers):
    app = make_app()
    with app.app_context():
        uid = int(decode_token(headers["Authorization"].split()[1])["sub"])
        texts = [f"{n} " + chr(ord("a") + n) * POST_BYTES for n in range(POSTS)]
        for text in texts:  # one row a statement: each is 1 MiB
            db.session.execute(insert(Post), [{"user_id": uid, "text": text}])
        db.session.commit()
    return texts


def read_head(conn):
    """The status line and headers, and whatever of the body came with them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(RECEIVE_BUFFER)
        assert chunk, f"the connection closed before the headers: {data[:300]!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n"), rest


def dechunked(data):
    """The body of a chunked response; fails when its last chunk is missing."""
    body = bytearray()
    position = 0
    while True:
        end = data.find(b"\r\n", position)
        assert end != -1, f"the response ended after {len(body)} bytes of body"
        size = int(data[position:end].split(b";")[0], 16)
        start = end + 2
        if size == 0:
            return bytes(body)
        received = len(data)
        assert start + size + 2 <= received, (
            f"the response ended after {len(body) + received - start} bytes of "
            "body, in the middle of a chunk"
        )
        body += data[start : start + size]
        position = start + size + 2


def test_sigterm_waits_for_a_response_still_being_sent(instance, make_app):
    [headers] = register_users(instance.base, 1, "draining")
    texts = store_big_listing(make_app, headers)
    normal = requests.get(instance.base + GET_POSTS, headers=headers, timeout=60)
    assert normal.status_code == 200
    expected = normal.content
    assert [post["text"] for post in json.loads(expected)] == texts

    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    conn.settimeout(30)
    with conn:
        conn.connect(("127.0.0.1", instance.port))
        conn.sendall(
            (
                f"GET {GET_POSTS} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{instance.port}\r\n"
                f"Authorization: {headers['Authorization']}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
        )
        lines, data = read_head(conn)
        assert lines[0] == "HTTP/1.1 200 OK", lines
        assert "transfer-encoding: chunked" in (line.lower() for line in lines)
        while len(data) < READ_BEFORE:  # slowly
            data += conn.recv(RECEIVE_BUFFER)
            time.sleep(0.0005)

        instance.process.send_signal(signal.SIGTERM)
        time.sleep(PAUSE)
        try:
            while chunk := conn.recv(1024 * 1024):
                data += chunk
        except ConnectionResetError:
            pass  # cut short: the body's check below says how short

    body = dechunked(data)
    got, wanted = len(body), len(expected)
    assert got == wanted, f"a body of {got} bytes, a normal GET's has {wanted}"
    same = body == expected
    assert same, "the body differs from a normal GET's"
    assert instance.process.wait(timeout=30) == 0
    assert "stopping: no new connections" in instance.log_tail()


# --- keep-alive clients: every request sent is answered ----------------------

# Writers, each on its own kept-alive connection: more than the server's
# threads, so requests wait in its queue when the signal comes.
WRITERS = 10
# Answers before the signal, all writers together: every connection is in
# use, most with a request in flight and the rest about to send one.
ANSWERS_BEFORE = 200
# Short, so that a server that goes on serving kept-alive connections until
# it gives up shows it within seconds.
SHUTDOWN_TIMEOUT = 5


@pytest.fixture
def draining_instance(tmp_path, database_url, redis_url):
    server = AppInstance(
        tmp_path,
        database_url,
        redis_url,
        threads=4,
        SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT),
    )
    server.start()
    yield server
    server.stop()


def stored_posts(make_app):
    app = make_app()
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Post))


def test_sigterm_answers_every_request_of_kept_alive_clients(
    draining_instance, make_app, capsys
):
    """Writers that send each request as soon as the last answer is read.

    When the signal comes, each connection has a request in flight or is
    about to get one: the server must answer every request it was sent,
    tell each client with ``Connection: close`` to stop sending, and close
    a connection only when it has nothing of a request unread.
    """
    server = draining_instance
    headers = register_users(server.base, WRITERS, "keepalive")
    with KeepAliveLoad("127.0.0.1", server.port, headers) as load:
        load.wait_for_answers(ANSWERS_BEFORE)
        server.process.send_signal(signal.SIGTERM)
        load.signalled.set()
        signalled = time.monotonic()
        status = server.process.wait(timeout=SHUTDOWN_TIMEOUT + 30)
        drained = time.monotonic() - signalled
        load.join()
    report(capsys, f"{load.summary()}; exited {drained:.2f} s after SIGTERM")
    assert load.lost == [], f"requests sent and never answered; {load.summary()}"
    assert load.sent == load.answers, load.summary()
    assert load.statuses == {200: load.answers}
    assert load.closing_after_signal == load.after_signal, (
        f"answers after SIGTERM without Connection: close; {load.summary()}"
    )
    assert stored_posts(make_app) == load.answers
    assert status == 0
    log = server.log_tail()
    assert "stopping with" not in log, log  # done before the timeout


def refusing(port, timeout=30):
    """Wait until ``port`` refuses connections: the server drains."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.01)
    return False


def test_a_request_sent_on_a_kept_alive_connection_as_the_drain_begins_is_answered(
    draining_instance, make_app
):
    """The last answer before SIGTERM kept the connection alive, so the
    client may send its next request on it at any moment: here once the
    server has stopped accepting. It is answered, with ``Connection:
    close``, where closing the idle connection at once would drop it."""
    server = draining_instance
    [headers] = register_users(server.base, 1, "justafter")
    headers = {**headers, "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", ADD_POST, b'{"text": "before"}', headers)
        before = conn.getresponse()
        before.read()
        assert before.status == 200
        assert not before.will_close
        server.process.send_signal(signal.SIGTERM)
        assert refusing(server.port)
        conn.request("POST", ADD_POST, b'{"text": "after"}', headers)
        after = conn.getresponse()
        body = after.read()
    finally:
        conn.close()
    assert after.status == 200, body
    assert after.getheader("Connection") == "close"
    assert server.process.wait(timeout=30) == 0
    assert stored_posts(make_app) == 2


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.mark.parametrize(
    ("version", "connection"),
    [("1.1", None), ("1.1", "keep-alive"), ("1.0", "keep-alive")],
)
def test_while_draining_each_answer_closes_its_connection(version, connection):
    """Whatever the client asked, ``Connection: close`` and the connection
    closed after the answer: no Keep-Alive for an HTTP/1.0 client either."""
    server = GracefulServer(hello, {"host": "127.0.0.1", "port": 0, "threads": 1})
    with serving(server):
        server.channel_class.draining = True  # as SIGTERM sets it
        asked = f"Connection: {connection}\r\n" if connection else ""
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            conn.sendall(
                f"GET / HTTP/{version}\r\nHost: x\r\n{asked}\r\n".encode("latin-1")
            )
            reply = b""
            while chunk := conn.recv(4096):  # until the server closes
                reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").lower().split("\r\n")
    assert lines[0] == f"http/{version} 200 ok"
    assert [line for line in lines if line.startswith("connection:")] == [
        "connection: close"
    ]
    assert body == b"hello"


def test_while_draining_pipelined_requests_are_all_answered_the_last_closing():
    """A client that sent several requests at once gets every answer, and
    only the last says ``Connection: close`` (waitress drops the requests
    received behind an answer that closes)."""
    server = GracefulServer(hello, {"host": "127.0.0.1", "port": 0, "threads": 1})
    with serving(server):
        server.channel_class.draining = True  # as SIGTERM sets it
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
            reply = b""
            while chunk := conn.recv(4096):  # until the server closes
                reply += chunk
    answers = reply.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(answers) == 3, reply
    closing = [b"Connection: close\r\n" in answer for answer in answers]
    assert closing == [False, False, True]
    assert all(answer.endswith(b"\r\n\r\nhello") for answer in answers)


def test_connections_still_waiting_to_be_accepted_are_served_when_the_drain_begins():
    """Connections the kernel completed, their requests sent, that the
    server had not accepted yet (here held back by the connection limit):
    closing the listener would reset them. Each is answered, and closed."""
    server = GracefulServer(
        hello, {"host": "127.0.0.1", "port": 0, "threads": 1, "connection_limit": 3}
    )
    clients = [
        socket.create_connection(("127.0.0.1", server.port), timeout=5)
        for _ in range(5)
    ]
    replies = []
    try:
        for client in clients:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        server.request_stop()  # before the loop accepts the first of them
        with serving(server):
            for client in clients:
                reply = b""
                try:
                    while chunk := client.recv(4096):
                        reply += chunk
                except ConnectionResetError:
                    reply += b"(reset)"
                replies.append(reply)
    finally:
        for client in clients:
            client.close()
    answered = [reply.endswith(b"\r\n\r\nhello") for reply in replies]
    assert answered == [True] * len(clients), replies
    assert all(b"Connection: close\r\n" in reply for reply in replies)

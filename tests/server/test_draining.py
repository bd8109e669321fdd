"""SIGTERM while a response is still being sent: it is sent to its end.

A listing of 10 MiB is streamed, not cached. The server's worker hands it
to waitress's output buffers far faster than a slow client reads it; once
the worker is done, the connection has no request left, only output. A
server that counted only requests as in flight would close that connection
on SIGTERM and cut the body short.
"""

import json
import signal
import socket
import time

import requests
from flask_jwt_extended import decode_token
from sqlalchemy import insert

from postservice.extensions import db
from postservice.models import Post

from ..support.load import register_users

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

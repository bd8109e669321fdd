"""WAITRESS_CHANNEL_TIMEOUT holds for every connection, output pending or not.

A client that pipelines requests and never reads their answers leaves them
in the kernel's buffers and then in waitress's output buffers; waitress
then stops reading that connection and closes it only from a write that
never comes. Enough of them filled the connection limit and every new
client waited forever, and a listing over waitress's high watermark also
held a worker thread and its temporary files. The server closes a
connection that moved no byte for the channel timeout, and frees its
buffers at once; a client that reads, however slowly, keeps it (here, and
test_draining.py and test_streaming.py with the default timeout).
"""

import os
import socket
import time

import pytest
import requests
from flask_jwt_extended import decode_token
from sqlalchemy import insert
from waitress import wasyncore

from postservice.extensions import db
from postservice.models import Post
from postservice.serve import GracefulServer
from postservice.serve.channel import close_stalled

from ..support.load import register_users
from ..support.servers import AppInstance

CHANNEL_TIMEOUT = 3
CONNECTION_LIMIT = 10
# What fills it: waitress counts its listener and its trigger among the
# connections.
FILLING = CONNECTION_LIMIT - 2
# Far beyond the channel timeout: a server that closes stalled connections
# has long done so; one that does not never will.
WITHIN = 45
OPENAPI = b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
# The smallest receive buffer the kernel grants: the answers pile up in the
# server.
RECEIVE_BUFFER = 1024


GET_POSTS = "/api/v1/posts/get-posts"
# Over waitress's high watermark (16 MiB): the worker writing such a listing
# to a client that does not read waits for it, holding its thread.
BIG_POSTS = 18
POST_BYTES = 1024 * 1024 - 16


def most_a_send_buffer_holds():
    """The kernel's largest send buffer, which it grows a socket's to."""
    with open("/proc/sys/net/ipv4/tcp_wmem", encoding="ascii") as fh:
        return int(fh.read().split()[2])


@pytest.fixture
def instance(tmp_path, database_url, redis_url):
    def start(threads=4):
        server = AppInstance(
            tmp_path,
            database_url,
            redis_url,
            threads=threads,
            WAITRESS_CHANNEL_TIMEOUT=str(CHANNEL_TIMEOUT),
            WAITRESS_CONNECTION_LIMIT=str(CONNECTION_LIMIT),
        )
        started.append(server)
        server.start()
        return server

    started = []
    yield start
    for server in started:
        server.stop()


def non_reader(port, request):
    """A connection that sends ``request`` and never reads."""
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    conn.settimeout(30)
    conn.connect(("127.0.0.1", port))
    conn.sendall(request)
    return conn


def served_within(url, seconds):
    """Tries ``url`` until answered; returns the status, or the last error."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            return requests.get(url, timeout=3).status_code, None
        except requests.RequestException as e:
            last = e
    return None, last


def read_until_closed(conn):
    """What is left to read on ``conn`` until the server's close."""
    conn.settimeout(WITHIN)
    data = b""
    try:
        while chunk := conn.recv(1024 * 1024):
            data += chunk
    except ConnectionResetError:
        pass  # closed with requests unread: a reset
    except TimeoutError:
        pytest.fail(f"still open after {WITHIN} s, {len(data)} bytes read")
    return data


def test_clients_that_pipeline_and_never_read_are_closed_after_the_timeout(instance):
    server = instance()
    document = requests.get(server.base + "/api/v1/openapi.json", timeout=10)
    assert document.status_code == 200
    # Answers of twice what the kernel holds: most of them stay in
    # waitress's output buffers, and the socket is never writable again.
    pipelined = 2 * most_a_send_buffer_holds() // len(document.content) + 1
    stalled = [non_reader(server.port, OPENAPI * pipelined) for _ in range(FILLING)]
    started = time.monotonic()
    try:
        status, error = served_within(server.base + "/healthz", WITHIN)
        print(f"a new client served {time.monotonic() - started:.1f} s after")
        assert status == 200, (
            f"no new client served in {WITHIN} s while {FILLING} "
            f"connections that do not read held the limit: {error!r}"
        )
        # Read only once the server has let go of each: reading one still
        # open would make it a client that reads.
        wait_for(
            lambda: not [c for c in stalled if held(server, c)],
            WITHIN,
            "the server still holds connections that do not read",
        )
        for conn in stalled:
            answers = read_until_closed(conn).count(b"HTTP/1.1 200 OK")
            # Closed by the server with answers unsent: not a connection
            # that had simply finished.
            assert answers < pipelined, f"all {answers} answers sent"
    finally:
        for conn in stalled:
            conn.close()
    assert server.process.poll() is None


def held(server, conn):
    """Whether ``server``'s process still holds its end of ``conn``: the
    kernel may go on sending what a closed socket had queued, but such a
    socket belongs to no process (its inode in /proc/net/tcp is 0)."""
    ends = (server.port, conn.getsockname()[1])
    with open("/proc/net/tcp", encoding="ascii") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
            if (local, remote) == ends and fields[9] != "0":
                return True
    return False


def deleted_files(pid):
    """The process's open files that have no name any more: waitress's
    output buffers over 1 MiB are such temporary files."""
    found = set()
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        try:
            target = os.readlink(f"{fds}/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        if target.endswith(" (deleted)"):
            found.add((fd, target))
    return found


def wait_for(check, seconds, message):
    deadline = time.monotonic() + seconds
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"{message} after {seconds} s")
        time.sleep(0.1)
    return result


def store_big_listing(make_app, headers, posts=BIG_POSTS):
    app = make_app()
    with app.app_context():
        uid = int(decode_token(headers["Authorization"].split()[1])["sub"])
        for n in range(posts):  # one row a statement: each is 1 MiB
            text = f"{n} " + chr(ord("a") + n) * POST_BYTES
            db.session.execute(insert(Post), [{"user_id": uid, "text": text}])
        db.session.commit()


def test_a_big_listing_never_read_frees_its_thread_and_files_after_the_timeout(
    instance, make_app
):
    threads = 2
    server = instance(threads=threads)
    [headers] = register_users(server.base, 1, "stalled")
    store_big_listing(make_app, headers)
    pid = server.process.pid
    before = deleted_files(pid)
    request = (
        f"GET {GET_POSTS} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {headers['Authorization']}\r\n\r\n"
    ).encode()
    # One per worker thread: each holds its thread, waiting to write more.
    stalled = [non_reader(server.port, request) for _ in range(threads)]
    try:
        held = wait_for(
            lambda: len(deleted_files(pid) - before) >= threads,
            WITHIN,
            "the listings never reached waitress's temporary files",
        )
        assert held
        status, error = served_within(server.base + "/healthz", WITHIN)
        assert status == 200, (
            f"no request served in {WITHIN} s while {threads} listings that "
            f"are not read held the {threads} threads: {error!r}"
        )
        for conn in stalled:
            read_until_closed(conn)
        wait_for(
            lambda: not (deleted_files(pid) - before),
            WITHIN,
            f"temporary files still open: {sorted(deleted_files(pid) - before)}",
        )
    finally:
        for conn in stalled:
            conn.close()
    assert server.process.poll() is None


# A reader slower than the kernel's buffers: it drains them so slowly that
# waitress has no room to send into for longer than the channel timeout,
# while the client reads all along.
SLOW_READ = 2048
SLOW_PAUSE = 0.1
SLOW_FOR = 4 * CHANNEL_TIMEOUT
# Far more than the kernel's buffers hold for a client with a small one.
SLOW_POSTS = 6


def test_a_client_that_reads_slowly_is_not_cut(instance, make_app):
    server = instance()
    [headers] = register_users(server.base, 1, "slow")
    store_big_listing(make_app, headers, SLOW_POSTS)
    expected = requests.get(server.base + GET_POSTS, headers=headers, timeout=60)
    assert expected.status_code == 200
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    conn.settimeout(30)
    with conn:
        conn.connect(("127.0.0.1", server.port))
        conn.sendall(
            (
                f"GET {GET_POSTS} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {headers['Authorization']}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
        )
        data = b""
        slow_until = time.monotonic() + SLOW_FOR
        while time.monotonic() < slow_until:
            chunk = conn.recv(SLOW_READ)
            assert chunk, f"closed after {len(data)} bytes read slowly"
            data += chunk
            time.sleep(SLOW_PAUSE)
        slowly = len(data)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
        try:
            while chunk := conn.recv(1024 * 1024):
                data += chunk
        except ConnectionResetError:
            pass  # cut short: the length below says how short
    body = dechunked(data.partition(b"\r\n\r\n")[2])
    assert body is not None, (
        f"the answer ended after {len(data)} bytes, {slowly} of them read slowly"
    )
    assert body == expected.content
    print(f"read {slowly} bytes slowly in {SLOW_FOR} s, {len(data)} in all")


def dechunked(data):
    """A chunked body's content; None when its last chunk is missing."""
    body = bytearray()
    position = 0
    while (end := data.find(b"\r\n", position)) != -1:
        size = int(data[position:end], 16)
        if size == 0:
            return bytes(body)
        body += data[end + 2 : end + 2 + size]
        position = end + 2 + size + 2
    return None


def test_waitress_own_timeout_no_longer_closes_connections():
    # waitress's maintenance counts only the bytes it sent itself, and
    # would close a client reading slowly: close_stalled replaces it.
    server = GracefulServer(hello, {"host": "127.0.0.1", "port": 0, "threads": 1})
    client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        deadline = time.monotonic() + 10
        while not (channels := server._channels()):
            assert time.monotonic() < deadline, "the connection was never accepted"
            wasyncore.loop(timeout=0.1, map=server.map, count=1)
        [channel] = channels
        channel.last_activity = 0  # idle since 1970
        [listener] = server._listeners()
        listener.maintenance(time.time())
        assert not channel.will_close
        # The server's own sweep closes it: no bytes in the kernel to move.
        assert close_stalled(channels, server.channel_timeout, time.time()) == 1
        assert not server._channels()
    finally:
        client.close()
        wasyncore.close_all(server.map)
        server.server.task_dispatcher.shutdown(timeout=1)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]

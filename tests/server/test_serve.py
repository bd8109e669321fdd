"""The serve module's server: body limit, graceful stop, accepting, waitress's
own answers in JSON, the trusted proxy and the request queue.

Its settings from the environment: tests/unit/test_server_settings.py.
"""

import errno
import gc
import json
import logging
import signal
import socket
import threading
import time
import weakref
from contextlib import ExitStack

import pytest
import requests
from sqlalchemy import select
from waitress import wasyncore
from waitress.adjustments import Adjustments

from config import MAX_BODY_BYTES
from postservice import serve
from postservice.extensions import db
from postservice.http import proxy
from postservice.models import Post
from postservice.ops import metrics
from postservice.serve import Channel, GracefulServer
from postservice.serve.channel import LOCKED_OUTPUT_PAUSE
from postservice.serve.server import freeze_startup_heap

from ..support.load import register_users
from ..support.processes import run_in_repo, server_env
from ..support.servers import SERVE, serving


def test_server_refuses_to_start_with_too_many_threads(database_url):
    env = server_env(database_url, None, WAITRESS_THREADS="40", PORT="1")
    result = run_in_repo([*SERVE], env)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("postservice: configuration error: WAITRESS_THREADS is 40")
    )


@pytest.mark.parametrize("host", ["nosuchhost.invalid", "192.0.2.1", "taken"])
def test_a_port_the_server_cannot_listen_on_is_one_line(database_url, host):
    """Not a traceback: a port in use, an address not this machine's, a
    host that resolves to nothing."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if host == "taken":
            host = "127.0.0.1"
        env = server_env(database_url, None, HOST=host, PORT=str(port))
        result = run_in_repo([*SERVE], env)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"postservice: configuration error: HOST {host!r} and PORT {port} "
        "cannot be used: "
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_body_just_over_the_limit_gets_the_json_413(instance):
    [headers] = register_users(instance.base, 1, "big")
    body = b'{"text": "' + b"a" * MAX_BODY_BYTES + b'"}'
    response = requests.post(
        instance.base + "/api/v1/posts/add-post",
        data=body,
        headers={**headers, "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["detail"]


def connection_refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_finishes_the_request_in_flight_and_exits(instance, make_app):
    """SIGTERM while a large post is still being uploaded.

    The upload completes and is answered 200 and stored, new connections are
    refused meanwhile, and the process exits 0.
    """
    [headers] = register_users(instance.base, 1, "graceful")
    text = "\u00e9" * 400_000  # 800 kB of UTF-8, sent as 2.4 MB of \\u escapes
    body = json.dumps({"text": text}).encode()
    head = (
        "POST /api/v1/posts/add-post HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{instance.port}\r\n"
        f"Authorization: {headers['Authorization']}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", instance.port), timeout=30) as conn:
        conn.sendall(head + body[: len(body) // 2])
        time.sleep(0.3)  # the server has started reading it
        instance.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert instance.process.poll() is None, "exited with a request in flight"
        assert connection_refused(instance.port)
        conn.sendall(body[len(body) // 2 :])
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", reply[:500]
    answer = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert answer["detail"] == "Post created"
    assert instance.process.wait(timeout=30) == 0

    app = make_app()
    with app.app_context():
        stored = db.session.scalar(select(Post.text).where(Post.id == answer["PostID"]))
    assert stored == text
    assert "stopping: no new connections" in instance.log_tail()


class Node:
    """An object that can hold itself: a cycle only the collector frees."""


def test_freezing_the_startup_heap_freezes_no_garbage():
    # With automatic collections off, only the freeze's own collection can
    # free the cycle before it would be frozen, and never collected.
    gc.disable()
    try:
        garbage = Node()
        garbage.me = garbage
        collected = weakref.ref(garbage)
        live = Node()
        live.me = live
        del garbage
        frozen_before = gc.get_freeze_count()
        freeze_startup_heap()
        assert collected() is None
        assert gc.get_freeze_count() > frozen_before
        assert live.me is live
    finally:
        gc.unfreeze()
        gc.enable()


def test_sigterm_on_an_idle_server_exits_at_once(instance):
    started = time.monotonic()
    assert instance.terminate(timeout=30) == 0
    assert time.monotonic() - started < 5


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture
def idle_server():
    """A GracefulServer whose main loop runs only when the test turns it."""
    servers = []

    def make(**settings):
        server = GracefulServer(
            hello, {"host": "127.0.0.1", "port": 0, "threads": 1, **settings}
        )
        servers.append(server)
        return server

    yield make
    for server in servers:
        wasyncore.close_all(server.map)
        server.server.task_dispatcher.shutdown(timeout=1)


def waiting_clients(server, count):
    """``count`` connections the kernel has completed and holds for accept."""
    clients = [
        socket.create_connection(("127.0.0.1", server.port)) for _ in range(count)
    ]
    time.sleep(0.2)  # the handshakes end on loopback within microseconds
    return clients


def read_response(client):
    client.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"hello"):
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def channels(server):
    return [obj for obj in server.map.values() if isinstance(obj, Channel)]


def one_turn(server):
    wasyncore.loop(timeout=0.1, map=server.map, count=1)


def test_one_turn_of_the_loop_accepts_every_waiting_connection(idle_server):
    server = idle_server()
    clients = waiting_clients(server, 20)
    try:
        one_turn(server)
        assert len(channels(server)) == 20  # waitress alone: 1 a turn
        with serving(server):
            for client in clients:  # each is served as any connection is
                client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            for client in clients:
                assert read_response(client).endswith(b"hello")
    finally:
        for client in clients:
            client.close()


def test_a_turn_accepts_no_more_than_the_batch(idle_server, monkeypatch):
    # A small batch: more waiting connections than a kernel's smallest
    # default backlog (128) could hold would make the test machine's.
    monkeypatch.setattr(serve.channel, "ACCEPT_BATCH", 4)
    server = idle_server()
    clients = waiting_clients(server, 10)
    try:
        one_turn(server)
        assert len(channels(server)) == 4
        one_turn(server)
        assert len(channels(server)) == 8
        one_turn(server)
        assert len(channels(server)) == 10
    finally:
        for client in clients:
            client.close()


def test_a_failing_accept_ends_the_turn(idle_server, monkeypatch):
    server = idle_server()
    [listener] = server._listeners()
    clients = waiting_clients(server, 5)
    attempts = []

    def out_of_descriptors():
        attempts.append(1)
        raise OSError(errno.EMFILE, "Too many open files")

    # waitress catches the error, logs it and accepts nothing; the
    # connections stay waiting, so the socket stays ready.
    monkeypatch.setattr(listener, "accept", out_of_descriptors)
    try:
        one_turn(server)
        assert attempts == [1]  # one failure, one log line, not a batch
        assert not channels(server)
        monkeypatch.undo()
        one_turn(server)
        assert len(channels(server)) == 5
    finally:
        for client in clients:
            client.close()


def test_running_out_of_descriptors_pauses_accepting_and_logs_once_a_minute(
    idle_server, caplog
):
    server = idle_server()
    [listener] = server._listeners()
    clients = waiting_clients(server, 3)
    now = [100.0]
    guard = serve.AcceptGuard(listener, clock=lambda: now[0])
    accept, attempts = guard.accept, []

    def out_of_descriptors():
        attempts.append(now[0])
        raise OSError(errno.EMFILE, "Too many open files")

    guard.accept = out_of_descriptors
    guard.install(listener)
    caplog.set_level(logging.WARNING, logger="postservice.serve")
    pause = serve.channel.ACCEPT_PAUSE
    try:
        one_turn(server)
        assert attempts == [100.0]
        assert not channels(server)
        # Paused: the waiting connections are left alone, the loop idles.
        assert not listener.readable()
        one_turn(server)
        assert attempts == [100.0]
        for _ in range(9):
            now[0] += pause
            assert listener.readable()
            one_turn(server)
        assert len(attempts) == 10
        logged = [r.getMessage() for r in caplog.records if "accept()" in r.message]
        assert logged == [
            f"accept() failed on port {server.port}: Too many open files; "
            "connections wait until descriptors are free (raise the open files "
            "limit, ulimit -n, or lower WAITRESS_CONNECTION_LIMIT) "
            "(1 time(s) since the last such line)"
        ]
        now[0] += serve.channel.ACCEPT_LOG_INTERVAL
        one_turn(server)
        logged = [r.getMessage() for r in caplog.records if "accept()" in r.message]
        assert len(logged) == 2
        assert logged[1].endswith("(10 time(s) since the last such line)")
        # Descriptors free again: every waiting connection is taken.
        guard.accept = accept
        now[0] += pause
        one_turn(server)
        assert len(channels(server)) == 3

        # Other errors of accept() are waitress's, as before.
        def bad_descriptor():
            raise OSError(errno.EBADF, "Bad file descriptor")

        guard.accept = bad_descriptor
        with pytest.raises(OSError, match="Bad file descriptor"):
            guard.guarded_accept()
    finally:
        for client in clients:
            client.close()


def test_accepting_stops_at_the_connection_limit(idle_server):
    # waitress counts its trigger and the listener among the connections.
    server = idle_server(connection_limit=5)
    clients = waiting_clients(server, 10)
    try:
        one_turn(server)
        one_turn(server)
        assert len(channels(server)) == 3
        assert len(server.map) == 5
    finally:
        for client in clients:
            client.close()


@pytest.fixture
def running_server():
    """A GracefulServer running ``app`` in a thread; stopped afterwards."""
    with ExitStack() as stack:

        def start(app=hello, **settings):
            server = GracefulServer(
                app, {"host": "127.0.0.1", "port": 0, "threads": 1, **settings}
            )
            stack.enter_context(serving(server))
            return server

        yield start


def test_every_connection_of_the_server_is_a_channel_that_pauses(running_server):
    server = running_server()
    response = requests.get(f"http://127.0.0.1:{server.port}/", timeout=5)
    assert response.text == "hello"
    assert channels(server)  # the keep-alive connection, still open


def raw_exchange(server, request):
    """The status, headers and body answered to ``request``, sent as bytes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
        client.sendall(request)
        data = b""
        while chunk := client.recv(65536):  # the server closes after an error
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status.split()[1]), headers, body


@pytest.mark.parametrize(
    ("request_bytes", "status", "detail"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", 400, "Bad Request"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n",
            400,
            "Bad Request",
        ),
        (b"NOT A REQUEST LINE\r\n\r\n", 400, "Bad Request"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n",
            431,
            "Request Header Fields Too Large",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000,
            413,
            "Request Entity Too Large",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "Not Implemented",
        ),
    ],
    ids=["bare LF", "bad length", "no request line", "headers", "body", "coding"],
)
def test_requests_refused_by_the_server_get_the_json_error_shape(
    running_server, request_bytes, status, detail
):
    server = running_server(max_request_header_size=4096, max_request_body_size=1000)
    got_status, headers, body = raw_exchange(server, request_bytes)
    assert got_status == status
    assert headers["Content-Type"] == "application/json"
    assert body == b'{"detail":"%s"}\n' % detail.encode()  # as the app's jsonify
    assert headers["Content-Length"] == str(len(body))
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert (
        headers["Content-Security-Policy"]
        == "default-src 'none'; frame-ancestors 'none'"
    )
    assert headers["Connection"] == "close"


def what_the_app_sees(environ, start_response):
    seen = {
        "client": environ["REMOTE_ADDR"],
        "scheme": environ["wsgi.url_scheme"],
        "forwarded_for": environ.get("HTTP_X_FORWARDED_FOR"),
        "forwarded_host": environ.get("HTTP_X_FORWARDED_HOST"),
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


PROXY = {
    "trusted_proxy_count": 1,
    "trusted_proxy_headers": ["x-forwarded-for", "x-forwarded-proto"],
    "clear_untrusted_proxy_headers": True,
}


def behind_proxy(app, **settings):
    """``app`` behind the proxy handling ``create_app`` installs."""
    return proxy.trusting_proxy(app, Adjustments(**settings))


def through_proxy(server, *header_lines):
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    request += b"".join(line + b"\r\n" for line in header_lines) + b"\r\n"
    return raw_exchange(server, request)


@pytest.mark.parametrize(
    ("trusted_proxy", "seen"),
    [
        (
            "127.0.0.1",  # the peer: it names the client and its scheme
            {
                "client": "203.0.113.7",
                "scheme": "https",
                "forwarded_for": "203.0.113.7",
                "forwarded_host": None,  # not among the trusted headers
            },
        ),
        (
            "192.0.2.1",  # another address: the peer's headers are dropped
            {
                "client": "127.0.0.1",
                "scheme": "http",
                "forwarded_for": None,
                "forwarded_host": None,
            },
        ),
    ],
    ids=["trusted", "anyone else"],
)
def test_forwarded_headers_count_only_from_the_trusted_proxy(
    running_server, trusted_proxy, seen
):
    server = running_server(
        behind_proxy(what_the_app_sees, trusted_proxy=trusted_proxy, **PROXY)
    )
    status, _, body = through_proxy(
        server,
        b"X-Forwarded-For: 203.0.113.7",
        b"X-Forwarded-Proto: https",
        b"X-Forwarded-Host: evil.example",
    )
    assert status == 200
    assert json.loads(body) == seen


@pytest.mark.parametrize(
    ("trusted", "line", "header"),
    [
        ("x-forwarded-for", b'X-Forwarded-For: "203.0.113.7', "X-Forwarded-For"),
        ("x-forwarded-proto", b"X-Forwarded-Proto: gopher://", "X-Forwarded-Proto"),
        ("forwarded", b'Forwarded: for="203.0.113.7', "Forwarded"),
        ("forwarded", b"Forwarded: for=203.0.113.7;proto=gopher", "Forwarded"),
    ],
    ids=["for", "proto", "forwarded", "forwarded proto"],
)
def test_a_malformed_header_of_the_trusted_proxy_gets_a_json_400(
    running_server, caplog, trusted, line, header
):
    called = []

    def app(environ, start_response):
        called.append(environ)
        return what_the_app_sees(environ, start_response)

    settings = dict(PROXY, trusted_proxy_headers=[trusted])
    server = running_server(behind_proxy(app, trusted_proxy="127.0.0.1", **settings))
    status, headers, body = through_proxy(server, line)
    assert status == 400
    assert body == b'{"detail":"Malformed %s header"}\n' % header.encode()
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Length"] == str(len(body))
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == (
        "default-src 'none'; frame-ancestors 'none'"
    )
    assert called == []
    assert f"malformed {header} header from 127.0.0.1" in caplog.text


def test_an_app_that_raises_before_answering_gets_the_json_500(running_server):
    def broken(environ, start_response):
        raise RuntimeError("a bug")

    server = running_server(broken)
    status, headers, body = raw_exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 500
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"detail": "Internal Server Error"}  # no traceback


class Lines(logging.Handler):
    """A handler that keeps the lines of waitress's queue logger."""

    def __init__(self, logger, queue_log):
        super().__init__()
        self.lines = []
        self.logger = logger
        logger.addFilter(queue_log)
        logger.addHandler(self)

    def emit(self, record):
        self.lines.append(record.getMessage())

    def warning(self, message, *args):
        # What waitress's dispatcher calls on its public logger.
        self.logger.warning(message, *args)

    def close(self):
        self.logger.removeHandler(self)
        self.logger.filters.clear()
        super().close()


def test_queue_warnings_are_all_counted_and_one_line_per_interval_logged():
    now = [100.0]
    queue_log = serve.QueueLog(interval=60, clock=lambda: now[0])
    lines = Lines(logging.getLogger("tests.queue"), queue_log)
    try:
        queue_log_warns(lines, queue_log, now)
    finally:
        lines.close()


def queue_log_warns(lines, queue_log, now):
    lines.warning("Task queue depth is %d", 1)
    for depth in (2, 5, 3):
        now[0] += 19
        lines.warning("Task queue depth is %d", depth)
    assert queue_log.queued == 4
    assert lines.lines == [
        "Task queue depth is 1: 1 request(s) waited for a worker thread since "
        "the last such line, at most 1 deep"
    ]
    now[0] = 160.0  # the interval has passed
    lines.warning("Task queue depth is %d", 2)
    assert queue_log.queued == 5
    assert lines.lines[1:] == [
        "Task queue depth is 2: 4 request(s) waited for a worker thread since "
        "the last such line, at most 5 deep"
    ]


def test_requests_waiting_for_a_thread_are_counted_and_logged_once(
    running_server, make_app, caplog
):
    release = threading.Event()

    def slow(environ, start_response):
        release.wait(10)
        return hello(environ, start_response)

    server = running_server(slow)  # one thread
    app = make_app()
    metrics.watch_server(app, server)
    statuses = []

    def client():
        url = f"http://127.0.0.1:{server.port}/"
        statuses.append(requests.get(url, timeout=15).status_code)

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        deadline = time.monotonic() + 5
        while server.waiting() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        scrape = metrics.exposition(app)
    finally:
        release.set()
        for thread in clients:
            thread.join(15)
    assert statuses == [200] * 4
    # The first request found the thread idle; each of the others waited.
    assert "postservice_server_queue_depth 3.0" in scrape
    assert "postservice_server_queued_requests_total 3.0" in scrape
    warnings = [r for r in caplog.records if r.name == "waitress.queue"]
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith("Task queue depth is ")


class OutputRecorder(Channel):
    """A channel with only what flushing its output needs."""

    def __init__(self):  # no socket, no server
        self.outbuf_lock = threading.Condition()
        self.total_outbufs_len = 10
        self.adj = type("Adjustments", (), {"outbuf_high_watermark": 100})()
        self.flushed = 0

    def _flush_some(self, do_close=True):
        self.flushed += 1
        self.total_outbufs_len = 0


def test_the_main_loop_pauses_on_output_a_worker_is_writing():
    channel = OutputRecorder()
    held, release = threading.Event(), threading.Event()

    def worker():
        with channel.outbuf_lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    held.wait(10)
    started = time.monotonic()
    channel._flush_some_if_lockable()
    paused = time.monotonic() - started
    assert channel.flushed == 0  # the worker's output is left to the worker
    assert paused >= LOCKED_OUTPUT_PAUSE  # slept, handing over the GIL
    release.set()
    thread.join(10)
    channel._flush_some_if_lockable()
    assert channel.flushed == 1  # free: sent as waitress sends it


def test_answers_without_a_body_keep_the_connection_open(instance):
    """A 304 and a 204 end at their headers: the client's next request goes
    on the same connection (waitress alone would close it after each)."""
    [headers] = register_users(instance.base, 1, "keepalive")
    token = headers["Authorization"]
    added = requests.post(
        instance.base + "/api/v1/posts/add-post",
        json={"text": "x"},
        headers=headers,
        timeout=30,
    )
    post_id = added.json()["PostID"]
    with socket.create_connection(("127.0.0.1", instance.port), timeout=10) as sock:
        reader = sock.makefile("rb")

        def exchange(method, path, extra=""):
            sock.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
                f"{extra}Content-Length: 0\r\n\r\n".encode()
            )
            status = int(reader.readline().split()[1])
            fields = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                fields[name.strip().lower()] = value.strip()
            body = reader.read(int(fields.get("content-length", 0)))
            return status, fields, body

        status, fields, body = exchange(
            "DELETE", f"/api/v1/posts/delete-post/{post_id}"
        )
        assert (status, body) == (204, b"")
        assert "connection" not in fields
        status, fields, body = exchange("GET", "/api/v1/posts/get-posts")
        assert (status, body) == (200, b"[]")
        tag = fields["etag"]
        for _ in range(3):
            status, fields, body = exchange(
                "GET", "/api/v1/posts/get-posts", f"If-None-Match: {tag}\r\n"
            )
            assert (status, body) == (304, b"")
            assert "connection" not in fields
        # Still the same connection: one more request is answered on it.
        status, fields, body = exchange("GET", "/api/v1/posts/get-posts")
        assert (status, body) == (200, b"[]")
        # Asked to close, it closes.
        status, fields, _ = exchange(
            "GET",
            "/api/v1/posts/get-posts",
            f"If-None-Match: {tag}\r\nConnection: close\r\n",
        )
        assert status == 304
        assert fields["connection"] == "close"
        assert reader.read() == b""

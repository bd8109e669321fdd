"""Prometheus metrics on their own listener of the production server."""

import os
import selectors
import socket
import threading
import time

import pytest
import requests

from postservice.ops import metrics

from ..support.load import register_users
from ..support.metrics import cache, parse, requests_total, value
from ..support.processes import free_port
from ..support.servers import AppInstance

GET_POSTS = "/api/v1/posts/get-posts"


def with_metrics(tmp_path, database_url, redis_url, **settings):
    """The app under ``python -m postservice.serve`` with its metrics listener."""
    instance = AppInstance(
        tmp_path,
        database_url,
        redis_url,
        threads=8,
        METRICS_PORT=str(free_port()),
        **settings,
    )
    instance.metrics_port = int(instance.env["METRICS_PORT"])
    instance.metrics = f"http://127.0.0.1:{instance.metrics_port}"
    return instance


@pytest.fixture
def served(tmp_path, database_url, redis_url):
    instance = with_metrics(tmp_path, database_url, redis_url)
    instance.start()
    yield instance
    instance.stop()


def test_metrics_have_their_own_port_and_only_there(served):
    public = requests.get(served.base + "/metrics", timeout=5)
    assert public.status_code == 404
    assert public.json() == {"detail": "Not Found"}

    response = requests.get(served.metrics + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    seen = parse(response.text)
    assert requests_total(seen, "none", "GET", 404) == 1
    assert value(seen, "postservice_dependency_up", dependency="database") == 1
    # The server's queue is there too (see tests/server/test_serve.py for counts).
    assert seen[("postservice_server_queue_depth", ())] == 0
    assert ("postservice_server_queued_requests_total", ()) in seen
    assert requests.get(served.metrics + "/", timeout=5).status_code == 404


def test_counts_are_exact_under_concurrent_requests(served):
    [headers] = register_users(served.base, 1, "concurrent")
    listing = served.base + GET_POSTS
    assert requests.get(listing, headers=headers, timeout=5).status_code == 200
    threads, each = 8, 25
    statuses = []

    def client():
        with requests.Session() as session:
            for n in range(each):
                url = listing if n % 5 else served.base + "/no/such/page"
                statuses.append(
                    session.get(url, headers=headers, timeout=10).status_code
                )

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert statuses.count(200) == threads * each * 4 // 5
    seen = parse(requests.get(served.metrics + "/metrics", timeout=5).text)
    assert requests_total(seen, "posts.get_posts", "GET", 200) == 1 + threads * 20
    assert requests_total(seen, "none", "GET", 404) == threads * 5
    assert (cache(seen, "miss"), cache(seen, "hit")) == (1, threads * 20)


def reachable(address, port):
    try:
        socket.create_connection((address, port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


def test_the_metrics_listen_on_metrics_host_not_on_the_apis_host(
    tmp_path, database_url, redis_url
):
    # 127.0.0.2 is this machine too, but an address of its own to bind.
    served = with_metrics(tmp_path, database_url, redis_url, HOST="127.0.0.2")
    served.start()
    try:
        assert reachable("127.0.0.2", served.port)
        assert not reachable("127.0.0.1", served.port)
        # METRICS_HOST unset: 127.0.0.1, whatever HOST is.
        assert reachable("127.0.0.1", served.metrics_port)
        assert not reachable("127.0.0.2", served.metrics_port)
    finally:
        served.stop()
    told = with_metrics(tmp_path, database_url, redis_url, METRICS_HOST="127.0.0.2")
    told.start()
    try:
        assert answers(f"http://127.0.0.2:{told.metrics_port}/metrics") == 200
        assert not reachable("127.0.0.1", told.metrics_port)
        assert reachable("127.0.0.1", told.port)
    finally:
        told.stop()


# As many connections as the attack that exhausted a server: each sends half
# a request line and nothing more.
FLOOD = 400
# The server's limit of file descriptors in the tests that set one, as
# ``ulimit -n`` would; below FLOOD, so a thread per connection runs out.
FEW_FILES = 256


def threads(process):
    return len(os.listdir(f"/proc/{process.pid}/task"))


def descriptors(process):
    return len(os.listdir(f"/proc/{process.pid}/fd"))


def connections(port, count, send=b""):
    """Up to ``count`` connections to ``port``, each having sent ``send``.

    One after the other, each in at most 2 s: the first the server cannot
    take in that time ends the flood, with what was made.
    """
    opened = []
    try:
        for _ in range(count):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                break
            opened.append(sock)
            if send:
                sock.sendall(send)
    except BaseException:
        close(opened)
        raise
    return opened


def close(sockets):
    for sock in sockets:
        sock.close()


def still_open(sockets, timeout):
    """How many of ``sockets`` the server has not closed after ``timeout`` s."""
    waiting = set(sockets)
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                try:
                    closed = key.fileobj.recv(4096, socket.MSG_DONTWAIT) == b""
                except BlockingIOError:
                    closed = False
                except OSError:  # reset
                    closed = True
                if closed:
                    selector.unregister(key.fileobj)
                    waiting.discard(key.fileobj)
    return len(waiting)


def answers(url):
    """The status of a GET to ``url``, or the error that kept it from one."""
    try:
        return requests.get(url, timeout=5).status_code
    except requests.RequestException as e:
        return type(e).__name__


def test_half_requests_to_the_metrics_port_hold_few_threads_and_time_out(served):
    process = served.process
    assert answers(served.metrics + "/metrics") == 200
    before = threads(process)
    flood = connections(served.metrics_port, FLOOD, send=b"GET /metr")
    try:
        assert len(flood) == FLOOD
        most, public = before, []
        for _ in range(10):
            public.append(answers(served.base + "/healthz"))
            most = max(most, threads(process))
            time.sleep(0.2)
        assert public == [200] * 10, public
        # A thread for each scrape let in, none for the rest.
        assert most <= before + metrics.LISTENER_CONNECTIONS, (
            f"{most} threads with {FLOOD} half requests on the metrics port, "
            f"{before} before"
        )
        # Each has had its read timeout (those beyond the cap none) and more.
        left = still_open(flood, timeout=metrics.LISTENER_READ_TIMEOUT + 30)
        assert left == 0, (
            f"{left} of {FLOOD} half requests still open "
            f"{metrics.LISTENER_READ_TIMEOUT + 30} s after"
        )
    finally:
        close(flood)
    assert answers(served.metrics + "/metrics") == 200
    deadline = time.monotonic() + 10
    while threads(process) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert threads(process) <= before


def test_a_request_sent_slowly_is_cut_off_at_one_deadline_for_all_of_it(served):
    # A byte every half second: each read is quick, the request never ends.
    request = b"GET /metrics HTTP/1.0\r\nX-Slow: " + b"a" * 200
    sent, closed = 0, False
    with socket.create_connection(("127.0.0.1", served.metrics_port)) as sock:
        started = time.monotonic()
        deadline = started + metrics.LISTENER_READ_TIMEOUT + 20
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(request[sent : sent + 1])
                sent += 1
                time.sleep(0.5)
                closed = sock.recv(1, socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                pass
            except OSError:  # reset, or a broken pipe
                closed = True
    took = time.monotonic() - started
    assert closed, f"still open after {sent} bytes over {took:.0f} s"
    assert sent < len(request)


def test_with_few_descriptors_a_metrics_flood_leaves_the_public_port_alone(
    tmp_path, database_url, redis_url
):
    served = with_metrics(tmp_path, database_url, redis_url, open_files=FEW_FILES)
    served.start()
    try:
        flood = connections(served.metrics_port, FLOOD, send=b"GET /metr")
        try:
            checks, most = [], 0
            for _ in range(5):
                checks.append(answers(served.base + "/healthz"))
                checks.append(answers(served.base + "/readyz"))
                most = max(most, descriptors(served.process))
                time.sleep(0.2)
            made = len(flood)
        finally:
            close(flood)
        assert checks == [200] * 10, checks
        assert made == FLOOD  # each taken in and answered, or turned away
        assert most < FEW_FILES - 64, f"{most} descriptors open of {FEW_FILES}"
        log = served.log.read_text(errors="replace")
        assert "accept()" not in log, served.log_tail()
        assert "Traceback" not in log, served.log_tail()
    finally:
        served.stop()


def test_running_out_of_descriptors_on_the_public_port_is_logged_once(
    tmp_path, database_url, redis_url
):
    # A connection limit above what the descriptors allow: accepting fails.
    served = with_metrics(
        tmp_path,
        database_url,
        redis_url,
        open_files=FEW_FILES,
        WAITRESS_CONNECTION_LIMIT="1000",
    )
    served.start()
    try:
        idle = connections(served.port, FEW_FILES + 50)
        try:
            deadline = time.monotonic() + 15
            while (
                descriptors(served.process) < FEW_FILES and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            assert descriptors(served.process) >= FEW_FILES, "never ran out"
            time.sleep(3)  # the server goes on trying to accept meanwhile
            log = served.log.read_text(errors="replace")
        finally:
            close(idle)
        lines = [line for line in log.splitlines() if "accept()" in line]
        assert len(lines) == 1, (len(lines), log[-3000:])
        assert "Too many open files" in lines[0]
        assert "Traceback" not in log, log[-3000:]
        # With the connections gone, it accepts again.
        deadline = time.monotonic() + 15
        while answers(served.base + "/healthz") != 200:
            assert time.monotonic() < deadline, served.log_tail()
            time.sleep(0.2)
    finally:
        served.stop()

"""Two instances behind nginx, one stopped under load: no request fails.

nginx keeps its connections to the instances alive (``nginx.conf``'s
upstream ``keepalive``) and never sends a POST twice. An instance that
closed one of them as nginx sent a POST on it made nginx answer 502; one
that tells nginx ``Connection: close`` on each answer of its drain, and
closes an idle connection only when quiet, has nginx move on to the other
instance for every request after, through connections refused before
anything was sent.
"""

import http.client
import json
import signal
import socket
import time

import pytest
from sqlalchemy import func, select

from postservice.extensions import db
from postservice.models import Post

from ..support.keepalive import ADD_POST, KeepAliveLoad
from ..support.load import register_users, report
from ..support.nginx import NginxServer
from ..support.servers import AppInstance

WRITERS = 10
# Answers through nginx before the signal, and after the stopped instance
# has exited: the other instance carries the load alone by then.
ANSWERS_BEFORE = 300
ANSWERS_AFTER = 200
# Short, so that an instance that goes on serving nginx's connections until
# it gives up shows it within seconds.
SHUTDOWN_TIMEOUT = 5


@pytest.fixture
def behind_nginx(tmp_path, database_url, redis_url):
    instances = [
        AppInstance(
            tmp_path,
            database_url,
            redis_url,
            threads=4,
            SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT),
        )
        for _ in range(2)
    ]
    nginx = NginxServer(tmp_path, [instance.port for instance in instances])
    try:
        for instance in instances:
            instance.start()
        nginx.start()
        yield nginx, instances
    finally:
        nginx.stop()
        for instance in instances:
            instance.stop()


def refusing(port, timeout=30):
    """Wait until ``port`` refuses connections: the instance drains."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.01)
    return False


def answered_while_draining(instance):
    """Requests the instance logged after it began to drain."""
    lines = instance.log.read_text(errors="replace").splitlines()
    begun = next(
        n for n, line in enumerate(lines) if "stopping: no new connections" in line
    )
    return sum("postservice.request" in line for line in lines[begun:])


def test_an_instance_stopped_behind_nginx_fails_no_request(
    behind_nginx, make_app, capsys
):
    nginx, (stopped, _running) = behind_nginx
    headers = register_users(nginx.base, WRITERS, "nginx")
    with KeepAliveLoad("127.0.0.1", nginx.port, headers) as load:
        load.wait_for_answers(ANSWERS_BEFORE)
        stopped.process.send_signal(signal.SIGTERM)
        load.signalled.set()
        signalled = time.monotonic()
        status = stopped.process.wait(timeout=SHUTDOWN_TIMEOUT + 30)
        exited = time.monotonic() - signalled
        load.wait_for_answers(load.answers + ANSWERS_AFTER)
    drained = answered_while_draining(stopped)
    errors = nginx.errors()
    refused = sum("Connection refused" in line for line in errors)
    report(
        capsys,
        f"behind nginx, one of two instances stopped: {load.summary(True)}; "
        f"{drained} answered by the stopped instance while it drained, "
        f"which exited {exited:.2f} s after SIGTERM; "
        f"nginx: {refused} connections refused, {len(errors) - refused} "
        "other upstream errors",
    )
    failed = [line for line in errors if "Connection refused" not in line]
    assert load.lost == [], load.summary(True)
    assert load.statuses == {200: load.answers}, (load.summary(True), failed[:10])
    assert failed == [], failed[:10]
    assert status == 0
    log = stopped.log_tail()
    assert "stopping with" not in log, log  # done before the timeout
    app = make_app()
    with app.app_context():
        stored = db.session.scalar(select(func.count()).select_from(Post))
    assert stored == load.answers


@pytest.fixture
def behind_one_nginx_worker(tmp_path, database_url, redis_url):
    """Two instances behind an nginx of one worker process, so that one
    keep-alive cache holds nginx's connections to them."""
    instances = [
        AppInstance(tmp_path, database_url, redis_url, threads=4) for _ in range(2)
    ]
    nginx = NginxServer(tmp_path, [instance.port for instance in instances], workers=1)
    try:
        for instance in instances:
            instance.start()
        nginx.start()
        yield nginx, instances
    finally:
        nginx.stop()
        for instance in instances:
            instance.stop()


def test_posts_nginx_sends_on_its_kept_connections_as_the_drain_begins_are_answered(
    behind_one_nginx_worker, make_app
):
    """The race made certain: nginx holds kept-alive connections to the
    instance, and is sent POSTs it has not read when the instance gets
    SIGTERM (nginx is stopped meanwhile). Once the instance refuses new
    connections, nginx goes on: it sends the POSTs routed to that instance
    on the connections it kept. Closing them at once made each a 502."""
    nginx, (stopped, _running) = behind_one_nginx_worker
    headers = register_users(nginx.base, WRITERS, "race")
    clients = [
        http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=30)
        for _ in range(WRITERS)
    ]
    try:
        # Each client's connection accepted by nginx, and nginx's kept to
        # both instances: every client's request at once.
        for client, auth in zip(clients, headers, strict=True):
            client.request("GET", "/api/v1/posts/get-posts", headers=auth)
        for client in clients:
            warm = client.getresponse()
            warm.read()
            assert warm.status == 200
        with nginx.frozen():
            for number, (client, auth) in enumerate(zip(clients, headers, strict=True)):
                body = json.dumps({"text": f"race {number}"}).encode()
                client.request(
                    "POST", ADD_POST, body, {**auth, "Content-Type": "application/json"}
                )
            stopped.process.send_signal(signal.SIGTERM)
            assert refusing(stopped.port)
        answers = []
        for client in clients:
            answer = client.getresponse()
            answers.append((answer.status, answer.read()[:200]))
    finally:
        for client in clients:
            client.close()
    assert [status for status, _ in answers] == [200] * WRITERS, answers
    assert nginx.errors() == []
    assert stopped.process.wait(timeout=30) == 0
    assert answered_while_draining(stopped) > 0  # nginx did send it some
    app = make_app()
    with app.app_context():
        stored = db.session.scalar(select(func.count()).select_from(Post))
    assert stored == WRITERS

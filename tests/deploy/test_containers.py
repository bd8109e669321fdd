"""The image and docker-compose.yml with its override, run for real on a
Docker engine; see tests/support/containers.py for how, and README, "Container tests".
"""

import json
import re
import socket
import time
import uuid

import pytest
import requests

from ..support.containers import (
    DOCKER,
    SINGLE,
    Stack,
    published,
    run,
    secret,
    started,
)
from ..support.load import report
from ..support.settings import ROOT

pytestmark = pytest.mark.containers


# --- the image ------------------------------------------------------------


def test_image_builds_runs_unprivileged_and_becomes_healthy(engine, tmp_path, capsys):
    images = dict(
        line.split("=", 1) for line in engine["POSTSERVICE_TEST_IMAGES"].split()
    )
    tag = "postservice:latest"
    began = time.monotonic()
    run(
        [
            DOCKER,
            "build",
            "--build-arg",
            f"PYTHON_IMAGE={images['PYTHON_IMAGE']}",
            "--tag",
            tag,
            ".",
        ],
        engine,
        timeout=1200,
    )
    built = time.monotonic() - began
    size = int(
        run([DOCKER, "image", "inspect", "--format", "{{.Size}}", tag], engine).stdout
    )
    name = "pstest-image-" + uuid.uuid4().hex[:10]
    run(
        [
            DOCKER,
            "run",
            "--detach",
            "--name",
            name,
            "--env",
            f"JWT_SECRET_KEY={secret()}",
            "--env",
            "DATABASE_URL=sqlite:////app/instance/postservice.sqlite",
            # Production requires them; nothing is mailed in this test.
            "--env",
            "MAIL_URL=smtp://127.0.0.1:1",
            "--env",
            "PUBLIC_URL=https://postservice.example",
            tag,
        ],
        engine,
    )
    try:
        began = time.monotonic()
        status = ""
        while time.monotonic() - began < 180 and status not in (
            "healthy",
            "unhealthy",
        ):
            time.sleep(0.5)
            status = run(
                [DOCKER, "inspect", "--format", "{{.State.Health.Status}}", name],
                engine,
            ).stdout.strip()
        healthy_after = time.monotonic() - began
        logs = run([DOCKER, "logs", name], engine, check=False)
        assert status == "healthy", logs.stdout + logs.stderr
        uid = run([DOCKER, "exec", name, "id", "-u"], engine).stdout.strip()
        assert uid != "0"
        user = run([DOCKER, "inspect", "--format", "{{.Config.User}}", tag], engine)
        assert user.stdout.strip() == "postservice"
        report(
            capsys,
            f"image: {size / 2**20:.0f} MiB, built in {built:.0f} s, "
            f"healthy {healthy_after:.1f} s after start, uid {uid}",
        )
    finally:
        run([DOCKER, "rm", "--force", "--volumes", name], engine, check=False)


# --- docker-compose.yml with the override: one app behind nginx ------------


def test_compose_refuses_to_start_with_empty_secrets(engine, tmp_path):
    stack = Stack(engine, tmp_path, SINGLE)
    example = (ROOT / ".env.example").read_text()
    stack.env_file.write_text(example + engine["POSTSERVICE_TEST_IMAGES"])
    try:
        refused = stack.compose("up", "--detach", "--no-build", check=False)
        assert refused.returncode != 0
        assert "in .env" in refused.stderr
        assert published(stack) == {}  # nothing was started
    finally:
        stack.down()


@pytest.fixture(scope="module")
def single(engine, tmp_path_factory):
    yield from started(engine, tmp_path_factory.mktemp("single"), SINGLE)


@pytest.fixture(scope="module")
def single_account(single):
    return single.register("single@example.com")


def test_only_nginx_is_published_and_only_on_localhost(single):
    ports = published(single)
    exposed = {name: found for name, found in ports.items() if found}
    assert len(exposed) == 1, ports
    [(name, found)] = exposed.items()
    assert "nginx" in name
    assert found == {("8000/tcp", "127.0.0.1")}
    app = single.containers("app")[0]
    # The metrics port is for scrapers on the compose network, never the host.
    config = json.loads(
        single.docker(
            "inspect", "--format", "{{json .Config.ExposedPorts}}", app
        ).stdout
    )
    assert "9100/tcp" in config


def test_the_api_through_the_published_port(single, single_account):
    base, auth = single.base, single_account
    assert single.wait_ready() == {"status": "ok", "database": "ok", "redis": "ok"}
    added = requests.post(
        base + "/api/v1/posts/add-post", json={"text": "kept"}, headers=auth, timeout=30
    )
    assert added.status_code == 200, added.text
    doomed = requests.post(
        base + "/api/v1/posts/add-post",
        json={"text": "doomed"},
        headers=auth,
        timeout=30,
    ).json()["PostID"]
    listed = requests.get(base + "/api/v1/posts/get-posts", headers=auth, timeout=30)
    assert [post["text"] for post in listed.json()] == ["kept", "doomed"]
    deleted = requests.delete(
        base + f"/api/v1/posts/delete-post/{doomed}", headers=auth, timeout=30
    )
    assert deleted.status_code == 204
    listed = requests.get(base + "/api/v1/posts/get-posts", headers=auth, timeout=30)
    assert [post["text"] for post in listed.json()] == ["kept"]

    other = single.register("leaving@example.com")
    out = requests.post(base + "/api/v1/users/logout", headers=other, timeout=30)
    assert out.status_code == 204
    after = requests.get(base + "/api/v1/posts/get-posts", headers=other, timeout=30)
    assert after.status_code == 401
    assert after.json() == {"detail": "Token has been revoked"}


def test_a_password_reset_through_the_stack(single):
    """The app queues, the worker sends to the mail catcher, the link works."""
    base = single.base
    single.register("forgetful@example.com")
    asked = requests.post(
        base + "/api/v1/users/password-reset",
        json={"email": "forgetful@example.com"},
        timeout=30,
    )
    assert asked.status_code == 202, asked.text
    link = re.compile(re.escape(base) + r"/reset-password\?token=([A-Za-z0-9_-]{43})")
    deadline = time.monotonic() + 120
    token = None
    while token is None:
        assert time.monotonic() < deadline, "no reset mail reached the catcher"
        for mail in single.mails():
            if mail["To"] == "forgetful@example.com":
                found = link.search(mail.get_body(("plain",)).get_content())
                if found:
                    token = found[1]
        time.sleep(1)
    confirmed = requests.post(
        base + "/api/v1/users/password-reset/confirm",
        json={"token": token, "new_password": "a brand new password"},
        timeout=30,
    )
    assert confirmed.status_code == 204, confirmed.text
    login = requests.post(
        base + "/api/v1/users/login",
        json={"email": "forgetful@example.com", "password": "a brand new password"},
        timeout=30,
    )
    assert login.status_code == 200, login.text


def test_a_forwarded_chain_the_client_wrote_never_reaches_the_app(
    single, single_account
):
    # Unbalanced quoting: the app's server would refuse the chain with a
    # 400; nginx sends the client's address alone.
    response = requests.get(
        single.base + "/api/v1/posts/get-posts",
        headers={**single_account, "X-Forwarded-For": '"unbalanced'},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "partial",
    [
        b"GET /healthz HTTP/1.1\r\nHost: slow\r\n",  # headers never finished
        b"POST /api/v1/users/login HTTP/1.1\r\nHost: slow\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    ],
    ids=["headers", "body"],
)
def test_nginx_ends_a_client_that_stalls(single, partial):
    with socket.create_connection(("127.0.0.1", single.port), timeout=40) as sock:
        sock.sendall(partial)
        # nginx gives up after client_header_timeout / client_body_timeout
        # (10 s) and closes, answering nothing or a 408; the 40 s socket
        # timeout, below nginx's default of 60 s, catches one left open.
        try:
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            received = b""
    assert received == b"" or received.startswith(b"HTTP/1.1 408"), received


def test_the_database_schema_is_current(single):
    current = single.compose(
        "exec", "-T", "app", "flask", "--app", "postservice", "db", "current"
    )
    assert "(head)" in current.stdout, current.stdout + current.stderr


def test_restarting_the_app_keeps_the_data(single, single_account):
    single.compose("restart", "--timeout", "30", "app")
    single.wait_ready()
    listed = requests.get(
        single.base + "/api/v1/posts/get-posts", headers=single_account, timeout=30
    )
    assert [post["text"] for post in listed.json()] == ["kept"]


def exchange(stack, request):
    """The status, headers and JSON body answered to ``request``, sent as bytes."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        try:
            while chunk := sock.recv(65536):  # each request here ends the connection
                data += chunk
        except ConnectionResetError:
            pass  # closed with part of a refused request unread; the answer came
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status.split()[1]), headers, json.loads(body)


CLOSE = b"Host: x\r\nConnection: close\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status", "detail"),
    [
        (b"NOT A REQUEST\r\n\r\n", 400, "Bad Request"),
        (
            b"GET /" + b"a" * 9_000 + b" HTTP/1.1\r\n" + CLOSE + b"\r\n",
            414,
            "URI Too Long",
        ),
        (
            b"GET /healthz HTTP/1.1\r\n"
            + CLOSE
            + b"X-Big: "
            + b"a" * 9_000
            + b"\r\n\r\n",
            431,
            "Request Header Fields Too Large",
        ),
        (
            b"POST /api/v1/users/login HTTP/1.1\r\n"
            + CLOSE
            + b"Transfer-Encoding: gzip\r\n\r\n",
            501,
            "Not Implemented",
        ),
        (b"GET /_error HTTP/1.1\r\n" + CLOSE + b"\r\n", 404, "Not Found"),
    ],
    ids=["request line", "uri", "headers", "coding", "error page"],
)
def test_what_nginx_refuses_itself_is_answered_in_json(
    single, request_bytes, status, detail
):
    got, headers, body = exchange(single, request_bytes)
    assert (got, body) == (status, {"detail": detail})
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert "Retry-After" not in headers


def test_with_no_app_answering_nginx_answers_in_json(single, single_account):
    single.compose("stop", "--timeout", "30", "app")
    try:
        answer = requests.get(single.base + "/healthz", timeout=30)
    finally:
        single.compose("start", "app")
    # Refused (502), or the stopped container's address never answering
    # within proxy_connect_timeout (504): either way no app had the request.
    assert (answer.status_code, answer.json()) in [
        (502, {"detail": "Bad Gateway"}),
        (504, {"detail": "Gateway Timeout"}),
    ], answer.text
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    if answer.status_code == 502:
        assert answer.headers["Retry-After"] == "1"
    single.wait_ready()
    listed = requests.get(
        single.base + "/api/v1/posts/get-posts", headers=single_account, timeout=30
    )
    assert [post["text"] for post in listed.json()] == ["kept"]


def test_a_stopped_database_makes_it_unready_until_it_is_back(single, single_account):
    single.compose("stop", "--timeout", "10", "mysql")
    try:
        single.wait_status("/readyz", 503)
        answer = requests.get(single.base + "/readyz", timeout=10)
        assert answer.json()["database"] == "unavailable"
    finally:
        single.compose("start", "mysql")
    # No restart of the app: it reconnects by itself.
    single.wait_ready()
    listed = requests.get(
        single.base + "/api/v1/posts/get-posts", headers=single_account, timeout=30
    )
    assert [post["text"] for post in listed.json()] == ["kept"]

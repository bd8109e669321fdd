"""docker-compose.scale.yml, run for real: three replicas behind nginx."""

import threading
import time
import uuid

import pytest
import requests

from config import MAX_BODY_BYTES

from ..support.containers import SCALED, started
from ..support.load import named_failures, report

pytestmark = pytest.mark.containers


# --- docker-compose.scale.yml: three replicas behind nginx ------------------


@pytest.fixture(scope="module")
def scaled(engine, tmp_path_factory):
    for stack in started(engine, tmp_path_factory.mktemp("scaled"), SCALED):
        assert len(stack.containers("app")) == 3  # the file's own count
        yield stack


def replica_of_each_request(stack, request_ids):
    """{request id: container} from the replicas' own request log lines."""
    seen = {}
    for container in stack.containers("app"):
        logs = stack.docker("logs", container)
        for line in (logs.stdout + logs.stderr).splitlines():
            for request_id in request_ids:
                if f"request_id={request_id}" in line:
                    seen[request_id] = container
    return seen


def test_requests_are_spread_over_every_replica(scaled, capsys):
    ids = [uuid.uuid4().hex for _ in range(30)]
    for request_id in ids:
        answer = requests.get(
            scaled.base + "/healthz", headers={"X-Request-ID": request_id}, timeout=10
        )
        assert answer.status_code == 200
    seen = replica_of_each_request(scaled, ids)
    assert set(seen) == set(ids)  # each logged by exactly the replica that served it
    counts = {c[:12]: list(seen.values()).count(c) for c in scaled.containers("app")}
    report(capsys, f"30 requests per replica: {counts}")
    assert all(counts.values()), counts


def test_each_write_is_read_back_through_any_replica(scaled):
    auth = scaled.register("everywhere@example.com")
    texts = []
    for number in range(9):
        text = f"post {number}"
        added = requests.post(
            scaled.base + "/api/v1/posts/add-post",
            json={"text": text},
            headers=auth,
            timeout=30,
        )
        assert added.status_code == 200, added.text
        texts.append(text)
        listed = requests.get(
            scaled.base + "/api/v1/posts/get-posts", headers=auth, timeout=30
        )
        assert [post["text"] for post in listed.json()] == texts


def test_bodies_up_to_the_apps_limit_pass_nginx(scaled):
    auth = {**scaled.register("large@example.com"), "Content-Type": "application/json"}
    url = scaled.base + "/api/v1/posts/add-post"
    post = b'{"text": "padded"}'
    # JSON allows any amount of whitespace: the largest body the app takes.
    largest = post + b" " * (MAX_BODY_BYTES - len(post))
    accepted = requests.post(url, data=largest, headers=auth, timeout=120)
    assert accepted.status_code == 200, accepted.text

    over = requests.post(url, data=largest + b" ", headers=auth, timeout=120)
    assert over.status_code == 413
    assert "detail" in over.json()
    assert over.json()["detail"] != NGINX_TOO_LARGE  # the app's own answer

    huge = requests.post(url, data=b" " * (12 * 2**20), headers=auth, timeout=120)
    assert huge.status_code == 413
    assert huge.headers["Content-Type"] == "application/json"
    assert huge.json() == {"detail": NGINX_TOO_LARGE}


NGINX_TOO_LARGE = "The request body is too large (at most 8 MiB)"


class Load:
    """Clients reading and writing through nginx until stopped."""

    def __init__(self, stack, auth, clients=3):
        self.stack, self.auth = stack, auth
        self.made = 0
        self.failures = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self.client, args=(n,)) for n in range(clients)
        ]

    def client(self, number):
        session = requests.Session()
        count = 0
        while not self.stopping.is_set():
            count += 1
            if count % 3:
                method, path, body = "GET", "/api/v1/posts/get-posts", None
            else:
                method, path = "POST", "/api/v1/posts/add-post"
                body = {"text": f"load {number}.{count}"}
            try:
                answer = session.request(
                    method,
                    self.stack.base + path,
                    json=body,
                    headers=self.auth,
                    timeout=60,
                )
                failed = None
                if answer.status_code != 200:
                    request_id = answer.headers.get("X-Request-ID")
                    failed = f"{answer.status_code} (X-Request-ID {request_id})"
            except requests.RequestException as exc:
                failed = repr(exc)
            with self.lock:
                self.made += 1
                if failed is not None:
                    self.failures.append(f"{method} {path}: {failed}")

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=120)


def test_a_replica_stopped_and_started_under_load_fails_no_request(scaled, capsys):
    auth = scaled.register("steady@example.com")
    victim = scaled.containers("app")[1]
    with Load(scaled, auth) as load:
        time.sleep(2)
        # Graceful: SIGTERM, then the replica finishes what it has.
        scaled.docker("stop", "--time", "30", victim)
        time.sleep(2)
        scaled.docker("start", victim)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            health = scaled.docker(
                "inspect", "--format", "{{.State.Health.Status}}", victim
            ).stdout.strip()
            if health == "healthy":
                break
            time.sleep(0.5)
        time.sleep(2)
    report(
        capsys,
        f"under load while a replica restarted: {load.made} requests, "
        f"{len(load.failures)} failed",
    )
    assert health == "healthy"
    assert load.made > 0
    assert load.failures == [], (
        f"{len(load.failures)} of {load.made} requests failed"
        + named_failures(load.failures)
    )
    stopped = scaled.docker("logs", victim)
    assert "stopped" in stopped.stdout + stopped.stderr  # it drained, not killed

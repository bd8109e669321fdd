"""Prometheus metrics on their own listener of the production server."""

import threading

import pytest
import requests

from ..support.load import register_users
from ..support.metrics import cache, parse, requests_total, value
from ..support.processes import free_port
from ..support.servers import AppInstance

GET_POSTS = "/api/v1/posts/get-posts"


@pytest.fixture
def served(tmp_path, database_url, redis_url):
    """The app under ``python -m postservice.serve`` with its metrics listener."""
    instance = AppInstance(
        tmp_path, database_url, redis_url, threads=8, METRICS_PORT=str(free_port())
    )
    instance.metrics = f"http://127.0.0.1:{instance.env['METRICS_PORT']}"
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

"""/readyz answers in bounded time whatever its dependencies do.

A frozen server (SIGSTOP) accepts nothing and answers nothing: without a
deadline the check would hang for the driver's read timeout.
"""

import signal
import threading
import time

import pytest
from flask_migrate import upgrade

from postservice.ops import health, metrics

from ..support.metrics import parse, value
from ..support.servers import MariaDBServer, freeze

# Far above the check's deadline, so only the deadline can end it in time.
READ_TIMEOUT = 30


def app_on_a_server_of_its_own(make_app, tmp_path, redis_url=None):
    """An app on a MariaDB server this test may freeze; the server too."""
    server = MariaDBServer(tmp_path)
    server.start()
    server.create_database("ready")
    app = make_app(
        SQLALCHEMY_DATABASE_URI=server.url("ready"),
        DATABASE_READ_TIMEOUT=READ_TIMEOUT,
        REDIS_URL=redis_url,
    )
    return app, server


def test_readyz_gives_up_on_a_frozen_database(make_app, tmp_path):
    app, server = app_on_a_server_of_its_own(make_app, tmp_path)
    client = app.test_client()
    assert client.get("/readyz").json["database"] == "ok"  # a pooled connection
    freeze(server.process)
    try:
        started = time.monotonic()
        response = client.get("/readyz")
        elapsed = time.monotonic() - started
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.stop()
    assert response.status_code == 503
    assert response.json["database"] == "unavailable"
    assert response.headers["Retry-After"] == "1"
    assert elapsed < READ_TIMEOUT / 3, elapsed  # the deadline, not the driver
    assert health.READY_DEADLINE < READ_TIMEOUT / 3


@pytest.mark.parametrize(
    "with_redis",
    [False, pytest.param(True, marks=pytest.mark.redis)],
    ids=["no-redis", "redis"],
)
def test_metrics_scrapes_give_up_on_a_frozen_database(
    make_app, tmp_path, request, with_redis
):
    """A scrape reads the database twice (the check, the outbox): each
    within /readyz's deadline, so that the scraper sees the database down
    instead of timing out on the whole target. Scrapes that come while
    earlier ones still wait on it never make Redis look down, configured
    or not."""
    redis_url = request.getfixturevalue("real_redis_url") if with_redis else None
    app, server = app_on_a_server_of_its_own(make_app, tmp_path, redis_url)
    with app.app_context():
        upgrade()
    seen = parse(metrics.exposition(app))
    assert value(seen, "postservice_dependency_up", dependency="database") == 1
    assert ("postservice_mail_outbox_waiting", ()) in seen
    redis_series = ("postservice_dependency_up", (("dependency", "redis"),))
    freeze(server.process)
    try:
        scrapes = []

        def scrape():
            started = time.monotonic()
            seen = parse(metrics.exposition(app))
            scrapes.append((time.monotonic() - started, seen))

        # More than the checks' threads, all waiting on the frozen server.
        threads = [threading.Thread(target=scrape) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        scrape()
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.stop()
    for elapsed, seen in scrapes:
        assert value(seen, "postservice_dependency_up", dependency="database") == 0
        assert ("postservice_mail_outbox_waiting", ()) not in seen
        if with_redis:
            assert seen[redis_series] == 1
        else:
            assert redis_series not in seen
        # Two deadlines, not the driver's read timeout.
        assert elapsed < 2 * health.READY_DEADLINE + 1, elapsed

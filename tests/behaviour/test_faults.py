"""Redis and MariaDB killed under load and restarted, with two app instances.

Each test starts its own MariaDB and Redis on spare ports
(tests/support/servers.py), so that SQLite's one-writer-at-a-time locking
never blurs the timings, puts two instances and a dozen clients on them,
kills the server with SIGKILL, restarts it on the same port after a few
seconds, and keeps the load on until the instances have recovered. The
numbers are printed in the test output.
"""

import time

import pytest
import redis
from sqlalchemy import select

from postservice import create_app
from postservice.extensions import db
from postservice.models import Post

from ..support.load import Stats, load_in_background, register_users, report
from ..support.servers import AppInstance, MariaDBServer, RedisServer, migrated_database

USERS = 6
# Generous bound for "never hangs": a failing dependency must cost a request
# at most a connect timeout, not the seconds of a default client retry.
QUICK = 2.0
WARM, OUTAGE, AFTER = 3.0, 3.0, 4.0


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mariadb_server(tmp_path):
    server = MariaDBServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_instances(tmp_path):
    started = []

    def start(database_url, redis_url, count=2):
        for _ in range(count):
            instance = AppInstance(tmp_path, database_url, redis_url, threads=8)
            started.append(instance)
            instance.start()
        return [instance.base for instance in started]

    yield start
    for instance in started:
        instance.stop()


def test_redis_killed_under_load(redis_server, fault_database, start_instances, capsys):
    bases = start_instances(fault_database, redis_server.url)
    headers = register_users(bases[0], USERS, "redisfault")
    stats = Stats()
    finish = load_in_background(bases, headers, stats)
    time.sleep(WARM)
    redis_server.kill()
    down = stats.requests
    time.sleep(OUTAGE)
    during = stats.requests - down
    redis_server.start()
    time.sleep(AFTER)
    finish()

    report(
        capsys,
        "\n"
        + stats.summary("Redis killed and restarted")
        + f"; {during} requests during the outage",
    )
    assert during > 0
    assert stats.failed == 0, stats.summary("redis")
    assert stats.slowest < QUICK, stats.summary("redis")
    assert stats.stale == 0, stats.summary("redis")


@pytest.fixture
def fault_database(mariadb_server):
    return migrated_database(mariadb_server, "faults")


def stored_posts(url):
    app = create_app({"MODE": "testing", "SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        rows = dict(db.session.execute(select(Post.id, Post.text)).all())
        db.engine.dispose()
    return rows


@pytest.fixture
def fault_redis_url(real_redis_url):
    """The test Redis, emptied before and after.

    The fault database numbers its users from 1, as the other tests'
    database does: cache entries of one must never answer for the other.
    """
    server = redis.Redis.from_url(real_redis_url)
    server.flushdb()
    yield real_redis_url
    server.flushdb()


def test_mariadb_killed_under_load(
    mariadb_server, fault_database, fault_redis_url, start_instances, capsys
):
    bases = start_instances(fault_database, fault_redis_url)
    headers = register_users(bases[0], USERS, "dbfault")
    stats = Stats()
    finish = load_in_background(bases, headers, stats)
    time.sleep(WARM)
    mariadb_server.kill()
    time.sleep(OUTAGE)
    restarted = time.monotonic()
    mariadb_server.start()
    back = time.monotonic()
    time.sleep(AFTER)
    writers = finish()

    failures = sorted(stats.failures_at)
    last_failure = failures[-1] - back if failures else None
    report(
        capsys,
        "\n"
        + stats.summary("MariaDB killed and restarted")
        + f"; restart took {back - restarted:.1f} s; last failure "
        + (f"{last_failure:+.2f} s after it answered" if failures else "none"),
    )
    assert stats.statuses[503] > 0, "the outage was not seen"
    assert set(stats.statuses) <= {200, 204, 503}, stats.summary("mariadb")
    assert not stats.errors, stats.summary("mariadb")
    assert not stats.bad_bodies, stats.bad_bodies[:5]
    assert stats.slowest < QUICK, stats.summary("mariadb")
    assert stats.stale == 0, stats.summary("mariadb")
    # The instances recover on their own: nothing fails once the server answers
    # (a request that started just before may still see the old connection).
    assert last_failure is None or last_failure < 1.0, last_failure

    stored = stored_posts(fault_database)
    acknowledged = {pid: text for w in writers for pid, text in w.present.items()}
    lost = {pid for pid, text in acknowledged.items() if stored.get(pid) != text}
    report(capsys, f"{len(acknowledged)} acknowledged posts kept, {len(lost)} lost")
    assert not lost
    deleted = {pid for w in writers for pid in w.gone}
    assert not deleted & set(stored)

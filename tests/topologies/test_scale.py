"""Several app instances on one database and one Redis, as behind a load balancer."""

import pytest

from ..support.load import Stats, register_users, report, run_load
from ..support.servers import AppInstance
from ..support.settings import TEST_DATABASE_URL

INSTANCES = 3
# About 2,500 writes and checked listings, and the reads meanwhile. SQLite
# takes one writer at a time: fewer users there, so waits stay far below
# its 5 s lock timeout on a busy machine.
USERS, ROUNDS = (8, 120) if TEST_DATABASE_URL else (4, 240)


@pytest.fixture
def instances(tmp_path, database_url, real_redis_url):
    started = [
        AppInstance(tmp_path, database_url, real_redis_url, threads=6)
        for _ in range(INSTANCES)
    ]
    try:
        yield [instance.start() for instance in started]
    finally:
        for instance in started:
            instance.stop()


def test_no_stale_reads_across_instances(instances, capsys):
    headers = register_users(instances[0], USERS, "scale")
    stats = Stats()
    writers = run_load(instances, headers, stats, rounds=ROUNDS)
    report(capsys, "\n" + stats.summary(f"{INSTANCES} instances, {USERS} users"))
    assert stats.failed == 0, stats.summary("scale")
    assert stats.stale == 0, stats.summary("scale")
    assert stats.listings >= USERS * ROUNDS
    # Every instance agrees with each writer at the end.
    for writer in writers:
        for base in instances:
            writer.read_base = base
            writer.check_listing()
    assert stats.stale == 0

"""What the topology tests share: a MariaDB of their own, revoked tokens, and
per-node command counts."""

import contextlib
import time

import requests

from .load import HANG, Stats, load_in_background, register_users
from .servers import AppInstance, MariaDBServer, migrated_database


def migrated_mariadb(workdir):
    """Yields the URL of a migrated database on a MariaDB of its own."""
    server = MariaDBServer(workdir)
    server.start()
    try:
        yield migrated_database(server, "topology")
    finally:
        server.stop()


def command_calls(node):
    """``{command: calls}`` from the node's INFO commandstats."""
    stats = node.client().info("commandstats")
    return {
        name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()
    }


def revoke_tokens(base, count, prefix):
    """Headers of ``count`` new accounts whose tokens have been logged out."""
    headers = register_users(base, count, prefix)
    for h in headers:
        response = requests.post(base + "/api/v1/users/logout", headers=h, timeout=HANG)
        assert response.status_code == 204, response.text
    return headers


def assert_revoked(bases, revoked, allowed=(401,)):
    """Every revoked token is refused with a status in ``allowed`` on every base."""
    for base in bases:
        for h in revoked:
            response = requests.get(
                base + "/api/v1/posts/get-posts", headers=h, timeout=HANG
            )
            assert response.status_code in allowed, (base, response.status_code)


def load_through_faults(
    bases,
    headers,
    revoked,
    fault,
    recover,
    timing=(2, 4, 3),
    refusals=(401,),
    **load,
):
    """Writers and readers on ``bases`` while ``fault()`` and later ``recover()`` run.

    Revoked tokens are tried on every instance during the fault and after
    it (answered with one of ``refusals``), and each writer's listing is
    read through every instance at the end; ``load`` goes to ``run_load``.
    Returns ``(stats, writers,
    requests after the fault began)``.
    """
    warm, outage, after = timing
    stats = Stats()
    finish = load_in_background(bases, headers, stats, **load)
    try:
        time.sleep(warm)
        fault()
        faulted = stats.requests
        assert_revoked(bases, revoked, refusals)
        time.sleep(outage)
        assert_revoked(bases, revoked, refusals)
        recover()
        time.sleep(after)
    finally:
        writers = finish()
    for writer in writers:  # every acknowledged write, through every instance
        for base in bases:
            writer.read_base = base
            writer.check_listing()
    assert_revoked(bases, revoked)
    return stats, writers, stats.requests - faulted


@contextlib.contextmanager
def app_instances(workdir, database_url, redis_url, count=2, **env):
    instances = [
        AppInstance(workdir, database_url, redis_url, threads=6, **env)
        for _ in range(count)
    ]
    try:
        yield [instance.start() for instance in instances]
    finally:
        for instance in instances:
            instance.stop()

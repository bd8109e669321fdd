"""The service behind Redis Sentinel: a master, a replica, three sentinels.

Reads go to the master as writes do: a replica may not yet have the
generation a write just replaced, and would serve the listing without it.
"""

import pytest

from ..support.auth import AuthActions
from ..support.engines import RedisSentinel, running
from ..support.load import register_users, report
from ..support.topology_checks import (
    app_instances,
    command_calls,
    load_through_faults,
    migrated_mariadb,
    revoke_tokens,
)

USERS = 6
READS = ("get", "mget", "exists", "ttl", "pttl")


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    yield from running(RedisSentinel(tmp_path_factory.mktemp("redis-sentinel")))


@pytest.fixture(scope="module")
def topology_database(tmp_path_factory):
    yield from migrated_mariadb(tmp_path_factory.mktemp("mariadb"))


def reads(node):
    calls = command_calls(node)
    return sum(calls.get(name, 0) for name in READS)


def test_api_on_sentinel_reads_and_writes_the_master(make_app, sentinel):
    app = make_app(REDIS_URL=sentinel.url + "?db=0")
    client = app.test_client()
    actions = AuthActions(client)
    master = sentinel.node(sentinel.current_master())
    replica = next(n for n in (sentinel.master, sentinel.replica) if n is not master)
    headers = actions.register()
    actions.add_post(headers, "via the master")
    replica_reads, master_reads = reads(replica), reads(master)
    for _ in range(5):
        assert [p["text"] for p in actions.posts(headers)] == ["via the master"]
    assert reads(replica) == replica_reads
    assert reads(master) >= master_reads + 5
    ready = client.get("/readyz").json
    assert ready["redis"] == "ok"
    assert ready["redis_sentinel_master"] == master.address
    assert client.post("/api/v1/users/logout", headers=headers).status_code == 204
    assert client.get("/api/v1/posts/get-posts", headers=headers).status_code == 401


def test_master_killed_under_load(tmp_path, topology_database, sentinel, capsys):
    old = sentinel.node(sentinel.current_master())

    def fault():
        old.kill()

    def recover():
        old.start()  # empty, and made a replica of the new master by the sentinels

    with app_instances(tmp_path, topology_database, sentinel.url) as bases:
        headers = register_users(bases[0], USERS, "sentinel")
        revoked = revoke_tokens(bases[1], 2, "sentinel-revoked")
        stats, _, during = load_through_faults(
            bases, headers, revoked, fault, recover, timing=(2, 5, 3)
        )
        new = sentinel.node(sentinel.current_master())
        replica_reads = reads(old)
    report(
        capsys,
        "\n"
        + stats.summary(f"Sentinel: master {old.address} killed, now {new.address}")
        + f"; {during} requests from the fault on",
    )
    assert new is not old
    assert during > 0
    assert stats.failed == 0, stats.summary("sentinel")
    assert stats.stale == 0, stats.summary("sentinel")
    assert replica_reads == 0  # the restarted old master, a replica, served no reads

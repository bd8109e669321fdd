"""The service on a Redis Cluster of three masters, each with a replica.

Every key of one user carries the user id as a hash tag, so a cached
get-posts is one MGET on the node that owns the user's slot. Under load
from two instances a master is killed and another frozen: replicas take
over, requests fall back to the database meanwhile, and nothing fails or
goes stale.
"""

import pytest

from ..support.auth import PASSWORD, AuthActions
from ..support.engines import RedisCluster, running
from ..support.load import register_users, report
from ..support.topology_checks import (
    app_instances,
    command_calls,
    load_through_faults,
    migrated_mariadb,
    revoke_tokens,
)

USERS = 6
# What counting the commands sends to each node itself.
OBSERVING = ("info", "hello", "client|setinfo")


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    yield from running(RedisCluster(tmp_path_factory.mktemp("redis-cluster")))


@pytest.fixture(scope="module")
def topology_database(tmp_path_factory):
    yield from migrated_mariadb(tmp_path_factory.mktemp("mariadb"))


@pytest.fixture
def cluster_app(make_app, redis_cluster):
    return make_app(REDIS_URL=redis_cluster.url)


def user_id(client, headers):
    return client.get("/api/v1/users/me", headers=headers).json["id"]


def test_the_whole_api_works_on_a_cluster(cluster_app):
    client = cluster_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    first = actions.add_post(headers, "one")
    actions.add_post(headers, "two")
    assert [p["text"] for p in actions.posts(headers)] == ["one", "two"]
    assert [p["text"] for p in actions.posts(headers)] == ["one", "two"]  # cached
    assert (
        client.delete(f"/api/v1/posts/delete-post/{first}", headers=headers).status_code
        == 204
    )
    assert [p["text"] for p in actions.posts(headers)] == ["two"]
    ready = client.get("/readyz").json
    assert ready["redis"] == "ok"
    assert ready["redis_cluster_state"] == "ok"
    assert client.post("/api/v1/users/logout", headers=headers).status_code == 204
    revoked = client.get("/api/v1/posts/get-posts", headers=headers)
    assert revoked.status_code == 401


def test_a_cached_hit_is_one_mget_on_the_owning_node(cluster_app, redis_cluster):
    client = cluster_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "x")
    owner = redis_cluster.master_of(f"{{{user_id(client, headers)}}}")
    actions.posts(headers)  # warm
    masters = redis_cluster.masters()
    before = {node.port: command_calls(node) for node in masters}
    assert [p["text"] for p in actions.posts(headers)] == ["x"]
    after = {node.port: command_calls(node) for node in masters}
    sent = {
        port: {
            name: count - before[port].get(name, 0)
            for name, count in after[port].items()
            if count != before[port].get(name, 0)
        }
        for port in after
    }
    for commands in sent.values():
        for own in OBSERVING:
            commands.pop(own, None)
    assert sent.pop(owner.port) == {"mget": 1}
    assert all(not commands for commands in sent.values()), sent


def test_failover_under_load_loses_and_stales_nothing(
    tmp_path, topology_database, redis_cluster, capsys
):
    killed, frozen = redis_cluster.masters()[:2]

    def fault():
        killed.kill()
        frozen.freeze()

    def recover():
        frozen.thaw()
        killed.start()  # rejoins as a replica of its successor
        redis_cluster.wait_until_healthy()

    with app_instances(tmp_path, topology_database, redis_cluster.url) as bases:
        headers = register_users(bases[0], USERS, "cluster")
        revoked = revoke_tokens(bases[1], 2, "cluster-revoked")
        stats, _, during = load_through_faults(bases, headers, revoked, fault, recover)
    report(
        capsys,
        "\n"
        + stats.summary("Redis Cluster: a master killed, another frozen")
        + f"; {during} requests from the faults on",
    )
    assert during > 0
    assert stats.failed == 0, stats.summary("cluster")
    assert stats.stale == 0, stats.summary("cluster")


def test_login_failures_are_counted_and_given_back_on_a_cluster(
    make_app, redis_cluster, caplog
):
    app = make_app(REDIS_URL=redis_cluster.url, LOGIN_FAILURE_RATE_LIMIT="2/minute")
    client = app.test_client()
    AuthActions(client).register(email="counted@example.com")
    right = {"email": "counted@example.com", "password": PASSWORD}
    wrong = {"email": "counted@example.com", "password": "not the password"}
    # Each success gives back the failure it reserved.
    for _ in range(4):
        assert client.post("/api/v1/users/login", json=right).status_code == 200
    for _ in range(2):
        assert client.post("/api/v1/users/login", json=wrong).status_code == 401
    assert client.post("/api/v1/users/login", json=right).status_code == 429
    unavailable = [r for r in caplog.records if "throttle store" in r.getMessage()]
    assert not unavailable, "the counts fell back to memory"

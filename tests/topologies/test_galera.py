"""The service on a three-node MariaDB Galera cluster, one instance per node.

Any node takes writes. Two nodes committing the same email at once: one
commit is refused with 1213 and tried again, which answers the correct
400. Galera acknowledges a commit once every node has certified it but
applies it on the others a moment later, so a listing read through another
node right after a write may miss it; ``DATABASE_WSREP_SYNC_WAIT=1`` makes
the read wait for it. The tests measure both.

Each instance is configured by its own node's ``DATABASE_URL`` alone: no
``REDIS_KEY_PREFIX``. They share one cache namespace because it comes from
the identity stored in the database, which every node holds.
"""

import threading
from collections import Counter

import pytest
import requests
from sqlalchemy import create_engine, text

from ..support.auth import PASSWORD
from ..support.engines import GaleraCluster, running
from ..support.galera_proxy import GaleraProxy, rerouted_port, routed_port
from ..support.load import HANG, Stats, register_users, report, run_load
from ..support.servers import RedisServer, migrated_database
from ..support.topology_checks import app_instances, load_through_faults, revoke_tokens

USERS = 6
RACES = 30
ROUNDS = 25


@pytest.fixture(scope="module")
def galera():
    yield from running(GaleraCluster())


@pytest.fixture(scope="module")
def galera_urls(galera):
    """The database's URL on each node, migrated through the first."""
    migrated_database(galera, "galera")
    return [node.url("galera") for node in galera.nodes]


@pytest.fixture(scope="module")
def galera_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("galera-redis"))
    server.start()
    yield server.url
    server.stop()


def _register_at_once(bases, email):
    """The same registration through every base at the same moment."""
    barrier = threading.Barrier(len(bases))
    statuses = [None] * len(bases)

    def register(i):
        barrier.wait()
        statuses[i] = requests.post(
            bases[i] + "/api/v1/users/register",
            json={"email": email, "password": PASSWORD},
            timeout=HANG,
        ).status_code

    threads = [threading.Thread(target=register, args=(i,)) for i in range(len(bases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_one_email_registered_through_two_nodes_at_once(
    tmp_path, galera_urls, galera_redis, capsys
):
    outcomes = Counter()
    with (
        app_instances(tmp_path, galera_urls[0], galera_redis, count=1) as (first,),
        app_instances(tmp_path, galera_urls[1], galera_redis, count=1) as (second,),
    ):
        for n in range(RACES):
            statuses = _register_at_once([first, second], f"race{n}@example.com")
            outcomes[tuple(sorted(statuses))] += 1
    report(
        capsys,
        f"\nGalera: {RACES} races of one email through two nodes: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())),
    )
    assert set(outcomes) == {(201, 400)}, outcomes


def stored_texts(url, email_prefix):
    """How often each post text of the users with ``email_prefix`` is stored."""
    engine = create_engine(url)
    query = text(
        "SELECT posts.text FROM posts JOIN users ON users.id = posts.user_id"
        " WHERE users.email LIKE :prefix"
    )
    try:
        with engine.connect() as connection:
            rows = connection.scalars(query, {"prefix": email_prefix + "%"}).all()
    finally:
        engine.dispose()
    return Counter(rows)


@pytest.mark.parametrize("sync_wait", [None, 1])
def test_writes_through_one_node_read_through_another(
    tmp_path, galera_urls, galera_redis, sync_wait, capsys
):
    """Measured both ways; only with ``wsrep_sync_wait`` must nothing be stale."""
    env = {}
    if sync_wait is not None:
        env["DATABASE_WSREP_SYNC_WAIT"] = str(sync_wait)
    with (
        app_instances(tmp_path, galera_urls[0], galera_redis, count=1, **env) as a,
        app_instances(tmp_path, galera_urls[1], galera_redis, count=1, **env) as b,
    ):
        bases = a + b
        headers = register_users(bases[0], USERS, f"sync{sync_wait}-")
        stats = Stats()
        run_load(bases, headers, stats, rounds=ROUNDS)
    report(
        capsys,
        "\n" + stats.summary(f"Galera, wsrep_sync_wait={sync_wait or 0}"),
    )
    assert stats.failed == 0, stats.summary("galera")
    if sync_wait:
        assert stats.stale == 0, stats.summary("galera")


def test_a_node_killed_and_restarted_under_load(
    tmp_path, galera, galera_urls, galera_redis, capsys
):
    victim = galera.nodes[2]
    env = {"DATABASE_WSREP_SYNC_WAIT": "1"}
    with (
        app_instances(tmp_path, galera_urls[0], galera_redis, count=1, **env) as a,
        app_instances(tmp_path, galera_urls[2], galera_redis, count=1, **env) as c,
    ):
        bases = a + c
        headers = register_users(bases[0], USERS, "galera-kill")
        revoked = revoke_tokens(bases[0], 2, "galera-revoked")
        stats, writers, during = load_through_faults(
            bases,
            headers,
            revoked,
            victim.kill,
            victim.start,  # rejoins, and catches up from the others
            timing=(2, 3, 4),
            # The instance on the killed node cannot ask the database: a 503,
            # never the revoked token's way in.
            refusals=(401, 503),
        )
        races = Counter(
            tuple(sorted(_register_at_once(bases, f"after{n}@example.com")))
            for n in range(5)
        )
    stored = stored_texts(galera_urls[0], "galera-kill")
    acknowledged = [t for w in writers for t in w.present.values()]
    lost = [t for t in acknowledged if stored[t] == 0]
    duplicated = [t for t, n in stored.items() if n > 1]
    report(
        capsys,
        "\n"
        + stats.summary("Galera: a node killed and restarted")
        + f"; {during} requests from the fault on; {len(acknowledged)} "
        f"acknowledged posts, {len(lost)} lost, {len(duplicated)} duplicated; "
        f"email races after: {dict(races)}",
    )
    assert not lost
    assert not duplicated
    assert stats.stale == 0, stats.summary("galera")
    # Only the instance on the killed node may fail, and only with a 503.
    assert set(stats.statuses) <= {200, 204, 503}, stats.summary("galera")
    assert not stats.errors, stats.summary("galera")
    assert set(races) == {(201, 400)}, races


def stored_posts(url, email_prefix):
    """``{id: text}`` of the posts of the users with ``email_prefix``."""
    engine = create_engine(url)
    query = text(
        "SELECT posts.id, posts.text FROM posts JOIN users ON users.id = posts.user_id"
        " WHERE users.email LIKE :prefix"
    )
    try:
        with engine.connect() as connection:
            return dict(connection.execute(query, {"prefix": email_prefix + "%"}).all())
    finally:
        engine.dispose()


def acknowledged_and_stored(writers, url, email_prefix):
    """``(acknowledged, lost, duplicated)``: the posts whose add was answered
    200 and not deleted since ({id: text}), those of them not stored under
    their id, and the texts stored more than once."""
    acknowledged = {i: t for w in writers for i, t in w.present.items()}
    stored = stored_posts(url, email_prefix)
    lost = {i: t for i, t in acknowledged.items() if stored.get(i) != t}
    duplicated = [t for t, n in Counter(stored.values()).items() if n > 1]
    return acknowledged, lost, duplicated


def test_a_node_without_instances_killed_under_load_costs_no_request(
    tmp_path, galera, galera_urls, galera_redis, capsys
):
    """The survivors hold commits while they evict the silent node (about
    evs.suspect_timeout); the driver's timeouts outlast that, so requests
    caught in it are slower, not failed, and adds tried again after a lost
    commit store their post once."""
    victim = galera.nodes[2]
    env = {"DATABASE_WSREP_SYNC_WAIT": "1"}
    with (
        app_instances(tmp_path, galera_urls[0], galera_redis, count=1, **env) as a,
        app_instances(tmp_path, galera_urls[1], galera_redis, count=1, **env) as b,
    ):
        bases = a + b
        headers = register_users(bases[0], USERS, "galera-third")
        revoked = revoke_tokens(bases[0], 2, "galera-third-revoked")
        stats, writers, during = load_through_faults(
            bases,
            headers,
            revoked,
            victim.kill,
            victim.start,
            # Past the eviction (about 6 s) before the node comes back.
            timing=(2, 9, 3),
            keyed=True,
        )
    acknowledged, lost, duplicated = acknowledged_and_stored(
        writers, galera_urls[0], "galera-third"
    )
    report(
        capsys,
        "\n"
        + stats.summary("Galera: a node without instances killed (kill -9)")
        + f"; {during} requests from the fault on; {len(acknowledged)} "
        f"acknowledged posts, {len(lost)} lost, {len(duplicated)} duplicated",
    )
    assert stats.failed == 0, stats.summary("galera")
    assert not stats.bad_bodies
    assert not lost
    assert not duplicated
    assert stats.stale == 0, stats.summary("galera")


@pytest.fixture
def galera_proxy(galera, galera_urls, tmp_path):
    """HAProxy in front of the nodes, set as docker-compose.galera.yml sets it
    (its settings and log in the test's directory)."""
    proxy = GaleraProxy(galera, tmp_path)
    proxy.start()
    yield proxy
    proxy.stop()


def test_the_node_behind_the_proxy_killed_under_load_costs_no_request(
    tmp_path, galera, galera_proxy, galera_redis, capsys
):
    """Both instances reach the cluster through the proxy, which routes every
    connection to the first node while it is synced. That node is killed:
    queries cut under a read run again, adds and deletes cut at their commit
    find out whether it happened, and new connections go to the next node."""
    victim = galera.nodes[0]
    assert routed_port(galera_proxy) == victim.port
    env = {"DATABASE_WSREP_SYNC_WAIT": "1"}
    url = galera_proxy.url("galera")
    with app_instances(tmp_path, url, galera_redis, count=2, **env) as bases:
        headers = register_users(bases[0], USERS, "galera-proxied")
        revoked = revoke_tokens(bases[0], 2, "galera-proxied-revoked")

        def kill():
            victim.kill()
            routed["killed"] = rerouted_port(galera_proxy)

        routed = {}
        stats, writers, during = load_through_faults(
            bases,
            headers,
            revoked,
            kill,
            # Back only after the load: the node it would copy its state
            # from is desynced meanwhile, and the proxy would move again.
            lambda: None,
            timing=(2, 9, 3),
            keyed=True,
        )
    acknowledged, lost, duplicated = acknowledged_and_stored(
        writers, galera.nodes[1].url("galera"), "galera-proxied"
    )
    victim.start()
    report(
        capsys,
        "\n"
        + stats.summary("Galera through HAProxy: the routed node killed (kill -9)")
        + f"; {during} requests from the fault on; {len(acknowledged)} "
        f"acknowledged posts, {len(lost)} lost, {len(duplicated)} duplicated",
    )
    assert routed["killed"] != victim.port
    assert stats.failed == 0, stats.summary("galera")
    assert not stats.bad_bodies
    assert not lost
    assert not duplicated
    assert stats.stale == 0, stats.summary("galera")

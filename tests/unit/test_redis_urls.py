"""Redis URLs for every topology: parsing, and apps that start without Redis."""

import time

import pytest

import config as settings
from postservice.cache.clients import (
    TLS,
    RedisURLError,
    connect,
    limits_storage,
    parse_url,
)

from ..support.auth import AuthActions
from ..support.processes import free_port

UNREACHABLE = {
    "cluster": lambda: (
        f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    ),
    "sentinel": lambda: f"redis+sentinel://127.0.0.1:{free_port()}/postservice?db=2",
    "single": lambda: f"redis://127.0.0.1:{free_port()}/0",
}


def test_cluster_url_lists_its_seed_nodes():
    parsed = parse_url("redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7001")
    assert parsed.hosts == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert parsed.password == "s3cret"
    assert not parsed.tls
    assert parse_url("rediss+cluster://h:1").tls


def test_sentinel_url_takes_db_and_passwords_as_options():
    parsed = parse_url(
        "redis+sentinel://s1:26379,s2:26379/mymaster"
        "?db=3&password=pw&sentinel_password=spw"
    )
    assert parsed.hosts == [("s1", 26379), ("s2", 26379)]
    assert parsed.service == "mymaster"
    assert (parsed.db, parsed.password, parsed.sentinel_password) == (3, "pw", "spw")


def test_throttle_counters_behind_sentinel_speak_tls_as_the_cache_does():
    """limits knows no ``rediss+sentinel``; the storage gets TLS as options.

    Neither client contacts a server until it is used.
    """
    url = "rediss+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster?db=3"
    tls = TLS(ca_certs="ca.pem", certfile="client.pem", keyfile="client.key")
    storage = limits_storage(url, timeout=0.2, key_prefix="p", tls=tls)
    cache = connect(url, timeout=0.2, tls=tls)
    files = {"ssl_ca_certs": "ca.pem", "ssl_certfile": "client.pem"}
    for sentinel in (storage.sentinel, cache.sentinel):
        assert sentinel.sentinel_kwargs["ssl"] is True
        assert files.items() <= sentinel.sentinel_kwargs.items()
    counters, listings = storage.storage.connection_pool, cache.client.connection_pool
    assert counters.connection_class is listings.connection_class
    assert files.items() <= counters.connection_kwargs.items()
    assert counters.connection_kwargs["db"] == 3


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379/mymaster/3",  # a db in the path
        "redis+sentinel://s1:26379",  # no service
        "redis+cluster://h1:7000?db=1",  # a cluster has only db 0
        "redis+cluster://h1",  # no port
        "redis+cluster://",
        "redis+sentinel://s1:26379/m?db=x",
        "memcached://h:1",
    ],
)
def test_bad_urls_are_refused(url):
    with pytest.raises(RedisURLError):
        parse_url(url)


def test_a_bad_redis_url_stops_the_app_with_one_line(make_app):
    with pytest.raises(settings.ConfigError) as raised:
        make_app(REDIS_URL="redis+sentinel://127.0.0.1:1/mymaster/3")
    assert "REDIS_URL" in str(raised.value)


@pytest.mark.parametrize("topology", sorted(UNREACHABLE))
def test_app_starts_and_serves_while_redis_is_unreachable(make_app, topology):
    app = make_app(REDIS_URL=UNREACHABLE[topology]())
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "kept in the database")
    assert [p["text"] for p in actions.posts(headers)] == ["kept in the database"]
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 2
    assert response.status_code == 200
    assert response.json["status"] == "degraded"
    assert response.json["redis"] == "unavailable"
    # The database owns revocations: a logout holds without Redis.
    assert client.post("/api/v1/users/logout", headers=headers).status_code == 204
    assert client.get("/api/v1/posts/get-posts", headers=headers).status_code == 401

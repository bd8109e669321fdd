"""The service on a Redis that speaks only TLS and wants a client certificate.

``REDIS_SSL_CA_CERTS``, ``REDIS_SSL_CERTFILE`` and ``REDIS_SSL_KEYFILE``
reach every client the service builds: the cache, the verdicts on tokens,
the throttle counters, ``/readyz`` and ``tokens import-legacy``. With
settings the server refuses, every request is served from the database.
"""

import secrets

import pytest
import requests
from flask_jwt_extended import decode_token

from postservice.posts.cache import listing_format

from ..support.auth import PASSWORD, AuthActions
from ..support.engines import running
from ..support.servers import (
    AppInstance,
    TLSRedisServer,
    certificate_authority,
    issue_certificates,
)
from ..support.sql import executed_sql

GET_POSTS = "/api/v1/posts/get-posts"
LOGIN = "/api/v1/users/login"
LOGOUT = "/api/v1/users/logout"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return issue_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory, certificates):
    workdir = tmp_path_factory.mktemp("redis-tls")
    yield from running(TLSRedisServer(workdir, certificates))


def tls_settings(certificates):
    return {
        "REDIS_SSL_CA_CERTS": str(certificates.ca),
        "REDIS_SSL_CERTFILE": str(certificates.client_cert),
        "REDIS_SSL_KEYFILE": str(certificates.client_key),
    }


@pytest.fixture
def tls_app(make_app, tls_redis, certificates):
    """An app of its own key prefix on the TLS Redis, with the right files."""

    def make(**settings):
        return make_app(
            **{
                "REDIS_URL": tls_redis.url,
                "REDIS_KEY_PREFIX": "tls-" + secrets.token_hex(6),
                **tls_settings(certificates),
                **settings,
            }
        )

    return make


def mget_calls(server):
    stats = server.client().info("commandstats")
    return stats.get("cmdstat_mget", {}).get("calls", 0)


def keys(server, pattern):
    return sorted(k.decode() for k in server.client().scan_iter(match=pattern))


def texts(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    return [post["text"] for post in response.json]


def test_the_api_on_a_tls_redis(tls_app, tls_redis, caplog):
    app = tls_app()
    prefix = app.config["REDIS_KEY_PREFIX"]
    client = app.test_client()
    actions = AuthActions(client)
    actions.register(email="tls@example.com")
    login = client.post(LOGIN, json={"email": "tls@example.com", "password": PASSWORD})
    assert login.status_code == 200, login.get_data(as_text=True)
    headers = {"Authorization": "Bearer " + login.json["access_token"]}
    actions.add_post(headers, "over TLS")
    miss = client.get(GET_POSTS, headers=headers)
    assert texts(miss) == ["over TLS"]

    before = mget_calls(tls_redis)
    with executed_sql(app) as executed:
        hit = client.get(GET_POSTS, headers=headers)
    assert executed == []  # the listing and the token's verdict came from Redis
    assert hit.data == miss.data
    assert mget_calls(tls_redis) == before + 1
    uid = client.get("/api/v1/users/me", headers=headers).json["id"]
    entry = tls_redis.client().get(f"{prefix}:posts:{{{uid}}}:list:{listing_format()}")
    assert entry.endswith(b"\n" + hit.data)

    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["redis"] == "ok"
    assert ready.json["status"] == "ok"

    # The counters of register and login went to the TLS Redis too.
    assert keys(tls_redis, f"{prefix}:throttle:*")
    assert not [r for r in caplog.records if "throttle store" in r.getMessage()]

    assert client.post(LOGOUT, headers=headers).status_code == 204
    assert client.get(GET_POSTS, headers=headers).status_code == 401


def test_throttle_counts_are_shared_through_the_tls_redis(tls_app):
    """Two instances count together: the counts are not in either process."""
    one = tls_app(LOGIN_RATE_LIMIT="2/minute")
    other = tls_app(
        LOGIN_RATE_LIMIT="2/minute", REDIS_KEY_PREFIX=one.config["REDIS_KEY_PREFIX"]
    )
    credentials = {"email": "nobody@example.com", "password": PASSWORD}
    for _ in range(2):
        assert one.test_client().post(LOGIN, json=credentials).status_code == 404
    throttled = other.test_client().post(LOGIN, json=credentials)
    assert throttled.status_code == 429


def test_import_legacy_reads_the_tls_redis(tls_app, tls_redis):
    app = tls_app()
    headers = AuthActions(app.test_client()).register()
    with app.app_context():
        jti = decode_token(headers["Authorization"].split()[1])["jti"]
    tls_redis.client().set(f"postservice:revoked:{jti}", b"1", ex=600)
    try:
        result = app.test_cli_runner().invoke(args=["tokens", "import-legacy"])
    finally:
        tls_redis.client().delete(f"postservice:revoked:{jti}")
    assert result.exit_code == 0, result.output
    assert "imported 1 " in result.output
    assert app.test_client().get(GET_POSTS, headers=headers).status_code == 401


@pytest.fixture(
    params=[
        "a CA that did not sign the server",
        "no client certificate",
        "a name the server's certificate does not hold",
    ]
)
def refused_settings(request, tmp_path, tls_redis, certificates):
    """Settings the server or the client refuses the TLS handshake with."""
    settings = {"REDIS_URL": tls_redis.url, **tls_settings(certificates)}
    if request.param == "no client certificate":
        del settings["REDIS_SSL_CERTFILE"], settings["REDIS_SSL_KEYFILE"]
    elif request.param == "a CA that did not sign the server":
        other_ca, _ = certificate_authority(tmp_path, "other-ca")
        settings["REDIS_SSL_CA_CERTS"] = str(other_ca)
    else:  # the certificate names 127.0.0.1 only
        settings["REDIS_URL"] = f"rediss://localhost:{tls_redis.port}/0"
    return settings


def test_refused_tls_serves_from_the_database(
    make_app, database_url, tls_redis, refused_settings
):
    prefix = "tls-refused-" + secrets.token_hex(6)
    app = make_app(
        REDIS_KEY_PREFIX=prefix, LOGIN_RATE_LIMIT="3/minute", **refused_settings
    )
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register(email="refused@example.com")
    actions.add_post(headers, "from the database")
    for _ in range(2):
        assert texts(client.get(GET_POSTS, headers=headers)) == ["from the database"]

    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["database"] == "ok"
    assert ready.json["redis"] == "unavailable"
    assert ready.json["status"] == "degraded"

    # The database decides on tokens, and the limits hold, counted in memory.
    assert client.post(LOGOUT, headers=headers).status_code == 204
    assert client.get(GET_POSTS, headers=headers).status_code == 401
    credentials = {"email": "refused@example.com", "password": PASSWORD}
    for _ in range(3):
        assert client.post(LOGIN, json=credentials).status_code == 200
    assert client.post(LOGIN, json=credentials).status_code == 429
    assert keys(tls_redis, f"{prefix}:*") == []


def test_the_service_takes_the_tls_files_from_its_environment(
    tmp_path, database_url, tls_redis, certificates
):
    prefix = "tls-env-" + secrets.token_hex(6)
    instance = AppInstance(
        tmp_path,
        database_url,
        tls_redis.url,
        REDIS_KEY_PREFIX=prefix,
        **tls_settings(certificates),
    )
    try:
        base = instance.start()
        ready = requests.get(base + "/readyz", timeout=5)
        assert ready.status_code == 200
        assert ready.json()["redis"] == "ok", instance.log_tail()
        register = requests.post(
            base + "/api/v1/users/register",
            json={"email": "env@example.com", "password": PASSWORD},
            timeout=10,
        )
        assert register.status_code == 201, register.text
        headers = {"Authorization": "Bearer " + register.json()["access_token"]}
        for _ in range(2):
            response = requests.get(base + GET_POSTS, headers=headers, timeout=5)
            assert response.status_code == 200
        assert keys(tls_redis, f"{prefix}:posts:*")
        assert keys(tls_redis, f"{prefix}:throttle:*")
    finally:
        instance.stop()

"""Instances of one deployment: one cache namespace whatever host each
reaches the database by, and changes that hold on every instance within
seconds whatever the instance that made them can reach.

Each instance is the production server (``AppInstance``) on the test
MariaDB and Redis, configured only by its own ``DATABASE_URL`` and
``REDIS_URL``: no ``REDIS_KEY_PREFIX``. The tests of instances need MariaDB (marked
``mysql``).
"""

import socket
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from flask_migrate import upgrade

from postservice.cache import health as cache_health
from postservice.cache import namespace

from ..support.auth import PASSWORD
from ..support.load import HANG
from ..support.proxy import SilenceableProxy
from ..support.servers import AppInstance
from ..support.settings import require

API = "/api/v1"
# The promise: a change answered 2xx holds on every instance within this.
WITHIN = 2.0


@pytest.fixture
def mariadb_url(database_url):
    return require(
        database_url if database_url.startswith("mysql") else None,
        "TEST_DATABASE_URL",
        "instances reach one MariaDB database by different hosts",
    )


@pytest.fixture
def start(tmp_path):
    started = []

    def start(database_url, redis_url):
        instance = AppInstance(tmp_path, database_url, redis_url, threads=4)
        started.append(instance)
        instance.start()
        return instance

    yield start
    for instance in started:
        instance.stop()


def with_host(url, host):
    """``url`` reaching the same server by ``host``."""
    parts = urlsplit(url)
    netloc = parts.netloc.replace(parts.hostname, host, 1)
    return urlunsplit(parts._replace(netloc=netloc))


def call(instance, method, path, token=None, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(
        method, instance.base + API + path, headers=headers, timeout=HANG, **kwargs
    )


def register(instance, email):
    response = call(
        instance, "post", "/users/register", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


def add_post(instance, token, text):
    response = call(instance, "post", "/posts/add-post", token, json={"text": text})
    assert response.status_code == 200, response.text
    return response.json()["PostID"]


def texts(instance, token):
    response = call(instance, "get", "/posts/get-posts", token)
    assert response.status_code == 200, response.text
    return [post["text"] for post in response.json()]


def warm(instance, token):
    """The token's verdict and the listing cached by ``instance``."""
    for _ in range(2):
        assert call(instance, "get", "/users/me", token).status_code == 200
        texts(instance, token)


@pytest.mark.mysql
def test_instances_reaching_the_database_by_different_hosts_share_the_cache(
    mariadb_url, real_redis_url, start
):
    host = urlsplit(mariadb_url).hostname
    other = "localhost" if host == "127.0.0.1" else "127.0.0.1"
    a = start(mariadb_url, real_redis_url)
    b = start(with_host(mariadb_url, other), real_redis_url)
    token = register(a, "hosts@example.com")
    first = add_post(a, token, "first")
    add_post(a, token, "second")
    warm(b, token)
    assert texts(b, token) == ["first", "second"]

    assert call(a, "delete", f"/posts/delete-post/{first}", token).status_code == 204
    assert texts(b, token) == ["second"]
    assert call(a, "post", "/users/logout", token).status_code == 204
    assert call(b, "get", "/users/me", token).status_code == 401


@pytest.fixture
def silenceable_redis(real_redis_url):
    """The test Redis behind a proxy that can swallow its packets."""
    parts = urlsplit(real_redis_url)
    proxy = SilenceableProxy(parts.hostname, parts.port or 6379)
    yield proxy, proxy.url(path=parts.path or "/0")
    proxy.close()


@pytest.mark.mysql
def test_changes_through_an_instance_whose_redis_went_silent_hold_everywhere(
    mariadb_url, real_redis_url, silenceable_redis, start
):
    proxy, through_proxy = silenceable_redis
    a = start(mariadb_url, through_proxy)
    b = start(mariadb_url, real_redis_url)
    logged_out = register(b, "logout@example.com")
    new_password = register(b, "password@example.com")
    deleted = register(b, "deleted@example.com")
    add_post(b, deleted, "gone with the account")
    writer = register(b, "writer@example.com")
    old = add_post(b, writer, "old")
    for token in (logged_out, new_password, deleted, writer):
        warm(a, token)
        warm(b, token)

    proxy.silence()
    assert call(a, "post", "/users/logout", logged_out).status_code == 204
    changed = call(
        a,
        "post",
        "/users/change-password",
        new_password,
        json={"current_password": PASSWORD, "new_password": PASSWORD + "!"},
    )
    assert changed.status_code == 200, changed.text
    gone = call(a, "delete", "/users/me", deleted, json={"password": PASSWORD})
    assert gone.status_code == 204, gone.text
    add_post(a, writer, "new")
    assert call(a, "delete", f"/posts/delete-post/{old}", writer).status_code == 204
    time.sleep(WITHIN)

    for instance in (b, a):
        assert call(instance, "get", "/users/me", logged_out).status_code == 401
        refused = call(
            instance, "post", "/posts/add-post", new_password, json={"text": "x"}
        )
        assert refused.status_code == 401, refused.text
        assert call(instance, "get", "/posts/get-posts", deleted).status_code == 401
        assert texts(instance, writer) == ["new"]


@pytest.mark.mysql
def test_a_logout_holds_after_the_instance_that_made_it_is_gone(
    mariadb_url, real_redis_url, silenceable_redis, start
):
    proxy, through_proxy = silenceable_redis
    a = start(mariadb_url, through_proxy)
    b = start(mariadb_url, real_redis_url)
    token = register(b, "killed@example.com")
    warm(b, token)
    proxy.silence()
    assert call(a, "post", "/users/logout", token).status_code == 204
    a.stop()  # SIGKILL: nothing it kept in memory survives
    time.sleep(WITHIN)
    assert call(b, "get", "/users/me", token).status_code == 401


def test_an_app_starts_before_its_database_is_migrated(
    make_app, real_redis_url, tmp_path, monkeypatch
):
    """It answers from the database until it can read its identity; a new
    database gets a namespace of its own, even under the same URL."""
    monkeypatch.setattr(namespace, "RETRY_AFTER", 0)
    monkeypatch.setattr(cache_health, "RETRY_AFTER", 0)
    path = tmp_path / "fresh.sqlite"
    url = f"sqlite:///{path}"
    prefixes = []
    for _ in range(2):
        path.unlink(missing_ok=True)
        app = make_app(SQLALCHEMY_DATABASE_URI=url, REDIS_URL=real_redis_url)
        assert app.config["REDIS_KEY_PREFIX"] is None
        with app.app_context():
            upgrade()
        client = app.test_client()
        response = client.post(
            API + "/users/register",
            json={"email": "fresh@example.com", "password": PASSWORD},
        )
        assert response.status_code == 201, response.json
        headers = {"Authorization": "Bearer " + response.json["access_token"]}
        assert client.get(API + "/posts/get-posts", headers=headers).json == []
        prefixes.append(app.config["REDIS_KEY_PREFIX"])
    assert all(prefix.startswith("ps-") for prefix in prefixes)
    assert prefixes[0] != prefixes[1]


@pytest.fixture
def silent_redis():
    """A port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


def test_a_change_neither_redis_nor_the_database_took_is_not_confirmed(
    make_app, silent_redis, tmp_path
):
    """A database before migration 0010 (at 0009) has nowhere to announce it: the post
    is stored, and the client is told it is not yet in force everywhere."""
    url = f"sqlite:///{tmp_path / 'at-0009.sqlite'}"
    app = make_app(SQLALCHEMY_DATABASE_URI=url, REDIS_URL=silent_redis)
    with app.app_context():
        upgrade(revision="0009")
    client = app.test_client()
    response = client.post(
        API + "/users/register",
        json={"email": "early@example.com", "password": PASSWORD},
    )
    assert response.status_code == 201, response.json
    headers = {"Authorization": "Bearer " + response.json["access_token"]}
    response = client.post(
        API + "/posts/add-post", json={"text": "kept"}, headers=headers
    )
    assert response.status_code == 503, response.json
    assert response.json == {
        "detail": "Stored, but not yet in force on every instance; try again"
    }
    assert response.headers["Retry-After"] == "1"
    listing = client.get(API + "/posts/get-posts", headers=headers)
    assert [post["text"] for post in listing.json] == ["kept"]

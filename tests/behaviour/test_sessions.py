"""Sessions held by the database: reuse of a refresh token revokes exactly one
session, two refreshes at once both succeed, and Redis flushed, restarted or
stopped changes no verdict."""

import threading
import time

import jwt
import pytest
import redis
import requests
from sqlalchemy import func, select

from postservice.extensions import db
from postservice.models import CacheAnnouncement

from ..support.auth import PASSWORD
from ..support.servers import RedisServer
from ..support.settings import TEST_DATABASE_URL, require
from ..support.sql import executed_sql

REGISTER = "/api/v1/users/register"
LOGIN = "/api/v1/users/login"
REFRESH = "/api/v1/users/refresh"
ME = "/api/v1/users/me"
SESSIONS = "/api/v1/users/me/sessions"
GET_POSTS = "/api/v1/posts/get-posts"
EMAIL = "holder@example.com"
REVOKED = {"detail": "Token has been revoked"}


def bearer(pair):
    return {"Authorization": "Bearer " + pair["access_token"]}


def sid(pair):
    return jwt.decode(pair["access_token"], options={"verify_signature": False})["sid"]


def register(client):
    response = client.post(REGISTER, json={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 201, response.json
    return response.json


def login(client):
    response = client.post(LOGIN, json={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 200, response.json
    return response.json


def refreshed(client, token):
    response = client.post(REFRESH, json={"refresh_token": token})
    assert response.status_code == 200, response.json
    return response.json


def warm(client, pair):
    """Cache the listing and the token's verdict."""
    for _ in range(2):
        response = client.get(GET_POSTS, headers=bearer(pair))
        assert response.status_code == 200, response.json
        response.get_data()


def assert_refused(client, pair):
    for path in (ME, GET_POSTS, GET_POSTS, SESSIONS):
        response = client.get(path, headers=bearer(pair))
        assert response.status_code == 401, (path, response.json)
        assert response.json == REVOKED
    response = client.post(REFRESH, json={"refresh_token": pair["refresh_token"]})
    assert response.status_code == 401, response.json


def assert_works(client, pair):
    for path in (ME, GET_POSTS, GET_POSTS):
        response = client.get(path, headers=bearer(pair))
        assert response.status_code == 200, (path, response.json)


def test_reuse_after_the_interval_revokes_exactly_that_session(make_app, redis_url):
    app = make_app(REFRESH_REUSE_INTERVAL=1)
    client = app.test_client()
    stolen = register(client)
    other = login(client)
    newest = refreshed(client, stolen["refresh_token"])
    warm(client, newest)
    warm(client, other)
    time.sleep(2.1)  # the interval is over: the rotated token is a stolen copy
    response = client.post(REFRESH, json={"refresh_token": stolen["refresh_token"]})
    assert response.status_code == 401, response.json
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json == {"detail": "Refresh token reused; the session is revoked"}
    # The whole session: its newest refresh token and every access token.
    assert_refused(client, newest)
    assert_refused(client, stolen)
    # The account's other session is untouched.
    assert_works(client, other)
    assert [s["id"] for s in client.get(SESSIONS, headers=bearer(other)).json] == [
        sid(other)
    ]
    refreshed(client, other["refresh_token"])


def test_any_older_token_of_the_session_revokes_it(client):
    first = register(client)
    second = refreshed(client, first["refresh_token"])
    third = refreshed(client, second["refresh_token"])
    # Two rotations ago: never answered again, whatever the interval.
    response = client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    assert response.status_code == 401, response.json
    assert_refused(client, third)


@pytest.fixture
def mysql_url(database_url):
    require(TEST_DATABASE_URL, "TEST_DATABASE_URL", "it needs InnoDB's row locks")
    return database_url


@pytest.mark.mysql
def test_concurrent_refreshes_within_the_interval_both_succeed(mysql_url, start_server):
    base = start_server(threads=8)
    response = requests.post(
        base + REGISTER, json={"email": EMAIL, "password": PASSWORD}, timeout=30
    )
    assert response.status_code == 201, response.text
    token = response.json()["refresh_token"]
    for round_ in range(10):
        barrier = threading.Barrier(2, timeout=30)
        answers = [None, None]

        def send(i, token=token, barrier=barrier, answers=answers):
            barrier.wait()
            answers[i] = requests.post(
                base + REFRESH, json={"refresh_token": token}, timeout=30
            )

        threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), f"round {round_}: a refresh never returned"
        for answer in answers:
            assert answer.status_code == 200, (round_, answer.text)
        first, second = (answer.json() for answer in answers)
        assert first["refresh_token"] == second["refresh_token"], round_
        assert first["refresh_token"] != token
        token = first["refresh_token"]
    # The session lives on: the last token refreshes, once.
    response = requests.post(base + REFRESH, json={"refresh_token": token}, timeout=30)
    assert response.status_code == 200, response.text
    sessions = requests.get(
        base + SESSIONS, headers=bearer(response.json()), timeout=30
    ).json()
    assert len(sessions) == 1


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_ended_session_stays_ended_through_flush_and_restart(make_app, own_redis):
    app = make_app(REDIS_URL=own_redis.url)
    client = app.test_client()
    gone = register(client)
    kept = login(client)
    warm(client, gone)
    warm(client, kept)
    response = client.delete(f"{SESSIONS}/{sid(gone)}", headers=bearer(kept))
    assert response.status_code == 204
    assert_refused(client, gone)
    redis.Redis.from_url(own_redis.url).flushall()
    assert_refused(client, gone)
    assert_works(client, kept)
    own_redis.kill()
    own_redis.start()
    assert_refused(client, gone)
    assert_works(client, kept)


def test_with_redis_stopped_the_database_decides_sessions(make_app, own_redis):
    app = make_app(REDIS_URL=own_redis.url)
    client = app.test_client()
    first = register(client)
    second = login(client)
    warm(client, first)
    warm(client, second)
    own_redis.kill()
    # Refresh, listing and ending sessions need no Redis.
    newer = refreshed(client, second["refresh_token"])
    assert len(client.get(SESSIONS, headers=bearer(newer)).json) == 2
    response = client.delete(f"{SESSIONS}/{sid(first)}", headers=bearer(newer))
    assert response.status_code == 204
    assert_refused(client, first)
    assert_works(client, newer)
    own_redis.start()
    # Verdicts cached before the stop are not served: the change is owed.
    assert_refused(client, first)
    assert_works(client, newer)


def test_suspension_holds_over_cached_verdicts(redis_app):
    client = redis_app.test_client()
    pair = register(client)
    warm(client, pair)
    runner = redis_app.test_cli_runner()
    assert runner.invoke(args=["users", "suspend", EMAIL]).exit_code == 0
    for _ in range(2):
        response = client.get(GET_POSTS, headers=bearer(pair))
        assert response.status_code == 403, response.json
        assert response.json == {"detail": "Account suspended"}
    assert runner.invoke(args=["users", "unsuspend", EMAIL]).exit_code == 0
    assert_works(client, pair)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["users", "suspend", EMAIL], (403, {"detail": "Account suspended"})),
        (["users", "revoke", EMAIL], (401, REVOKED)),
        (
            ["users", "delete", EMAIL],
            (401, {"detail": "Could not validate credentials"}),
        ),
    ],
)
def test_a_command_reaches_a_server_without_redis(make_app, command, expected):
    """Without Redis each process caches for itself, and a command runs in
    a process of its own (here an app of its own, with its own in-process
    cache): its change is announced in the database, where the server
    looks, and holds there within ``TRUST_FOR`` (1.5 s)."""
    server = make_app(REDIS_URL=None)
    client = server.test_client()
    pair = register(client)
    warm(client, pair)  # the verdict and the listing are in the server's cache
    result = make_app(REDIS_URL=None).test_cli_runner().invoke(args=command)
    assert result.exit_code == 0, result.output
    started = time.monotonic()
    while True:
        response = client.get(GET_POSTS, headers=bearer(pair))
        if response.status_code != 200 or time.monotonic() - started > 5:
            break
        time.sleep(0.05)
    assert (response.status_code, response.json) == expected
    assert time.monotonic() - started < 1.5 + 0.5
    # Delivered to that one process's cache, and left for any instance that
    # shares Redis on this database.
    with server.app_context():
        left = db.session.scalar(select(func.count()).select_from(CacheAnnouncement))
        db.session.rollback()
    assert left >= 1


def test_a_cached_get_posts_with_a_live_session_costs_no_sql(redis_app):
    client = redis_app.test_client()
    pair = refreshed(redis_app.test_client(), register(client)["refresh_token"])
    warm(client, pair)
    with executed_sql(redis_app) as statements:
        response = client.get(GET_POSTS, headers=bearer(pair))
        assert response.status_code == 200
        response.get_data()
    assert statements == []

"""Revocations that cannot be lost: the database decides, Redis only remembers.

Each test here once let a logged-out or void token back in: eviction, a
flush, a stopped Redis, a deleted account, a changed password.
"""

import time

import pytest
import redis
from flask_jwt_extended import decode_token
from sqlalchemy import func, select

from postservice.auth import revocation
from postservice.extensions import db
from postservice.models import Post, RevokedToken, UpgradeTask, User

from ..support.auth import PASSWORD, AuthActions
from ..support.servers import RedisServer
from ..support.sql import executed_sql

ME = "/api/v1/users/me"
LOGOUT = "/api/v1/users/logout"
LOGOUT_ALL = "/api/v1/users/logout-all"
CHANGE_PASSWORD = "/api/v1/users/change-password"
GET_POSTS = "/api/v1/posts/get-posts"
ADD_POST = "/api/v1/posts/add-post"


def login(client, email, password=PASSWORD, **kwargs):
    response = client.post(
        "/api/v1/users/login", json={"email": email, "password": password}, **kwargs
    )
    assert response.status_code == 200, response.json
    return {"Authorization": "Bearer " + response.json["access_token"]}


def assert_refused(client, headers, detail="Token has been revoked"):
    """The token is refused on every route, the cached listing's included."""
    for method, path, body in (
        ("get", ME, None),
        ("get", GET_POSTS, None),
        ("get", GET_POSTS, None),  # a second time: served from the cache if any
        ("post", ADD_POST, {"text": "should not be stored"}),
        ("delete", "/api/v1/posts/delete-post/1", None),
        ("post", LOGOUT_ALL, None),
    ):
        response = getattr(client, method)(path, headers=headers, json=body)
        assert response.status_code == 401, (path, response.json)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json == {"detail": detail}


def assert_works(client, headers):
    assert client.get(ME, headers=headers).status_code == 200
    assert client.get(GET_POSTS, headers=headers).status_code == 200


def warm(client, headers):
    """Cache the listing and the token's verdict."""
    for _ in range(2):
        response = client.get(GET_POSTS, headers=headers)
        assert response.status_code == 200
        response.get_data()  # a streamed listing is cached once read to its end


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
def any_cache_app(request, make_app):
    if request.param == "redis":
        return make_app(REDIS_URL=request.getfixturevalue("real_redis_url"))
    return make_app(REDIS_URL=None)


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(
        tmp_path, "--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis_app(make_app, own_redis):
    return make_app(REDIS_URL=own_redis.url)


def test_logout_holds_when_redis_evicts_everything(own_redis_app, own_redis):
    client = own_redis_app.test_client()
    actions = AuthActions(client)
    victim = actions.register()
    warm(client, victim)
    assert client.post(LOGOUT, headers=victim).status_code == 204
    assert_refused(client, victim)
    # Other accounts' 1 MiB listings push every key of the victim's out.
    server = redis.Redis.from_url(own_redis.url)
    # Each filler's listing, the post and its JSON (id, times), must stay
    # under POSTS_CACHE_MAX_BYTES (1 MiB) to be cached at all.
    big = "x" * (1024 * 1024 - 256)
    for _ in range(6):
        filler = actions.register()
        actions.add_post(filler, big)
        warm(client, filler)
    assert server.info("stats")["evicted_keys"] > 0
    assert_refused(client, victim)


def test_logout_holds_through_flushall_and_restart(own_redis_app, own_redis):
    client = own_redis_app.test_client()
    headers = AuthActions(client).register()
    warm(client, headers)
    assert client.post(LOGOUT, headers=headers).status_code == 204
    redis.Redis.from_url(own_redis.url).flushall()
    assert_refused(client, headers)
    own_redis.kill()
    own_redis.start()
    assert_refused(client, headers)


def test_with_redis_stopped_the_database_decides(own_redis_app, own_redis):
    client = own_redis_app.test_client()
    actions = AuthActions(client)
    before, during = actions.register(), actions.register()
    warm(client, before)
    warm(client, during)
    assert client.post(LOGOUT, headers=before).status_code == 204
    own_redis.kill()
    assert_refused(client, before)  # logged out while Redis was up
    assert_works(client, during)
    assert client.post(LOGOUT, headers=during).status_code == 204  # recorded
    assert_refused(client, during)
    own_redis.start()
    assert_refused(client, before)
    assert_refused(client, during)


def test_a_verdict_filled_before_a_logout_is_never_served(make_app, real_redis_url):
    """A reader that read "allowed" just before the logout committed stores
    it under the old generation: the next request must not accept it."""
    app = make_app(REDIS_URL=real_redis_url)
    client = app.test_client()
    headers = AuthActions(client).register()
    from postservice.auth import revocation

    original = revocation.verdict_from_database
    raced = []

    def read_then_logout(user_id, payload):
        verdict = original(user_id, payload)  # "allowed": not yet logged out
        if not raced:
            raced.append(True)
            other = app.test_client()
            assert other.post(LOGOUT, headers=headers).status_code == 204
        return verdict

    revocation.verdict_from_database = read_then_logout
    try:
        assert client.get(ME, headers=headers).status_code == 200  # the race
    finally:
        revocation.verdict_from_database = original
    assert_refused(client, headers)


def test_a_cached_verdict_costs_no_sql(make_app, real_redis_url):
    app = make_app(REDIS_URL=real_redis_url)
    client = app.test_client()
    headers = AuthActions(client).register()
    warm(client, headers)
    with executed_sql(app) as statements:
        for _ in range(5):
            assert client.get(GET_POSTS, headers=headers).status_code == 200
    assert statements == []


def test_logout_all_voids_every_token_of_the_account(any_cache_app):
    client = any_cache_app.test_client()
    first = AuthActions(client).register(email="many@example.com")
    second = login(client, "many@example.com")
    other = AuthActions(client).register(email="other@example.com")
    warm(client, first)
    warm(client, second)
    assert client.post(LOGOUT_ALL, headers=first).status_code == 204
    assert_refused(client, first)
    assert_refused(client, second)
    assert_works(client, other)
    assert_works(client, login(client, "many@example.com"))


def test_change_password_voids_older_tokens_on_every_instance(make_app, redis_url):
    one = make_app().test_client()
    two = make_app().test_client()
    old = AuthActions(one).register(email="pw@example.com")
    kept_elsewhere = login(two, "pw@example.com")
    warm(two, kept_elsewhere)
    response = one.post(
        CHANGE_PASSWORD,
        json={"current_password": PASSWORD, "new_password": "brand new password"},
        headers=old,
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert set(response.json) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
    }
    new = {"Authorization": "Bearer " + response.json["access_token"]}
    if redis_url:  # instances share their verdicts only through Redis
        assert_refused(two, kept_elsewhere)
    assert_refused(one, old)
    assert_works(one, new)
    assert_works(two, new)
    wrong = one.post(
        "/api/v1/users/login", json={"email": "pw@example.com", "password": PASSWORD}
    )
    assert wrong.status_code == 401
    login(two, "pw@example.com", "brand new password")


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (
            {"current_password": "wrong one", "new_password": "brand new password"},
            401,
            "Incorrect password",
        ),
        ({"current_password": PASSWORD, "new_password": "short"}, 422, "Invalid input"),
        (
            {"current_password": PASSWORD, "new_password": "é" * 37},
            422,
            "Invalid input",
        ),
        ({"new_password": "brand new password"}, 422, "Invalid input"),
    ],
    ids=["wrong-current", "too-short", "over-72-bytes", "missing-current"],
)
def test_change_password_refusals_change_nothing(app, client, body, status, detail):
    headers = AuthActions(client).register(email="keep@example.com")
    response = client.post(CHANGE_PASSWORD, json=body, headers=headers)
    assert response.status_code == status
    assert response.json["detail"] == detail
    assert_works(client, headers)
    login(client, "keep@example.com")


def test_delete_account_removes_everything_and_every_token(any_cache_app):
    app = any_cache_app
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register(email="gone@example.com")
    second = login(client, "gone@example.com")
    actions.add_post(headers, "a post to forget")
    warm(client, headers)
    warm(client, second)
    refused = client.delete(ME, json={"password": "wrong one"}, headers=headers)
    assert refused.status_code == 401
    assert refused.json == {"detail": "Incorrect password"}
    response = client.delete(ME, json={"password": PASSWORD}, headers=headers)
    assert response.status_code == 204
    assert response.data == b""
    assert_refused(client, headers, "Could not validate credentials")
    assert_refused(client, second, "Could not validate credentials")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 0
        assert db.session.scalar(select(func.count()).select_from(Post)) == 0
    # The email is free again, for a new account that sees nothing old.
    fresh = actions.register(email="gone@example.com")
    assert client.get(GET_POSTS, headers=fresh).json == []


def test_cli_delete_and_revoke_act_like_the_api(any_cache_app):
    app = any_cache_app
    client = app.test_client()
    runner = app.test_cli_runner()
    doomed = AuthActions(client).register(email="cli-gone@example.com")
    kicked = AuthActions(client).register(email="cli-kicked@example.com")
    warm(client, doomed)
    warm(client, kicked)

    result = runner.invoke(args=["users", "revoke", "CLI-Kicked@example.com"])
    assert result.exit_code == 0, result.output
    assert_refused(client, kicked)
    assert_works(client, login(client, "cli-kicked@example.com"))

    result = runner.invoke(args=["users", "delete", "cli-gone@example.com"])
    assert result.exit_code == 0, result.output
    assert_refused(client, doomed, "Could not validate credentials")

    missing = runner.invoke(args=["users", "delete", "nobody@example.com"])
    assert missing.exit_code == 1
    assert "no account" in missing.output


def test_a_token_whose_account_vanished_is_401_everywhere(any_cache_app):
    app = any_cache_app
    client = app.test_client()
    headers = AuthActions(client).register()
    with app.app_context():  # as an operator's SQL would, behind the app's back
        db.session.execute(db.delete(User))
        db.session.commit()
    assert_refused(client, headers, "Could not validate credentials")


def test_a_signed_token_for_no_account_is_401_everywhere(app, client):
    from flask_jwt_extended import create_access_token

    with app.app_context():
        token = create_access_token(identity="2147483000", additional_claims={"ver": 0})
    headers = {"Authorization": "Bearer " + token}
    assert_refused(client, headers, "Could not validate credentials")


def test_expired_revocations_are_purged(app, client):
    headers = AuthActions(client).register()
    assert client.post(LOGOUT, headers=headers).status_code == 204
    with app.app_context():
        jti = decode_token(headers["Authorization"].split()[1])["jti"]
        row = db.session.get(RevokedToken, jti)
        assert (
            row.expires_at == decode_token(headers["Authorization"].split()[1])["exp"]
        )
        db.session.add(RevokedToken(jti="old", user_id=None, expires_at=1))
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["tokens", "purge"])
    assert result.exit_code == 0
    assert "purged 1 " in result.output
    with app.app_context():
        assert db.session.get(RevokedToken, "old") is None
        assert db.session.get(RevokedToken, jti) is not None
    assert_refused(client, headers)


def test_revocations_of_the_old_layout_are_imported(make_app, real_redis_url):
    app = make_app(REDIS_URL=real_redis_url)
    client = app.test_client()
    headers = AuthActions(client).register()
    with app.app_context():
        jti = decode_token(headers["Authorization"].split()[1])["jti"]
    server = redis.Redis.from_url(real_redis_url)
    server.set(f"postservice:revoked:{jti}", b"1", ex=600)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["tokens", "import-legacy"])
    assert result.exit_code == 0, result.output
    assert "imported 1 " in result.output
    assert "imported 0 " in runner.invoke(args=["tokens", "import-legacy"]).output
    with app.app_context():
        row = db.session.get(RevokedToken, jti)
        assert 0 < row.expires_at - time.time() <= 601
        assert row.user_id is None  # the old layout did not say whose it was
        # Recorded: a later start may go on while Redis is down.
        assert db.session.get(UpgradeTask, "import-legacy") is not None
        assert not revocation.legacy_import_needed()
    assert_refused(client, headers)


def deployment(make_app, tmp_path, name, redis_url):
    """An app on a database of its own, as another deployment would be."""
    from flask_migrate import upgrade

    from postservice import create_app

    url = f"sqlite:///{tmp_path / (name + '.sqlite')}"
    with create_app({"MODE": "testing", "SQLALCHEMY_DATABASE_URI": url}).app_context():
        upgrade()
    return make_app(SQLALCHEMY_DATABASE_URI=url, REDIS_URL=redis_url)


def test_two_deployments_on_one_redis_database_never_meet(
    make_app, real_redis_url, tmp_path
):
    """Their user ids overlap; their keys must not."""
    one = deployment(make_app, tmp_path, "one", real_redis_url)
    two = deployment(make_app, tmp_path, "two", real_redis_url)
    assert one.config["REDIS_KEY_PREFIX"] != two.config["REDIS_KEY_PREFIX"]
    alice = AuthActions(one.test_client())
    mallory = AuthActions(two.test_client())
    alice_headers = alice.register(email="alice@example.com")
    mallory_headers = mallory.register(email="mallory@example.com")
    ids = {
        int(decode_token_in(app, headers)["sub"])
        for app, headers in ((one, alice_headers), (two, mallory_headers))
    }
    assert len(ids) == 1  # the same id in both
    alice.add_post(alice_headers, "alice's diary")
    assert alice.posts(alice_headers)[0]["text"] == "alice's diary"  # cached
    assert mallory.posts(mallory_headers) == []
    assert mallory.posts(mallory_headers) == []  # cached too, apart
    assert alice.posts(alice_headers)[0]["text"] == "alice's diary"
    # A logout in one deployment does not reach the other's token.
    assert one.test_client().post(LOGOUT, headers=alice_headers).status_code == 204
    assert two.test_client().get(ME, headers=mallory_headers).status_code == 200


def decode_token_in(app, headers):
    with app.app_context():
        return decode_token(headers["Authorization"].split()[1])


def test_a_new_post_does_not_send_the_next_token_check_to_the_database(
    make_app, real_redis_url
):
    app = make_app(REDIS_URL=real_redis_url)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    warm(client, headers)
    actions.add_post(headers, "one")
    with executed_sql(app) as statements:
        actions.add_post(headers, "two")
    # The INSERT and its COMMIT's work; no SELECT to decide on the token.
    assert not [s for _, s in statements if s.lstrip().upper().startswith("SELECT")]

"""The caller's account and logging out: /users/me and /users/logout."""

import logging

import pytest
from flask_jwt_extended import decode_token
from sqlalchemy import text

from postservice.extensions import db
from postservice.models import RevokedToken

from ..support.auth import PASSWORD, AuthActions

ME = "/api/v1/users/me"
LOGOUT = "/api/v1/users/logout"
PROTECTED = [
    ("get", ME),
    ("post", LOGOUT),
    ("post", "/api/v1/posts/add-post"),
    ("get", "/api/v1/posts/get-posts"),
    ("delete", "/api/v1/posts/delete-post/1"),
]


def login(client, email):
    response = client.post(
        "/api/v1/users/login", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 200
    return {"Authorization": "Bearer " + response.json["access_token"]}


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
def any_cache_app(request, make_app):
    if request.param == "redis":
        return make_app(REDIS_URL=request.getfixturevalue("real_redis_url"))
    return make_app(REDIS_URL=None)


def test_me_returns_the_callers_account(client, auth):
    headers = auth.register(email=" Someone@Example.com")
    response = client.get(ME, headers=headers)
    assert response.status_code == 200
    assert response.json["email"] == "someone@example.com"
    assert set(response.json) == {"id", "email", "email_verified"}
    assert response.json["email_verified"] is False
    with client.application.app_context():
        sub = decode_token(headers["Authorization"].split()[1])["sub"]
    assert response.json["id"] == int(sub)


def test_me_without_a_token_is_401(client):
    response = client.get(ME)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json == {"detail": "Not authenticated"}


def test_me_for_an_account_that_no_longer_exists_is_401(app, client, auth):
    headers = auth.register()
    with app.app_context():
        db.session.execute(text("DELETE FROM users"))
        db.session.commit()
    response = client.get(ME, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json == {"detail": "Could not validate credentials"}


def test_logout_revokes_only_the_presented_token(any_cache_app):
    client = any_cache_app.test_client()
    actions = AuthActions(client)
    first = actions.register(email="two-devices@example.com")
    second = login(client, "two-devices@example.com")
    actions.add_post(first, "kept")
    assert actions.posts(first)[0]["text"] == "kept"  # cached for the user

    response = client.post(LOGOUT, headers=first)
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers

    for method, path in PROTECTED:
        refused = getattr(client, method)(path, headers=first, json={"text": "x"})
        assert refused.status_code == 401, path
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert refused.json == {"detail": "Token has been revoked"}
    assert client.get(ME, headers=second).status_code == 200
    assert actions.posts(second)[0]["text"] == "kept"


def test_revocation_holds_on_every_instance_sharing_redis(make_app, real_redis_url):
    one = make_app(REDIS_URL=real_redis_url).test_client()
    other = make_app(REDIS_URL=real_redis_url).test_client()
    headers = AuthActions(one).register()
    assert other.get(ME, headers=headers).status_code == 200
    assert one.post(LOGOUT, headers=headers).status_code == 204
    assert other.get(ME, headers=headers).status_code == 401
    assert other.get("/api/v1/posts/get-posts", headers=headers).status_code == 401


def test_revocation_lives_as_long_as_the_token(make_app, real_redis_url):
    app = make_app(REDIS_URL=real_redis_url, JWT_ACCESS_TOKEN_EXPIRES=600)
    client = app.test_client()
    headers = AuthActions(client).register()
    with app.app_context():
        claims = decode_token(headers["Authorization"].split()[1])
    assert client.post(LOGOUT, headers=headers).status_code == 204
    with app.app_context():
        row = db.session.get(RevokedToken, claims["jti"])
        assert row.expires_at == claims["exp"]


def test_logout_without_redis_is_recorded_and_refused(make_app, caplog):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens on port 1
    client = app.test_client()
    caplog.set_level(logging.WARNING)
    headers = AuthActions(client).register()

    response = client.post(LOGOUT, headers=headers)
    assert response.status_code == 204
    # The database decides while Redis cannot: never "allowed by default".
    for _ in range(3):
        assert client.get(ME, headers=headers).status_code == 401
        posts = client.get("/api/v1/posts/get-posts", headers=headers)
        assert posts.status_code == 401
    warnings = [r for r in caplog.records if "cache unavailable" in r.getMessage()]
    assert len(warnings) == 1

"""Forgetting expired revocations, and only those.

A logout deletes the user's revocations whose tokens have expired anyway,
and ``flask tokens purge`` deletes everyone's. A revocation of a token
that is still valid must survive both, or the token opens the door again.
Redis caches each token's verdict; every logout replaces the user's tokens
generation, so after the second logout below the database decides.
"""

import time

import pytest
from flask_jwt_extended import decode_token
from sqlalchemy import select

from postservice.auth import revocation
from postservice.extensions import db
from postservice.models import RevokedToken

from .conftest import PASSWORD, AuthActions

ME = "/api/v1/users/me"
LOGOUT = "/api/v1/users/logout"


@pytest.fixture
def redis_app(make_app, real_redis_url):
    return make_app(REDIS_URL=real_redis_url)


def login(client, email):
    response = client.post(
        "/api/v1/users/login", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.json
    return {"Authorization": "Bearer " + response.json["access_token"]}


def claims(app, headers):
    with app.app_context():
        return decode_token(headers["Authorization"].split()[1])


def add_revocation(app, jti, user_id, expires_at):
    with app.app_context():
        db.session.add(RevokedToken(jti=jti, user_id=user_id, expires_at=expires_at))
        db.session.commit()


def revoked_jtis(app):
    with app.app_context():
        return set(db.session.scalars(select(RevokedToken.jti)))


def test_a_logout_keeps_the_revocations_of_live_tokens(redis_app):
    client = redis_app.test_client()
    AuthActions(client).register(email="twice@example.com")
    a, b = login(client, "twice@example.com"), login(client, "twice@example.com")
    a_jti, b_jti = claims(redis_app, a)["jti"], claims(redis_app, b)["jti"]
    uid = int(claims(redis_app, a)["sub"])
    add_revocation(redis_app, "expired-one", uid, int(time.time()) - 60)

    assert client.post(LOGOUT, headers=a).status_code == 204
    assert client.get(ME, headers=a).status_code == 401  # its verdict cached
    assert client.get(ME, headers=b).status_code == 200
    # B's logout forgets the user's expired revocations, and A's is not one.
    assert client.post(LOGOUT, headers=b).status_code == 204

    for name, headers in (("A", a), ("B", b)):
        response = client.get(ME, headers=headers)
        assert response.status_code == 401, f"logged-out token {name} works again"
        assert response.json == {"detail": "Token has been revoked"}
    assert revoked_jtis(redis_app) == {a_jti, b_jti}, (
        "the logout's cleanup kept an expired revocation or deleted a live one"
    )


def test_purge_deletes_only_expired_revocations(redis_app):
    client = redis_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    assert client.post(LOGOUT, headers=headers).status_code == 204
    live = claims(redis_app, headers)["jti"]
    uid = int(claims(redis_app, headers)["sub"])
    now = int(time.time())
    add_revocation(redis_app, "expired-a", uid, now - 3600)
    add_revocation(redis_app, "expired-b", None, now - 1)  # imported from 1.x
    add_revocation(redis_app, "live-soon", uid, now + 60)

    result = redis_app.test_cli_runner().invoke(args=["tokens", "purge"])
    assert result.exit_code == 0, result.output
    # The token's verdict was never cached: the database decides.
    response = client.get(ME, headers=headers)
    assert response.status_code == 401, "a logged-out token works again"
    assert response.json == {"detail": "Token has been revoked"}
    assert revoked_jtis(redis_app) == {live, "live-soon"}, (
        "the purge kept an expired revocation or deleted a live one"
    )
    assert "purged 2 expired revocation(s)" in result.output
    with redis_app.app_context():
        assert revocation.purge_expired() == 0

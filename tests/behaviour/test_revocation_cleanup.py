"""Forgetting expired revocations, and only those.

A logout deletes the user's revocations whose tokens have expired anyway,
and ``flask tokens purge`` deletes everyone's. A revocation of a token
that is still valid must survive both, or the token opens the door again.
The cache (Redis, or the process's own) keeps each token's verdict; every
logout replaces the user's tokens generation, so after the second logout
below the database decides.
"""

import re
import secrets
import time

import pytest
from flask_jwt_extended import decode_token
from sqlalchemy import select

from postservice.auth import revocation
from postservice.extensions import db
from postservice.models import RevokedToken

from ..support.auth import PASSWORD, AuthActions

ME = "/api/v1/users/me"
LOGOUT = "/api/v1/users/logout"


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
def cached_app(request, make_app):
    if request.param == "redis":
        return make_app(REDIS_URL=request.getfixturevalue("real_redis_url"))
    return make_app(REDIS_URL=None)


def login(client, email):
    response = client.post(
        "/api/v1/users/login", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.json
    return {"Authorization": "Bearer " + response.json["access_token"]}


def claims(app, headers):
    with app.app_context():
        return decode_token(headers["Authorization"].split()[1])


def add_revocation(app, user_id, expires_at):
    """A revocation of some other token; returns its jti."""
    jti = "cleanup-" + secrets.token_hex(8)
    with app.app_context():
        db.session.add(RevokedToken(jti=jti, user_id=user_id, expires_at=expires_at))
        db.session.commit()
    return jti


def still_revoked(app, jtis):
    """Those of ``jtis`` that are still recorded (other tests leave theirs)."""
    with app.app_context():
        return set(
            db.session.scalars(
                select(RevokedToken.jti).where(RevokedToken.jti.in_(jtis))
            )
        )


def test_a_logout_keeps_the_revocations_of_live_tokens(cached_app):
    client = cached_app.test_client()
    AuthActions(client).register(email="twice@example.com")
    a, b = login(client, "twice@example.com"), login(client, "twice@example.com")
    a_jti, b_jti = claims(cached_app, a)["jti"], claims(cached_app, b)["jti"]
    uid = int(claims(cached_app, a)["sub"])
    expired = add_revocation(cached_app, uid, int(time.time()) - 60)

    assert client.post(LOGOUT, headers=a).status_code == 204
    assert client.get(ME, headers=a).status_code == 401  # its verdict cached
    assert client.get(ME, headers=b).status_code == 200
    # B's logout forgets the user's expired revocations, and A's is not one.
    assert client.post(LOGOUT, headers=b).status_code == 204

    for name, headers in (("A", a), ("B", b)):
        response = client.get(ME, headers=headers)
        assert response.status_code == 401, f"logged-out token {name} works again"
        assert response.json == {"detail": "Token has been revoked"}
    assert still_revoked(cached_app, [a_jti, b_jti, expired]) == {a_jti, b_jti}, (
        "the logout's cleanup kept an expired revocation or deleted a live one"
    )


def test_purge_deletes_only_expired_revocations(cached_app):
    client = cached_app.test_client()
    headers = AuthActions(client).register()
    assert client.post(LOGOUT, headers=headers).status_code == 204
    logged_out = claims(cached_app, headers)["jti"]
    uid = int(claims(cached_app, headers)["sub"])
    now = int(time.time())
    leeway = cached_app.config["JWT_DECODE_LEEWAY"]
    expired = [
        add_revocation(cached_app, uid, now - 3600),
        # imported from 1.x: no user
        add_revocation(cached_app, None, now - leeway - 2),
    ]
    live = [
        logged_out,
        add_revocation(cached_app, uid, now + 60),
        # Past its exp, within the leeway in which the token is still taken.
        add_revocation(cached_app, uid, now - 1),
    ]

    result = cached_app.test_cli_runner().invoke(args=["tokens", "purge"])
    assert result.exit_code == 0, result.output
    assert re.search(r"purged \d+ expired revocation\(s\)", result.output)
    # The token's verdict was never cached: the database decides.
    response = client.get(ME, headers=headers)
    assert response.status_code == 401, "a logged-out token works again"
    assert response.json == {"detail": "Token has been revoked"}
    assert still_revoked(cached_app, live + expired) == set(live), (
        "the purge kept an expired revocation or deleted a live one"
    )
    with cached_app.app_context():
        assert revocation.purge_expired(now=now) == 0

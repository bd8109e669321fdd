"""Remembered tokens: a token verified once is still checked as strictly after."""

import time

from .conftest import AuthActions

GET_POSTS = "/api/v1/posts/get-posts"


def bearer(token):
    return {"Authorization": "Bearer " + token}


def test_remembered_token_expires_on_time(make_app):
    app = make_app(JWT_ACCESS_TOKEN_EXPIRES=1)
    actions = AuthActions(app.test_client())
    headers = actions.register()
    assert actions.client.get(GET_POSTS, headers=headers).status_code == 200
    token = headers["Authorization"].split()[1]
    assert token in app.extensions["verified_tokens"]
    time.sleep(2.1)  # past exp; PyJWT compares whole seconds
    response = actions.client.get(GET_POSTS, headers=headers)
    assert response.status_code == 401
    assert response.json == {"detail": "Token has expired"}
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert token not in app.extensions["verified_tokens"]


def test_changed_remembered_token_is_rejected(make_app):
    actions = AuthActions(make_app().test_client())
    headers = actions.register()
    assert actions.client.get(GET_POSTS, headers=headers).status_code == 200
    token = headers["Authorization"].split()[1]
    head, payload, signature = token.split(".")
    tampered = [
        f"{head}.{payload}.{signature[:-2]}AA",
        f"{head}.{payload[:-2]}AA.{signature}",
        f"{head}.{payload}.",
        token + "x",
    ]
    for bad in tampered:
        response = actions.client.get(GET_POSTS, headers=bearer(bad))
        assert response.status_code == 401, bad


def test_tokens_are_remembered_per_app(make_app):
    signer = make_app()
    actions = AuthActions(signer.test_client())
    headers = actions.register()
    assert actions.client.get(GET_POSTS, headers=headers).status_code == 200
    other = make_app(JWT_SECRET_KEY="another key of at least thirty-two bytes!")
    response = other.test_client().get(GET_POSTS, headers=headers)
    assert response.status_code == 401
    assert response.json == {"detail": "Could not validate credentials"}

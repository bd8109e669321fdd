"""Remembered tokens: a token verified once is still checked as strictly after."""

import time

import jwt
from flask_jwt_extended import get_jwt_header, verify_jwt_in_request

from ..support.auth import AuthActions, changed

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
    # Past exp and the leeway for clocks; PyJWT compares whole seconds.
    time.sleep(1 + app.config["JWT_DECODE_LEEWAY"] + 1.1)
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
        f"{head}.{payload}.{changed(signature)}",
        f"{head}.{changed(payload)}.{signature}",
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


def test_a_remembered_token_is_not_decoded_again(make_app, monkeypatch):
    actions = AuthActions(make_app().test_client())
    headers = actions.register()
    assert actions.client.get(GET_POSTS, headers=headers).status_code == 200
    decoded = []
    load = jwt.api_jws.PyJWS._load

    def counting_load(self, token):
        decoded.append(token)
        return load(self, token)

    monkeypatch.setattr(jwt.api_jws.PyJWS, "_load", counting_load)
    assert actions.client.get(GET_POSTS, headers=headers).status_code == 200
    assert decoded == []  # neither its claims nor its header
    other = AuthActions(actions.client)
    other.count = 1
    fresh = other.register()
    assert actions.client.get(GET_POSTS, headers=fresh).status_code == 200
    assert decoded  # a new token is decoded in full


def test_a_remembered_header_is_the_tokens_own(make_app):
    app = make_app()
    headers = AuthActions(app.test_client()).register()
    for _ in range(2):  # decoded, then remembered
        with app.test_request_context(GET_POSTS, headers=headers):
            verify_jwt_in_request()
            header = get_jwt_header()
            assert header == {"alg": "HS256", "typ": "JWT"}
            header["alg"] = "none"  # a caller's change stays its own

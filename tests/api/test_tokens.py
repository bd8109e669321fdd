"""Every token problem is 401 with ``WWW-Authenticate: Bearer``, never 422."""

import base64
import json
import time
import uuid
from datetime import timedelta

import jwt
import pytest
from sqlalchemy import select

from postservice.extensions import db
from postservice.models import User

from ..support.auth import AuthActions, changed, ids_and_texts
from .test_hostile_input import in_digits

OTHER_KEY = "another-signing-key-that-is-long-enough-for-hs256-and-hs512!"
ENDPOINTS = {
    "get-posts": ("GET", lambda post_id: "/api/v1/posts/get-posts"),
    "add-post": ("POST", lambda post_id: "/api/v1/posts/add-post"),
    "delete-post": ("DELETE", lambda post_id: f"/api/v1/posts/delete-post/{post_id}"),
}


def claims(sub, lifetime=600):
    """What flask-jwt-extended puts in an access token, valid for ``lifetime`` s."""
    now = int(time.time())
    start = min(now, now + lifetime - 60)
    return {
        "sub": sub,
        "jti": str(uuid.uuid4()),
        "type": "access",
        "fresh": False,
        "iat": start,
        "nbf": start,
        "exp": now + lifetime,
    }


def segment(data):
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unverified(headers):
    token = headers["Authorization"].removeprefix("Bearer ")
    return jwt.decode(token, options={"verify_signature": False})


def tampered(token):
    header, payload, signature = token.split(".")
    return f"{header}.{changed(payload)}.{signature}"


class Owner:
    """A registered user with one post, the target of every forged request."""

    def __init__(self, app, auth):
        self.app = app
        self.auth = auth
        self.issued = auth.register()
        self.token = self.issued["Authorization"].removeprefix("Bearer ")
        self.sub = unverified(self.issued)["sub"]
        # The issued token may be short-lived; later calls use a 10-minute one.
        self.headers = {"Authorization": "Bearer " + self.sign(claims(self.sub))}
        self.post_id = auth.add_post(self.headers, "kept")

    def sign(self, payload, key=None, algorithm="HS256"):
        return jwt.encode(
            payload, key or self.app.config["JWT_SECRET_KEY"], algorithm=algorithm
        )

    def assert_untouched(self):
        assert self.auth.posts(self.headers) == [{"id": self.post_id, "text": "kept"}]


@pytest.fixture
def owner(app, auth):
    return Owner(app, auth)


@pytest.fixture(params=list(ENDPOINTS))
def send(request, client, owner):
    """Calls one protected endpoint with the given Authorization header."""
    method, url = ENDPOINTS[request.param]

    def call(authorization):
        headers = {} if authorization is None else {"Authorization": authorization}
        return client.open(
            url(owner.post_id), method=method, json={"text": "new"}, headers=headers
        )

    return call


def assert_401(response, detail=None):
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.mimetype == "application/json"
    assert list(response.json) == ["detail"]
    assert isinstance(response.json["detail"], str)
    assert response.json["detail"]
    if detail is not None:
        assert response.json["detail"] == detail


BAD_AUTHORIZATIONS = {
    "missing header": lambda o: None,
    "empty header": lambda o: "",
    "bearer without token": lambda o: "Bearer",
    "basic scheme": lambda o: "Basic abc",
    "token without scheme": lambda o: o.token,
    "not a jwt": lambda o: "Bearer not-a-jwt",
    "bad signature": lambda o: "Bearer " + o.sign(claims(o.sub), key=OTHER_KEY),
    "alg none by pyjwt": lambda o: (
        "Bearer " + jwt.encode(claims(o.sub), None, algorithm="none")
    ),
    "alg none by hand": lambda o: (
        "Bearer "
        + segment({"alg": "none", "typ": "JWT"})
        + "."
        + segment(claims(o.sub))
        + "."
    ),
    "HS512 with the right secret": lambda o: (
        "Bearer " + o.sign(claims(o.sub), algorithm="HS512")
    ),
    "tampered payload": lambda o: "Bearer " + tampered(o.token),
    "integer sub": lambda o: "Bearer " + o.sign(claims(int(o.sub))),
    "non-numeric sub": lambda o: "Bearer " + o.sign(claims("abc")),
    "refresh token": lambda o: "Bearer " + o.sign({**claims(o.sub), "type": "refresh"}),
    "older token version": lambda o: "Bearer " + o.sign({**claims(o.sub), "ver": -1}),
    # Signed with the key, ids no row can have: refused before any SQL.
    "sub over 2**70": lambda o: "Bearer " + o.sign(claims(str(2**70))),
    "sub over the largest id": lambda o: "Bearer " + o.sign(claims(str(2**31))),
    "sub of zero": lambda o: "Bearer " + o.sign(claims("0")),
    "sub in Arabic-Indic digits": lambda o: (
        "Bearer " + o.sign(claims(in_digits(o.sub, "Arabic-Indic")))
    ),
    "sid over 2**70": lambda o: "Bearer " + o.sign({**claims(o.sub), "sid": 2**70}),
    "sid as a string": lambda o: "Bearer " + o.sign({**claims(o.sub), "sid": "1"}),
}


def without(claim):
    def build(owner):
        payload = claims(owner.sub)
        del payload[claim]
        return "Bearer " + owner.sign(payload)

    return build


# Signed with the real key, but not as this service issues them.
for _claim in ("exp", "iat", "jti", "sub", "type"):
    BAD_AUTHORIZATIONS[f"no {_claim} claim"] = without(_claim)


@pytest.mark.parametrize(
    "authorization", list(BAD_AUTHORIZATIONS.values()), ids=list(BAD_AUTHORIZATIONS)
)
def test_bad_token_is_401(send, owner, authorization):
    assert_401(send(authorization(owner)))
    owner.assert_untouched()


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR", "Bearer  "])
def test_the_scheme_is_case_insensitive(client, owner, scheme):
    """RFC 9110, section 11.1; login's answer says ``"token_type": "bearer"``."""
    response = client.get(
        "/api/v1/posts/get-posts", headers={"Authorization": f"{scheme} {owner.token}"}
    )
    assert response.status_code == 200
    assert ids_and_texts(response.json) == [{"id": owner.post_id, "text": "kept"}]


def test_missing_header_says_not_authenticated(send):
    assert_401(send(None), "Not authenticated")


def test_issued_token_is_accepted(client, owner):
    response = client.get("/api/v1/posts/get-posts", headers=owner.issued)
    assert response.status_code == 200
    assert ids_and_texts(response.json) == [{"id": owner.post_id, "text": "kept"}]


def test_forged_token_with_right_key_and_claims_is_accepted(client, owner):
    """Guards the tests above: the hand-made claims are what the app accepts."""
    headers = {"Authorization": "Bearer " + owner.sign(claims(owner.sub))}
    assert client.get("/api/v1/posts/get-posts", headers=headers).status_code == 200


def test_issued_tokens_carry_exactly_the_claims_needed(owner):
    assert set(unverified(owner.issued)) == {
        "exp",
        "iat",
        "nbf",
        "jti",
        "sub",
        "type",
        "fresh",
        "ver",
        "sid",
    }


def test_token_identity_is_the_user_id_as_a_string(app, owner):
    with app.app_context():
        user_id = db.session.scalars(select(User.id)).one()
    assert owner.sub == str(user_id)
    assert isinstance(owner.sub, str)


@pytest.fixture
def short_lived(make_app):
    app = make_app(JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=1))
    return Owner(app, AuthActions(app.test_client()))


def test_configured_lifetime_is_used(short_lived):
    payload = unverified(short_lived.issued)
    assert payload["exp"] - payload["iat"] == 1


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_expired_token_is_401(short_lived, endpoint):
    method, url = ENDPOINTS[endpoint]
    expired = short_lived.sign(claims(short_lived.sub, lifetime=-60))
    response = short_lived.auth.client.open(
        url(short_lived.post_id),
        method=method,
        json={"text": "new"},
        headers={"Authorization": "Bearer " + expired},
    )
    assert_401(response, "Token has expired")
    short_lived.assert_untouched()

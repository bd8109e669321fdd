"""Token pairs, refresh with rotation, the sessions list, and suspension."""

import time
from datetime import timedelta

import jwt
import pytest
from sqlalchemy import update

from postservice.extensions import db
from postservice.models import UserSession

from ..support.auth import PASSWORD, TOKEN_PAIR_FIELDS

REGISTER = "/api/v1/users/register"
LOGIN = "/api/v1/users/login"
REFRESH = "/api/v1/users/refresh"
ME = "/api/v1/users/me"
SESSIONS = "/api/v1/users/me/sessions"
LOGOUT = "/api/v1/users/logout"
LOGOUT_ALL = "/api/v1/users/logout-all"
CHANGE_PASSWORD = "/api/v1/users/change-password"
GET_POSTS = "/api/v1/posts/get-posts"
EMAIL = "pair@example.com"
SUSPENDED = {"detail": "Account suspended"}


def bearer(pair):
    return {"Authorization": "Bearer " + pair["access_token"]}


def claims(token):
    return jwt.decode(token, options={"verify_signature": False})


def register(client, email=EMAIL, **kwargs):
    response = client.post(
        REGISTER, json={"email": email, "password": PASSWORD}, **kwargs
    )
    assert response.status_code == 201, response.json
    return response.json


def login(client, email=EMAIL, **kwargs):
    response = client.post(LOGIN, json={"email": email, "password": PASSWORD}, **kwargs)
    assert response.status_code == 200, response.json
    return response.json


def refresh(client, token):
    return client.post(REFRESH, json={"refresh_token": token})


def refreshed(client, token):
    response = refresh(client, token)
    assert response.status_code == 200, response.json
    return response.json


def assert_pair(response, status):
    assert response.status_code == status, response.json
    body = response.json
    assert set(body) == TOKEN_PAIR_FIELDS
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert response.headers["Cache-Control"] == "no-store"
    access, refresh_claims = claims(body["access_token"]), claims(body["refresh_token"])
    assert access["type"] == "access"
    assert refresh_claims["type"] == "refresh"
    assert access["exp"] - access["iat"] == 900
    assert refresh_claims["exp"] - refresh_claims["iat"] == 30 * 24 * 3600
    assert access["sid"] == refresh_claims["sid"]
    return body


def assert_401(response, detail):
    assert response.status_code == 401, response.json
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json == {"detail": detail}


def test_register_login_and_refresh_answer_a_token_pair(client):
    assert_pair(client.post(REGISTER, json={"email": EMAIL, "password": PASSWORD}), 201)
    pair = assert_pair(
        client.post(LOGIN, json={"email": EMAIL, "password": PASSWORD}), 200
    )
    again = assert_pair(refresh(client, pair["refresh_token"]), 200)
    assert client.get(ME, headers=bearer(again)).status_code == 200


def test_refresh_rotates_and_keeps_the_session(client):
    pair = register(client)
    new = refreshed(client, pair["refresh_token"])
    assert new["refresh_token"] != pair["refresh_token"]
    assert claims(new["refresh_token"])["sid"] == claims(pair["refresh_token"])["sid"]
    newer = refreshed(client, new["refresh_token"])
    assert newer["refresh_token"] not in (new["refresh_token"], pair["refresh_token"])
    # Every access token of the live session still works.
    for tokens in (pair, new, newer):
        assert client.get(ME, headers=bearer(tokens)).status_code == 200


def test_a_rotated_token_within_the_interval_gets_the_same_new_token(client):
    pair = register(client)
    first = refreshed(client, pair["refresh_token"])
    second = refreshed(client, pair["refresh_token"])
    assert second["refresh_token"] == first["refresh_token"]
    # Neither tab is later taken for a thief.
    assert_pair(refresh(client, first["refresh_token"]), 200)


def test_a_refresh_token_is_not_an_access_token_nor_the_reverse(client):
    pair = register(client)
    assert_401(
        client.get(ME, headers={"Authorization": "Bearer " + pair["refresh_token"]}),
        "Only access tokens are allowed",
    )
    assert_401(
        client.get(
            GET_POSTS, headers={"Authorization": "Bearer " + pair["refresh_token"]}
        ),
        "Only access tokens are allowed",
    )
    assert_401(refresh(client, pair["access_token"]), "Only refresh tokens are allowed")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"refresh_token": ""}, 422),
        ({"refresh_token": 5}, 422),
        ({"refresh_token": "x" * 5000}, 422),
        ({"refresh_token": "a.b.c"}, 401),
        ({"refresh_token": "not a token"}, 401),
    ],
)
def test_bad_refresh_bodies_are_clear_4xx(client, body, status):
    response = client.post(REFRESH, json=body)
    assert response.status_code == status, response.json
    assert "detail" in response.json


def test_a_forged_refresh_token_is_401(client):
    pair = register(client)
    forged = jwt.encode(
        claims(pair["refresh_token"]),
        "another-signing-key-that-is-long-enough-for-hs256!",
        algorithm="HS256",
    )
    assert_401(refresh(client, forged), "Could not validate credentials")


@pytest.mark.parametrize(
    "change", [{"sub": str(2**70)}, {"sub": "0"}, {"sid": 2**70}, {"sid": "1"}]
)
def test_a_refresh_token_naming_no_possible_row_is_401(app, client, change):
    """Signed with the key, but its ids fit no row: refused before any SQL,
    and the session it was made from still refreshes."""
    pair = register(client)
    forged = jwt.encode(
        {**claims(pair["refresh_token"]), **change},
        app.config["JWT_SECRET_KEY"],
        algorithm="HS256",
    )
    assert_401(refresh(client, forged), "Could not validate credentials")
    assert refresh(client, pair["refresh_token"]).status_code == 200


def test_an_expired_refresh_token_is_401(make_app):
    app = make_app(JWT_REFRESH_TOKEN_EXPIRES=timedelta(seconds=1))
    client = app.test_client()
    pair = register(client)
    time.sleep(1 + app.config["JWT_DECODE_LEEWAY"] + 1.1)  # whole seconds
    assert_401(refresh(client, pair["refresh_token"]), "Token has expired")


def test_sessions_list_the_live_sessions_and_the_current_one(client):
    phone = register(client, headers={"User-Agent": "phone/1.0"})
    laptop = login(client, headers={"User-Agent": "laptop/2.0"})
    response = client.get(SESSIONS, headers=bearer(laptop))
    assert response.status_code == 200, response.json
    assert response.headers["Cache-Control"] == "no-store"
    sessions = response.json
    assert [s["user_agent"] for s in sessions] == ["phone/1.0", "laptop/2.0"]
    assert [s["current"] for s in sessions] == [False, True]
    assert sessions[1]["id"] == claims(laptop["access_token"])["sid"]
    for s in sessions:
        assert set(s) == {"id", "created_at", "last_used_at", "current", "user_agent"}
        for name in ("created_at", "last_used_at"):
            time.strptime(s[name], "%Y-%m-%dT%H:%M:%SZ")
    assert [s["current"] for s in client.get(SESSIONS, headers=bearer(phone)).json] == [
        True,
        False,
    ]


def test_a_long_user_agent_is_cut_not_refused(client):
    pair = register(client, headers={"User-Agent": "é" * 1000})
    [session] = client.get(SESSIONS, headers=bearer(pair)).json
    assert session["user_agent"] == "é" * 255


def test_deleting_a_session_ends_its_tokens_and_no_other(client):
    phone = register(client)
    laptop = login(client)
    phone_sid = claims(phone["access_token"])["sid"]
    response = client.delete(f"{SESSIONS}/{phone_sid}", headers=bearer(laptop))
    assert response.status_code == 204
    assert_401(client.get(ME, headers=bearer(phone)), "Token has been revoked")
    assert_401(refresh(client, phone["refresh_token"]), "Token has been revoked")
    assert client.get(ME, headers=bearer(laptop)).status_code == 200
    assert [
        s["current"] for s in client.get(SESSIONS, headers=bearer(laptop)).json
    ] == [True]
    # Gone already: 404, like a session that never was.
    again = client.delete(f"{SESSIONS}/{phone_sid}", headers=bearer(laptop))
    assert again.status_code == 404
    assert again.json == {"detail": "Session not found"}


def test_an_expired_session_is_not_live_and_is_404(app, client):
    """It is not in the list, so it cannot be ended either."""
    phone = register(client)
    laptop = login(client)
    phone_sid = claims(phone["access_token"])["sid"]
    with app.app_context():
        db.session.execute(
            update(UserSession)
            .where(UserSession.id == phone_sid)
            .values(refresh_expires_at=int(time.time()) - 1)  # epoch seconds
        )
        db.session.commit()
    listed = client.get(SESSIONS, headers=bearer(laptop)).json
    assert [s["id"] for s in listed] == [claims(laptop["access_token"])["sid"]]
    response = client.delete(f"{SESSIONS}/{phone_sid}", headers=bearer(laptop))
    assert response.status_code == 404
    assert response.json == {"detail": "Session not found"}


def test_a_deleted_accounts_tokens_name_no_account(client):
    pair = register(client)
    deleted = client.delete(ME, headers=bearer(pair), json={"password": PASSWORD})
    assert deleted.status_code == 204
    assert_401(client.get(ME, headers=bearer(pair)), "Could not validate credentials")
    assert_401(refresh(client, pair["refresh_token"]), "Could not validate credentials")


def test_another_accounts_session_is_404(client):
    mine = register(client)
    theirs = register(client, email="other@example.com")
    their_sid = claims(theirs["access_token"])["sid"]
    response = client.delete(f"{SESSIONS}/{their_sid}", headers=bearer(mine))
    assert response.status_code == 404
    assert response.json == {"detail": "Session not found"}
    assert client.get(ME, headers=bearer(theirs)).status_code == 200
    for path in (f"{SESSIONS}/999999999", f"{SESSIONS}/abc", f"{SESSIONS}/-1"):
        response = client.delete(path, headers=bearer(mine))
        assert response.status_code == 404, path
        assert "detail" in response.json


def test_logout_ends_the_current_session_only(client):
    phone = register(client)
    laptop = login(client)
    assert client.post(LOGOUT, headers=bearer(phone)).status_code == 204
    assert_401(refresh(client, phone["refresh_token"]), "Token has been revoked")
    assert client.get(ME, headers=bearer(laptop)).status_code == 200
    assert_pair(refresh(client, laptop["refresh_token"]), 200)
    assert len(client.get(SESSIONS, headers=bearer(laptop)).json) == 1


def test_logout_all_ends_every_session(client):
    phone = register(client)
    laptop = login(client)
    assert client.post(LOGOUT_ALL, headers=bearer(phone)).status_code == 204
    for pair in (phone, laptop):
        assert_401(refresh(client, pair["refresh_token"]), "Token has been revoked")
        assert_401(client.get(ME, headers=bearer(pair)), "Token has been revoked")
    fresh = login(client)
    assert len(client.get(SESSIONS, headers=bearer(fresh)).json) == 1


def test_change_password_ends_every_session_and_starts_one(client):
    phone = register(client)
    laptop = login(client)
    response = client.post(
        CHANGE_PASSWORD,
        json={"current_password": PASSWORD, "new_password": "a new password"},
        headers=bearer(laptop),
    )
    new = assert_pair(response, 200)
    for pair in (phone, laptop):
        assert_401(refresh(client, pair["refresh_token"]), "Token has been revoked")
    sessions = client.get(SESSIONS, headers=bearer(new)).json
    assert [s["current"] for s in sessions] == [True]
    assert_pair(refresh(client, new["refresh_token"]), 200)


def test_suspension_answers_403_and_unsuspending_restores(app, client):
    pair = register(client)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "suspend", EMAIL])
    assert result.exit_code == 0, result.output
    for response in (
        client.get(ME, headers=bearer(pair)),
        client.get(GET_POSTS, headers=bearer(pair)),
        client.get(SESSIONS, headers=bearer(pair)),
        refresh(client, pair["refresh_token"]),
        client.post(LOGIN, json={"email": EMAIL, "password": PASSWORD}),
    ):
        assert response.status_code == 403, response.json
        assert response.json == SUSPENDED
    # A wrong password is still a wrong password: suspension is not revealed.
    wrong = client.post(LOGIN, json={"email": EMAIL, "password": "not the password"})
    assert wrong.status_code == 401
    result = runner.invoke(args=["users", "unsuspend", EMAIL])
    assert result.exit_code == 0, result.output
    assert client.get(ME, headers=bearer(pair)).status_code == 200
    assert_pair(refresh(client, pair["refresh_token"]), 200)
    login(client)


def test_suspending_an_unknown_account_fails(runner):
    result = runner.invoke(args=["users", "suspend", "nobody@example.com"])
    assert result.exit_code == 1
    assert "no account" in result.output

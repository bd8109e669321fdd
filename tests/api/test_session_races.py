"""Accounts and sessions against clients that race, guess and skew clocks."""

import threading
from datetime import datetime, timedelta

import bcrypt
import jwt
import pytest
from sqlalchemy import update

from postservice.extensions import db
from postservice.models import User
from postservice.users import service

from ..support.auth import PASSWORD

REGISTER = "/api/v1/users/register"
LOGIN = "/api/v1/users/login"
REFRESH = "/api/v1/users/refresh"
ME = "/api/v1/users/me"
SESSIONS = "/api/v1/users/me/sessions"
LOGOUT_ALL = "/api/v1/users/logout-all"
CHANGE_PASSWORD = "/api/v1/users/change-password"
EMAIL = "review@example.com"


def bearer(pair):
    return {"Authorization": "Bearer " + pair["access_token"]}


def register(client, email=EMAIL, password=PASSWORD, **kwargs):
    response = client.post(
        REGISTER, json={"email": email, "password": password}, **kwargs
    )
    assert response.status_code == 201, response.json
    return response.json


def from_address(address):
    return {"environ_base": {"REMOTE_ADDR": address}}


# -- A login that overlaps log-out-everywhere ----------------------------------


def test_a_login_overlapping_logout_all_answers_a_pair_that_works(
    app, client, monkeypatch
):
    """``log_in`` reads ``token_version`` before the slow bcrypt check and
    ``sessions.start`` issues the pair under that version without reading it
    again. A logout-all (or change-password, or reset) that commits while the
    login is hashing makes the login answer 200 with tokens already refused
    ("Token has been revoked"), and leaves a session listed as live whose
    tokens never work. A 200 from login must be a working session."""
    first = register(client)
    checking, go = threading.Event(), threading.Event()
    real = service.password_matches

    def slow(password, password_hash):
        matched = real(password, password_hash)
        checking.set()
        go.wait(10)
        return matched

    monkeypatch.setattr(service, "password_matches", slow)
    answer = {}

    def log_in():
        answer["login"] = app.test_client().post(
            LOGIN, json={"email": EMAIL, "password": PASSWORD}
        )

    thread = threading.Thread(target=log_in)
    thread.start()
    assert checking.wait(10)
    # Meanwhile, on another device: log out everywhere.
    assert client.post(LOGOUT_ALL, headers=bearer(first)).status_code == 204
    go.set()
    thread.join(20)
    login = answer["login"]
    assert login.status_code == 200, login.json
    me = client.get(ME, headers=bearer(login.json))
    assert me.status_code == 200, me.json
    refreshed = client.post(
        REFRESH, json={"refresh_token": login.json["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.json


# -- One account, one count of failed password checks --------------------------


@pytest.mark.parametrize("first_route", ["change-password", "login"])
def test_the_account_failure_ceiling_counts_every_password_check(make_app, first_route):
    """conventions.md#throttling: ``ACCOUNT_FAILURE_RATE_LIMIT`` counts
    "failed password checks for one account from anywhere". Login counts
    them under the email, change-password and delete-account under
    ``user:<id>`` (``users/routes.py``), so each family has its own ceiling
    and a guesser holding an access token gets twice the guesses."""
    app = make_app(ACCOUNT_FAILURE_RATE_LIMIT="2 per hour")
    client = app.test_client()
    pair = register(client, **from_address("10.0.0.1"))

    def wrong_login(i):
        return client.post(
            LOGIN,
            json={"email": EMAIL, "password": f"wrong guess {i}"},
            **from_address(f"10.0.2.{i}"),
        )

    def wrong_change(i):
        return client.post(
            CHANGE_PASSWORD,
            headers=bearer(pair),
            json={
                "current_password": f"wrong guess {i}",
                "new_password": "whatever123",
            },
            **from_address(f"10.0.1.{i}"),
        )

    first, then = (
        (wrong_change, wrong_login)
        if first_route == "change-password"
        else (wrong_login, wrong_change)
    )
    for i in range(2):  # the account's whole budget, from two new clients
        assert first(i).status_code == 401
    response = then(9)  # a third client, new to the account
    assert response.status_code == 429, response.json


# -- NUL in a new password ------------------------------------------------------


def test_a_password_with_nul_is_refused(client):
    """bcrypt cycles ``password + NUL`` over 72 bytes, so "abcd\\0abcd" (9
    characters, accepted as >= 8) hashes like "abcd": the 4-character
    password would log in, and "\\0" * 8 would be opened by a single "\\0".
    A new password holding NUL is refused, and nothing is created."""
    response = client.post(REGISTER, json={"email": EMAIL, "password": "abcd\x00abcd"})
    assert response.status_code == 422, response.json
    assert response.json == {
        "detail": "Invalid input",
        "errors": {"password": ["Must not contain NUL."]},
    }
    login = client.post(LOGIN, json={"email": EMAIL, "password": "abcd"})
    assert login.status_code == 404, login.json


def test_a_password_with_nul_from_before_still_logs_in(app, client):
    """Only new passwords are refused a NUL: an account that has one logs in
    with it, and a shorter password does not open it."""
    register(client)
    with app.app_context():
        stored = bcrypt.hashpw(b"pass\x00word1", bcrypt.gensalt(4)).decode()
        db.session.execute(update(User).values(password_hash=stored))
        db.session.commit()
    login = client.post(LOGIN, json={"email": EMAIL, "password": "pass\x00word1"})
    assert login.status_code == 200, login.json
    for other in ("pass", "pass\x00word2", "password1"):
        wrong = client.post(LOGIN, json={"email": EMAIL, "password": other})
        assert wrong.json == {"detail": "Incorrect password"}


# -- An instance whose clock lags a little --------------------------------------


class _LaggingClock(datetime):
    lag = timedelta(seconds=2)

    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) - cls.lag


def test_a_fresh_pair_works_on_an_instance_whose_clock_lags_a_little(
    make_app, monkeypatch
):
    """Tokens carry ``iat`` (and refresh tokens ``nbf``) in whole seconds and
    are decoded with ``JWT_DECODE_LEEWAY`` 0: a replica whose clock is behind
    the issuer's refuses a just-issued pair as "Could not validate
    credentials", and users.md tells a client that gets any 401 from refresh
    to drop the session. Replicas (docs/deployment/scaling.md) need a few
    seconds of leeway."""
    issuer = make_app()
    other = make_app()  # the same key, another replica
    pair = register(issuer.test_client())
    monkeypatch.setattr(jwt.api_jwt, "datetime", _LaggingClock)
    client = other.test_client()
    me = client.get(ME, headers=bearer(pair))
    assert me.status_code == 200, me.json
    refreshed = client.post(REFRESH, json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.json

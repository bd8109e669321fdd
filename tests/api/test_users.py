"""Accounts: POST /api/v1/users/register and /api/v1/users/login."""

import json

import bcrypt
import pytest
from sqlalchemy import func, select

from postservice.extensions import db
from postservice.models import User

from ..support.auth import PASSWORD

REGISTER = "/api/v1/users/register"
LOGIN = "/api/v1/users/login"
GET_POSTS = "/api/v1/posts/get-posts"
EMAIL = "a@example.com"


def email_of_length(length):
    """A well-formed address of exactly ``length`` characters (197 to 260)."""
    tail = "d" * (length - 197)
    address = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + tail + ".com"
    assert len(address) == length
    return address


def post_json(client, url, body):
    """POST ``body`` serialised as JSON, so lists and ``None`` can be sent too."""
    return client.post(url, data=json.dumps(body), content_type="application/json")


def register(client, email=EMAIL, password=PASSWORD):
    return post_json(client, REGISTER, {"email": email, "password": password})


def login(client, email=EMAIL, password=PASSWORD):
    return post_json(client, LOGIN, {"email": email, "password": password})


def user_count(app):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(User))


def stored_user(app, email=EMAIL):
    with app.app_context():
        return db.session.scalars(select(User).where(User.email == email)).one()


def assert_token(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert set(response.json) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
    }
    assert response.json["token_type"] == "bearer"
    return {"Authorization": "Bearer " + response.json["access_token"]}


def assert_invalid(response, field):
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert set(response.json) == {"detail", "errors"}
    assert response.json["detail"] == "Invalid input"
    assert list(response.json["errors"]) == [field]
    assert response.json["errors"][field]


# --- register ---------------------------------------------------------------


def test_register_returns_a_bearer_token(client):
    assert_token(register(client), 201)


def test_registered_token_opens_get_posts(client):
    headers = assert_token(register(client), 201)
    response = client.get(GET_POSTS, headers=headers)
    assert response.status_code == 200
    assert response.json == []


def test_register_stores_one_user(app, client):
    assert_token(register(client), 201)
    assert user_count(app) == 1
    assert stored_user(app).email == EMAIL


def test_duplicate_email_is_refused(app, client):
    assert_token(register(client), 201)
    response = register(client, password="another password")
    assert response.status_code == 400
    assert response.json == {"detail": "User already exists"}
    assert user_count(app) == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [(" A@Example.COM ", "a@example.com"), ("a@example.com", " A@Example.COM ")],
)
def test_duplicate_differing_in_case_and_spaces_is_refused(app, client, first, second):
    assert_token(register(client, first), 201)
    response = register(client, second)
    assert response.status_code == 400
    assert response.json == {"detail": "User already exists"}
    assert user_count(app) == 1


def test_email_is_stored_trimmed_and_lower_cased(app, client):
    assert_token(register(client, " A@Example.COM "), 201)
    assert stored_user(app).email == "a@example.com"


INVALID_REGISTRATIONS = {
    "missing email": ({"password": PASSWORD}, "email"),
    "invalid email": ({"email": "not-an-email", "password": PASSWORD}, "email"),
    "email over 254 chars": (
        {"email": email_of_length(255), "password": PASSWORD},
        "email",
    ),
    "non-string email": ({"email": 42, "password": PASSWORD}, "email"),
    "missing password": ({"email": EMAIL}, "password"),
    "password under 8 chars": ({"email": EMAIL, "password": "1234567"}, "password"),
    "password over 72 bytes": ({"email": EMAIL, "password": "é" * 37}, "password"),
    "ascii password over 72 bytes": (
        {"email": EMAIL, "password": "a" * 73},
        "password",
    ),
    "numeric password": ({"email": EMAIL, "password": 12345678}, "password"),
    "null password": ({"email": EMAIL, "password": None}, "password"),
    "body is a list": ([{"email": EMAIL, "password": PASSWORD}], "_schema"),
    "body is null": (None, "_schema"),
}


@pytest.mark.parametrize(
    ("body", "field"),
    list(INVALID_REGISTRATIONS.values()),
    ids=list(INVALID_REGISTRATIONS),
)
def test_invalid_registration_is_422_naming_the_field(app, client, body, field):
    assert_invalid(post_json(client, REGISTER, body), field)
    assert user_count(app) == 0


def test_email_of_254_chars_is_accepted(app, client):
    address = email_of_length(254)
    assert_token(register(client, address), 201)
    assert stored_user(app, address).email == address


@pytest.mark.parametrize(
    "password", ["a" * 72, "é" * 36, "12345678"], ids=["72 ascii", "72 bytes é", "8"]
)
def test_password_at_the_limits_is_accepted_and_logs_in(client, password):
    assert_token(register(client, password=password), 201)
    assert_token(login(client, password=password), 200)


# --- login ------------------------------------------------------------------


def test_login_returns_a_working_token(client):
    register(client)
    headers = assert_token(login(client), 200)
    assert client.get(GET_POSTS, headers=headers).status_code == 200


def test_login_ignores_case_and_spaces_of_email(client):
    register(client)
    assert_token(login(client, email=" A@EXAMPLE.com "), 200)


def test_login_unknown_email_is_404(client):
    register(client)
    response = login(client, email="nobody@example.com")
    assert response.status_code == 404
    assert response.json == {"detail": "User not found"}


def assert_incorrect_password(response):
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.json == {"detail": "Incorrect password"}
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_login_wrong_password_is_401(client):
    register(client)
    assert_incorrect_password(login(client, password=PASSWORD + "x"))


def test_login_password_over_72_bytes_is_401(client):
    """Not 500 (bcrypt raises beyond 72 bytes) and not cut to the first 72."""
    register(client, password="a" * 72)
    assert_incorrect_password(login(client, password="a" * 73))
    assert_incorrect_password(login(client, password="é" * 37))


def test_login_empty_password_is_422(client):
    register(client)
    assert_invalid(login(client, password=""), "password")


def test_login_body_not_an_object_is_422(client):
    assert_invalid(post_json(client, LOGIN, [EMAIL, PASSWORD]), "_schema")


# --- password storage -------------------------------------------------------


def test_password_is_stored_as_bcrypt_hash_at_configured_cost(make_app):
    app = make_app(BCRYPT_ROUNDS=5)
    assert_token(register(app.test_client()), 201)
    password_hash = stored_user(app).password_hash
    assert password_hash.startswith("$2b$05$")
    assert PASSWORD not in password_hash
    assert bcrypt.checkpw(PASSWORD.encode(), password_hash.encode())
    assert not bcrypt.checkpw(b"wrong password", password_hash.encode())


def test_testing_cost_is_used_by_default(app, client):
    assert_token(register(client), 201)
    assert stored_user(app).password_hash.startswith("$2b$04$")


@pytest.mark.parametrize(
    ("password", "others"),
    [("pässwörd ☃ 😀", ["passwörd ☃ 😀", "pässwörd ☃ 😁", "pässwörd"])],
    ids=["non-ascii"],
)
def test_unusual_password_round_trips(client, password, others):
    assert_token(register(client, password=password), 201)
    assert_token(login(client, password=password), 200)
    for other in others:
        assert_incorrect_password(login(client, password=other))

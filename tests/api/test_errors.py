"""Every error is JSON of one shape, ``{"detail": ...}``."""

import json
import time

import pytest
from sqlalchemy import func, select

from postservice.extensions import db
from postservice.models import Post, User

from ..support.auth import PASSWORD

REGISTER = "/api/v1/users/register"
ADD_POST = "/api/v1/posts/add-post"
GET_POSTS = "/api/v1/posts/get-posts"
CREDENTIALS = {"email": "a@example.com", "password": PASSWORD}


def assert_error(response, status, detail):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.json == {"detail": detail}


def row_count(app, model):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_unknown_route_is_404_json(client):
    assert_error(client.get("/api/v1/no-such-thing"), 404, "Not Found")


def test_wrong_method_is_405_json_with_allow(client):
    response = client.put(GET_POSTS)
    assert_error(response, 405, "Method Not Allowed")
    allowed = {method.strip() for method in response.headers["Allow"].split(",")}
    assert "GET" in allowed
    assert "PUT" not in allowed


def test_non_json_content_type_is_415(app, client):
    response = client.post(
        REGISTER, data="email=a@example.com&password=x", content_type="text/plain"
    )
    assert_error(response, 415, "Content-Type must be application/json")
    assert row_count(app, User) == 0


@pytest.mark.parametrize(
    "media_type",
    [
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/vnd.api+json",
    ],
)
def test_other_json_media_types_are_415(app, client, media_type):
    """They are JSON, but formats of their own with their own meaning."""
    body = json.dumps({"email": "a@example.com", "password": "password123"})
    response = client.post(REGISTER, data=body, content_type=media_type)
    assert_error(response, 415, "Content-Type must be application/json")
    assert row_count(app, User) == 0


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate", "GZIP", "identity, gzip"])
def test_a_content_coded_body_is_415(app, client, coding):
    """Read as it is, a compressed body would be stored compressed, or the
    JSON a client sent plain but labelled would be taken on trust."""
    body = json.dumps({"email": "a@example.com", "password": "password123"})
    response = client.post(
        REGISTER,
        data=body,
        content_type="application/json",
        headers={"Content-Encoding": coding},
    )
    assert_error(response, 415, "Content-Encoding is not supported")
    assert response.headers["Accept-Encoding"] == "identity"
    assert row_count(app, User) == 0


def test_an_identity_coded_body_is_read(client):
    body = json.dumps({"email": "a@example.com", "password": "password123"})
    response = client.post(
        REGISTER,
        data=body,
        content_type="application/json",
        headers={"Content-Encoding": "Identity"},
    )
    assert response.status_code == 201, response.get_data(as_text=True)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(app, client, constant):
    """Python's json reads them; JSON (RFC 8259) has no such values."""
    body = f'{{"email": "a@example.com", "password": "password123", "x": {constant}}}'
    response = client.post(REGISTER, data=body, content_type="application/json")
    assert_error(response, 400, "Request body is not valid JSON in UTF-8")
    assert row_count(app, User) == 0


def test_options_is_204_with_allow_and_no_body(client):
    response = client.open("/api/v1/users/login", method="OPTIONS")
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    allowed = {method.strip() for method in response.headers["Allow"].split(",")}
    assert allowed == {"POST", "OPTIONS"}
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_malformed_json_is_400(app, client, auth):
    response = client.post(
        ADD_POST,
        data='{"text": ',
        content_type="application/json",
        headers=auth.register(),
    )
    assert_error(response, 400, "Request body is not valid JSON in UTF-8")
    assert row_count(app, Post) == 0


def test_invalid_utf8_is_400(app, client, auth):
    response = client.post(
        ADD_POST,
        data=b'{"text":"\xff"}',
        content_type="application/json",
        headers=auth.register(),
    )
    assert_error(response, 400, "Request body is not valid JSON in UTF-8")
    assert row_count(app, Post) == 0


@pytest.mark.parametrize(
    "encoding", ["utf-16-le", "utf-16-be", "utf-16", "utf-32-le", "utf-32-be", "utf-32"]
)
def test_body_not_in_utf8_is_400(app, client, auth, encoding):
    # "utf-16" and "utf-32" start with a byte order mark, the others do not.
    headers = auth.register()
    body = json.dumps({"text": "in another encoding"}).encode(encoding)
    response = client.post(
        ADD_POST, data=body, content_type="application/json", headers=headers
    )
    assert_error(response, 400, "Request body must be encoded as UTF-8")
    assert row_count(app, Post) == 0
    credentials = json.dumps(CREDENTIALS).encode(encoding)
    response = client.post(REGISTER, data=credentials, content_type="application/json")
    assert_error(response, 400, "Request body must be encoded as UTF-8")
    assert row_count(app, User) == 1


def test_utf8_with_a_byte_order_mark_is_still_utf8(client, auth):
    headers = auth.register()
    body = json.dumps({"text": "marked"}).encode("utf-8-sig")
    response = client.post(
        ADD_POST, data=body, content_type="application/json", headers=headers
    )
    assert response.status_code == 200
    assert auth.posts(headers)[0]["text"] == "marked"


def test_body_over_max_content_length_is_413_json(app, client, auth):
    headers = auth.register()
    limit = app.config["MAX_CONTENT_LENGTH"]
    response = client.post(
        ADD_POST,
        data=b"x" * (limit + 1),
        content_type="application/json",
        headers=headers,
    )
    assert_error(response, 413, "Request Entity Too Large")
    assert row_count(app, Post) == 0


def test_unexpected_exception_is_500_json(make_app):
    app = make_app()

    def explode():
        raise RuntimeError("boom")

    app.add_url_rule("/explode", view_func=explode)
    response = app.test_client().get("/explode")
    assert_error(response, 500, "Internal Server Error")
    assert b"boom" not in response.data


def register_timed(app):
    started = time.monotonic()
    response = app.test_client().post(REGISTER, json=CREDENTIALS)
    return response, time.monotonic() - started


def test_unopenable_sqlite_database_is_503(make_app):
    app = make_app(SQLALCHEMY_DATABASE_URI="sqlite:////nonexistent-dir/x.sqlite")
    response, _ = register_timed(app)
    assert_error(response, 503, "Database unavailable")
    assert response.headers["Retry-After"] == "1"


def test_unreachable_mysql_is_503_quickly(make_app):
    app = make_app(SQLALCHEMY_DATABASE_URI="mysql+pymysql://root@127.0.0.1:1/test")
    response, elapsed = register_timed(app)
    assert_error(response, 503, "Database unavailable")
    assert response.headers["Retry-After"] == "1"
    assert elapsed < 5

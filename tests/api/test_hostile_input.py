"""Input that tries to break the parser or the validators gets a 4xx, not a 500."""

import json

import pytest

REGISTER = "/api/v1/users/register"


def post_raw(client, path, body, headers=None):
    return client.post(
        path, data=body, content_type="application/json", headers=headers
    )


def test_deeply_nested_json_is_400(client):
    response = post_raw(client, REGISTER, "[" * 100_000)
    assert response.status_code == 400
    assert response.json == {"detail": "Request body is nested too deeply"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "a" * 300 + "@example.com"),
        ("email", "x" * 5_000_000),
        ("email", "\ud800@example.com"),
        ("password", "p\ud800ssword"),
        ("password", "x" * 5_000_000),
        ("email", {"nested": "object"}),
        ("password", ["a", "list"]),
    ],
)
def test_unusable_credentials_are_422_naming_the_field(client, field, value):
    body = {"email": "ok@example.com", "password": "password123", field: value}
    response = post_raw(client, REGISTER, json.dumps(body))
    assert response.status_code == 422
    assert list(response.json["errors"]) == [field]


def test_control_characters_and_nul_round_trip_in_posts(auth):
    headers = auth.register()
    text = "nul\x00 tab\t bell\x07 rtl\u202e end"
    auth.add_post(headers, text)
    assert [post["text"] for post in auth.posts(headers)] == [text]


def test_unknown_fields_are_ignored(client):
    body = {"email": "extra@example.com", "password": "password123", "admin": True}
    assert client.post(REGISTER, json=body).status_code == 201

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


# Decimal digits of other scripts, by their zero's code point: int() reads
# each as the same number as ASCII's.
OTHER_DIGITS = {"Arabic-Indic": 0x0660, "Devanagari": 0x0966, "full-width": 0xFF10}


def in_digits(number, script):
    """``number`` written in the decimal digits of ``script``."""
    zero = OTHER_DIGITS[script]
    return "".join(chr(zero + int(digit)) for digit in str(number))


@pytest.mark.parametrize("script", OTHER_DIGITS)
def test_an_id_in_digits_of_another_script_names_nothing(client, auth, script):
    def written(number):
        return in_digits(number, script)

    headers = auth.register()
    post_id = auth.add_post(headers, "kept")
    [session] = client.get("/api/v1/users/me/sessions", headers=headers).json
    for method, path, body in [
        ("GET", f"/api/v1/posts/get-post/{written(post_id)}", None),
        ("PATCH", f"/api/v1/posts/edit-post/{written(post_id)}", {"text": "changed"}),
        ("DELETE", f"/api/v1/posts/delete-post/{written(post_id)}", None),
        ("DELETE", f"/api/v1/users/me/sessions/{written(session['id'])}", None),
    ]:
        response = client.open(path, method=method, json=body, headers=headers)
        assert response.status_code == 404, (method, path)
        assert response.json == {"detail": "Not Found"}, (method, path)
    assert auth.posts(headers) == [{"id": post_id, "text": "kept"}]
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/api/v1/posts//edit-post/{post_id}?x=1"),
        ("GET", "/api/v1/posts//get-posts"),
        ("GET", "/api/v1/posts/get-post//{post_id}"),
        ("DELETE", "/api/v1//posts/delete-post/{post_id}"),
        ("POST", "/api/v1/users//login"),
        ("GET", "/api/v1/users/me//sessions"),
    ],
)
def test_a_doubled_slash_names_nothing(client, auth, method, path):
    """Not a redirect to the path with one slash: werkzeug's answers an HTML
    page whose Location is built from the client's Host header."""
    headers = auth.register()
    post_id = auth.add_post(headers, "kept")
    response = client.open(
        path.format(post_id=post_id),
        method=method,
        json={"text": "changed"} if method in ("PATCH", "POST") else None,
        headers={**headers, "Host": "elsewhere.example"},
    )
    assert (response.status_code, response.json) == (404, {"detail": "Not Found"})
    assert "Location" not in response.headers
    assert response.mimetype == "application/json"
    assert auth.posts(headers) == [{"id": post_id, "text": "kept"}]

"""Accounts through the test client, and tokens changed by a byte."""

import re

from flask_jwt_extended import decode_token

PASSWORD = "correct horse battery"
# What register, login and refresh answer.
TOKEN_PAIR_FIELDS = {"access_token", "token_type", "expires_in", "refresh_token"}
# A post on the wire, its keys in this order.
POST_KEYS = ["id", "text", "created_at", "updated_at"]
# RFC 3339 in UTC, whole seconds, as every post's times are answered.
UTC_SECONDS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def assert_post_shape(post):
    """``post`` has the wire format's keys in order, and times in UTC seconds."""
    assert list(post) == POST_KEYS, post
    for name in ("created_at", "updated_at"):
        assert UTC_SECONDS.fullmatch(post[name]), (name, post[name])
    assert post["created_at"] <= post["updated_at"], post


def ids_and_texts(posts):
    """Each post's shape checked, then only its id and text, to compare."""
    for post in posts:
        assert_post_shape(post)
    return [{"id": post["id"], "text": post["text"]} for post in posts]


def changed(segment):
    """A token segment with its middle character swapped: always other bytes.

    The middle character carries six whole bits. The last one does not (a
    decoder ignores its spare bits), and a fixed replacement for it can equal
    the original: a signature ends in "AA" once in 1,024 tokens.
    """
    middle = len(segment) // 2
    swapped = "A" if segment[middle] != "A" else "B"
    return segment[:middle] + swapped + segment[middle + 1 :]


class AuthActions:
    """Registers users and builds their Authorization headers."""

    def __init__(self, client):
        self.client = client
        self.count = 0

    def register(self, email=None, password=PASSWORD):
        self.count += 1
        email = email or f"user{self.count}@example.com"
        response = self.client.post(
            "/api/v1/users/register", json={"email": email, "password": password}
        )
        assert response.status_code == 201, response.get_data(as_text=True)
        return {"Authorization": "Bearer " + response.json["access_token"]}

    def add_post(self, headers, text):
        response = self.client.post(
            "/api/v1/posts/add-post", json={"text": text}, headers=headers
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.json["PostID"]

    def posts(self, headers):
        """The listing's ids and texts; each post's shape and times are checked."""
        return ids_and_texts(self.listing(headers))

    def listing(self, headers):
        """The listing as it is answered, every key of every post."""
        response = self.client.get("/api/v1/posts/get-posts", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.json


def token_user_id(app, headers):
    """The id of the account whose token ``headers`` carry."""
    with app.app_context():
        return int(decode_token(headers["Authorization"].split()[1])["sub"])

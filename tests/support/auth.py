"""Accounts through the test client, and tokens changed by a byte."""

from flask_jwt_extended import decode_token

PASSWORD = "correct horse battery"
# What register, login and refresh answer.
TOKEN_PAIR_FIELDS = {"access_token", "token_type", "expires_in", "refresh_token"}


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
        response = self.client.get("/api/v1/posts/get-posts", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.json


def token_user_id(app, headers):
    """The id of the account whose token ``headers`` carry."""
    with app.app_context():
        return int(decode_token(headers["Authorization"].split()[1])["sub"])

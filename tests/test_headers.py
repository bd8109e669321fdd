"""Headers every response, and the token responses, carry."""

from .conftest import PASSWORD


def test_every_response_forbids_type_sniffing(client, auth):
    headers = auth.register()
    responses = [
        client.get("/api/v1/posts/get-posts", headers=headers),
        client.get("/api/v1/posts/get-posts"),
        client.get("/no/such/route"),
        client.post("/api/v1/posts/add-post", data="x", headers=headers),
        client.get("/docs"),
        client.get("/api/v1/openapi.json"),
    ]
    for response in responses:
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_token_responses_are_not_stored(client):
    body = {"email": "store@example.com", "password": PASSWORD}
    registered = client.post("/api/v1/users/register", json=body)
    assert registered.status_code == 201
    logged_in = client.post("/api/v1/users/login", json=body)
    assert logged_in.status_code == 200
    for response in (registered, logged_in):
        assert response.headers["Cache-Control"] == "no-store"
        assert set(response.json) == {"access_token", "token_type"}
        assert response.json["token_type"] == "bearer"

"""Headers every response, and the token responses, carry."""

from ..support.auth import PASSWORD, ids_and_texts

GET_POSTS = "/api/v1/posts/get-posts"


def test_every_response_forbids_sniffing_and_framing(client, auth):
    headers = auth.register()
    responses = [
        client.get(GET_POSTS, headers=headers),
        client.get(GET_POSTS),
        client.get("/no/such/route"),
        client.post("/api/v1/posts/add-post", data="x", headers=headers),
        client.get("/docs"),
        client.get("/docs/swagger-ui-bundle.js"),
        client.get("/api/v1/openapi.json"),
    ]
    for response in responses:
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        policy = directives(response)
        assert policy["frame-ancestors"] == "'none'", response.request.path


def directives(response):
    policy = response.headers["Content-Security-Policy"]
    return dict(part.strip().partition(" ")[::2] for part in policy.split(";"))


def test_the_api_allows_nothing_to_load(client, auth):
    headers = auth.register()
    for response in (
        client.get(GET_POSTS, headers=headers),
        client.get("/api/v1/openapi.json"),
        client.get("/no/such/route"),
    ):
        assert directives(response)["default-src"] == "'none'"


def test_the_docs_page_runs_only_its_own_scripts(client):
    policy = directives(client.get("/docs"))
    assert policy["script-src"] == "'self'"
    assert policy["default-src"] == "'none'"
    assert "unsafe-inline" not in client.get("/docs").headers["Content-Security-Policy"]


def test_token_responses_are_not_stored(client):
    body = {"email": "store@example.com", "password": PASSWORD}
    registered = client.post("/api/v1/users/register", json=body)
    assert registered.status_code == 201
    logged_in = client.post("/api/v1/users/login", json=body)
    assert logged_in.status_code == 200
    for response in (registered, logged_in):
        assert response.headers["Cache-Control"] == "no-store"
        assert set(response.json) == {
            "access_token",
            "token_type",
            "expires_in",
            "refresh_token",
        }
        assert response.json["token_type"] == "bearer"


def test_answers_to_requests_with_a_token_are_not_stored(client, auth):
    headers = auth.register()
    auth.add_post(headers, "mine alone")
    responses = [
        client.get(GET_POSTS, headers=headers),  # the database
        client.get(GET_POSTS, headers=headers),  # the cached bytes
        client.get(GET_POSTS + "?limit=1", headers=headers),
        client.get("/api/v1/users/me", headers=headers),
        client.post("/api/v1/posts/add-post", json={"text": "x"}, headers=headers),
        client.delete("/api/v1/posts/delete-post/999999", headers=headers),
        client.get(GET_POSTS, headers={"Authorization": "Bearer forged"}),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 404, 401]
    assert ids_and_texts(responses[0].json) == [
        {"id": responses[0].json[0]["id"], "text": "mine alone"}
    ]
    for response in responses:
        assert response.headers["Cache-Control"] == "no-store"


def test_public_answers_may_be_stored(client):
    for response in (client.get("/docs"), client.get("/api/v1/openapi.json")):
        assert response.status_code == 200
        assert "no-store" not in response.headers.get("Cache-Control", "")


def test_each_security_header_is_sent_once(app, client):
    """Added where absent, replaced where a view set it: never twice."""

    @app.get("/framed-by-its-view")
    def framed():
        return (
            "",
            204,
            {"X-Frame-Options": "SAMEORIGIN", "Content-Security-Policy": "x"},
        )

    for response in (client.get("/no/such/route"), client.get("/framed-by-its-view")):
        for name in (
            "X-Content-Type-Options",
            "X-Frame-Options",
            "Content-Security-Policy",
        ):
            assert len(response.headers.getlist(name)) == 1, (name, response.headers)
        assert response.headers["X-Frame-Options"] == "DENY"
        assert directives(response)["default-src"] == "'none'"

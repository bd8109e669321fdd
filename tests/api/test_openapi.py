"""The OpenAPI document and the pages that show it."""

import re

import pytest
from openapi_spec_validator import validate

from postservice.http.docs import ASSETS

DOCUMENT = "/api/v1/openapi.json"
BODY_ERRORS = {"400", "413", "415", "422"}
# What the server answers itself, before the app, to a request on any path
# (tests/server/test_server_answers.py sends each).
SERVER_ERRORS = {"400", "413", "431", "501"}
ARGUMENT = re.compile(r"<(?:[^:<>]+:)?(\w+)>")


@pytest.fixture
def document(client):
    response = client.get(DOCUMENT)
    assert response.status_code == 200
    assert response.content_type == "application/json"
    return response.json


def operations(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield method.upper(), path, operation


def test_document_is_valid_openapi(document):
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_api_route_is_documented(app, document):
    documented = {(method, path) for method, path, _ in operations(document)}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = ARGUMENT.sub(r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (method, path) in documented, rule.endpoint


def test_request_bodies_are_the_validating_schemas(document):
    schemas = document["components"]["schemas"]
    register = schemas["Register"]
    assert register["required"] == ["email", "password"]
    assert register["properties"]["email"]["format"] == "email"
    assert register["properties"]["password"]["minLength"] == 8
    assert schemas["AddPost"]["required"] == ["text"]
    paths = document["paths"]
    body = paths["/api/v1/users/register"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Register"
    }


def test_response_schemas_match_the_wire_format(document):
    schemas = document["components"]["schemas"]
    assert set(schemas["Token"]["properties"]) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
    }
    assert set(schemas["Session"]["properties"]) == {
        "id",
        "created_at",
        "last_used_at",
        "current",
        "user_agent",
    }
    assert set(schemas["PostCreated"]["properties"]) == {"PostID", "detail"}
    assert list(schemas["Post"]["properties"]) == [
        "id",
        "text",
        "created_at",
        "updated_at",
    ]
    for name in ("created_at", "updated_at"):
        time = schemas["Post"]["properties"][name]
        assert (time["type"], time["format"]) == ("string", "date-time")
    assert set(schemas["User"]["properties"]) == {"id", "email", "email_verified"}
    assert schemas["Error"]["required"] == ["detail"]
    assert set(schemas["ValidationError"]["required"]) == {"detail", "errors"}
    listing = document["paths"]["/api/v1/posts/get-posts"]["get"]["responses"]["200"]
    assert listing["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Post"},
    }


def test_status_codes_and_security(document):
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    expected = {
        ("POST", "/api/v1/users/register"): {"201", "429", "503"} | BODY_ERRORS,
        ("POST", "/api/v1/users/login"): {"200", "401", "403", "404", "429", "503"}
        | BODY_ERRORS,
        ("POST", "/api/v1/users/refresh"): {"200", "401", "403", "429", "503"}
        | BODY_ERRORS,
        ("GET", "/api/v1/users/me"): {"200", "401", "403", "503"},
        ("POST", "/api/v1/users/password-reset"): {"202", "429", "503"} | BODY_ERRORS,
        ("POST", "/api/v1/users/password-reset/confirm"): {"204", "429", "503"}
        | BODY_ERRORS,
        ("POST", "/api/v1/users/verify-email"): {"204", "429", "503"} | BODY_ERRORS,
        ("POST", "/api/v1/users/me/verify-email"): {
            "202",
            "400",
            "401",
            "403",
            "429",
            "503",
        },
        ("GET", "/api/v1/users/me/sessions"): {"200", "401", "403", "503"},
        ("DELETE", "/api/v1/users/me/sessions/{session_id}"): {
            "204",
            "401",
            "403",
            "404",
            "503",
        },
        ("POST", "/api/v1/users/logout"): {"204", "401", "403", "503"},
        ("POST", "/api/v1/posts/add-post"): {"200", "401", "403", "503"} | BODY_ERRORS,
        ("GET", "/api/v1/posts/get-posts"): {
            "200",
            "304",
            "401",
            "403",
            "412",
            "422",
            "503",
        },
        ("GET", "/api/v1/posts/get-post/{post_id}"): {
            "200",
            "304",
            "401",
            "403",
            "404",
            "412",
            "503",
        },
        ("PATCH", "/api/v1/posts/edit-post/{post_id}"): {
            "200",
            "401",
            "403",
            "404",
            "412",
            "503",
        }
        | BODY_ERRORS,
        ("DELETE", "/api/v1/posts/delete-post/{post_id}"): {
            "204",
            "401",
            "403",
            "404",
            "412",
            "503",
        },
    }
    found = {(m, p): op for m, p, op in operations(document)}
    for key, statuses in expected.items():
        operation = found[key]
        assert set(operation["responses"]) == statuses | SERVER_ERRORS, key
        protected = "401" in statuses and key[1] not in (
            "/api/v1/users/login",
            "/api/v1/users/refresh",
        )
        assert (operation.get("security") == [{"bearerAuth": []}]) == protected, key
        for status, response in operation["responses"].items():
            if status.startswith("4") or status.startswith("5"):
                schema = response["content"]["application/json"]["schema"]
                name = "ValidationError" if status == "422" else "Error"
                assert schema == {"$ref": f"#/components/schemas/{name}"}
    for operation in found.values():
        # The server's 400, whatever else the operation answers 400 for.
        assert "not well-formed HTTP" in operation["responses"]["400"]["description"]
    unauthorized = found[("GET", "/api/v1/users/me")]["responses"]["401"]
    assert unauthorized["headers"]["WWW-Authenticate"]["required"] is True
    throttled = found[("POST", "/api/v1/users/login")]["responses"]["429"]
    assert "Retry-After" in throttled["headers"]


def test_conditional_headers_are_documented(document):
    """What a generated client needs to revalidate and to edit without a
    lost update: the tag each answer carries and the header that sends it
    back. A 304 has no body, so it is described by its headers alone."""
    paths = document["paths"]
    both = ("If-None-Match", "If-Match")
    for path, method, conditions, tagged in (
        ("/api/v1/posts/get-posts", "get", both, ("200", "304")),
        ("/api/v1/posts/get-post/{post_id}", "get", both, ("200", "304")),
        ("/api/v1/posts/edit-post/{post_id}", "patch", both, ("200",)),
        ("/api/v1/posts/delete-post/{post_id}", "delete", both, ()),
    ):
        operation = paths[path][method]
        sent = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
        assert set(sent) >= set(conditions), path
        for condition in conditions:
            assert sent[condition]["schema"] == {"type": "string"}, (path, condition)
            assert not sent[condition].get("required", False), (path, condition)
        assert "412" in operation["responses"], path
        for status in tagged:
            answered = operation["responses"][status]["headers"]
            assert answered["ETag"]["schema"] == {"type": "string"}, (path, status)
        assert "content" not in operation["responses"].get("304", {}), path


def test_the_next_page_link_is_documented(document, client, auth):
    """get-posts answers a page with ``Link: <url>; rel="next"``; a client
    generated from the document must know the header is there."""
    headers = document["paths"]["/api/v1/posts/get-posts"]["get"]["responses"]
    assert headers["200"]["headers"]["Link"]["schema"] == {"type": "string"}
    token = auth.register()
    for text in ("one", "two"):
        client.post("/api/v1/posts/add-post", json={"text": text}, headers=token)
    page = client.get("/api/v1/posts/get-posts?limit=1", headers=token)
    assert page.headers["Link"].endswith('>; rel="next"')


def test_path_parameter_bounds(document):
    item = document["paths"]["/api/v1/posts/delete-post/{post_id}"]
    (parameter,) = item["parameters"]
    assert parameter["in"] == "path"
    assert parameter["schema"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 2**31 - 1,
    }


def test_docs_page_uses_only_bundled_assets(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.content_type.startswith("text/html")
    page = response.get_data(as_text=True)
    assert "http://" not in page
    assert "https://" not in page
    # Every script is a file, so the page's policy can refuse inline ones.
    assert page.count("<script") == page.count('<script src="/docs/') == 3
    for name in ("swagger-ui.css", "swagger-ui-bundle.js"):
        assert f"/docs/{name}" in page
        asset = client.get(f"/docs/{name}")
        assert asset.status_code == 200
        assert len(asset.data) > 1000
    start = client.get("/docs/swagger-ui-init.js")
    assert start.status_code == 200
    assert start.mimetype in ("text/javascript", "application/javascript")
    assert DOCUMENT in start.get_data(as_text=True)


def test_docs_assets_are_only_the_listed_files(client):
    assert "index.html" not in ASSETS
    response = client.get("/docs/index.html")
    assert response.status_code == 404
    assert response.json == {"detail": "Not Found"}
    assert client.get("/docs/../__init__.py").status_code == 404


def test_page_parameters_are_documented(document):
    operation = document["paths"]["/api/v1/posts/get-posts"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert set(parameters) == {"limit", "after_id", "If-None-Match", "If-Match"}
    assert parameters.pop("If-None-Match")["in"] == "header"
    assert parameters.pop("If-Match")["in"] == "header"
    assert all(p["in"] == "query" and not p["required"] for p in parameters.values())
    assert parameters["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
    }
    assert parameters["after_id"]["schema"]["minimum"] == 0


def test_the_cached_listing_is_only_documented_not_wrapped(app, document):
    # Its query and answer are in the document, yet the only layer around
    # the view is the token check: no parsing or dumping on every hit.
    view = app.view_functions["posts.get_posts"]
    layers = 0
    while hasattr(view, "__wrapped__"):
        view = view.__wrapped__
        layers += 1
    assert layers == 1
    operation = document["paths"]["/api/v1/posts/get-posts"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {
        "limit",
        "after_id",
        "If-None-Match",
        "If-Match",
    }
    assert "200" in operation["responses"]

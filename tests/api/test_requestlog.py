"""One log line per request, with a request id, and nothing secret in it."""

import logging
import re

import pytest

from ..support.auth import PASSWORD, AuthActions

LOGGER = "postservice.request"


@pytest.fixture
def request_log(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def lines(caplog):
    return [r for r in caplog.records if r.name == LOGGER]


def test_request_id_is_generated_and_echoed(client):
    first = client.get("/healthz").headers["X-Request-ID"]
    second = client.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_incoming_request_id_is_kept(client, request_log):
    response = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.42"})
    assert response.headers["X-Request-ID"] == "lb-7f3a.42"
    assert lines(request_log)[-1].request_id == "lb-7f3a.42"


@pytest.mark.parametrize("incoming", ["has spaces in it", "x" * 129, "semi;colon"])
def test_unusable_incoming_request_id_is_replaced(client, incoming):
    response = client.get("/healthz", headers={"X-Request-ID": incoming})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_one_line_with_method_path_status_duration_and_id(client, request_log):
    response = client.post("/api/v1/users/register", json={"email": "not an email"})
    assert response.status_code == 422
    [record] = lines(request_log)
    rid = response.headers["X-Request-ID"]
    assert re.fullmatch(
        rf"POST /api/v1/users/register 422 \d+\.\dms request_id={rid}",
        record.getMessage(),
    )
    assert (record.method, record.path, record.status) == (
        "POST",
        "/api/v1/users/register",
        422,
    )
    assert record.duration_ms >= 0


def test_errors_are_logged_too_and_stay_on_one_line(client, request_log):
    response = client.get("/no/such%0Aroute")
    assert response.status_code == 404
    [record] = lines(request_log)
    assert "\n" not in record.getMessage()
    assert record.getMessage().startswith("GET /no/such\\nroute 404 ")


def test_passwords_tokens_and_post_text_never_reach_the_logs(client, request_log):
    actions = AuthActions(client)
    secret_password = "Zebra-Quartz-8812"
    headers = actions.register("private@example.com", password=secret_password)
    token = headers["Authorization"].split()[1]
    client.post(
        "/api/v1/users/login",
        json={"email": "private@example.com", "password": secret_password},
    )
    client.post(
        "/api/v1/users/login",
        json={"email": "private@example.com", "password": PASSWORD + "-wrong"},
    )
    actions.add_post(headers, "my very private diary entry")
    actions.posts(headers)
    client.get("/api/v1/posts/get-posts?token=" + token, headers=headers)
    client.get("/api/v1/posts/get-posts", headers={"Authorization": "Bearer nope."})

    assert len(lines(request_log)) == 7
    everything = request_log.text
    for secret in (secret_password, PASSWORD, token, "private diary", "nope."):
        assert secret not in everything

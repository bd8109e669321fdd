"""LOG_FORMAT of the production server: readable lines by default, one JSON
object per line with json, and nothing secret either way."""

import pytest
import requests

import config

from ..support.auth import PASSWORD
from ..support.logs import REQUEST_FIELDS, SECRET_PASSWORD, SECRET_TEXT, json_lines
from ..support.processes import run_in_repo, server_env
from ..support.servers import SERVE, AppInstance


def traffic(base):
    """A session's worth of requests carrying every kind of secret."""
    register = requests.post(
        base + "/api/v1/users/register",
        json={"email": "private@example.com", "password": SECRET_PASSWORD},
        timeout=10,
    )
    assert register.status_code == 201
    token = register.json()["access_token"]
    headers = {"Authorization": "Bearer " + token}
    for password in (SECRET_PASSWORD, PASSWORD):
        requests.post(
            base + "/api/v1/users/login",
            json={"email": "private@example.com", "password": password},
            timeout=10,
        )
    requests.post(
        base + "/api/v1/posts/add-post",
        json={"text": SECRET_TEXT},
        headers=headers,
        timeout=10,
    )
    listing = requests.get(
        base + "/api/v1/posts/get-posts", headers=headers, timeout=10
    )
    requests.get(base + "/api/v1/posts/get-posts?token=" + token, timeout=10)
    requests.get(base + "/no/such/page", timeout=10)
    requests.post(base + "/api/v1/users/logout", headers=headers, timeout=10)
    return token, listing.headers["X-Request-ID"]


@pytest.fixture
def serve(tmp_path, database_url, redis_url):
    started = []

    def start(**env):
        instance = AppInstance(tmp_path, database_url, redis_url, threads=4, **env)
        started.append(instance)
        instance.start()
        return instance

    yield start
    for instance in started:
        instance.stop()


def assert_no_secrets(log, token):
    for secret in (SECRET_PASSWORD, PASSWORD, token, SECRET_TEXT):
        assert secret not in log


def test_json_server_log_is_one_object_per_line(serve):
    instance = serve(LOG_FORMAT="json")
    token, listing_id = traffic(instance.base)
    assert instance.terminate() == 0
    log = instance.log.read_text()

    lines = json_lines(log)  # every line parses
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    requests_logged = [
        line for line in lines if line["logger"] == "postservice.request"
    ]
    assert len(requests_logged) == 9
    assert all(set(line) >= REQUEST_FIELDS for line in requests_logged)
    [listing] = [line for line in requests_logged if line["request_id"] == listing_id]
    assert (listing["method"], listing["endpoint"], listing["status"]) == (
        "GET",
        "posts.get_posts",
        200,
    )
    assert [line["endpoint"] for line in requests_logged if line["status"] == 404] == [
        "none"
    ]
    assert lines[-1]["message"] == "stopped"
    assert_no_secrets(log, token)


def test_text_is_the_default_and_readable(serve):
    instance = serve()
    token, listing_id = traffic(instance.base)
    assert instance.terminate() == 0
    log = instance.log.read_text()
    request_lines = [
        line
        for line in log.splitlines()
        if line.startswith("INFO:postservice.request:")
    ]
    assert len(request_lines) == 9
    assert any(
        line.startswith("INFO:postservice.request:GET /api/v1/posts/get-posts 200 ")
        and line.endswith(f"request_id={listing_id}")
        for line in request_lines
    )
    assert_no_secrets(log, token)


def test_unknown_log_format_is_refused(database_url):
    with pytest.raises(config.ConfigError, match="LOG_FORMAT must be text or json"):
        config.log_format({"LOG_FORMAT": "xml"})
    assert config.log_format({}) == "text"
    assert config.log_format({"LOG_FORMAT": " JSON "}) == "json"
    env = server_env(database_url, None, LOG_FORMAT="xml")
    result = run_in_repo([*SERVE], env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "postservice: configuration error: LOG_FORMAT must be text or json, got 'xml'"
    )

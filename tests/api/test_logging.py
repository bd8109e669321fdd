"""LOG_FORMAT: readable lines by default, one JSON object per line with json.

Either way nothing secret is written: passwords, tokens, post text and the
values of SQL statements.
"""

import io
import json
import logging

import pytest
import requests
from flask_jwt_extended import create_access_token

import config
from postservice.ops import logs

from ..support.auth import PASSWORD
from ..support.processes import run_in_repo, server_env
from ..support.servers import SERVE, AppInstance

SECRET_PASSWORD = "Zebra-Quartz-8812"
SECRET_TEXT = "my very private diary entry"
REQUEST_FIELDS = {
    "time",
    "level",
    "logger",
    "message",
    "request_id",
    "method",
    "path",
    "endpoint",
    "status",
    "duration_ms",
}


@pytest.fixture
def json_log():
    """Everything logged during the test, as the json format writes it."""
    stream = io.StringIO()
    handler = logs.json_handler(stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def failing_insert(make_app, tmp_path):
    """A post whose INSERT fails: the app's database has no tables.

    The error is logged with its traceback, which names the statement; its
    values (the post's text) must not be in it.
    """
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/empty.sqlite")
    with app.app_context():
        token = create_access_token(identity="1")
    return app.test_client().post(
        "/api/v1/posts/add-post",
        json={"text": SECRET_TEXT},
        headers={"Authorization": "Bearer " + token},
    )


def test_sql_values_stay_out_of_text_logs(make_app, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    response = failing_insert(make_app, tmp_path)
    assert response.status_code == 503
    assert "database unavailable: OperationalError" in caplog.text
    # Neither the statement nor its values: the kind and code say enough.
    assert "INSERT INTO posts" not in caplog.text
    assert SECRET_TEXT not in caplog.text


def test_sql_values_stay_out_of_json_logs(make_app, tmp_path, json_log):
    response = failing_insert(make_app, tmp_path)
    assert response.status_code == 503
    lines = json_lines(json_log.getvalue())
    [warning] = [line for line in lines if line["logger"] == "postservice.http.errors"]
    assert warning["level"] == "WARNING"
    assert warning["message"].startswith("database unavailable: OperationalError")
    assert "INSERT INTO posts" not in json_log.getvalue()
    # A line written during a request carries its id, as the request line does.
    assert warning["request_id"] == response.headers["X-Request-ID"]
    assert SECRET_TEXT not in json_log.getvalue()


def test_request_line_in_json_has_its_fields(client, json_log):
    response = client.get("/api/v1/posts/get-posts")
    assert response.status_code == 401
    [line] = [
        line
        for line in json_lines(json_log.getvalue())
        if line["logger"] == "postservice.request"
    ]
    assert set(line) >= REQUEST_FIELDS
    assert line["level"] == "INFO"
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert (line["method"], line["endpoint"], line["status"]) == (
        "GET",
        "posts.get_posts",
        401,
    )
    assert line["path"] == "/api/v1/posts/get-posts"
    assert line["duration_ms"] >= 0
    assert line["time"].endswith("+00:00")


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

"""LOG_FORMAT: readable lines by default, one JSON object per line with json.

Either way nothing secret is written: passwords, tokens, post text and the
values of SQL statements. The production server's own log:
tests/server/test_server_logs.py.
"""

import io
import logging

import pytest
from flask_jwt_extended import create_access_token

from postservice.ops import logs

from ..support.logs import REQUEST_FIELDS, SECRET_TEXT, json_lines


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

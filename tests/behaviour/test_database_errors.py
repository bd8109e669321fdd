"""A database failing mid-request leaves no SQL and no data in logs or bodies."""

import logging
import secrets

import pytest
from flask_migrate import upgrade
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from postservice import create_app
from postservice.extensions import db

from ..support.auth import AuthActions
from ..support.settings import TEST_DATABASE_URL


def migrated(url):
    # In set-up, not in the test: Alembic's logging set-up replaces the
    # root handlers, pytest's log capture among them.
    app = create_app({"MODE": "testing", "SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return url


@pytest.fixture
def breakable_database_url(tmp_path):
    """A database of this test's own, so breaking it disturbs no other test."""
    if not TEST_DATABASE_URL:
        yield migrated(f"sqlite:///{tmp_path / 'breakable.sqlite'}")
        return
    name = "breakable_" + secrets.token_hex(4)
    server = create_engine(make_url(TEST_DATABASE_URL).set(database=""))
    with server.begin() as conn:
        conn.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    try:
        url = make_url(TEST_DATABASE_URL).set(database=name)
        yield migrated(url.render_as_string(hide_password=False))
    finally:
        with server.begin() as conn:
            conn.execute(text(f"DROP DATABASE {name}"))
        server.dispose()


def test_a_failed_insert_logs_no_statement_and_no_text(
    make_app, breakable_database_url, caplog
):
    app = make_app(SQLALCHEMY_DATABASE_URI=breakable_database_url, REDIS_URL=None)
    client = app.test_client()
    headers = AuthActions(client).register(email="owner@example.com")
    with app.app_context():  # the table goes away under the running app
        db.session.execute(text("ALTER TABLE posts RENAME TO posts_elsewhere"))
        db.session.commit()
    secret = "my secret diary " + secrets.token_hex(8)
    caplog.set_level(logging.DEBUG)

    response = client.post(
        "/api/v1/posts/add-post", json={"text": secret}, headers=headers
    )

    # SQLite calls a missing table operational (503), MySQL a programming
    # error (500); either way the answer is one line of JSON.
    assert response.status_code in (500, 503)
    assert set(response.json) == {"detail"}
    logged = "\n".join(
        record.getMessage() + (record.exc_text or "") for record in caplog.records
    )
    assert "database" in logged, (response.status_code, response.json)
    for leak in (secret, "INSERT", "posts_elsewhere", "owner@example.com"):
        assert leak not in logged
        assert leak not in response.get_data(as_text=True)
    with app.app_context():
        db.engine.dispose()

"""Migration 0006 gives the posts stored before it the time it ran.

On a database of its own (SQLite, or a scratch database next to
``TEST_DATABASE_URL`` on MariaDB), migrated to 0005, given a post, then
migrated to the head.
"""

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from postservice import create_app
from postservice.extensions import db

from ..support.settings import TEST_DATABASE_URL, require
from ..support.time_zone import server_time_zone


@pytest.fixture
def scratch_url(tmp_path):
    if not TEST_DATABASE_URL:
        yield "sqlite:///" + str(tmp_path / "migrated.sqlite")
        return
    url = make_url(TEST_DATABASE_URL)
    name = f"{url.database}_migration"
    server = create_engine(url.set(database=None))
    with server.begin() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with server.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()


def now():
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


# On MariaDB also with the server set to a time zone ahead of UTC: the
# times are UTC all the same.
@pytest.mark.parametrize(
    "server_zone", [None, pytest.param("+05:00", marks=pytest.mark.mysql)]
)
def test_posts_stored_before_get_the_time_of_the_migration(scratch_url, server_zone):
    if server_zone is None:
        zone = contextlib.nullcontext()
    else:
        require(TEST_DATABASE_URL, "TEST_DATABASE_URL", "a MySQL server's time zone")
        zone = server_time_zone(TEST_DATABASE_URL, server_zone)
    app = create_app({"MODE": "testing", "SQLALCHEMY_DATABASE_URI": scratch_url})
    with zone, app.app_context():
        upgrade(revision="0005")
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (email, password_hash)"
                    " VALUES ('a@example.com', 'x')"
                )
            )
            conn.execute(
                text("INSERT INTO posts (user_id, text) SELECT id, 'old' FROM users")
            )
        before = now()
        upgrade()
        after = now()
        with db.engine.begin() as conn:
            old = conn.execute(
                text("SELECT id, created_at, updated_at FROM posts")
            ).one()
            conn.execute(text("DELETE FROM posts"))
            conn.execute(
                text("INSERT INTO posts (user_id, text) SELECT id, 'new' FROM users")
            )
            new = conn.execute(
                text("SELECT id, created_at, updated_at FROM posts WHERE text = 'new'")
            ).one()
        stamped = [
            value if isinstance(value, datetime) else datetime.fromisoformat(value)
            for value in (*old[1:], *new[1:])
        ]
        # Both of the old post's times are the migration's, in UTC; a bounded
        # window around it, a second either side for whole-second rounding.
        slack = timedelta(seconds=1)
        assert stamped[0] == stamped[1], old
        assert before - slack <= stamped[0] <= after + slack, (before, old, after)
        # Posts stored after it get the time they were stored.
        assert stamped[2] == stamped[3], new
        assert after - slack <= stamped[2] <= now() + slack, (after, new)
        # A deleted post's id is not given again after the change of table
        # (SQLite copies it, AUTOINCREMENT and all).
        assert new[0] > old[0]
        downgrade(revision="0005")
        names = {c["name"] for c in inspect(db.engine).get_columns("posts")}
        assert names == {"id", "user_id", "text"}
        db.engine.dispose()


def test_every_migration_goes_down_to_base_and_up_again(scratch_url):
    """``flask db downgrade base`` undoes every migration, in order, on
    MariaDB too (where an index a foreign key needs cannot be dropped
    before its table), and the schema comes back whole."""
    app = create_app({"MODE": "testing", "SQLALCHEMY_DATABASE_URI": scratch_url})
    with app.app_context():
        upgrade()
        tables = set(inspect(db.engine).get_table_names())
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        assert set(inspect(db.engine).get_table_names()) == tables
        db.engine.dispose()

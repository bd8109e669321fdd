"""Writes the database rolls back are run again, a bounded number of times.

Another connection holds an uncommitted registration of an email, so the
app's insert of the same email waits for its lock, for one second here
(``innodb_lock_wait_timeout``), and is rolled back with 1205.
"""

import threading

import pymysql
import pytest
from sqlalchemy.engine import make_url

from ..support.auth import PASSWORD
from ..support.settings import TEST_DATABASE_URL, require

# InnoDB's row locks: these run in the MariaDB pass; the SQLite pass
# deselects them with -m "not mysql".
pytestmark = pytest.mark.mysql

EMAIL = "held@example.com"


@pytest.fixture
def mysql_url(database_url):
    require(TEST_DATABASE_URL, "TEST_DATABASE_URL", "it needs InnoDB's row locks")
    return database_url


@pytest.fixture
def short_lock_app(make_app, mysql_url):
    return make_app(
        DATABASE_RETRIES=2,
        SQLALCHEMY_ENGINE_OPTIONS={
            "pool_pre_ping": True,
            "connect_args": {"init_command": "SET SESSION innodb_lock_wait_timeout=1"},
        },
    )


@pytest.fixture
def held_registration(mysql_url):
    """A connection that has inserted ``EMAIL`` and not committed yet."""
    url = make_url(mysql_url)
    connection = pymysql.connect(
        host=url.host,
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
        database=url.database,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO users (email, password_hash, token_version)"
            " VALUES (%s, 'x', 0)",
            (EMAIL,),
        )
    yield connection
    connection.close()


def register(app):
    return app.test_client().post(
        "/api/v1/users/register", json={"email": EMAIL, "password": PASSWORD}
    )


def test_lock_waits_that_never_end_are_a_distinct_503(
    short_lock_app, held_registration
):
    response = register(short_lock_app)
    held_registration.rollback()
    assert response.status_code == 503
    assert response.json == {"detail": "Database busy, try again"}
    assert response.headers["Retry-After"] == "1"


def test_the_retry_answers_as_if_the_requests_came_in_turn(
    short_lock_app, held_registration
):
    # The other registration commits while ours waits or is being retried.
    committer = threading.Timer(1.5, held_registration.commit)
    committer.start()
    try:
        response = register(short_lock_app)
    finally:
        committer.join()
    assert response.status_code == 400
    assert response.json == {"detail": "User already exists"}

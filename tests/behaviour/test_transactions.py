"""Writes the database rolls back are run again, a bounded number of times.

Another connection holds an uncommitted registration of an email, so the
app's insert of the same email waits for its lock, for one second here
(``innodb_lock_wait_timeout``), and is rolled back with 1205.
"""

import threading

import pymysql
import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from postservice.extensions import db

from ..support.auth import PASSWORD, AuthActions
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


@pytest.mark.parametrize("idempotency_key", [None, "post-2"])
def test_an_add_whose_new_id_is_taken_is_tried_again(
    mysql_url, make_app, idempotency_key
):
    """Galera's nodes change how they draw ids when one joins or leaves, and
    for a moment one may draw an id another node has just used: the INSERT
    fails with 1062, a duplicate key, and stored nothing. The add draws
    another id; a duplicate is not the account's absence (401). With an
    ``Idempotency-Key`` too, whose record is written in the same
    transaction."""
    app = make_app()
    actions = AuthActions(app.test_client())
    headers = actions.register()
    taken = actions.add_post(headers, "first")
    if idempotency_key is not None:
        headers = {**headers, "Idempotency-Key": idempotency_key}
    tries = []

    def taken_id(conn, cursor, statement, parameters, context, executemany):
        # The first INSERT of a post is given the id of the post stored
        # above, as a node drawing a used id would.
        if statement.startswith("INSERT INTO posts (") and not tries:
            tries.append(statement)
            statement = statement.replace(
                "INSERT INTO posts (", "INSERT INTO posts (id, ", 1
            )
            statement = statement.replace("VALUES (", f"VALUES ({taken}, ", 1)
        return statement, parameters

    with app.app_context():
        engines = list(db.engines.values())
    for engine in engines:
        event.listen(engine, "before_cursor_execute", taken_id, retval=True)
    try:
        second = actions.add_post(headers, "second")
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", taken_id)
    assert tries  # the duplicate was met
    assert second > taken
    assert [(p["id"], p["text"]) for p in actions.listing(headers)] == [
        (taken, "first"),
        (second, "second"),
    ]
    if idempotency_key is not None:  # recorded: sent again, it stores nothing
        assert actions.add_post(headers, "second") == second
        assert len(actions.listing(headers)) == 2

"""Recovery from database connections that died while idle in the pool."""

import contextlib
import time
from select import POLLHUP, POLLIN, poll

import pymysql
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from postservice.db import transactions
from postservice.extensions import db
from postservice.models import User

from ..support.auth import PASSWORD, AuthActions
from ..support.settings import TEST_DATABASE_URL, require


def kill_idle_connections(app):
    """Kill the pool's idle connections behind its back, as a database restart would.

    Returns how many were killed. Nothing is checked out, so the pool learns
    of it only when it next hands one out.
    """
    with app.app_context():
        engine = db.engine
        pools = [e.pool for e in {db.engine, *db.engines.values()}]
    if engine.dialect.name not in ("mysql", "mariadb"):
        idle = list(engine.pool._pool.queue)  # SQLite: no server to kill them
        for record in idle:
            record.dbapi_connection.close()
        return len(idle)
    with server_cursor(engine.url) as cursor:
        cursor.execute(
            "SELECT id FROM information_schema.processlist"
            " WHERE db = %s AND id <> CONNECTION_ID()",
            (engine.url.database,),
        )
        ids = [row[0] for row in cursor.fetchall()]
        kill(cursor, ids, pools)
    return len(ids)


def kill(cursor, ids, pools=()):
    """Kill the server's connections ``ids`` and wait until they are gone,
    and until the idle ones of ``pools`` have the server's close waiting.

    KILL returns before the server has ended the connection, and the
    server may drop it from its process list before its close reaches the
    client; a restart has done both by the time anyone asks again. A
    connection gone from the process list runs nothing more sent to it.
    """
    for thread_id in ids:
        cursor.execute(f"KILL {int(thread_id)}")
    deadline = time.monotonic() + 10
    while ids and time.monotonic() < deadline:
        cursor.execute("SELECT id FROM information_schema.processlist")
        if not set(ids) & {row[0] for row in cursor.fetchall()}:
            break
        time.sleep(0.05)
    else:
        if ids:
            pytest.fail(f"connections {ids} still listed 10 s after KILL")
    for pool in pools:
        for record in list(pool._pool.queue):
            conn = record.dbapi_connection
            if conn is not None and conn.thread_id() in ids:
                poller = poll()
                poller.register(conn._sock, POLLIN | POLLHUP)
                if not poller.poll(max(0, deadline - time.monotonic()) * 1000):
                    pytest.fail(f"connection {conn.thread_id()} not closed after KILL")


@contextlib.contextmanager
def server_cursor(url):
    """A cursor on a connection of its own to the server behind ``url``."""
    conn = pymysql.connect(
        host=url.host,
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
    )
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


def test_requests_succeed_after_idle_connections_died(app):
    actions = AuthActions(app.test_client())
    headers = actions.register("survivor@example.com")
    actions.add_post(headers, "kept")
    assert kill_idle_connections(app) >= 1
    login = actions.client.post(
        "/api/v1/users/login",
        json={"email": "survivor@example.com", "password": PASSWORD},
    )
    assert login.status_code == 200, login.get_data(as_text=True)
    assert [post["text"] for post in actions.posts(headers)] == ["kept"]


def test_killed_connections_really_are_dead_without_pre_ping(make_app):
    """Guards the test above: what it kills fails when nothing pings it first."""
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": False})
    AuthActions(app.test_client()).register("fragile@example.com")
    assert kill_idle_connections(app) >= 1
    with app.app_context(), pytest.raises(DBAPIError):
        db.session.execute(text("SELECT 1"))


@pytest.mark.parametrize("idempotency_key", [None, "orphan-1"])
def test_token_of_a_deleted_account_cannot_add_posts(
    app, auth, client, idempotency_key
):
    headers = auth.register("gone@example.com")
    auth.add_post(headers, "orphan-to-be")
    if idempotency_key is not None:  # the INSERT runs in the key's transaction
        headers = {**headers, "Idempotency-Key": idempotency_key}
    with app.app_context():
        db.session.execute(text("DELETE FROM users WHERE email = 'gone@example.com'"))
        db.session.commit()
        # The schema's ON DELETE CASCADE removed the posts, on every backend.
        assert db.session.execute(text("SELECT COUNT(*) FROM posts")).scalar() == 0
    response = client.post(
        "/api/v1/posts/add-post", json={"text": "orphan"}, headers=headers
    )
    assert response.status_code == 401
    assert response.json == {"detail": "Could not validate credentials"}
    assert response.headers["WWW-Authenticate"] == "Bearer"
    with app.app_context():
        assert db.session.execute(text("SELECT COUNT(*) FROM posts")).scalar() == 0
        keys = db.session.execute(text("SELECT COUNT(*) FROM idempotency_keys"))
        assert keys.scalar() == 0


def unchecked_pool_app(make_app):
    """An app whose pool hands out connections without looking at them: every
    connection killed while idle is met by a request's statement, as when a
    server goes between a checkout's look and the statement."""
    require(TEST_DATABASE_URL, "TEST_DATABASE_URL", "a server closes a connection")
    return make_app(SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": False})


@pytest.mark.mysql
def test_a_login_and_a_password_change_survive_connections_lost_unnoticed(make_app):
    app = unchecked_pool_app(make_app)
    actions = AuthActions(app.test_client())
    actions.register("unnoticed@example.com")
    assert kill_idle_connections(app) >= 1
    login = actions.client.post(
        "/api/v1/users/login",
        json={"email": "unnoticed@example.com", "password": PASSWORD},
    )
    assert login.status_code == 200, login.get_data(as_text=True)
    headers = {"Authorization": f"Bearer {login.get_json()['access_token']}"}
    assert kill_idle_connections(app) >= 1
    changed = actions.client.post(
        "/api/v1/users/change-password",
        json={"current_password": PASSWORD, "new_password": PASSWORD + "-2"},
        headers=headers,
    )
    assert changed.status_code == 200, changed.get_data(as_text=True)


def _add_user(email, tries, before_commit=lambda: None):
    """Work for ``transactions.run``: one user added, its tries counted."""

    def work():
        tries.append(email)
        db.session.add(User(email=email, password_hash="x", token_version=0))
        db.session.flush()
        before_commit()
        db.session.commit()

    return work


def _emails(app):
    with app.app_context():
        return db.session.scalars(select(User.email)).all()


@pytest.mark.mysql
def test_a_transaction_whose_connection_died_before_its_commit_runs_again(make_app):
    app = unchecked_pool_app(make_app)
    with app.app_context():
        db.session.execute(text("SELECT 1"))  # a connection to the pool
        db.session.rollback()
    assert kill_idle_connections(app) >= 1
    tries = []
    with app.app_context():
        transactions.run(_add_user("again@example.com", tries))
    assert tries == ["again@example.com"] * 2
    assert _emails(app) == ["again@example.com"]


@pytest.mark.mysql
def test_a_transaction_whose_connection_died_in_its_commit_is_not_run_again(make_app):
    """The commit may have happened: only work that can tell runs again."""
    app = unchecked_pool_app(make_app)
    tries = []

    def die():  # the connection is gone when the COMMIT is sent
        own = db.session.execute(text("SELECT CONNECTION_ID()")).scalar()
        with server_cursor(db.engine.url) as cursor:
            kill(cursor, [own])

    with app.app_context(), pytest.raises(DBAPIError) as lost:
        transactions.run(_add_user("once@example.com", tries, die))
    assert transactions.connection_lost(lost.value)
    assert tries == ["once@example.com"]
    assert _emails(app) == []


@pytest.mark.mysql
def test_only_the_connection_the_server_closed_is_replaced(app):
    """Checkout finds a dead connection by itself and keeps the healthy ones."""
    # SQLite connections have no server that could close them.
    require(TEST_DATABASE_URL, "TEST_DATABASE_URL", "a server closes a connection")
    with app.app_context():
        engine = db.engine

    def checked_out_ids():
        conns = [engine.connect() for _ in range(3)]
        try:
            return [c.execute(text("SELECT CONNECTION_ID()")).scalar() for c in conns]
        finally:
            for c in conns:
                c.close()

    first = checked_out_ids()
    victim, *survivors = first
    with server_cursor(engine.url) as cursor:
        kill(cursor, [victim], [engine.pool])
    second = checked_out_ids()
    assert set(survivors) <= set(second)
    (replacement,) = set(second) - set(survivors)
    assert replacement not in first

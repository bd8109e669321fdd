"""Fixtures in the style of Flask's tutorial: app, client, runner, and helpers.

The suite runs on SQLite and the in-process cache by default. Set
``TEST_DATABASE_URL`` (MySQL/MariaDB) and ``TEST_REDIS_URL`` to run the same
tests against real servers. Both are wiped: the database's tables are
dropped and migrated afresh, and the Redis database is flushed.
"""

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests
from flask_migrate import upgrade
from sqlalchemy import event, text

from postservice import create_app
from postservice.extensions import db

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")
IN_CI = os.environ.get("CI", "").lower() == "true"
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
# One signing key per test session, shared by every app and server it starts,
# so a token from one is accepted by the others as in a real deployment.
JWT_SECRET = secrets.token_urlsafe(48)


def require(url, name, why):
    """Skip locally when a server is not configured; in CI that is a failure."""
    if url:
        return url
    if IN_CI:
        pytest.fail(f"{name} must be set in CI: {why}")
    pytest.skip(f"set {name} to run this: {why}")
    return None


def require_program(path, why):
    """Like ``require`` for an installed program, such as the browser."""
    if os.access(path, os.X_OK):
        return path
    if IN_CI:
        pytest.fail(f"{path} must be installed in CI: {why}")
    pytest.skip(f"install {path} to run this: {why}")
    return None


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    url = TEST_DATABASE_URL or "sqlite:///" + str(
        tmp_path_factory.mktemp("db") / "test.sqlite"
    )
    app = create_app({"MODE": "testing", "SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        upgrade()  # the committed migrations, not create_all()
        db.engine.dispose()
    return url


@pytest.fixture(scope="session")
def redis_url():
    if TEST_REDIS_URL:
        redis.Redis.from_url(TEST_REDIS_URL).flushdb()
    return TEST_REDIS_URL


@pytest.fixture
def real_redis_url(redis_url):
    return require(
        redis_url, "TEST_REDIS_URL", "it checks behaviour of the Redis cache"
    )


@pytest.fixture
def make_app(database_url, redis_url):
    """Build apps on the test database; ``settings`` override the defaults."""
    apps = []

    def make(**settings):
        config = {
            "MODE": "testing",
            "SQLALCHEMY_DATABASE_URI": database_url,
            "REDIS_URL": redis_url,
            "JWT_SECRET_KEY": JWT_SECRET,
        }
        config.update(settings)
        app = create_app(config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture(autouse=True)
def _clean_database(request):
    """Each test starts with no users and no posts (ids keep growing)."""
    if "database_url" not in request.fixturenames:
        yield
        return
    yield
    url = request.getfixturevalue("database_url")
    app = create_app({"MODE": "testing", "SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        db.session.execute(text("DELETE FROM posts"))
        db.session.execute(text("DELETE FROM users"))
        db.session.commit()
        db.engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@contextlib.contextmanager
def executed_sql(app):
    """Collects ``(cursor, statement)`` for every SQL statement the app sends."""
    seen = []

    def record(conn, cursor, statement, *args):
        seen.append((cursor, statement))

    with app.app_context():
        engines = list(db.engines.values())  # the autocommit one on MySQL too
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def changed(segment):
    """A token segment with its middle character swapped: always other bytes.

    The middle character carries six whole bits. The last one does not (a
    decoder ignores its spare bits), and a fixed replacement for it can equal
    the original: a signature ends in "AA" once in 1,024 tokens.
    """
    middle = len(segment) // 2
    swapped = "A" if segment[middle] != "A" else "B"
    return segment[:middle] + swapped + segment[middle + 1 :]


class AuthActions:
    """Registers users and builds their Authorization headers."""

    def __init__(self, client):
        self.client = client
        self.count = 0

    def register(self, email=None, password=PASSWORD):
        self.count += 1
        email = email or f"user{self.count}@example.com"
        response = self.client.post(
            "/api/v1/users/register", json={"email": email, "password": password}
        )
        assert response.status_code == 201, response.get_data(as_text=True)
        return {"Authorization": "Bearer " + response.json["access_token"]}

    def add_post(self, headers, text):
        response = self.client.post(
            "/api/v1/posts/add-post", json={"text": text}, headers=headers
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.json["PostID"]

    def posts(self, headers):
        response = self.client.get("/api/v1/posts/get-posts", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.json


@pytest.fixture
def auth(client):
    return AuthActions(client)


def run_in_repo(args, env=None, timeout=60):
    """Run a command from the repository root; returns it finished, never raises."""
    return subprocess.run(
        args,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url, process, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not start")


def server_env(database_url, redis_url, **extra):
    env = dict(os.environ)
    for name in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET_KEY"):
        env.pop(name, None)
    env.update(
        POSTSERVICE_ENV="testing",
        DATABASE_URL=database_url,
        JWT_SECRET_KEY=JWT_SECRET,
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


@pytest.fixture
def start_server(database_url, redis_url):
    """Start real waitress processes serving the app; yields a starter."""
    processes = []

    def start(threads=8, **env_overrides):
        port = free_port()
        env = server_env(database_url, redis_url, **env_overrides)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "waitress",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--threads={threads}",
                "--call",
                "postservice:create_app",
            ],
            env=env,
            cwd=ROOT,
        )
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/", process)
        return base

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def engine():
    """The environment for docker and docker-compose (tests/containers.py)."""
    from .containers import engine_env

    return engine_env()

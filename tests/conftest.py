"""Fixtures in the style of Flask's tutorial: app, client, runner and auth.

Fixtures and hooks only: what tests import lives in ``tests/support/``.

The suite runs on SQLite and the in-process cache by default. Set
``TEST_DATABASE_URL`` (MySQL/MariaDB) and ``TEST_REDIS_URL`` to run the same
tests against real servers. Both are wiped: the database's tables are
dropped and migrated afresh once, its rows deleted after each test, and the
Redis database is flushed before each test that can reach it.
"""

from pathlib import Path

import pytest
import redis
from flask_migrate import upgrade
from sqlalchemy import text

from postservice import create_app
from postservice.db.engines import dispose_side_engine
from postservice.extensions import db

from .support.auth import AuthActions
from .support.servers import AppInstance
from .support.settings import (
    JWT_SECRET,
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    require,
)
from .support.smtp import SMTPCatcher

TESTS = Path(__file__).parent
# The directories tests are in, each the name of the marker its tests get.
KINDS = ("unit", "api", "behaviour", "server", "topologies", "deploy")


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
    """``TEST_REDIS_URL``, or None for the in-process cache; see ``_clean_redis``."""
    return TEST_REDIS_URL


@pytest.fixture(autouse=True)
def _clean_redis(request):
    """Each test that can reach the test Redis starts with its database empty.

    Cache entries, token verdicts and throttle counters a test leaves never
    reach the next one. Only the test database is flushed; a fixture whose
    state in Redis must outlive one test keeps it on a server of its own, as
    the topology fixtures (``tests/support/engines.py``) do.
    """
    if TEST_REDIS_URL and "redis_url" in request.fixturenames:
        with redis.Redis.from_url(TEST_REDIS_URL) as server:
            server.flushdb()


@pytest.fixture
def real_redis_url(redis_url):
    """``TEST_REDIS_URL``; skipped without it, a failure in CI. Tests that use
    it are marked ``redis`` (``pytest_collection_modifyitems``)."""
    return require(
        redis_url, "TEST_REDIS_URL", "it checks behaviour of the Redis cache"
    )


@pytest.fixture
def redis_app(make_app, real_redis_url):
    """An app on the real Redis."""
    return make_app(REDIS_URL=real_redis_url)


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
        dispose_side_engine(app)


@pytest.fixture(autouse=True)
def _clean_database(request):
    """Each test starts with no users, no posts, no mail and no announced
    invalidations (ids keep growing)."""
    if "database_url" not in request.fixturenames:
        yield
        return
    yield
    url = request.getfixturevalue("database_url")
    app = create_app({"MODE": "testing", "SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        db.session.execute(text("DELETE FROM posts"))
        db.session.execute(text("DELETE FROM users"))
        # Not the users': a reset asked for an unknown email has no account.
        db.session.execute(text("DELETE FROM mail_outbox"))
        db.session.execute(text("DELETE FROM cache_announcements"))
        db.session.execute(text("DELETE FROM upgrade_tasks"))
        db.session.commit()
        db.engine.dispose()


@pytest.fixture
def smtp():
    """A real SMTP server (aiosmtpd) on a spare port; ``.inbox`` holds its mail."""
    catcher = SMTPCatcher()
    catcher.start()
    yield catcher
    catcher.stop()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def auth(client):
    return AuthActions(client)


@pytest.fixture
def start_server(tmp_path, database_url, redis_url):
    """Start ``python -m postservice.serve`` processes on the test database and
    Redis (``support.servers.AppInstance``); yields a starter that returns
    each one's base URL. Their logs are in the test's ``tmp_path``."""
    instances = []

    def start(threads=8, **env_overrides):
        instance = AppInstance(
            tmp_path, database_url, redis_url, threads=threads, **env_overrides
        )
        instances.append(instance)
        return instance.start()

    yield start
    for instance in instances:
        instance.stop()


@pytest.fixture(scope="session")
def engine():
    """The environment for docker and docker-compose (tests/support/containers.py)."""
    from .support.containers import engine_env

    return engine_env()


def pytest_collection_modifyitems(items):
    """Each test is marked with its kind, the directory it is in (setup.cfg
    declares them), and ``redis`` when it needs ``TEST_REDIS_URL``."""
    for item in items:
        if not item.path.is_relative_to(TESTS):
            continue
        kind = item.path.relative_to(TESTS).parts[0]
        if kind not in KINDS:
            raise pytest.UsageError(
                f"{item.nodeid}: test modules belong in one of the directories "
                + ", ".join(f"tests/{name}/" for name in KINDS)
            )
        item.add_marker(kind)
        # A fixture parametrized over caches marks its Redis case itself.
        if "real_redis_url" in item.fixturenames:
            item.add_marker(pytest.mark.redis)

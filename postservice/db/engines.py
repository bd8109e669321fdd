"""The database's wiring into an app: the engines, and the session's end.

On MySQL a second engine, bound as ``AUTOCOMMIT_BIND``, runs work that is a
single statement: an ``INSERT`` or ``DELETE`` of one row, or one ``SELECT``
of a listing. Its connections are in autocommit mode, so the statement
commits as it ends: one round trip, where a transaction costs three (the
statement, ``COMMIT``, and the pool's ``ROLLBACK`` when the connection goes
back). It is as durable: the server answers only after the commit, and a
statement rolled back by a deadlock or a Galera conflict fails the same
way. Work of several statements stays in the session's transactions.
"""

import contextlib
import logging
import threading

from sqlalchemy import create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool

from postservice.db.pool import SocketCheckedPool
from postservice.extensions import db
from postservice.http.errors import database_error_summary

log = logging.getLogger(__name__)

# The bind of the MySQL engine whose connections autocommit.
AUTOCOMMIT_BIND = "autocommit"
# Seconds a request waits for a pooled connection before failing (a 503).
POOL_TIMEOUT = 5
# Below MySQL's default wait_timeout, so idle connections are replaced
# before the server drops them.
POOL_RECYCLE = 1800
# Every MySQL connection's time zone: CURRENT_TIMESTAMP is then UTC.
SESSION_TIME_ZONE = "time_zone = '+00:00'"


def engine_settings(config):
    """Flask-SQLAlchemy's engine settings, from ours in ``config``."""
    url = config["SQLALCHEMY_DATABASE_URI"]
    # SQL parameters hold post text, emails and password hashes: never let
    # them into an exception message that could reach a log.
    engine = {"pool_pre_ping": True, "hide_parameters": True}
    binds = {}
    if url.startswith(("mysql", "mariadb")):
        engine.update(
            # A dead pooled connection is found by polling its socket, not
            # by a ping round trip before every request (see pool.py).
            pool_pre_ping=False,
            poolclass=SocketCheckedPool,
            pool_recycle=POOL_RECYCLE,
            pool_size=config["DATABASE_POOL_SIZE"],
            max_overflow=config["DATABASE_MAX_OVERFLOW"],
            pool_timeout=POOL_TIMEOUT,
            connect_args={
                "connect_timeout": config["DATABASE_CONNECT_TIMEOUT"],
                # A hung server (or a Galera node cut off from the others)
                # costs a request this long, then a 503, not a stuck thread.
                "read_timeout": config["DATABASE_READ_TIMEOUT"],
                "write_timeout": config["DATABASE_WRITE_TIMEOUT"],
                "charset": "utf8mb4",
                # Times the database sets (a post's created_at) are UTC,
                # whatever the server's own time zone: set once per connection.
                "init_command": f"SET SESSION {SESSION_TIME_ZONE}",
            },
        )
        sync_wait = config["DATABASE_WSREP_SYNC_WAIT"]
        if sync_wait is not None:
            # Galera applies other nodes' commits after acknowledging them:
            # 1 makes each read wait until this node has applied every
            # commit the cluster acknowledged before the read began.
            engine["connect_args"]["init_command"] += f", wsrep_sync_wait={sync_wait}"
        binds[AUTOCOMMIT_BIND] = {
            "url": url,
            **engine,
            # Statements that are their own transaction (see above): no
            # COMMIT to send, and no ROLLBACK when the connection goes back.
            "isolation_level": "AUTOCOMMIT",
            "skip_autocommit_rollback": True,
        }
    return {"SQLALCHEMY_ENGINE_OPTIONS": engine, "SQLALCHEMY_BINDS": binds}


def init_app(app):
    for key, value in engine_settings(app.config).items():
        if app.config.get(key) is None:  # a test's own engine options win
            app.config[key] = value
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            # SQLite ignores foreign keys unless asked on every connection;
            # without them a post could outlive its user.
            event.listen(db.engine, "connect", _enforce_foreign_keys)
    # The session's commits; ``single_statement`` counts its own. A session
    # event, not the engine's: an engine with listeners takes a slower path
    # for every statement.
    if not event.contains(db.session, "before_commit", _count_commit):
        event.listen(db.session, "before_commit", _count_commit)
    # Teardowns run last registered first: this one before Flask-SQLAlchemy's.
    app.teardown_appcontext(release_session)


# Per thread: what it has sent that commits (see ``commits_sent``).
_commits = threading.local()


def commits_sent():
    """How many times this thread has sent what commits: the session's
    ``COMMIT``, or a ``single_statement`` (on the autocommit engine each
    statement commits as it ends).

    A connection lost with none sent since a transaction began lost only
    what the server rolls back (``db.transactions``).
    """
    return getattr(_commits, "count", 0)


def _count_commit(*_args):
    _commits.count = commits_sent() + 1


def side_engine(app):
    """An engine apart from the requests' pools, for the cache's bookkeeping.

    The deployment's identity and the announced invalidations
    (``postservice.cache``) are read on it: never behind requests waiting
    for a pooled connection, and never holding one of theirs. On MySQL it
    keeps one connection (a second while both the look and a write need
    it): PyMySQL builds a TLS context for every new connection, tens of
    milliseconds of CPU, too much to pay twice a second. Same server
    settings (timeouts, time zone, ``wsrep_sync_wait``) as the requests'.
    """
    engine = app.extensions.get("side_engine")
    if engine is None:
        options = app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}
        url = app.config["SQLALCHEMY_DATABASE_URI"]
        pool = {"poolclass": NullPool}
        if url.startswith(("mysql", "mariadb")):
            pool = {
                "poolclass": SocketCheckedPool,
                "pool_size": 1,
                "max_overflow": 1,
                "pool_recycle": POOL_RECYCLE,
                "pool_timeout": POOL_TIMEOUT,
            }
        engine = create_engine(
            url,
            hide_parameters=True,
            connect_args=dict(options.get("connect_args") or {}),
            **pool,
        )
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _enforce_foreign_keys)
        engine = app.extensions.setdefault("side_engine", engine)
    return engine


def dispose_side_engine(app):
    """Close the side engine's connection (an app that is done with)."""
    engine = app.extensions.pop("side_engine", None)
    if engine is not None:
        engine.dispose()


def statement_engine():
    """The engine for one statement that is its own transaction.

    The autocommit engine on MySQL; elsewhere (SQLite) the default engine,
    where a transaction costs no round trip.
    """
    return db.engines.get(AUTOCOMMIT_BIND) or db.engine


@contextlib.contextmanager
def single_statement():
    """A connection for one write statement, committed when it has run.

    On the autocommit engine the statement commits by itself and nothing
    more is sent; elsewhere the block is a transaction committed on exit.
    Either way an error leaves nothing stored.
    """
    engine = statement_engine()
    _count_commit()  # counted before it is sent: it may commit however it ends
    if engine is db.engine:
        with engine.begin() as conn:
            yield conn
    else:
        with engine.connect() as conn:
            yield conn


def discard_pooled_connections():
    """Make every engine of the app open new connections from now on.

    For the moment after a connection was lost under a statement: the
    other pooled connections were opened before it and may lead to the same
    dead server (through a proxy, the same dead node). SQLAlchemy replaces
    the pool of the engine that saw the loss; the other engine's would hand
    out a dead connection to the retry. Connections in use stay usable and
    are closed when they come back.
    """
    for engine in {db.engine, *db.engines.values()}:
        engine.dispose(close=False)


def _enforce_foreign_keys(dbapi_connection, connection_record):
    dbapi_connection.execute("PRAGMA foreign_keys = ON")


def release_session(exc):
    """End the request's session even when its connection is gone.

    Flask-SQLAlchemy rolls back any open transaction at the end of the
    request; on a dead connection that rollback raises after the response
    was made, and waitress would answer a plain-text 500 instead. The pool
    has already discarded such a connection.
    """
    try:
        db.session.remove()
    except sa_exc.SQLAlchemyError as e:
        log.warning(
            "database connection lost while ending a request: %s",
            database_error_summary(e),
        )
        db.session.registry.clear()

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

from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from config import AUTOCOMMIT_BIND
from postservice.extensions import db
from postservice.http.errors import database_error_summary

log = logging.getLogger(__name__)


def init_app(app):
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            # SQLite ignores foreign keys unless asked on every connection;
            # without them a post could outlive its user.
            event.listen(db.engine, "connect", _enforce_foreign_keys)
    # Teardowns run last registered first: this one before Flask-SQLAlchemy's.
    app.teardown_appcontext(release_session)


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
    if engine is db.engine:
        with engine.begin() as conn:
            yield conn
    else:
        with engine.connect() as conn:
            yield conn


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

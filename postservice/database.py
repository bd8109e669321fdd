"""The database's wiring into an app: the engine's settings and the session's end."""

import logging

from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from .errors import database_error_summary
from .extensions import db

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

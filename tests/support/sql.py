"""The SQL an app sends, as its engines see it."""

import contextlib

from sqlalchemy import event

from postservice.extensions import db


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

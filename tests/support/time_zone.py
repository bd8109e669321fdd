"""The test MySQL server set to another time zone for the length of a test."""

import contextlib

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool


@contextlib.contextmanager
def server_time_zone(url, zone):
    """The server at ``url`` set to ``zone`` (``"+05:00"``), as a server set
    to local time is: each new session starts in it, and MySQL's
    CURRENT_TIMESTAMP is then that zone's time. Server-wide (a session's own
    setting is the very thing under test), so only for one test of the
    suite, which runs one test at a time; put back after it."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        before = conn.scalar(text("SELECT @@GLOBAL.time_zone"))
        conn.execute(text("SET GLOBAL time_zone = :zone"), {"zone": zone})
    try:
        yield
    finally:
        with engine.connect() as conn:
            conn.execute(text("SET GLOBAL time_zone = :zone"), {"zone": before})
        engine.dispose()

"""Invalidations Redis did not take, kept in the database until delivered.

A change is committed first and its cached answers are made stale after
(``cache.generations``). When Redis does not take that invalidation within
``REDIS_TIMEOUT`` (down, or its packets lost on the way), the instance
records it here, in table ``cache_announcements``, before it answers the
change: from then on it does not depend on that instance, nor on its link to
Redis, nor on its staying alive. Every instance that reads the cache looks
here at least every ``generations.CONFIRM_AFTER`` seconds, replaces the
generations announced, and deletes the rows it delivered; one that cannot
look (or cannot deliver) stops trusting the cache after
``generations.TRUST_FOR`` seconds and asks the database instead. So a
change answered 2xx is obeyed by every instance within ``TRUST_FOR``
seconds, whichever instance made it and whatever it could reach.

The table is empty as long as Redis takes every invalidation: the common
write path costs nothing more, and a look is one indexed read of an empty
table.
"""

from sqlalchemy import delete, insert, select

from postservice.db.engines import side_engine, single_statement
from postservice.models import CacheAnnouncement

# Rows delivered per look; more wait for the next look, and until they are
# all delivered the cache is not trusted (``generations``).
BATCH = 1000


def record(user_id, kinds):
    """Announce that ``user_id``'s cached answers of ``kinds`` are stale.

    On the request's own engine, as its own transaction. Raises
    ``SQLAlchemyError`` when the database does not take it.
    """
    with single_statement() as connection:
        connection.execute(
            insert(CacheAnnouncement),
            [{"user_id": user_id, "kind": kind} for kind in kinds],
        )


def waiting(app, after=0):
    """``(ids, {(kind, user_id), ...}, complete)`` of the announcements stored
    now with ids above ``after``; ``complete`` is False when more than
    ``BATCH`` wait.

    Raises ``SQLAlchemyError`` when the database cannot be read.
    """
    table = CacheAnnouncement.__table__
    with side_engine(app).connect() as connection:
        rows = connection.execute(
            select(table.c.id, table.c.kind, table.c.user_id)
            .where(table.c.id > after)
            .order_by(table.c.id)
            .limit(BATCH + 1)
        ).all()
        connection.rollback()
    rows, complete = rows[:BATCH], len(rows) <= BATCH
    return [row.id for row in rows], {(r.kind, r.user_id) for r in rows}, complete


def forget(app, ids):
    """Delete announcements delivered; raises ``SQLAlchemyError``.

    Another instance may deliver the same rows meanwhile: a generation
    replaced twice only costs a cache miss.
    """
    table = CacheAnnouncement.__table__
    with side_engine(app).begin() as connection:
        connection.execute(delete(table).where(table.c.id.in_(ids)))

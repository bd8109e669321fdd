"""Health endpoints for load balancers and orchestrators.

``/healthz``: the process is alive and serving. ``/readyz``: it can do its
job, which needs the database. Redis is only an optimisation (requests are
served from the database without it), so a Redis outage is reported but does
not take the instance out of rotation. Both are cheap: one ``SELECT 1`` and
one ``PING`` with the cache's short timeout.
"""

import contextlib
import logging

from flask import Blueprint, jsonify
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .extensions import cache, db

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    checks = {"database": database_status(), "redis": redis_status()}
    if checks["database"] != "ok":
        response = jsonify(
            detail="Database unavailable", status="unavailable", **checks
        )
        response.status_code = 503
        response.headers["Retry-After"] = "1"
        return response
    status = "ok" if checks["redis"] in ("ok", "not configured") else "degraded"
    return {"status": status, **checks}


def database_status():
    try:
        db.session.execute(text("SELECT 1"))
        return "ok"
    except SQLAlchemyError as e:
        log.warning("readiness: database unavailable: %s", e.__class__.__name__)
        return "unavailable"
    finally:
        # The connection may be gone; the pool replaces it either way.
        with contextlib.suppress(SQLAlchemyError):
            db.session.rollback()


def redis_status():
    ping = getattr(cache.cache, "ping", None)
    if ping is None:
        return "not configured"  # the in-process cache of a single instance
    try:
        ping()
        return "ok"
    except RedisError as e:
        log.warning("readiness: redis unavailable: %s", e.__class__.__name__)
        return "unavailable"

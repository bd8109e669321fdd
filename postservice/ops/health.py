"""Health endpoints for load balancers and orchestrators.

``/healthz``: the process is alive and serving. ``/readyz``: it can do its
job, which needs the database. Redis is only an optimisation (requests are
served from the database without it), so a Redis outage is reported but does
not take the instance out of rotation. Both are cheap: one ``SELECT 1`` and
one ``PING`` with the cache's short timeout, plus on a Redis Cluster the
``cluster_state`` one node reports and behind Sentinel the master it names.

The two checks run side by side on a small pool and ``/readyz`` answers
after ``READY_DEADLINE`` seconds whatever they are doing: a probe that hangs
on a stopped server would otherwise be killed by the orchestrator's own
timeout and tell it nothing.
"""

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from postservice.cache.clients import REDIS_ERRORS
from postservice.extensions import cache, db

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

READY_DEADLINE = 1.5
CHECK_THREADS = 4


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    checks = run_checks(current_app._get_current_object())
    if checks["database"] != "ok":
        response = jsonify(
            detail="Database unavailable", status="unavailable", **checks
        )
        response.status_code = 503
        response.headers["Retry-After"] = "1"
        return response
    status = "ok" if checks["redis"] in ("ok", "not configured") else "degraded"
    return {"status": status, **checks}


def run_checks(app):
    """``/readyz``'s checks, answered within ``READY_DEADLINE`` seconds."""
    deadline = time.monotonic() + READY_DEADLINE
    database = _checks(app, "database").submit(app, database_status)
    if not app.config["REDIS_URL"]:
        return {
            "database": _result(database, deadline, "unavailable"),
            "redis": "not configured",  # the in-process cache of one instance
        }
    redis = _checks(app, "redis").submit(app, redis_status)
    checks = {"database": _result(database, deadline, "unavailable")}
    checks.update(_result(redis, deadline, {"redis": "unavailable"}))
    return checks


def within_deadline(app, work, late):
    """``work()``, which reads the database, in the app's context beside the
    database's check, or ``late`` when it has no answer within
    ``READY_DEADLINE`` seconds (a metrics scrape's reads: a hung server
    must not hold the scrape)."""
    future = _checks(app, "database").submit(app, work)
    return _result(future, time.monotonic() + READY_DEADLINE, late)


class _Checks:
    """The threads that run one dependency's checks.

    Each dependency has its own, so that a hung database never makes Redis
    look down by holding every thread. At most ``PENDING`` of its checks run
    or wait at once: while it hangs, each would wait out the driver's
    timeout behind the others, so a check beyond them is answered late at
    once.
    """

    PENDING = 2 * CHECK_THREADS

    def __init__(self, name):
        self.pool = ThreadPoolExecutor(
            CHECK_THREADS, thread_name_prefix=f"readyz-{name}"
        )
        self.slots = threading.BoundedSemaphore(self.PENDING)

    def submit(self, app, work):
        """A future of ``work()``, or None when ``PENDING`` are in hand."""
        if not self.slots.acquire(blocking=False):
            return None
        future = self.pool.submit(_in_context, app, work)
        future.add_done_callback(lambda _: self.slots.release())
        return future


def _checks(app, dependency):
    # Threads start on the first check, so a pool built twice by a race
    # (one is dropped) holds none.
    pools = app.extensions.setdefault("readiness_checks", {})
    checks = pools.get(dependency)
    if checks is None:
        checks = pools.setdefault(dependency, _Checks(dependency))
    return checks


def _in_context(app, check):
    with app.app_context():
        return check()


def _result(future, deadline, late):
    """The check's answer, or ``late`` if it has none by ``deadline``."""
    if future is None:
        log.warning("readiness: too many checks waiting on a dependency")
        return late
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        log.warning("readiness: a check took over %.1f s", READY_DEADLINE)
        return late


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
    """``{"redis": ...}`` plus the cluster state or sentinel master, if any."""
    status = getattr(cache.cache, "status", None)
    if status is None:
        return {"redis": "not configured"}  # the in-process cache of one instance
    try:
        details = status()
    except REDIS_ERRORS as e:
        log.warning("readiness: redis unavailable: %s", e.__class__.__name__)
        return {"redis": "unavailable"}
    # A cluster some of whose slots have no master cannot serve every user.
    state = details.get("redis_cluster_state", "ok")
    return {"redis": "ok" if state == "ok" else "unavailable", **details}

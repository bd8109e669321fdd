"""Password hashing with bcrypt, on a few low-priority threads of its own.

A check costs a large fraction of a second of CPU at cost 12. Run on the
request threads, a burst of logins would take every core, and every other
request would wait its turn behind them. Here at most one hash per core
runs at a time, on threads with a raised nice value, so the scheduler gives
the other requests the CPU first and logins get the rest: all of it when
nothing else runs.

A request waiting for a hash still holds one of the server's threads. So
that a burst of logins can never hold all of them, at most
``PASSWORD_HASH_SLOTS`` hashes may be running or queued per app; a login or
registration beyond that is answered at once with a 503 and
``Retry-After: 1`` (``HashingBusy``) instead of waiting, and every other
request keeps a thread.
"""

import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import bcrypt
from flask import current_app

from postservice.http.errors import APIError
from postservice.ops import metrics

NICENESS = 10
_pool = None
_pool_lock = threading.Lock()


class HashingBusy(APIError):
    def __init__(self):
        super().__init__(
            503,
            "Too many password checks at once, retry shortly",
            headers={"Retry-After": "1"},
        )


def init_app(app):
    slots = app.config["PASSWORD_HASH_SLOTS"]
    app.extensions["password_hash_slots"] = threading.BoundedSemaphore(slots)


def _lower_priority():
    # Linux gives every thread its own nice value, set through its thread
    # id; elsewhere that id could name another process, so leave it alone.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)


def _executor():
    global _pool  # one pool per process, made on first use
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(
                    max_workers=os.cpu_count() or 1,
                    thread_name_prefix="bcrypt",
                    initializer=_lower_priority,
                )
    return _pool


def _hashed(function, *args):
    """``function(*args)`` on the hashing threads; raises ``HashingBusy`` when full."""
    slots = current_app.extensions["password_hash_slots"]
    if not slots.acquire(blocking=False):
        raise HashingBusy()
    metrics.hash_slot_taken()
    try:
        return _executor().submit(function, *args).result()
    finally:
        slots.release()
        metrics.hash_slot_released()


def hash_password(password, rounds):
    salt = bcrypt.gensalt(rounds)
    return _hashed(bcrypt.hashpw, password.encode(), salt).decode("ascii")


def check_password(password_bytes, password_hash):
    return _hashed(bcrypt.checkpw, password_bytes, password_hash.encode("ascii"))

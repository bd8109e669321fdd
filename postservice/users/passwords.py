"""Password hashing with bcrypt, on a few low-priority threads of its own.

A check costs about 0.3 s of CPU at cost 12. Run on the request threads,
a burst of logins would take every core, and every other request would wait
its turn behind them. Here at most one hash per core runs at a time, on
threads with a raised nice value, so the scheduler gives the other requests
the CPU first and logins get the rest: all of it when nothing else runs.
"""

import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import bcrypt

NICENESS = 10
_pool = None
_pool_lock = threading.Lock()


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


def hash_password(password, rounds):
    salt = bcrypt.gensalt(rounds)
    hashed = _executor().submit(bcrypt.hashpw, password.encode(), salt).result()
    return hashed.decode("ascii")


def check_password(password_bytes, password_hash):
    encoded_hash = password_hash.encode("ascii")
    return _executor().submit(bcrypt.checkpw, password_bytes, encoded_hash).result()

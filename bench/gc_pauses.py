"""What a full garbage collection costs the service, with and without the
startup heap frozen (``postservice.serve.server.freeze_startup_heap``).

    .venv/bin/python bench/gc_pauses.py [--requests 3000]

Runs in process (Flask's test client, no server) against the benchmark's
database and Redis database (``common.settings``), which it empties first.
The app is built as ``python -m postservice.serve`` builds it, warmed by
add-posts, then for each case: over ``--requests`` add-posts the
collections of each generation and their time per request, then the
objects a full collection walks and its time (every thread waits for it).
The frozen case runs second: a freeze cannot be undone. Prints numbers and
asserts nothing.
"""

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common

TEXT = "x" * 200
WARM_UP = 300


class Collections:
    """Counts and times the collector's runs per generation."""

    def __init__(self):
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase, info):
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self.count[generation] += 1
        self.seconds[generation] += time.perf_counter() - self._started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()

    config = common.settings()
    common.reset_database(config)
    os.environ.update(common.server_env(config))
    from postservice import create_app
    from postservice.serve.server import freeze_startup_heap

    client = create_app().test_client()
    account = {"email": "gc@bench.example", "password": "correct horse battery"}
    client.post("/api/v1/users/register", json=account)
    login = client.post("/api/v1/users/login", json=account).get_json()
    headers = {"Authorization": f"Bearer {login['access_token']}"}
    body = json.dumps({"text": TEXT})

    def add_posts(count):
        for _ in range(count):
            answer = client.post(
                "/api/v1/posts/add-post",
                data=body,
                headers=headers,
                content_type="application/json",
            )
            if answer.status_code != 200:
                raise SystemExit(f"add-post answered {answer.status_code}")

    add_posts(WARM_UP)
    for case in ("as built", "startup heap frozen"):
        if case != "as built":
            freeze_startup_heap()
        collections = Collections()
        gc.callbacks.append(collections)
        started = time.process_time()
        add_posts(args.requests)
        cpu = time.process_time() - started
        gc.callbacks.remove(collections)
        walked = len(gc.get_objects())
        started = time.perf_counter()
        gc.collect()
        full = time.perf_counter() - started
        per_request = [s / args.requests * 1e6 for s in collections.seconds]
        print(
            f"{case}: over {args.requests:,} add-posts "
            f"({cpu / args.requests * 1e6:.0f} us of CPU each), collections of "
            f"generations 0/1/2: {'/'.join(map(str, collections.count))}, "
            f"{' / '.join(f'{us:.1f}' for us in per_request)} us per request; "
            f"then a full collection walked {walked:,} objects "
            f"({gc.get_freeze_count():,} frozen) in {full * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()

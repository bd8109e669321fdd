"""What the metrics add to a cached get-posts, in process, without a server.

    .venv/bin/python bench/metrics_overhead.py [--redis redis://127.0.0.1:6379/14]

Prints the cost of each call on the hit path (``timeit``), then the CPU
time of a whole cached get-posts through the WSGI app with the metrics
calls in place and with them replaced by no-ops, in short alternating
rounds: the median of the rounds for each, and their difference. SQLite in a temporary
directory; the in-process cache unless ``--redis`` names a Redis database
(which is flushed).
"""

import argparse
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_migrate import upgrade
from prometheus_client import CollectorRegistry, Counter, Histogram
from werkzeug.test import EnvironBuilder

from postservice import create_app
from postservice.ops import metrics

REQUESTS = 250
ROUNDS = 40
CALLS = 20_000
REPEATS = 15


def make_app(directory, redis_url):
    return create_app(
        {
            "MODE": "testing",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{directory}/bench.sqlite",
            "REDIS_URL": redis_url,
            "JWT_SECRET_KEY": "m" * 48,
        }
    )


def cached_listing_environ(app):
    client = app.test_client()
    token = client.post(
        "/api/v1/users/register",
        json={"email": "bench@example.com", "password": "bench password 1"},
    ).json["access_token"]
    headers = {"Authorization": "Bearer " + token}
    for n in range(20):
        client.post(
            "/api/v1/posts/add-post", json={"text": f"post {n}"}, headers=headers
        )
    assert client.get("/api/v1/posts/get-posts", headers=headers).status_code == 200
    return EnvironBuilder(path="/api/v1/posts/get-posts", headers=headers).get_environ()


def per_request_seconds(app, environ):
    def start_response(status, headers, exc_info=None):
        assert status.startswith("200"), status

    # CPU time of this process: the machine's other tenants take turns on
    # the cores, which wall-clock time would count against whichever ran.
    started = time.process_time()
    for _ in range(REQUESTS):
        body = app(dict(environ), start_response)
        b"".join(body)
        body.close()
    return (time.process_time() - started) / REQUESTS


def call_costs(app):
    """Microseconds per call of each metrics function on the hit path.

    Also what prometheus_client's own Counter and Histogram would cost for
    the request count and duration, for comparison with ``RequestStats``.
    """
    registry = CollectorRegistry()
    counter = Counter("c", "c", ("e", "m", "s"), registry=registry)
    histogram = Histogram(
        "h", "h", ("e", "m"), buckets=metrics.DURATION_BUCKETS, registry=registry
    )
    record = metrics.request_recorder(app)
    count = counter.labels("posts.get_posts", "GET", "200")
    duration = histogram.labels("posts.get_posts", "GET")

    def with_prometheus_client():
        count.inc()
        duration.observe(0.0005)

    calls = {
        "request count and time": lambda: record("posts.get_posts", "GET", 200, 0.0005),
        "cache_result('hit')": lambda: metrics.cache_result("hit"),
        "Counter + Histogram": with_prometheus_client,
    }
    with app.test_request_context("/api/v1/posts/get-posts"):
        # The fastest of several runs: the others were slowed by other tenants.
        return {
            name: min(timeit.repeat(call, number=CALLS, repeat=REPEATS)) / CALLS * 1e6
            for name, call in calls.items()
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="a Redis database to use (it is flushed)")
    args = parser.parse_args()
    if args.redis:
        import redis

        redis.Redis.from_url(args.redis).flushdb()
    with tempfile.TemporaryDirectory() as directory:
        app = make_app(directory, args.redis)
        with app.app_context():
            upgrade()
        environ = cached_listing_environ(app)

        for name, micros in call_costs(app).items():
            print(f"{name:>24}: {micros:6.2f} us a call")

        # The same app with every metrics call on the hit path a no-op.
        real_recorder = metrics.request_recorder
        real_cache_result = metrics.cache_result
        metrics.request_recorder = lambda app: lambda *args: None
        bare = make_app(directory, args.redis)
        metrics.request_recorder = real_recorder

        timings = {"with metrics": [], "without": []}
        for round_number in range(ROUNDS + 1):
            order = [("with metrics", app), ("without", bare)]
            if round_number % 2:
                order.reverse()
            for label, which in order:
                metrics.cache_result = (
                    real_cache_result if which is app else lambda result: None
                )
                seconds = per_request_seconds(which, environ)
                if round_number:  # the first round fills the caches
                    timings[label].append(seconds)
        metrics.cache_result = real_cache_result

    medians = {label: statistics.median(t) * 1e6 for label, t in timings.items()}
    # Paired by round, so that a slow moment of the machine hits both sides.
    differences = sorted(
        (with_metrics - without) * 1e6
        for with_metrics, without in zip(
            timings["with metrics"], timings["without"], strict=True
        )
    )
    quartiles = statistics.quantiles(differences, n=4)
    cache = "Redis" if args.redis else "in-process cache"
    print(
        f"cached get-posts (20 posts, {cache}), CPU time, "
        f"median of {ROUNDS} rounds of {REQUESTS}:"
    )
    for label, micros in medians.items():
        print(f"{label:>24}: {micros:6.1f} us a request")
    print(
        f"{'metrics add':>24}: {quartiles[1]:6.1f} us a request "
        f"(median of the rounds' differences; quartiles {quartiles[0]:.1f} "
        f"and {quartiles[2]:.1f})"
    )


if __name__ == "__main__":
    main()

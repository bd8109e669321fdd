"""Micro-benchmark of a cached get-posts, through the whole app but no server.

Calls the WSGI app directly (no sockets, no waitress), so what is left is
the app's own work per request: routing, the hooks, the token check, the
cache hit and whatever wraps the view. Prints microseconds of CPU time per
request (the process's, so other work on the machine does not count), the
best of several rounds, and the Python function calls per request, which
load on the machine cannot blur: one more layer around the view is more
calls.

    .venv/bin/python bench/get_posts_micro.py            # in-process cache
    BENCH_REDIS_URL=redis://127.0.0.1:6379/10 .venv/bin/python bench/get_posts_micro.py

With ``--decorated`` it also times get-posts declared the long way, with
``@blp.arguments`` parsing the query and ``@blp.response`` wrapping the
result, to show what those layers would cost on this path.
"""

import argparse
import cProfile
import logging
import os
import pstats
import tempfile
import time
import timeit

from postservice import create_app
from postservice.extensions import db

PASSWORD = "bench password 1"
GET_POSTS = "/api/v1/posts/get-posts"


def build_app(directory):
    redis_url = os.environ.get("BENCH_REDIS_URL")
    app = create_app(
        {
            "MODE": "testing",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{directory}/bench.sqlite",
            "REDIS_URL": redis_url,
            "JWT_SECRET_KEY": "bench-" + "k" * 40,
        }
    )
    with app.app_context():
        db.create_all()
    if redis_url:
        import redis

        redis.Redis.from_url(redis_url).flushdb()
    return app


def signed_in(app):
    client = app.test_client()
    response = client.post(
        "/api/v1/users/register",
        json={"email": "micro@example.com", "password": PASSWORD},
    )
    headers = {"Authorization": "Bearer " + response.json["access_token"]}
    for n in range(10):
        client.post(
            "/api/v1/posts/add-post", json={"text": f"post {n}"}, headers=headers
        )
    return headers


def request_runner(app, headers):
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path=GET_POSTS, headers=headers).get_environ()

    def start_response(status, response_headers, exc_info=None):
        assert status.startswith("200"), status

    def one_request():
        body = app(dict(environ), start_response)
        try:
            b"".join(body)
        finally:
            getattr(body, "close", lambda: None)()

    one_request()  # fills the cache
    return one_request


def best_microseconds(run, number, repeat):
    rounds = timeit.repeat(run, number=number, repeat=repeat, timer=time.process_time)
    return min(rounds) / number * 1e6


def calls_per_request(run, number=100):
    profile = cProfile.Profile()
    profile.runcall(lambda: [run() for _ in range(number)])
    return pstats.Stats(profile).total_calls / number


def report(label, run, args):
    microseconds = best_microseconds(run, args.number, args.repeat)
    calls = calls_per_request(run)
    print(f"{label}: {microseconds:.1f} us, {calls:.0f} calls a request")
    return microseconds, calls


def decorate_long_way(app):
    """Replace get-posts by the same listing behind smorest's parsing decorators."""
    from flask import Response

    from postservice.auth.tokens import current_user_id
    from postservice.http.api import Blueprint
    from postservice.posts import service
    from postservice.posts.schemas import PageQuerySchema, PostSchema

    blp = Blueprint("bench", __name__)

    @blp.protected
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, PostSchema(many=True))
    def get_posts(page):
        body = service.listing_body(user_id=current_user_id())
        return Response(body, mimetype="application/json")

    app.view_functions["posts.get_posts"] = get_posts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--decorated", action="store_true")
    args = parser.parse_args()
    # The request log line would be most of what is timed, and is the same
    # in every variant.
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as directory:
        app = build_app(directory)
        run = request_runner(app, signed_in(app))
        cache = "redis" if os.environ.get("BENCH_REDIS_URL") else "in-process"
        report(f"cached get-posts ({cache} cache), as served", run, args)
        if args.decorated:
            decorate_long_way(app)
            label = f"cached get-posts ({cache} cache), with @arguments and @response"
            report(label, run, args)


if __name__ == "__main__":
    main()

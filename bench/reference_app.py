"""The floor for a cached get-posts: bare Flask returning one Redis value.

Served by the benchmark under waitress with the same thread count as the
service. It does what a cached get-posts cannot avoid (parse the request,
one Redis round trip, send the bytes) and nothing else: no token check, no
generation token, no extensions.
"""

import os

import redis
from flask import Flask, Response


def create_app():
    app = Flask(__name__)
    client = redis.Redis.from_url(os.environ["REFERENCE_REDIS_URL"])
    key = os.environ["REFERENCE_KEY"]

    @app.get("/api/v1/posts/get-posts")
    def get_posts():
        return Response(client.get(key), mimetype="application/json")

    return app

"""The floors for add-post and delete-post: bare Flask and one statement each.

Served by the benchmark under waitress with the same thread count as the
service. Each request is what a write cannot avoid: parse the request (the
same JSON body for add-post), run one statement on the same ``posts`` table
and commit it on the thread's own PyMySQL connection, answer. No token, no
pool, no ORM, no cache invalidation, no log line.
"""

import os
import threading

import common
from flask import Flask, Response, jsonify, request


def create_app():
    app = Flask(__name__)
    config = common.settings()
    user_id = int(os.environ["FLOOR_USER_ID"])
    local = threading.local()

    def connection():
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = common.connect(config)
        return conn

    @app.post("/api/v1/posts/add-post")
    def add_post():
        text = request.get_json()["text"]
        conn = connection()
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO posts (user_id, text) VALUES (%s, %s)", (user_id, text)
            )
            post_id = cur.lastrowid
        conn.commit()
        return jsonify({"PostID": post_id, "detail": "Post created"})

    @app.delete("/api/v1/posts/delete-post/<int:post_id>")
    def delete_post(post_id):
        conn = connection()
        with conn.cursor() as cur:
            deleted = cur.execute(
                "DELETE FROM posts WHERE id = %s AND user_id = %s", (post_id, user_id)
            )
        conn.commit()
        return Response(status=204 if deleted else 404)

    return app

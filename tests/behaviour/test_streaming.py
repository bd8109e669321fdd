"""Listings too big to hold: streamed from the database, byte for byte, uncached."""

import json

import pymysql.cursors
import pytest
import redis
import requests
from sqlalchemy import insert, select

from postservice.extensions import db
from postservice.models import Post
from postservice.posts import listing

from ..support.auth import AuthActions, token_user_id
from ..support.sql import executed_sql

GET_POSTS = "/api/v1/posts/get-posts"
# Texts that JSON must escape or that are more than one byte in UTF-8.
SAMPLES = ['quote " backslash \\ slash /', "tab\tnew\nline\x01", "zürich ☃ 😀", "</x>"]


RFC3339_UTC = "%Y-%m-%dT%H:%M:%SZ"  # how a listing writes a stored time


def add_posts(app, uid, texts):
    """Insert directly: hundreds of posts through the API would be slow."""
    with app.app_context():
        db.session.execute(insert(Post), [{"user_id": uid, "text": t} for t in texts])
        db.session.commit()


def big_texts(count=120, size=1500):
    return [f"{n} {SAMPLES[n % len(SAMPLES)]} " + "x" * size for n in range(count)]


def expected_body(app, uid):
    """The user's rows encoded in one piece, as the listing was before streaming."""
    with app.app_context():
        rows = db.session.execute(
            select(Post.id, Post.text, Post.created_at, Post.updated_at)
            .where(Post.user_id == uid)
            .order_by(Post.id)
        ).all()
    posts = [
        {
            "id": post_id,
            "text": text,
            "created_at": created.strftime(RFC3339_UTC),
            "updated_at": updated.strftime(RFC3339_UTC),
        }
        for post_id, text, created, updated in rows
    ]
    return json.dumps(posts, ensure_ascii=False, separators=(",", ":")).encode()


# Over any one chunk of a listing (a chunk is CHUNK_BYTES and at most one
# post more), so that only a listing's total can be over it; under the
# owner's listing below (~190 kB), which is therefore not cached.
CACHE_LIMIT = listing.CHUNK_BYTES * 3 // 2


@pytest.fixture
def big_app(make_app):
    return make_app(POSTS_CACHE_MAX_BYTES=CACHE_LIMIT)


@pytest.fixture
def owner(big_app):
    """A user with ~190 kB of posts, and someone else with posts in between."""
    actions = AuthActions(big_app.test_client())
    mine, theirs = actions.register(), actions.register()
    texts = big_texts()
    for start in range(0, len(texts), 40):
        add_posts(big_app, token_user_id(big_app, mine), texts[start : start + 40])
        add_posts(big_app, token_user_id(big_app, theirs), ["someone else's"] * 5)
    return mine, texts


def test_big_listing_is_streamed_in_chunks_byte_identical(big_app, owner):
    headers, texts = owner
    client = big_app.test_client()
    response = client.get(GET_POSTS, headers=headers)
    assert response.status_code == 200
    assert response.headers.get("Content-Length") is None
    chunks = list(response.response)
    assert len(chunks) > 2
    body = b"".join(chunks)
    assert len(body) > 2 * listing.CHUNK_BYTES
    assert body == expected_body(big_app, token_user_id(big_app, headers))
    posts = json.loads(body)
    # Every post of the owner, in order, and none of the other user's.
    assert [p["text"] for p in posts] == texts
    assert [p["id"] for p in posts] == sorted(p["id"] for p in posts)


def test_stream_uses_a_server_side_cursor(big_app, owner):
    headers, _ = owner
    client = big_app.test_client()
    with executed_sql(big_app) as seen:
        assert client.get(GET_POSTS, headers=headers).status_code == 200
    # A listing over the cache's limit is abandoned there, then streamed.
    cursors = [c for c, statement in seen if "posts.text" in statement]
    assert len(cursors) == 2
    if big_app.config["SQLALCHEMY_DATABASE_URI"].startswith("mysql"):
        assert all(isinstance(c, pymysql.cursors.SSCursor) for c in cursors)


def test_big_listing_is_not_cached(big_app, owner):
    headers, _ = owner
    client = big_app.test_client()
    chunks = list(client.get(GET_POSTS, headers=headers).response)
    first = b"".join(chunks)
    # Every chunk would fit on its own: the limit holds for the whole listing.
    assert max(len(chunk) for chunk in chunks) <= CACHE_LIMIT < len(first)
    with executed_sql(big_app) as seen:
        second = client.get(GET_POSTS, headers=headers).data
    assert first == second
    assert any("posts" in statement for _, statement in seen), (
        "a listing over POSTS_CACHE_MAX_BYTES was served from the cache"
    )
    if big_app.config["REDIS_URL"]:
        server = redis.Redis.from_url(big_app.config["REDIS_URL"])
        uid = token_user_id(big_app, headers)
        prefix = big_app.config["REDIS_KEY_PREFIX"]
        # Every listing key of the user, whatever its format: none was stored.
        listing_keys = list(server.scan_iter(match=f"{prefix}:posts:{{{uid}}}:list*"))
        assert listing_keys == []


def test_small_listing_is_still_cached_whole(big_app):
    actions = AuthActions(big_app.test_client())
    headers = actions.register()
    actions.add_post(headers, "small")
    miss = actions.client.get(GET_POSTS, headers=headers)
    assert miss.headers["Content-Length"] == str(len(miss.data))
    with executed_sql(big_app) as seen:
        hit = actions.client.get(GET_POSTS, headers=headers)
    assert seen == []
    assert hit.data == miss.data


def test_client_leaving_mid_stream_returns_the_connection(big_app, owner):
    headers, _ = owner
    response = big_app.test_client().get(GET_POSTS, headers=headers)
    chunks = iter(response.response)
    next(chunks)
    response.close()  # what the server does when the client goes away
    with big_app.app_context():
        lent = [engine.pool.checkedout() for engine in db.engines.values()]
    assert lent == [0] * len(lent)


def test_database_down_before_first_byte_is_json_503(make_app):
    up = make_app()
    headers = AuthActions(up.test_client()).register()
    # Nothing listens on port 1; the token is still valid (same signing key).
    down = make_app(
        SQLALCHEMY_DATABASE_URI="mysql+pymysql://root@127.0.0.1:1/none", REDIS_URL=None
    )
    response = down.test_client().get(GET_POSTS, headers=headers)
    assert response.status_code == 503
    assert response.json == {"detail": "Database unavailable"}
    assert response.headers["Retry-After"] == "1"


def test_waitress_sends_big_listing_chunked(start_server, make_app):
    base = start_server(threads=4, POSTS_CACHE_MAX_BYTES="20000")
    response = requests.post(
        base + "/api/v1/users/register",
        json={"email": "streamer@example.com", "password": "correct horse"},
        timeout=30,
    )
    headers = {"Authorization": "Bearer " + response.json()["access_token"]}
    app = make_app()
    texts = big_texts(count=60)
    add_posts(app, token_user_id(app, headers), texts)
    response = requests.get(base + GET_POSTS, headers=headers, timeout=30)
    assert response.status_code == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    assert response.content == expected_body(app, token_user_id(app, headers))

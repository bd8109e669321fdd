"""A post's wire format is defined once, and what follows from it agrees.

The documented schema, the bytes a listing is answered and cached as, and
the cache key's format all come from ``posts.schemas.POST_WIRE_FORMAT``.
"""

import json

import redis

from postservice.cache import generations
from postservice.http.api import document
from postservice.posts import cache as posts_cache
from postservice.posts import schemas
from postservice.posts.cache import format_digest, listing_format, listing_key
from postservice.posts.schemas import LISTING_ENCODING, POST_FIELDS, PostSchema

from ..support.auth import AuthActions, token_user_id

GET_POSTS = "/api/v1/posts/get-posts"


def test_documented_schema_and_cached_bytes_agree(make_app, real_redis_url):
    app = make_app(REDIS_URL=real_redis_url)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    for text in ("first", "zürich ☃", '"quoted"\n'):
        actions.add_post(headers, text)
    answered = client.get(GET_POSTS, headers=headers).data  # the miss stores it

    server = redis.Redis.from_url(real_redis_url)
    uid = token_user_id(app, headers)
    prefix = app.config["REDIS_KEY_PREFIX"]
    generation = server.get(f"{prefix}:{generations.gen_key(generations.POSTS, uid)}")
    cached = generations.unwrap(server.get(f"{prefix}:{listing_key(uid)}"), generation)
    assert cached == answered
    assert client.get(GET_POSTS, headers=headers).data == cached  # served from it

    posts = json.loads(cached)
    assert [list(post) for post in posts] == [list(POST_FIELDS)] * 3
    assert PostSchema(many=True).validate(posts) == {}
    with app.app_context():
        component = document(app)["components"]["schemas"]["Post"]
    assert list(component["properties"]) == list(POST_FIELDS)
    assert sorted(component["required"]) == sorted(POST_FIELDS)


def test_the_cache_key_names_the_wire_format():
    assert listing_format() == format_digest(LISTING_ENCODING, POST_FIELDS)
    assert listing_key(7) == f"posts:{{7}}:list:{listing_format()}"
    # Another shape, or another encoding, is another key: an instance of
    # another version never reads these bytes, nor these instances its.
    assert format_digest(LISTING_ENCODING, (*POST_FIELDS, "created_at")) != (
        listing_format()
    )
    assert format_digest(LISTING_ENCODING + 1, POST_FIELDS) != listing_format()


def test_get_posts_declares_what_its_token_check_reads_along(make_app):
    app = make_app()
    view = app.view_functions["posts.get_posts"]
    assert view.read_along is posts_cache.READ_ALONG
    with app.test_request_context("/api/v1/posts/get-posts"):
        assert posts_cache.READ_ALONG.keys(3) == [
            generations.gen_key(generations.POSTS, 3),
            posts_cache.tag_key(3),
            listing_key(3),
        ]
    # A conditional request reads the tag alone, not the listing's bytes.
    with app.test_request_context(
        "/api/v1/posts/get-posts", headers={"If-None-Match": '"x"'}
    ):
        assert posts_cache.READ_ALONG.keys(3) == [
            generations.gen_key(generations.POSTS, 3),
            posts_cache.tag_key(3),
        ]


def test_the_declaration_follows_the_view_under_another_endpoint(
    make_app, real_redis_url, monkeypatch
):
    """Renamed, the view still reads its listing in the token check's MGET."""
    app = make_app(REDIS_URL=real_redis_url)
    view = app.view_functions["posts.get_posts"]
    app.add_url_rule("/renamed-listing", endpoint="renamed_listing", view_func=view)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "x")
    assert client.get("/renamed-listing", headers=headers).status_code == 200  # warm
    with app.app_context():
        backend = app.extensions["cache"][
            next(iter(app.extensions["cache"]))
        ]._read_client
    commands = []
    original = backend.execute_command

    def counting(*args, **kwargs):
        commands.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(backend, "execute_command", counting)
    response = client.get("/renamed-listing", headers=headers)
    assert response.status_code == 200
    assert json.loads(response.data)[0]["text"] == "x"
    assert commands == ["MGET"]


def test_a_tag_of_another_wire_format_is_never_current(
    make_app, real_redis_url, monkeypatch
):
    """After a release that changes the shape, on the same database and
    Redis: a client holding the old shape's tags gets the new bytes, never
    a 304 that would keep the old ones, and cannot edit with an old tag."""
    app = make_app(REDIS_URL=real_redis_url)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    post_id = actions.add_post(headers, "first")
    actions.add_post(headers, "second")
    paths = (GET_POSTS, GET_POSTS + "?limit=1", f"/api/v1/posts/get-post/{post_id}")
    old = {path: client.get(path, headers=headers).headers["ETag"] for path in paths}
    for path, tag in old.items():  # current until the release
        response = client.get(path, headers={**headers, "If-None-Match": tag})
        assert response.status_code == 304, path

    monkeypatch.setattr(schemas, "LISTING_ENCODING", LISTING_ENCODING + 1)
    listing_format.cache_clear()
    try:
        for path, tag in old.items():
            response = client.get(path, headers={**headers, "If-None-Match": tag})
            assert response.status_code == 200, path
            assert response.headers["ETag"] != tag, path
        edit = client.patch(
            f"/api/v1/posts/edit-post/{post_id}",
            json={"text": "edited"},
            headers={**headers, "If-Match": old[paths[2]]},
        )
        assert (edit.status_code, edit.json) == (412, {"detail": "Precondition Failed"})
        assert actions.listing(headers)[0]["text"] == "first"
    finally:
        monkeypatch.undo()
        listing_format.cache_clear()

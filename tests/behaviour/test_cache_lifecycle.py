"""What a write does to the cached listing in Redis: made stale, or deleted.

Each write path names the cached answers it makes stale
(``db.transactions.write``); these tests warm the listing in Redis first,
so a path that names the wrong ones is served from the cache afterwards.
"""

import redis

from ..support.auth import PASSWORD, AuthActions, token_user_id
from ..support.sql import executed_sql

GET_POSTS = "/api/v1/posts/get-posts"
ADD_POST = "/api/v1/posts/add-post"


def warm(app, client, headers):
    """Get the listing twice: the second answer comes from the cache."""
    first = client.get(GET_POSTS, headers=headers)
    assert first.status_code == 200
    with executed_sql(app) as seen:
        second = client.get(GET_POSTS, headers=headers)
    assert second.status_code == 200
    assert seen == [], "the listing was not served from the cache"
    assert second.data == first.data
    return first.json


def listing_keys(app, uid):
    """Every cached listing of the user, whatever its format."""
    server = redis.Redis.from_url(app.config["REDIS_URL"])
    prefix = app.config["REDIS_KEY_PREFIX"]
    return list(server.scan_iter(match=f"{prefix}:posts:{{{uid}}}:list*"))


def test_add_post_with_an_idempotency_key_invalidates_the_listing(redis_app):
    client = redis_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "before")
    assert [p["text"] for p in warm(redis_app, client, headers)] == ["before"]

    response = client.post(
        ADD_POST,
        json={"text": "with a key"},
        headers={**headers, "Idempotency-Key": "lifecycle-1"},
    )
    assert response.status_code == 200, response.json
    new_id = response.json["PostID"]

    listed = actions.posts(headers)
    assert [p["text"] for p in listed] == ["before", "with a key"], (
        "the cached listing was served after an add-post with an Idempotency-Key"
    )
    assert listed[-1]["id"] == new_id


def test_a_deleted_accounts_cached_listing_leaves_redis(redis_app):
    client = redis_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "private words")
    uid = token_user_id(redis_app, headers)
    warm(redis_app, client, headers)
    assert listing_keys(redis_app, uid), "the listing was not cached in Redis"

    response = client.delete(
        "/api/v1/users/me", json={"password": PASSWORD}, headers=headers
    )
    assert response.status_code == 204, response.json

    assert listing_keys(redis_app, uid) == [], (
        "the deleted account's listing is still in Redis"
    )

"""Posts: add-post, get-posts and delete-post, each for the caller's own posts."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from postservice.extensions import db
from postservice.models import Post

from ..support.auth import AuthActions, assert_post_shape, ids_and_texts
from ..support.settings import TEST_DATABASE_URL, require
from ..support.time_zone import server_time_zone

ADD_POST = "/api/v1/posts/add-post"
GET_POSTS = "/api/v1/posts/get-posts"
DELETE_POST = "/api/v1/posts/delete-post/"
MIB = 1024 * 1024


def add(client, headers, text):
    return client.post(ADD_POST, json={"text": text}, headers=headers)


def add_raw(client, headers, body):
    """POST ``body`` (a str of JSON) as it is, escapes and all."""
    return client.post(
        ADD_POST, data=body, content_type="application/json", headers=headers
    )


def delete(client, headers, post_id):
    return client.delete(f"{DELETE_POST}{post_id}", headers=headers)


def post_count(app):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Post))


def assert_stored_nothing(app, auth, headers):
    assert auth.posts(headers) == []
    assert post_count(app) == 0


# --- add-post ---------------------------------------------------------------


def test_add_post_returns_the_new_id(app, client, auth):
    headers = auth.register()
    response = add(client, headers, "hello")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert set(response.json) == {"PostID", "detail"}
    assert response.json["detail"] == "Post created"
    assert type(response.json["PostID"]) is int
    assert auth.posts(headers) == [{"id": response.json["PostID"], "text": "hello"}]


def test_add_post_without_token_is_401(app, client):
    response = client.post(ADD_POST, json={"text": "hello"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert post_count(app) == 0


TEXTS_OF_EXACTLY_1_MIB = {
    "ascii": "a" * MIB,
    "emoji": "😀" * (MIB // 4),
    "ends in multi-byte": "a" * (MIB - 3) + "€",
}


@pytest.mark.parametrize(
    "text", list(TEXTS_OF_EXACTLY_1_MIB.values()), ids=list(TEXTS_OF_EXACTLY_1_MIB)
)
def test_text_of_exactly_1_mib_is_stored_byte_identical(client, auth, text):
    assert len(text.encode("utf-8")) == MIB
    headers = auth.register()
    post_id = auth.add_post(headers, text)
    response = client.get(GET_POSTS, headers=headers)
    assert ids_and_texts(response.json) == [{"id": post_id, "text": text}]
    assert text.encode("utf-8") in response.data  # raw UTF-8, not \u escapes
    assert b"\\u" not in response.data


TEXTS_OVER_1_MIB = {
    "ascii": "a" * (MIB + 1),
    "emoji plus one": "😀" * (MIB // 4) + "a",
    "multi-byte crosses the limit": "a" * (MIB - 2) + "€",
}


@pytest.mark.parametrize(
    "text", list(TEXTS_OVER_1_MIB.values()), ids=list(TEXTS_OVER_1_MIB)
)
def test_text_over_1_mib_is_413_and_not_stored(app, client, auth, text):
    assert len(text.encode("utf-8")) == MIB + 1
    headers = auth.register()
    response = add(client, headers, text)
    assert response.status_code == 413
    assert response.json == {"detail": "Text size exceeds 1MB"}
    assert_stored_nothing(app, auth, headers)


@pytest.mark.parametrize(
    "text", ["\x01" * MIB, "😀" * (MIB // 4)], ids=["control chars", "emoji"]
)
def test_1_mib_text_sent_as_json_escapes_is_accepted(client, auth, text):
    headers = auth.register()
    body = json.dumps({"text": text}, ensure_ascii=True)
    assert len(body) > 3 * MIB  # every character escaped on the wire
    response = add_raw(client, headers, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert auth.posts(headers) == [{"id": response.json["PostID"], "text": text}]


def test_escaped_text_over_1_mib_is_413(app, client, auth):
    headers = auth.register()
    response = add_raw(client, headers, json.dumps({"text": "\x01" * (MIB + 1)}))
    assert response.status_code == 413
    assert response.json == {"detail": "Text size exceeds 1MB"}
    assert_stored_nothing(app, auth, headers)


INVALID_BODIES = {
    "missing text": "{}",
    "empty": '{"text": ""}',
    "white space only": '{"text": "  \\t\\n "}',
    "unicode space only": '{"text": "\\u00a0\\u3000\\ufeff\\u2028"}',
    "number": '{"text": 123}',
    "null": '{"text": null}',
    "list": '{"text": ["a"]}',
    "lone surrogate": '{"text": "\\ud800"}',
    "lone surrogate among text": '{"text": "ok \\udfff ok"}',
}


@pytest.mark.parametrize(
    "body", list(INVALID_BODIES.values()), ids=list(INVALID_BODIES)
)
def test_invalid_text_is_422_naming_text(app, client, auth, body):
    headers = auth.register()
    response = add_raw(client, headers, body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.json["detail"] == "Invalid input"
    assert list(response.json["errors"]) == ["text"]
    assert response.json["errors"]["text"]
    assert_stored_nothing(app, auth, headers)


def test_control_characters_are_text_as_the_document_says(auth):
    """The document's pattern ``\\S`` counts U+001C..U+001F as text, so do we."""
    headers = auth.register()
    post_id = auth.add_post(headers, "\x1d")
    assert auth.posts(headers) == [{"id": post_id, "text": "\x1d"}]


def test_text_is_stored_exactly_as_sent(auth):
    headers = auth.register()
    text = "  zürich ☃ 😀 \x00 \t tail  "
    post_id = auth.add_post(headers, text)
    assert auth.posts(headers) == [{"id": post_id, "text": text}]


# --- get-posts --------------------------------------------------------------


def test_get_posts_is_empty_for_a_new_user(client, auth):
    response = client.get(GET_POSTS, headers=auth.register())
    assert response.status_code == 200
    assert response.json == []


def test_get_posts_lists_own_posts_oldest_first(auth):
    headers = auth.register()
    ids = [auth.add_post(headers, text) for text in ("one", "two", "three")]
    assert ids == sorted(ids)
    assert auth.posts(headers) == [
        {"id": ids[0], "text": "one"},
        {"id": ids[1], "text": "two"},
        {"id": ids[2], "text": "three"},
    ]


def utc_now():
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def wire_time(value):
    """A time as answered ("2026-12-06T22:40:00Z") as a naive UTC datetime."""
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value[:-1])


def test_posts_carry_the_times_the_database_stored(app, client, auth):
    headers = auth.register()
    before = utc_now()
    post_id = auth.add_post(headers, "hello")
    after = utc_now()
    [post] = auth.listing(headers)
    assert list(post) == ["id", "text", "created_at", "updated_at"]
    assert post["id"] == post_id
    assert post["text"] == "hello"
    assert_post_shape(post)
    assert post["created_at"] == post["updated_at"]  # never edited
    # The database's clock, in UTC: within a second of this process's.
    slack = timedelta(seconds=1)
    assert before - slack <= wire_time(post["created_at"]) <= after + slack
    with app.app_context():
        stored = db.session.get(Post, post_id)
        assert wire_time(post["created_at"]) == stored.created_at
        assert wire_time(post["updated_at"]) == stored.updated_at


@pytest.mark.mysql
def test_times_are_utc_whatever_the_servers_time_zone(make_app):
    require(TEST_DATABASE_URL, "TEST_DATABASE_URL", "a MySQL server's time zone")
    actions = AuthActions(make_app().test_client())
    slack = timedelta(seconds=5)
    with server_time_zone(TEST_DATABASE_URL, "+05:00"):
        headers = actions.register()
        before = utc_now()
        post_id = actions.add_post(headers, "hello")
        edited = actions.client.patch(
            f"/api/v1/posts/edit-post/{post_id}", json={"text": "hi"}, headers=headers
        )
        after = utc_now()
        [post] = actions.listing(headers)
    assert edited.status_code == 200
    for name in ("created_at", "updated_at"):
        assert before - slack <= wire_time(post[name]) <= after + slack, name
        assert edited.json[name] == post[name]


def test_times_are_the_same_whole_paged_cached_and_uncached(make_app, real_redis_url):
    app = make_app(REDIS_URL=real_redis_url)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    for text in ("one", "two", "three"):
        actions.add_post(headers, text)
    missed = client.get(GET_POSTS, headers=headers)  # read from SQL, stored
    hit = client.get(GET_POSTS, headers=headers)  # from the cache
    assert hit.data == missed.data
    pages = [
        client.get(f"{GET_POSTS}?limit=2", headers=headers).json,
        client.get(
            f"{GET_POSTS}?limit=2&after_id={missed.json[1]['id']}", headers=headers
        ).json,
    ]
    assert pages[0] + pages[1] == missed.json
    for post in missed.json:
        assert_post_shape(post)


def test_get_posts_never_shows_other_users_posts(auth):
    alice, bob = auth.register(), auth.register()
    alice_id = auth.add_post(alice, "alice's")
    assert auth.posts(bob) == []
    bob_id = auth.add_post(bob, "bob's")
    assert auth.posts(alice) == [{"id": alice_id, "text": "alice's"}]
    assert auth.posts(bob) == [{"id": bob_id, "text": "bob's"}]


def test_get_posts_is_json(client, auth):
    headers = auth.register()
    auth.add_post(headers, "hello")
    response = client.get(GET_POSTS, headers=headers)
    assert response.mimetype == "application/json"
    assert response.headers["Content-Type"].startswith("application/json")


def test_get_posts_without_token_is_401(client):
    response = client.get(GET_POSTS)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


# --- delete-post ------------------------------------------------------------


def test_delete_post_is_204_with_empty_body(client, auth):
    headers = auth.register()
    post_id = auth.add_post(headers, "doomed")
    response = delete(client, headers, post_id)
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers


def test_deleted_post_is_gone_and_others_stay(client, auth):
    headers = auth.register()
    doomed = auth.add_post(headers, "doomed")
    kept = auth.add_post(headers, "kept")
    assert delete(client, headers, doomed).status_code == 204
    assert auth.posts(headers) == [{"id": kept, "text": "kept"}]


def test_deleting_twice_is_404(client, auth):
    headers = auth.register()
    post_id = auth.add_post(headers, "doomed")
    assert delete(client, headers, post_id).status_code == 204
    response = delete(client, headers, post_id)
    assert response.status_code == 404
    assert response.json == {"detail": "Post not found"}


def test_deleting_another_users_post_is_404_and_keeps_it(client, auth):
    owner, intruder = auth.register(), auth.register()
    post_id = auth.add_post(owner, "mine")
    response = delete(client, intruder, post_id)
    assert response.status_code == 404
    assert response.json == {"detail": "Post not found"}
    assert auth.posts(owner) == [{"id": post_id, "text": "mine"}]


@pytest.mark.parametrize(
    "post_id", ["abc", "-1", "1.5", "99999999999999999999", str(2**31), "0"]
)
def test_delete_of_impossible_id_is_404_json(app, client, auth, post_id):
    headers = auth.register()
    kept = auth.add_post(headers, "kept")
    response = delete(client, headers, post_id)
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.json["detail"] in {"Not Found", "Post not found"}
    assert auth.posts(headers) == [{"id": kept, "text": "kept"}]


def test_delete_post_without_token_is_401(client, auth):
    headers = auth.register()
    post_id = auth.add_post(headers, "kept")
    response = client.delete(f"{DELETE_POST}{post_id}")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert auth.posts(headers) == [{"id": post_id, "text": "kept"}]


def test_ids_are_not_reused_after_delete(client, auth):
    headers = auth.register()
    auth.add_post(headers, "first")
    latest = auth.add_post(headers, "latest")
    assert delete(client, headers, latest).status_code == 204
    assert auth.add_post(headers, "next") > latest

"""One post: get-post with its ETag, and edit-post with If-Match."""

import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from ..support.auth import assert_post_shape

GET_POST = "/api/v1/posts/get-post/{}"
EDIT_POST = "/api/v1/posts/edit-post/{}"
GET_POSTS = "/api/v1/posts/get-posts"
STRONG_TAG = re.compile(r'"[^"\s]+"')


def moment(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def owner(auth):
    headers = auth.register()
    return headers, auth.add_post(headers, "first draft")


def test_get_post_answers_the_post_as_listed_with_a_strong_tag(client, auth, owner):
    headers, post_id = owner
    response = client.get(GET_POST.format(post_id), headers=headers)
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert STRONG_TAG.fullmatch(response.headers["ETag"])
    assert_post_shape(response.json)
    [listed] = auth.listing(headers)
    assert response.json == listed
    # The same bytes as the post's place in the listing.
    assert response.data in client.get(GET_POSTS, headers=headers).data


def test_another_accounts_post_or_a_missing_one_is_404(client, auth, owner):
    _, post_id = owner
    stranger = auth.register("stranger@example.com")
    for path in (GET_POST.format(post_id), GET_POST.format(post_id + 1000)):
        response = client.get(path, headers=stranger)
        assert (response.status_code, response.json) == (
            404,
            {"detail": "Post not found"},
        )
    response = client.patch(
        EDIT_POST.format(post_id), json={"text": "mine now"}, headers=stranger
    )
    assert (response.status_code, response.json) == (404, {"detail": "Post not found"})
    # If-Match does not reveal that the post exists either.
    response = client.patch(
        EDIT_POST.format(post_id),
        json={"text": "mine now"},
        headers={**stranger, "If-Match": "*"},
    )
    assert response.status_code == 404
    assert auth.posts(owner[0])[0]["text"] == "first draft"


def test_without_a_token_both_are_401(client, owner):
    _, post_id = owner
    assert client.get(GET_POST.format(post_id)).status_code == 401
    response = client.patch(EDIT_POST.format(post_id), json={"text": "x"})
    assert response.status_code == 401
    assert response.json == {"detail": "Not authenticated"}


def test_an_edit_replaces_the_text_keeps_created_at_and_moves_updated_at(
    client, auth, owner
):
    headers, post_id = owner
    before = client.get(GET_POST.format(post_id), headers=headers)
    edited = client.patch(
        EDIT_POST.format(post_id), json={"text": "second draft"}, headers=headers
    )
    assert edited.status_code == 200
    assert edited.json["id"] == post_id
    assert edited.json["text"] == "second draft"
    assert edited.json["created_at"] == before.json["created_at"]
    assert moment(edited.json["updated_at"]) > moment(before.json["updated_at"])
    assert edited.headers["ETag"] != before.headers["ETag"]
    assert STRONG_TAG.fullmatch(edited.headers["ETag"])
    # Visible at once everywhere the post is read.
    after = client.get(GET_POST.format(post_id), headers=headers)
    assert (after.json, after.headers["ETag"]) == (edited.json, edited.headers["ETag"])
    assert auth.listing(headers) == [edited.json]
    page = client.get(GET_POSTS + "?limit=1", headers=headers)
    assert page.json == [edited.json]


def test_every_edit_has_a_new_tag_even_within_one_second(client, owner):
    headers, post_id = owner
    tags = set()
    for number in range(4):
        response = client.patch(
            EDIT_POST.format(post_id), json={"text": f"v{number}"}, headers=headers
        )
        assert response.status_code == 200
        tags.add(response.headers["ETag"])
    assert len(tags) == 4


def test_if_match_with_the_current_tag_edits(client, owner):
    headers, post_id = owner
    tag = client.get(GET_POST.format(post_id), headers=headers).headers["ETag"]
    for form in ("{}", '"elsewhere", {}', "*"):
        value = form.format(tag)
        response = client.patch(
            EDIT_POST.format(post_id),
            json={"text": f"under {value}"},
            headers={**headers, "If-Match": value},
        )
        assert response.status_code == 200, value
        assert response.json["text"] == f"under {value}"
        tag = response.headers["ETag"]


def test_a_stale_if_match_is_412_and_changes_nothing(client, auth, owner):
    headers, post_id = owner
    stale = client.get(GET_POST.format(post_id), headers=headers).headers["ETag"]
    # Another device edits first.
    other = client.patch(
        EDIT_POST.format(post_id), json={"text": "theirs"}, headers=headers
    )
    assert other.status_code == 200
    current = other.headers["ETag"]
    huge = current[: current.rindex(".") + 1] + "9" * 40 + '"'
    malformed = '"1*pY.g", W/",", ""'
    for value in (stale, "W/" + current, '"made-up"', huge, "", "garbage", malformed):
        response = client.patch(
            EDIT_POST.format(post_id),
            json={"text": "mine"},
            headers={**headers, "If-Match": value},
        )
        # A weak tag never matches: If-Match compares strongly (RFC 9110).
        assert (response.status_code, response.json) == (
            412,
            {"detail": "Precondition Failed"},
        ), value
        assert response.content_type == "application/json"
    assert auth.posts(headers)[0]["text"] == "theirs"
    current = client.get(GET_POST.format(post_id), headers=headers)
    assert current.headers["ETag"] == other.headers["ETag"]


def test_edit_follows_the_rules_of_add_post(client, auth, app, owner):
    headers, post_id = owner
    limit = app.config["POST_TEXT_MAX_BYTES"]
    too_big = client.patch(
        EDIT_POST.format(post_id),
        json={"text": "é" * (limit // 2 + 1)},
        headers=headers,
    )
    assert (too_big.status_code, too_big.json) == (
        413,
        {"detail": "Text size exceeds 1MB"},
    )
    just_fits = client.patch(
        EDIT_POST.format(post_id), json={"text": "é" * (limit // 2)}, headers=headers
    )
    assert just_fits.status_code == 200
    for body in ({}, {"text": "   "}, {"text": 5}, {"txt": "x"}):
        response = client.patch(EDIT_POST.format(post_id), json=body, headers=headers)
        assert response.status_code == 422, body
        assert "text" in response.json["errors"]
    not_json = client.patch(EDIT_POST.format(post_id), data="text", headers=headers)
    assert not_json.status_code == 415
    assert auth.posts(headers)[0]["text"] == "é" * (limit // 2)


def test_if_none_match_on_one_post(client, owner):
    headers, post_id = owner
    first = client.get(GET_POST.format(post_id), headers=headers)
    tag = first.headers["ETag"]
    for value in (tag, "W/" + tag, f'"other", {tag}', "*"):
        response = client.get(
            GET_POST.format(post_id), headers={**headers, "If-None-Match": value}
        )
        assert response.status_code == 304, value
        assert response.data == b""
        assert response.headers["ETag"] == tag
    client.patch(EDIT_POST.format(post_id), json={"text": "moved"}, headers=headers)
    response = client.get(
        GET_POST.format(post_id), headers={**headers, "If-None-Match": tag}
    )
    assert response.status_code == 200
    assert response.json["text"] == "moved"


def test_updated_at_follows_the_clock_for_later_edits(client, owner):
    headers, post_id = owner
    post = client.get(GET_POST.format(post_id), headers=headers).json
    created = moment(post["created_at"])
    while datetime.now(UTC).replace(tzinfo=None) < created + timedelta(seconds=2):
        time.sleep(0.1)
    edited = client.patch(
        EDIT_POST.format(post_id), json={"text": "later"}, headers=headers
    )
    assert moment(edited.json["updated_at"]) >= created + timedelta(seconds=2)
    assert edited.json["created_at"] == post["created_at"]

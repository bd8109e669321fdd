"""If-Match and If-None-Match on every route of one post and on listings,
as RFC 9110 evaluates them (section 13.2.2): a false If-Match is 412 and the
method does nothing; a true If-None-Match is 304 on a read, 412 on a write."""

import pytest

GET_POST = "/api/v1/posts/get-post/{}"
EDIT_POST = "/api/v1/posts/edit-post/{}"
DELETE_POST = "/api/v1/posts/delete-post/{}"
GET_POSTS = "/api/v1/posts/get-posts"
PRECONDITION_FAILED = {"detail": "Precondition Failed"}


@pytest.fixture
def edited(client, auth):
    """A post, its tag before an edit made on another device, and after it."""
    headers = auth.register()
    post_id = auth.add_post(headers, "first draft")
    old = client.get(GET_POST.format(post_id), headers=headers).headers["ETag"]
    edit = client.patch(
        EDIT_POST.format(post_id), json={"text": "elsewhere"}, headers=headers
    )
    assert edit.status_code == 200
    return headers, post_id, old, edit.headers["ETag"]


def texts(auth, headers):
    return [post["text"] for post in auth.posts(headers)]


def assert_failed(response):
    assert (response.status_code, response.json) == (412, PRECONDITION_FAILED)


def test_a_delete_with_a_stale_if_match_is_412_and_keeps_the_post(client, auth, edited):
    """A client that read the post before an edit elsewhere does not delete
    the edit it never saw."""
    headers, post_id, old, current = edited
    for stale in (old, f"W/{current}", current.strip('"'), f'{old}, "other"'):
        response = client.delete(
            DELETE_POST.format(post_id), headers={**headers, "If-Match": stale}
        )
        assert_failed(response)
    assert texts(auth, headers) == ["elsewhere"]
    response = client.delete(
        DELETE_POST.format(post_id), headers={**headers, "If-Match": current}
    )
    assert response.status_code == 204
    assert texts(auth, headers) == []


def test_a_delete_with_if_match_of_a_missing_post_is_404(client, auth, edited):
    headers, post_id, _, current = edited
    stranger = auth.register("stranger@example.com")
    for who in (stranger, headers):
        response = client.delete(
            DELETE_POST.format(post_id + 1000), headers={**who, "If-Match": "*"}
        )
        assert response.status_code == 404
    response = client.delete(
        DELETE_POST.format(post_id), headers={**stranger, "If-Match": current}
    )
    assert response.status_code == 404
    assert texts(auth, headers) == ["elsewhere"]


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_a_write_with_a_current_if_none_match_is_412(client, auth, edited, method):
    """If-None-Match on a write says "only if it is not this": the post is."""
    headers, post_id, old, current = edited
    path = (EDIT_POST if method == "PATCH" else DELETE_POST).format(post_id)
    for held in ("*", current, f"W/{current}", f'"other", {current}'):
        response = client.open(
            path,
            method=method,
            json={"text": "changed"} if method == "PATCH" else None,
            headers={**headers, "If-None-Match": held},
        )
        assert_failed(response)
    assert texts(auth, headers) == ["elsewhere"]
    response = client.open(
        path,
        method=method,
        json={"text": "changed"} if method == "PATCH" else None,
        headers={**headers, "If-None-Match": old},
    )
    assert response.status_code == (200 if method == "PATCH" else 204)
    assert texts(auth, headers) == (["changed"] if method == "PATCH" else [])


def test_a_read_with_a_stale_if_match_is_412(client, auth, edited):
    headers, post_id, old, current = edited
    for path, tag in (
        (GET_POST.format(post_id), current),
        (GET_POSTS, client.get(GET_POSTS, headers=headers).headers["ETag"]),
        (
            GET_POSTS + "?limit=1",
            client.get(GET_POSTS + "?limit=1", headers=headers).headers["ETag"],
        ),
    ):
        assert_failed(client.get(path, headers={**headers, "If-Match": old}))
        # If-Match is evaluated first: a stale one is 412 even beside a
        # current If-None-Match.
        both = {**headers, "If-Match": old, "If-None-Match": tag}
        assert_failed(client.get(path, headers=both))
        response = client.get(path, headers={**headers, "If-Match": tag})
        assert (response.status_code, response.headers["ETag"]) == (200, tag)
        response = client.get(path, headers={**headers, "If-Match": "*"})
        assert response.status_code == 200


@pytest.mark.parametrize(
    "written",
    [
        lambda tag: tag.strip('"'),  # unquoted
        lambda tag: "w/" + tag,  # the weak mark in lowercase
        lambda tag: tag + " x",
    ],
)
def test_tags_not_written_as_rfc_9110_writes_them_match_nothing(
    client, auth, edited, written
):
    headers, post_id, _, current = edited
    listing_tag = client.get(GET_POSTS, headers=headers).headers["ETag"]
    for path, tag in ((GET_POST.format(post_id), current), (GET_POSTS, listing_tag)):
        response = client.get(path, headers={**headers, "If-None-Match": written(tag)})
        assert response.status_code == 200
    response = client.patch(
        EDIT_POST.format(post_id),
        json={"text": "changed"},
        headers={**headers, "If-Match": written(current)},
    )
    assert_failed(response)
    assert texts(auth, headers) == ["elsewhere"]


def test_a_version_written_with_leading_zeros_is_another_tag(client, auth, edited):
    """Strong comparison is character by character: "x.2.03" is not "x.2.3"."""
    headers, post_id, _, current = edited
    head, _, version = current.strip('"').rpartition(".")
    padded = f'"{head}.0{version}"'
    response = client.patch(
        EDIT_POST.format(post_id),
        json={"text": "changed"},
        headers={**headers, "If-Match": padded},
    )
    assert_failed(response)
    response = client.get(
        GET_POST.format(post_id), headers={**headers, "If-None-Match": padded}
    )
    assert response.status_code == 200
    assert texts(auth, headers) == ["elsewhere"]

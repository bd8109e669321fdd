"""Keyset pages of get-posts: ?limit=N&after_id=K, ids ascending, Link to the next."""

import pytest

from ..support.auth import AuthActions

GET_POSTS = "/api/v1/posts/get-posts"


@pytest.fixture
def seven(auth):
    """A user with seven posts, and another user with posts in between."""
    headers, other = auth.register(), auth.register()
    ids = []
    for n in range(7):
        ids.append(auth.add_post(headers, f"post {n}"))
        auth.add_post(other, "not yours")
    return headers, ids


def get(client, query, headers):
    return client.get(f"{GET_POSTS}?{query}", headers=headers)


def test_pages_walk_the_listing_by_link(client, seven):
    headers, ids = seven
    url, pages = f"{GET_POSTS}?limit=3", []
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        assert response.content_type == "application/json"
        pages.append(response.json)
        link = response.headers.get("Link")
        url = None
        if link:
            target, rel = link.split(";")
            assert rel.strip() == 'rel="next"'
            url = target.strip()[1:-1]
    assert [[p["id"] for p in page] for page in pages] == [ids[:3], ids[3:6], ids[6:]]
    texts = [p["text"] for page in pages for p in page]
    assert texts == [f"post {n}" for n in range(7)]


def test_link_names_the_next_page(client, seven):
    headers, ids = seven
    response = get(client, f"limit=2&after_id={ids[1]}", headers)
    assert response.headers["Link"] == (
        f'<{GET_POSTS}?limit=2&after_id={ids[3]}>; rel="next"'
    )


def test_full_last_page_has_no_link(client, seven):
    headers, ids = seven
    response = get(client, f"limit=3&after_id={ids[3]}", headers)
    assert [p["id"] for p in response.json] == ids[4:]
    assert "Link" not in response.headers


def test_page_after_the_end_is_empty(client, seven):
    headers, ids = seven
    response = get(client, f"after_id={ids[-1]}", headers)
    assert response.status_code == 200
    assert response.data == b"[]"
    assert "Link" not in response.headers


def test_after_id_alone_uses_the_default_limit(client, seven):
    headers, ids = seven
    assert [p["id"] for p in get(client, f"after_id={ids[0]}", headers).json] == ids[1:]


def test_page_bytes_match_the_listing(client, seven):
    headers, _ = seven
    whole = client.get(GET_POSTS, headers=headers)
    page = get(client, "limit=1000", headers)
    assert page.data == whole.data


def test_no_parameters_still_returns_everything(client, seven):
    headers, ids = seven
    response = client.get(GET_POSTS, headers=headers)
    assert [p["id"] for p in response.json] == ids
    assert "Link" not in response.headers


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("limit=1.5", "limit"),
        ("after_id=-1", "after_id"),
        ("after_id=99999999999999999999", "after_id"),
        ("after_id=x&limit=5", "after_id"),
        # int() reads more than ASCII digits: none of these is a page size.
        ("limit=\uff13", "limit"),  # a full-width 3
        ("limit=\u0663", "limit"),  # an Arabic-Indic 3
        ("limit=1_0", "limit"),
        ("limit=%2B5", "limit"),  # +5
        ("limit=-5", "limit"),
        ("limit=%205", "limit"),  # " 5"
        ("limit=5%20", "limit"),
        ("limit=5%0A", "limit"),
        ("after_id=\uff11", "after_id"),
        ("after_id=1_0", "after_id"),
        ("after_id=%2B5", "after_id"),
        ("after_id=-0", "after_id"),
        ("after_id=%095", "after_id"),  # a tab before
        ("after_id=" + "9" * 5000, "after_id"),  # more digits than int() reads
    ],
)
def test_bad_values_are_422(client, auth, query, field):
    headers = auth.register()
    response = get(client, query, headers)
    assert response.status_code == 422
    assert response.json["detail"] == "Invalid input"
    assert list(response.json["errors"]) == [field]


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("limit=1&limit=x", ["limit"]),
        ("limit=1&limit=5000", ["limit"]),
        ("limit=2&limit=2", ["limit"]),
        ("after_id=1&after_id=-1", ["after_id"]),
        ("limit=1&after_id=1&after_id=2&limit=3", ["limit", "after_id"]),
    ],
)
def test_a_parameter_given_twice_is_422(client, auth, query, fields):
    """Which of the two would be meant cannot be told: neither is taken."""
    response = get(client, query, auth.register())
    assert response.status_code == 422
    assert response.json == {
        "detail": "Invalid input",
        "errors": {field: ["Given more than once."] for field in fields},
    }


def test_bad_token_is_401_before_bad_query(client):
    response = get(client, "limit=0", {"Authorization": "Bearer nope"})
    assert response.status_code == 401


def test_pages_do_not_disturb_the_cached_listing(make_app):
    app = make_app()
    actions = AuthActions(app.test_client())
    headers = actions.register()
    actions.add_post(headers, "one")
    whole = actions.client.get(GET_POSTS, headers=headers).data
    assert get(actions.client, "limit=1", headers).json[0]["text"] == "one"
    actions.add_post(headers, "two")
    assert [p["text"] for p in actions.posts(headers)] == ["one", "two"]
    assert whole != actions.client.get(GET_POSTS, headers=headers).data


def test_page_sizes_with_leading_zeros_are_whole_numbers(client, seven):
    headers, ids = seven
    response = get(client, f"limit=03&after_id=0{ids[0]}", headers)
    assert response.status_code == 200
    assert [p["id"] for p in response.json] == ids[1:4]
    # However many zeros: the number is what counts.
    zeros = "0" * 5000
    response = get(client, f"limit={zeros}3&after_id={zeros}{ids[0]}", headers)
    assert response.status_code == 200
    assert [p["id"] for p in response.json] == ids[1:4]


def test_a_number_of_many_digits_is_out_of_range(client, auth):
    """Not "Not a valid integer": it is one, past the largest id."""
    headers = auth.register()
    for digits in (20, 41, 5000):
        response = get(client, "after_id=" + "9" * digits, headers)
        assert response.status_code == 422
        [message] = response.json["errors"]["after_id"]
        assert message.startswith("Must be greater than or equal to 0"), digits

"""Requests whose database connection is lost under them are tried again.

A relay between the app and the real MariaDB (``support/cutting_proxy.py``)
cuts the connection at one statement: after the server ran it (the commit
happened, the answer is lost: a node that died, a proxy that failed over)
or before (nothing happened). Either way the request is answered as if
nothing went wrong, and the post is stored exactly once. A read cut under
its query runs again.
"""

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from postservice.extensions import db

from ..support.auth import AuthActions
from ..support.cutting_proxy import CuttingProxy
from ..support.settings import TEST_DATABASE_URL, require

pytestmark = pytest.mark.mysql

INSERT = b"INSERT INTO posts"
DELETE = b"DELETE FROM posts"
COMMIT = b"COMMIT"
LISTING = b"ORDER BY posts.id"
TOKEN_CHECK = b"revoked_tokens"


@pytest.fixture
def proxy(database_url):
    require(TEST_DATABASE_URL, "TEST_DATABASE_URL", "it cuts a MySQL connection")
    url = make_url(database_url)
    relay = CuttingProxy(url.host, url.port or 3306)
    yield relay, url.set(host="127.0.0.1", port=relay.port)
    relay.close()


@pytest.fixture
def cut_app(make_app, proxy):
    _relay, url = proxy
    return make_app(SQLALCHEMY_DATABASE_URI=url.render_as_string(hide_password=False))


@pytest.fixture
def headers(cut_app):
    return AuthActions(cut_app.test_client()).register()


def stored(app, post_text):
    """The ids of the posts stored with ``post_text``."""
    with app.app_context():
        ids = db.session.scalars(
            text("SELECT id FROM posts WHERE text = :t"), {"t": post_text}
        ).all()
        db.session.rollback()
    return ids


@pytest.mark.parametrize("after", [True, False], ids=["committed", "not-run"])
def test_add_post_cut_at_its_insert_stores_one_post(cut_app, proxy, headers, after):
    relay, _ = proxy
    relay.cut(INSERT, after=after)
    response = cut_app.test_client().post(
        "/api/v1/posts/add-post", json={"text": "cut at the insert"}, headers=headers
    )
    assert relay.cuts == 1
    assert response.status_code == 200, response.json
    assert stored(cut_app, "cut at the insert") == [response.json["PostID"]]


def test_keyed_add_post_cut_at_its_commit_stores_one_post(cut_app, proxy, headers):
    relay, _ = proxy
    relay.cut(COMMIT, after=True)
    response = cut_app.test_client().post(
        "/api/v1/posts/add-post",
        json={"text": "cut at the commit"},
        headers={**headers, "Idempotency-Key": "cut-1"},
    )
    assert relay.cuts == 1
    assert response.status_code == 200, response.json
    assert stored(cut_app, "cut at the commit") == [response.json["PostID"]]


@pytest.mark.parametrize("if_match", [False, True], ids=["plain", "if-match"])
@pytest.mark.parametrize("after", [True, False], ids=["committed", "not-run"])
def test_delete_post_cut_at_its_delete_answers_deleted(
    cut_app, proxy, headers, after, if_match
):
    """With If-Match too: the try after the cut finds no row, or the row at
    the version the client named, and answers the delete either way."""
    relay, _ = proxy
    client = cut_app.test_client()
    added = client.post("/api/v1/posts/add-post", json={"text": "x"}, headers=headers)
    post_id = added.json["PostID"]
    if if_match:
        tag = client.get(f"/api/v1/posts/get-post/{post_id}", headers=headers)
        headers = {**headers, "If-Match": tag.headers["ETag"]}
    relay.cut(DELETE, after=after)
    response = client.delete(f"/api/v1/posts/delete-post/{post_id}", headers=headers)
    assert relay.cuts == 1
    assert response.status_code == 204, response.json
    assert stored(cut_app, "x") == []
    again = client.delete(f"/api/v1/posts/delete-post/{post_id}", headers=headers)
    assert again.status_code == 404


@pytest.mark.parametrize("after", [True, False], ids=["answered", "not-run"])
def test_a_listing_cut_under_its_query_is_read_again(cut_app, proxy, headers, after):
    relay, _ = proxy
    client = cut_app.test_client()
    post_id = AuthActions(client).add_post(headers, "listed")
    relay.cut(LISTING, after=after)
    response = client.get("/api/v1/posts/get-posts", headers=headers)
    assert relay.cuts == 1
    assert response.status_code == 200, response.json
    assert [p["id"] for p in response.json] == [post_id]


@pytest.mark.parametrize("after", [True, False], ids=["answered", "not-run"])
def test_a_write_cut_under_its_token_check_is_checked_again(
    cut_app, proxy, headers, after
):
    """Every protected request, add-post too, begins with a read of the
    token's account: a read, so it runs again."""
    relay, _ = proxy
    relay.cut(TOKEN_CHECK, after=after)
    response = cut_app.test_client().post(
        "/api/v1/posts/add-post", json={"text": "checked again"}, headers=headers
    )
    assert relay.cuts == 1
    assert response.status_code == 200, response.json
    assert stored(cut_app, "checked again") == [response.json["PostID"]]

"""What a request sends to MySQL: an add or a delete one statement, committed
by itself; an edit its statement, the post read back and the commit.

Counted at the driver, where every command is one round trip: PyMySQL's
``query``, ``commit`` and ``rollback`` all go through ``_execute_command``.
"""

import contextlib
import threading

import pymysql.connections
import pytest

from ..support.auth import AuthActions
from ..support.settings import TEST_DATABASE_URL, require

pytestmark = pytest.mark.mysql


@contextlib.contextmanager
def commands_sent():
    """Every SQL text PyMySQL sends from this thread meanwhile."""
    sent = []
    original = pymysql.connections.Connection._execute_command
    here = threading.get_ident()

    def counting(self, command, sql):
        if threading.get_ident() == here:
            sent.append(sql if isinstance(sql, str) else sql.decode("utf-8", "replace"))
        return original(self, command, sql)

    pymysql.connections.Connection._execute_command = counting
    try:
        yield sent
    finally:
        pymysql.connections.Connection._execute_command = original


@pytest.fixture
def signed_in(make_app, database_url):
    require(TEST_DATABASE_URL, "TEST_DATABASE_URL", "it counts MySQL commands")
    app = make_app()
    actions = AuthActions(app.test_client())
    headers = actions.register()
    # The token's verdict is cached from here on, as on every later request.
    actions.add_post(headers, "warm")
    return actions, headers


def verbs(sent):
    return [sql.split(None, 1)[0].upper() for sql in sent]


def test_add_post_is_one_insert_and_nothing_else(signed_in):
    actions, headers = signed_in
    with commands_sent() as sent:
        post_id = actions.add_post(headers, "one round trip")
    # No COMMIT (autocommit), no ROLLBACK when the connection goes back.
    assert verbs(sent) == ["INSERT"]
    assert [p["id"] for p in actions.posts(headers)][-1] == post_id


def test_delete_post_is_one_delete_and_nothing_else(signed_in):
    actions, headers = signed_in
    post_id = actions.add_post(headers, "to delete")
    with commands_sent() as sent:
        response = actions.client.delete(
            f"/api/v1/posts/delete-post/{post_id}", headers=headers
        )
    assert response.status_code == 204
    assert verbs(sent) == ["DELETE"]
    assert post_id not in [p["id"] for p in actions.posts(headers)]


def test_an_uncached_listing_is_one_snapshot(make_app, database_url):
    require(TEST_DATABASE_URL, "TEST_DATABASE_URL", "it counts MySQL commands")
    app = make_app(POSTS_CACHE_MAX_BYTES=0)  # every listing read from the database
    actions = AuthActions(app.test_client())
    headers = actions.register()
    actions.add_post(headers, "listed")
    actions.posts(headers)  # the token's verdict cached
    with commands_sent() as sent:
        assert [p["text"] for p in actions.posts(headers)] == ["listed"]
    # Too large to cache (over 0 bytes): the ids and versions (the tag),
    # then the posts streamed, in one snapshot.
    assert verbs(sent) == ["START", "SELECT", "SELECT", "ROLLBACK"]


def test_a_listing_that_misses_is_one_select(make_app, database_url):
    require(TEST_DATABASE_URL, "TEST_DATABASE_URL", "it counts MySQL commands")
    app = make_app(REDIS_URL=None)
    actions = AuthActions(app.test_client())
    headers = actions.register()
    actions.posts(headers)  # the token's verdict cached
    actions.add_post(headers, "listed")  # the listing is stale
    with commands_sent() as sent:
        assert [p["text"] for p in actions.posts(headers)] == ["listed"]
    # Its bytes and its tag come from the same rows.
    assert verbs(sent) == ["SELECT"]


def test_an_edit_is_its_update_the_post_read_back_and_a_commit(signed_in):
    actions, headers = signed_in
    post_id = actions.add_post(headers, "to edit")
    with commands_sent() as sent:
        response = actions.client.patch(
            f"/api/v1/posts/edit-post/{post_id}",
            json={"text": "edited"},
            headers=headers,
        )
    assert response.status_code == 200
    assert response.json["text"] == "edited"
    # The post as edited, read in the edit's transaction (no other edit
    # between), then the pool's reset of the connection as it goes back.
    assert verbs(sent) == ["UPDATE", "SELECT", "COMMIT", "ROLLBACK"]

"""Idempotency-Key on add-post: a request sent again stores nothing new."""

import time
from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import func, select, update

from postservice.extensions import db
from postservice.models import IdempotencyKey, Post
from postservice.posts import idempotency

from ..support.load import register_users, report

ADD_POST = "/api/v1/posts/add-post"
CONCURRENT = 50


def add(client, headers, text, key):
    return client.post(
        ADD_POST,
        json={"text": text},
        headers={**headers, "Idempotency-Key": key},
    )


def stored(app):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Post))


def test_same_key_answers_the_first_post_and_stores_nothing(app, client, auth):
    headers = auth.register()
    first = add(client, headers, "once", "k-1")
    again = add(client, headers, "once", "k-1")
    assert first.status_code == again.status_code == 200
    assert (
        again.json
        == first.json
        == {"PostID": first.json["PostID"], "detail": "Post created"}
    )
    assert [p["text"] for p in auth.posts(headers)] == ["once"]
    assert stored(app) == 1


def test_new_key_stores_a_new_post(client, auth):
    headers = auth.register()
    first = add(client, headers, "same text", "k-1")
    second = add(client, headers, "same text", "k-2")
    assert first.json["PostID"] != second.json["PostID"]
    assert len(auth.posts(headers)) == 2


def test_same_key_with_another_text_is_refused(app, client, auth):
    headers = auth.register()
    add(client, headers, "first", "k-1")
    response = add(client, headers, "second", "k-1")
    assert response.status_code == 422
    assert response.json["detail"] == "Invalid input"
    assert list(response.json["errors"]) == ["Idempotency-Key"]
    assert stored(app) == 1


def test_keys_belong_to_their_user(client, auth):
    """Two users sending one key each get their own post, whatever its text."""
    alice, bob = auth.register(), auth.register()
    sent = {"alice": [], "bob": []}  # (response, text) of each user, in order
    for key, alice_text, bob_text in (
        ("shared-key", "same words", "same words"),
        ("also-shared", "alice's", "bob's"),
    ):
        sent["alice"].append((add(client, alice, alice_text, key), alice_text))
        sent["bob"].append((add(client, bob, bob_text, key), bob_text))

    (alice_same, _), _ = sent["alice"]
    (bob_same, _), _ = sent["bob"]
    assert bob_same.json.get("PostID") != alice_same.json["PostID"], (
        "bob was answered alice's post for the key they both sent"
    )
    for name, headers in (("alice", alice), ("bob", bob)):
        answered = [
            {"id": response.json.get("PostID"), "text": text}
            for response, text in sent[name]
        ]
        assert auth.posts(headers) == answered, (
            f"{name}'s posts are not the ones {name} was answered"
        )
        for response, text in sent[name]:
            assert response.status_code == 200, (name, text, response.json)


def test_invalid_keys_are_422(app, client, auth):
    headers = auth.register()
    for key in ["", "with space", "x" * 256, "caf\u00e9"]:
        response = client.post(
            ADD_POST,
            json={"text": "t"},
            headers={**headers, "Idempotency-Key": key.encode().decode("latin-1")},
        )
        assert response.status_code == 422, key
        assert "Idempotency-Key" in response.json["errors"]
    assert add(client, headers, "t", "x" * 255).status_code == 200
    assert stored(app) == 1


def test_a_key_expires_after_a_day(app, client, auth):
    headers = auth.register()
    first = add(client, headers, "old", "k-1")
    with app.app_context():
        db.session.execute(
            update(IdempotencyKey).values(
                created_at=int(time.time()) - idempotency.TTL - 1
            )
        )
        db.session.commit()
    # Expired: the key is free again, for any text.
    second = add(client, headers, "new", "k-1")
    assert second.status_code == 200
    assert second.json["PostID"] != first.json["PostID"]
    assert add(client, headers, "new", "k-1").json == second.json


def age_keys(app, seconds, key=None):
    """Make the records (of ``key``, or all) ``seconds`` old."""
    with app.app_context():
        statement = update(IdempotencyKey).values(created_at=int(time.time()) - seconds)
        if key is not None:
            statement = statement.where(IdempotencyKey.idempotency_key == key)
        db.session.execute(statement)
        db.session.commit()


def recorded_keys(app):
    with app.app_context():
        return set(db.session.scalars(select(IdempotencyKey.idempotency_key)))


def test_purge_keys_forgets_only_expired_records(app, client, auth):
    headers = auth.register()
    for n in range(7):
        add(client, headers, f"post {n}", f"old-{n}")
    add(client, headers, "fresh", "fresh")
    add(client, headers, "edge", "edge")
    age_keys(app, idempotency.TTL + 5)
    age_keys(app, 0, key="fresh")
    age_keys(app, idempotency.TTL - 60, key="edge")  # a minute left to live
    with app.app_context():
        # Batches of 3: the loop must go on past full batches.
        assert idempotency.purge_expired(batch=3) == 7
    assert recorded_keys(app) == {"fresh", "edge"}
    # The posts stay; only the records of their keys go.
    assert stored(app) == 9
    # A live key still answers its first post after the purge.
    assert add(client, headers, "fresh", "fresh").status_code == 200
    assert stored(app) == 9


def test_purge_keys_command(app, client, auth):
    headers = auth.register()
    add(client, headers, "a", "k-1")
    add(client, headers, "b", "k-2")
    age_keys(app, idempotency.TTL + 1, key="k-1")
    result = app.test_cli_runner().invoke(args=["posts", "purge-keys"])
    assert result.exit_code == 0, result.output
    assert "purged 1 expired idempotency key(s)" in result.output
    assert recorded_keys(app) == {"k-2"}
    again = app.test_cli_runner().invoke(args=["posts", "purge-keys"])
    assert "purged 0 " in again.output


def test_requests_without_a_key_are_not_recorded(app, client, auth):
    headers = auth.register()
    auth.add_post(headers, "plain")
    auth.add_post(headers, "plain")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0
    assert stored(app) == 2


def test_concurrent_retries_of_one_add_post_store_one_post(start_server, capsys):
    """50 clients send the same add-post with one key through two servers."""
    bases = [start_server(threads=8), start_server(threads=8)]
    [headers] = register_users(bases[0], 1, "idempotent")
    body = {"text": "sent fifty times"}

    def send(n):
        response = requests.post(
            bases[n % 2] + ADD_POST,
            json=body,
            headers={**headers, "Idempotency-Key": "retry-me"},
            timeout=30,
        )
        return response.status_code, response.json()

    with ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(send, range(CONCURRENT)))
    listing = requests.get(
        bases[1] + "/api/v1/posts/get-posts", headers=headers, timeout=30
    ).json()
    statuses = sorted({status for status, _ in answers})
    ids = {answer.get("PostID") for _, answer in answers}
    report(
        capsys,
        f"\nIdempotency-Key: {CONCURRENT} concurrent requests, statuses {statuses}, "
        f"{len(ids)} distinct PostID, {len(listing)} post(s) stored",
    )
    assert statuses == [200], answers
    assert len(ids) == 1
    assert [post["text"] for post in listing] == [body["text"]]
    assert listing[0]["id"] in ids

"""Two requests with one Idempotency-Key, both past the check, both inserting.

Both find no record of the key, both insert their post, and only then does
either commit: the first commit wins, the other meets the record's primary
key (user, key) and must answer the winner's post, not its own, which was
rolled back and never existed for anyone else.

And copies that all find the key's record past its day: one renews it and
stores a post, the others answer that post.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask_jwt_extended import decode_token
from sqlalchemy import select, update

from postservice.extensions import db
from postservice.models import IdempotencyKey, Post
from postservice.posts import idempotency, service

from ..support.auth import AuthActions
from ..support.settings import TEST_DATABASE_URL, require

# InnoDB's row locks make the loser wait for the winner's commit and then
# fail on the duplicate key; SQLite would refuse the second writer otherwise.
pytestmark = pytest.mark.mysql

ADD_POST = "/api/v1/posts/add-post"
KEY = "raced-key"
TEXT = "sent twice"
# Longer than any step of the race takes; a broken race fails, never hangs.
WAIT = 10


@pytest.fixture
def mysql_app(make_app, database_url):
    require(TEST_DATABASE_URL, "TEST_DATABASE_URL", "it needs InnoDB's row locks")
    return make_app()


def test_the_loser_of_a_key_race_answers_the_winners_post(mysql_app, monkeypatch):
    headers = AuthActions(mysql_app.test_client()).register()
    with mysql_app.app_context():
        uid = int(decode_token(headers["Authorization"].split()[1])["sub"])

    both_inserted = threading.Barrier(2, timeout=WAIT)
    inserts = []
    real_insert = service._insert_in_session

    def insert_then_wait(user_id, text):
        # Each request reads "no record" and inserts its post; neither
        # commits until both have.
        post_id = real_insert(user_id, text)
        inserts.append(post_id)
        if len(inserts) <= 2:
            both_inserted.wait()
        return post_id

    monkeypatch.setattr(service, "_insert_in_session", insert_then_wait)

    def send(_):
        client = mysql_app.test_client()  # one client per thread
        return client.post(
            ADD_POST, json={"text": TEXT}, headers={**headers, "Idempotency-Key": KEY}
        )

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(send, n) for n in range(2)]
        responses = [future.result(timeout=3 * WAIT) for future in futures]

    assert len(inserts) == 2, "the requests did not both pass the check"
    for response in responses:
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.json["detail"] == "Post created"
    answered = [response.json["PostID"] for response in responses]

    with mysql_app.app_context():
        stored = db.session.scalars(select(Post.id).where(Post.user_id == uid)).all()
        recorded = db.session.scalar(
            select(IdempotencyKey.post_id).where(
                IdempotencyKey.user_id == uid, IdempotencyKey.idempotency_key == KEY
            )
        )
    assert len(stored) == 1, f"posts stored for one key: {stored}"
    assert recorded == stored[0]
    assert answered == [stored[0], stored[0]], (
        f"answered {answered}, but only post {stored[0]} exists"
    )


COPIES = 12


def test_copies_renewing_an_expired_key_store_one_post(make_app, database_url):
    """Twelve copies find the key's record past its day, all at once.

    The record is older than ``TTL`` and not yet purged: the key is free
    again, for one new post. Each copy reads "expired" before any goes on;
    exactly one may renew the key, and every copy answers that post.
    """
    require(TEST_DATABASE_URL, "TEST_DATABASE_URL", "it needs InnoDB's row locks")
    app = make_app(DATABASE_POOL_SIZE=COPIES + 4)
    headers = AuthActions(app.test_client()).register()
    with app.app_context():
        uid = int(decode_token(headers["Authorization"].split()[1])["sub"])
    keyed = {**headers, "Idempotency-Key": KEY}
    first = app.test_client().post(ADD_POST, json={"text": TEXT}, headers=keyed)
    assert first.status_code == 200, first.get_data(as_text=True)
    old_post = first.json["PostID"]
    with app.app_context():
        db.session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.user_id == uid)
            .values(created_at=int(time.time()) - idempotency.TTL - 60)
        )
        db.session.commit()

    all_read_expired = threading.Barrier(COPIES, timeout=WAIT)
    lock = threading.Lock()
    expired_reads = []
    real_recorded = idempotency._recorded

    def recorded_then_wait(*args):
        row = real_recorded(*args)
        with lock:
            first_reads = row == "expired" and len(expired_reads) < COPIES
            if first_reads:
                expired_reads.append(threading.get_ident())
        if first_reads:
            all_read_expired.wait()
        return row

    def send(_):
        return app.test_client().post(ADD_POST, json={"text": TEXT}, headers=keyed)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(idempotency, "_recorded", recorded_then_wait)
        with ThreadPoolExecutor(COPIES) as pool:
            futures = [pool.submit(send, n) for n in range(COPIES)]
            responses = [future.result(timeout=6 * WAIT) for future in futures]

    assert len(expired_reads) == COPIES, "the copies did not all read the key expired"
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * COPIES, [r.get_data(as_text=True) for r in responses]
    with app.app_context():
        stored = db.session.scalars(
            select(Post.id).where(Post.user_id == uid).order_by(Post.id)
        ).all()
        record = db.session.execute(
            select(IdempotencyKey.post_id, IdempotencyKey.created_at).where(
                IdempotencyKey.user_id == uid, IdempotencyKey.idempotency_key == KEY
            )
        ).one()
    new_posts = [post for post in stored if post != old_post]
    assert len(new_posts) == 1, (
        f"{COPIES} copies of one renewed key stored posts {new_posts}"
    )
    answered = {r.json["PostID"] for r in responses}
    assert answered == {new_posts[0]}, (
        f"answered {sorted(answered)}, the key's new post is {new_posts[0]}"
    )
    assert record.post_id == new_posts[0]
    assert record.created_at > time.time() - idempotency.TTL

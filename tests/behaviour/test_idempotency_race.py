"""Two requests with one Idempotency-Key, both past the check, both inserting.

Both find no record of the key, both insert their post, and only then does
either commit: the first commit wins, the other meets the record's primary
key (user, key) and must answer the winner's post, not its own, which was
rolled back and never existed for anyone else.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask_jwt_extended import decode_token
from sqlalchemy import select

from postservice.extensions import db
from postservice.models import IdempotencyKey, Post
from postservice.posts import service

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

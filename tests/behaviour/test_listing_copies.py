"""Each instance's copies of the listings it served (``posts.copies``): a
read fetches the tag alone, in its token check's one round trip, and the
copy answers, brought up to date by what was appended; after any other
change, and without Redis, it is not used."""

import contextlib
from urllib.parse import urlsplit

import pytest
import redis

from postservice.posts import cache as posts_cache
from postservice.posts import copies, listing, scripts

from ..support.auth import AuthActions, token_user_id
from ..support.proxy import SilenceableProxy
from ..support.redis_commands import reply_size, sent_commands
from .test_conditional_listings import DELETE_POST, EDIT_POST, committed_rows, get

pytestmark = [
    pytest.mark.redis,
    # The apps without a cache say so; that is what they are for here.
    pytest.mark.filterwarnings("ignore:Flask-Caching.*NullCache"),
]

LARGE = "x" * 100_000


@contextlib.contextmanager
def redis_replies(app, monkeypatch):
    """The commands ``app`` sends Redis meanwhile, with the size of each reply."""
    with sent_commands(app, monkeypatch) as sent:
        replies = []
        yield replies
    replies.extend((args[0], reply_size(reply)) for args, reply in sent)


def copied(client, headers):
    """Read the listing twice: a miss that caches it, then a hit from Redis
    that the instance copies; the second answer."""
    get(client, headers)
    return get(client, headers)


def truth(make_app, headers):
    """The listing as an app without any cache answers it."""
    return get(make_app(REDIS_URL=None, CACHE_TYPE="NullCache").test_client(), headers)


def assert_same(response, expected):
    assert response.status_code == 200
    assert response.data == expected.data
    assert response.headers["ETag"] == expected.headers["ETag"]


def test_a_read_with_a_copy_fetches_the_tag_alone(
    make_app, real_redis_url, monkeypatch
):
    app = make_app(REDIS_URL=real_redis_url)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, LARGE)
    first = copied(client, headers)
    with redis_replies(app, monkeypatch) as replies:
        second = get(client, headers)
    assert_same(second, first)
    # One round trip, the token's check, which read the tag and not the bytes.
    [(command, size)] = replies
    assert command == "EVALSHA"
    assert size < 1000


def test_without_copies_every_read_fetches_the_listing(
    make_app, real_redis_url, monkeypatch
):
    app = make_app(REDIS_URL=real_redis_url, POSTS_LOCAL_COPY_BYTES=0)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, LARGE)
    copied(client, headers)
    with redis_replies(app, monkeypatch) as replies:
        get(client, headers)
    assert sum(size for _, size in replies) > len(LARGE)


def test_posts_added_on_another_instance_are_fetched_alone(
    make_app, real_redis_url, monkeypatch
):
    reader = make_app(REDIS_URL=real_redis_url)
    writer = make_app(REDIS_URL=real_redis_url).test_client()
    actions = AuthActions(writer)
    headers = actions.register()
    actions.add_post(headers, LARGE)
    client = reader.test_client()
    copied(client, headers)
    for added in (1, 3, scripts.TAIL - 1):
        for n in range(added):
            actions.add_post(headers, f"added {added}.{n}")
        with redis_replies(reader, monkeypatch) as replies:
            response = get(client, headers)
        assert_same(response, truth(make_app, headers))
        assert [command for command, _ in replies] == ["EVALSHA"]
        # The new posts and the tags, not the large post before them.
        assert sum(size for _, size in replies) < len(LARGE) // 10
    with redis_replies(reader, monkeypatch) as replies:
        again = get(client, headers)
    assert_same(again, response)
    assert [command for command, _ in replies] == ["EVALSHA"]
    assert sum(size for _, size in replies) < len(LARGE) // 10


def test_every_other_change_on_another_instance_is_answered_whole(
    make_app, real_redis_url
):
    reader = make_app(REDIS_URL=real_redis_url).test_client()
    writer = make_app(REDIS_URL=real_redis_url)
    actions = AuthActions(writer.test_client())
    headers = actions.register()
    actions.add_post(headers, LARGE)
    ids = [actions.add_post(headers, f"p{n}") for n in range(5)]
    copied(reader, headers)
    uid = token_user_id(writer, headers)

    def out_of_order():
        rows = committed_rows(writer, uid, ["a", "b"])
        with writer.test_request_context():
            for *post, version in reversed(rows):  # the later id first
                posts_cache.appended(uid, post[0], version, listing.encoded(post))

    def many_adds():
        for n in range(scripts.TAIL + 3):  # further than a tag's tail reaches
            actions.add_post(headers, f"many {n}")

    changes = [
        lambda: actions.client.patch(
            EDIT_POST.format(ids[1]), json={"text": "edited"}, headers=headers
        ),
        lambda: actions.client.delete(DELETE_POST.format(ids[2]), headers=headers),
        out_of_order,
        many_adds,
        lambda: actions.client.patch(
            EDIT_POST.format(ids[-1]), json={"text": "edited last"}, headers=headers
        ),
    ]
    for change in changes:
        change()
        assert_same(get(reader, headers), truth(make_app, headers))
        assert_same(get(reader, headers), truth(make_app, headers))


def test_a_copy_is_not_used_when_redis_lost_the_listing(make_app, real_redis_url):
    app = make_app(REDIS_URL=real_redis_url)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, LARGE)
    copied(client, headers)
    # Posts stored without the service, then Redis emptied (a restart): the
    # generation is gone, and with it any trust in the copy.
    committed_rows(app, token_user_id(app, headers), ["two"])
    redis.Redis.from_url(real_redis_url).flushdb()
    response = get(client, headers)
    assert [p["text"] for p in response.json] == [LARGE, "two"]
    assert_same(response, truth(make_app, headers))


def test_a_copy_is_not_used_while_redis_is_silent(make_app, real_redis_url):
    parts = urlsplit(real_redis_url)
    proxy = SilenceableProxy(parts.hostname, parts.port or 6379)
    try:
        silenced = make_app(REDIS_URL=proxy.url(path=parts.path or "/0"))
        writer = AuthActions(make_app(REDIS_URL=real_redis_url).test_client())
        headers = writer.register()
        writer.add_post(headers, LARGE)
        reader = silenced.test_client()
        copied(reader, headers)
        proxy.silence()
        writer.add_post(headers, "two")
        response = get(reader, headers)
        assert [p["text"] for p in response.json] == [LARGE, "two"]
        assert_same(response, truth(make_app, headers))
    finally:
        proxy.close()


def test_small_listings_are_read_with_the_verdict(
    make_app, real_redis_url, monkeypatch
):
    app = make_app(REDIS_URL=real_redis_url)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    large = actions.add_post(headers, LARGE)
    actions.add_post(headers, "small")
    copied(client, headers)
    with redis_replies(app, monkeypatch) as replies:
        get(client, headers)
    assert [command for command, _ in replies] == ["EVALSHA"]
    # Below copies.SMALLEST: the copy goes, and the bytes come with the verdict.
    actions.client.delete(DELETE_POST.format(large), headers=headers)
    copied(client, headers)
    with redis_replies(app, monkeypatch) as replies:
        response = get(client, headers)
    assert [command for command, _ in replies] == ["MGET"]
    assert [p["text"] for p in response.json] == ["small"]
    with app.app_context():
        assert app.extensions[copies.EXTENSION].size == (0, 0)


def test_copies_stay_within_their_bytes():
    held = copies.Copies(limit=100)
    held.put(1, "a", b"x" * 40)
    held.put(2, "b", b"x" * 40)
    assert held.get(1).link == "a"  # 1 is now the most recently used
    held.put(3, "c", b"x" * 40)  # over the limit: 2 goes
    assert held.get(2) is None
    assert held.size == (80, 2)
    held.put(4, "d", b"x" * 101)  # larger than all of it: not kept
    assert held.get(4) is None
    held.put(1, "a2", b"x" * 10)  # replaces 1's copy
    assert held.get(1) == copies.Copy("a2", b"x" * 10)
    assert held.size == (50, 2)

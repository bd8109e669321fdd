"""Conditional listings: ETag and If-None-Match on get-posts, whole and paged,
through the cache, across instances and without Redis; and a listing kept
warm while posts are added."""

import math
import threading
import time

import pytest
import redis
from sqlalchemy import insert, select

from postservice.cache import announcements
from postservice.extensions import db
from postservice.models import Post
from postservice.posts import cache as posts_cache
from postservice.posts import listing

from ..support.auth import AuthActions, token_user_id
from ..support.redis_commands import sent_commands
from ..support.sql import executed_sql

# The apps without a cache say so; that is what they are for here.
pytestmark = pytest.mark.filterwarnings("ignore:Flask-Caching.*NullCache")

GET_POSTS = "/api/v1/posts/get-posts"
EDIT_POST = "/api/v1/posts/edit-post/{}"
DELETE_POST = "/api/v1/posts/delete-post/{}"


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
def cached_app(request, make_app):
    if request.param == "redis":
        return make_app(REDIS_URL=request.getfixturevalue("real_redis_url"))
    return make_app(REDIS_URL=None)


def get(client, headers, tag=None, query=""):
    extra = {} if tag is None else {"If-None-Match": tag}
    response = client.get(GET_POSTS + query, headers={**headers, **extra})
    response.get_data()  # to its end, as a server sends it: then it is cached
    return response


def at_once(calls):
    """Each of ``calls`` on a thread of its own, all released together;
    their results, in order."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(n, call):
        barrier.wait()
        results[n] = call()

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def assert_not_modified(response, tag):
    assert response.status_code == 304
    assert response.data == b""
    assert response.headers["ETag"] == tag
    assert "Content-Type" not in response.headers


def test_if_none_match_with_the_current_tag_is_304(cached_app):
    client = cached_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "one")
    first = get(client, headers)
    tag = first.headers["ETag"]
    assert tag.startswith('"')
    assert tag.endswith('"')
    # Weak comparison, lists of tags and "*" (RFC 9110, 13.1.2).
    for value in (tag, "W/" + tag, f'"stale", {tag}', f'W/"x",W/{tag}', "*"):
        assert_not_modified(get(client, headers, value), tag)
    for value in ('"stale"', tag[:-2] + '"', 'W/"stale"'):
        response = get(client, headers, value)
        assert response.status_code == 200, value
        assert response.data == first.data


def test_a_304_from_the_cache_runs_no_sql(cached_app):
    client = cached_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "one")
    tag = get(client, headers).headers["ETag"]
    with executed_sql(cached_app) as executed:
        assert_not_modified(get(client, headers, tag), tag)
    assert executed == []


def test_a_304_reads_the_tag_and_not_the_listing(redis_app, monkeypatch):
    client = redis_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "x" * 100_000)
    tag = get(client, headers).headers["ETag"]
    with sent_commands(redis_app, monkeypatch) as answered:
        assert_not_modified(get(client, headers, tag), tag)
    [(command, values)] = answered  # one round trip, with the token's check
    assert command[0] == "MGET"
    uid = token_user_id(redis_app, headers)
    assert not any(
        key.endswith(posts_cache.listing_key(uid))
        for key in (k.decode() if isinstance(k, bytes) else k for k in command[1:])
    )
    assert sum(len(v or b"") for v in values) < 1000


def test_every_change_makes_the_old_tag_miss(cached_app):
    client = cached_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    post_id = actions.add_post(headers, "one")
    seen = [get(client, headers).headers["ETag"]]
    actions.add_post(headers, "two")
    changes = [
        lambda: actions.add_post(headers, "three"),
        lambda: client.patch(
            EDIT_POST.format(post_id), json={"text": "edited"}, headers=headers
        ),
        lambda: client.delete(DELETE_POST.format(post_id), headers=headers),
    ]
    for change in [None, *changes]:
        if change is not None:
            change()
        response = get(client, headers, seen[-1])
        assert response.status_code == 200
        assert response.headers["ETag"] not in seen
        assert response.json == actions.listing(headers)
        seen.append(response.headers["ETag"])
    # And nothing older comes back as current.
    for tag in seen[:-1]:
        assert get(client, headers, tag).status_code == 200
    assert_not_modified(get(client, headers, seen[-1]), seen[-1])


def test_tags_are_the_same_from_the_cache_the_database_and_an_append(
    make_app, real_redis_url
):
    """A tag follows from the posts alone: computed by the database read, by
    the cache's append script and without Redis, it is the same."""
    cached = make_app(REDIS_URL=real_redis_url)
    uncached = make_app(REDIS_URL=None, CACHE_TYPE="NullCache")
    client = cached.test_client()
    other = uncached.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "one")
    for text in ("two", "trois", "vier ☃"):
        miss_or_hit = get(client, headers)
        from_database = get(other, headers)
        assert miss_or_hit.headers["ETag"] == from_database.headers["ETag"]
        assert miss_or_hit.data == from_database.data
        actions.add_post(headers, text)  # appended to the cached listing
    with executed_sql(cached) as executed:
        appended = get(client, headers)
    assert executed == []  # the append kept the listing cached
    from_database = get(other, headers)
    assert appended.headers["ETag"] == from_database.headers["ETag"]
    assert appended.data == from_database.data
    assert [post["text"] for post in appended.json] == ["one", "two", "trois", "vier ☃"]


def test_a_change_through_another_instance_makes_the_tag_miss(make_app, real_redis_url):
    reader = make_app(REDIS_URL=real_redis_url).test_client()
    writer = make_app(REDIS_URL=real_redis_url).test_client()
    actions = AuthActions(writer)
    headers = actions.register()
    post_id = actions.add_post(headers, "one")
    tag = get(reader, headers).headers["ETag"]
    assert_not_modified(get(reader, headers, tag), tag)
    writes = [
        lambda: actions.add_post(headers, "two"),
        lambda: writer.patch(
            EDIT_POST.format(post_id), json={"text": "x"}, headers=headers
        ),
        lambda: writer.delete(DELETE_POST.format(post_id), headers=headers),
    ]
    for write in writes:
        write()
        response = get(reader, headers, tag)
        assert response.status_code == 200
        assert response.json == AuthActions(writer).listing(headers)
        tag = response.headers["ETag"]
        assert_not_modified(get(reader, headers, tag), tag)


def test_tags_stay_right_while_redis_is_down(make_app, real_redis_url):
    """Redis down: the tag comes from the database, and still misses after
    every change made through any instance."""
    up = make_app(REDIS_URL=real_redis_url).test_client()
    down = make_app(REDIS_URL="redis://127.0.0.1:1/0").test_client()  # nothing listens
    actions = AuthActions(up)
    headers = actions.register()
    post_id = actions.add_post(headers, "one")
    tag = get(up, headers).headers["ETag"]
    assert get(down, headers).headers["ETag"] == tag
    assert_not_modified(get(down, headers, tag), tag)
    writes = [
        lambda client: AuthActions(client).add_post(headers, "two"),
        lambda client: client.patch(
            EDIT_POST.format(post_id), json={"text": "x"}, headers=headers
        ),
        lambda client: client.delete(DELETE_POST.format(post_id), headers=headers),
    ]
    for write, client in zip(writes, (up, down, up), strict=True):
        write(client)
        response = get(down, headers, tag)
        assert response.status_code == 200
        assert response.json == AuthActions(down).listing(headers)
        tag = response.headers["ETag"]
        assert_not_modified(get(down, headers, tag), tag)


def test_pages_have_their_own_tags(cached_app):
    client = cached_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    ids = [actions.add_post(headers, f"p{n}") for n in range(4)]
    first = get(client, headers, query="?limit=2")
    second = get(client, headers, query=f"?limit=2&after_id={ids[1]}")
    whole = get(client, headers)
    tags = {r.headers["ETag"] for r in (first, second, whole)}
    assert len(tags) == 3
    first_tag, second_tag = first.headers["ETag"], second.headers["ETag"]
    not_modified = get(client, headers, first_tag, "?limit=2")
    assert_not_modified(not_modified, first_tag)
    assert get(client, headers, first_tag, "?limit=3").status_code == 200
    # An edit on the second page changes its tag, not the first's.
    client.patch(EDIT_POST.format(ids[3]), json={"text": "edited"}, headers=headers)
    assert_not_modified(get(client, headers, first_tag, "?limit=2"), first_tag)
    again = get(client, headers, second_tag, f"?limit=2&after_id={ids[1]}")
    assert again.status_code == 200
    assert [p["text"] for p in again.json] == ["p2", "edited"]
    # A post added after the last page: that page gets a Link, so a new tag.
    last = get(client, headers, query=f"?limit=2&after_id={ids[1]}")
    assert "Link" not in last.headers
    actions.add_post(headers, "p4")
    moved = get(client, headers, last.headers["ETag"], f"?limit=2&after_id={ids[1]}")
    assert moved.status_code == 200
    assert "Link" in moved.headers


def test_an_added_post_keeps_the_listing_cached(redis_app):
    client = redis_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    for n in range(3):
        actions.add_post(headers, f"p{n}")
    get(client, headers)  # cached
    for n in range(3, 6):
        actions.add_post(headers, f"p{n}")
        with executed_sql(redis_app) as executed:
            response = get(client, headers)
        assert executed == []
        assert [p["text"] for p in response.json] == [f"p{i}" for i in range(n + 1)]


def test_an_empty_listing_is_appended_to(redis_app):
    client = redis_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    assert get(client, headers).json == []
    actions.add_post(headers, "first")
    with executed_sql(redis_app) as executed:
        response = get(client, headers)
    assert executed == []
    assert [p["text"] for p in response.json] == ["first"]


def test_an_append_that_would_outgrow_the_limit_keeps_the_tag(make_app, real_redis_url):
    app = make_app(REDIS_URL=real_redis_url, POSTS_CACHE_MAX_BYTES=400)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "a" * 100)
    get(client, headers)
    actions.add_post(headers, "b" * 300)  # the listing is now over the limit
    with executed_sql(app) as executed:
        response = get(client, headers)
    assert any("posts" in statement for _, statement in executed)
    assert [len(p["text"]) for p in response.json] == [100, 300]
    tag = response.headers["ETag"]
    with executed_sql(app) as executed:
        assert_not_modified(get(client, headers, tag), tag)
    assert executed == []  # the tag is cached without the listing


# Listings the database streams, over the size that is cached: with Redis
# (their tag alone is cached) and while Redis is down.
UNCACHED = {
    "too large to cache": lambda redis_url: {
        "REDIS_URL": redis_url,
        "POSTS_CACHE_MAX_BYTES": 400,
    },
    "Redis down": lambda redis_url: {
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "POSTS_CACHE_MAX_BYTES": 400,
    },
}


@pytest.mark.parametrize("setting", UNCACHED)
def test_a_listing_streamed_from_the_database_answers_304(
    make_app, real_redis_url, setting
):
    """The tag is read first, in the same snapshot as the rows: a client
    that holds it gets no body, whether or not the tag was cached."""
    app = make_app(**UNCACHED[setting](real_redis_url))
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "a" * 300)
    actions.add_post(headers, "b" * 300)
    truth = get(make_app(REDIS_URL=None, CACHE_TYPE="NullCache").test_client(), headers)
    tag = truth.headers["ETag"]
    # The first read with the tag is a miss (nothing cached yet), the
    # second finds the tag alone cached, or Redis still down.
    for _ in range(2):
        assert_not_modified(get(client, headers, tag), tag)
    response = get(client, headers, '"elsewhere"')
    assert (response.status_code, response.data) == (200, truth.data)
    assert response.headers["ETag"] == tag


@pytest.mark.parametrize("setting", UNCACHED)
def test_a_stale_if_match_on_a_streamed_listing_is_412_and_ends_its_read(
    make_app, real_redis_url, setting
):
    """The tag is known once the stream has begun: the stream is closed,
    which gives its connection and the account's slot back."""
    app = make_app(**UNCACHED[setting](real_redis_url), LISTING_REBUILD_SLOTS=1)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    # Over one chunk (listing.CHUNK_BYTES): the answer is a stream, begun.
    size = listing.CHUNK_BYTES // 2 + 1
    for letter in "abc":
        actions.add_post(headers, letter * size)
    tag = get(client, headers).headers["ETag"]
    for query in ("", "?limit=3"):
        for _ in range(3):  # one slot: a leaked one would make the next 503
            response = client.get(
                GET_POSTS + query, headers={**headers, "If-Match": '"stale"'}
            )
            assert (response.status_code, response.json) == (
                412,
                {"detail": "Precondition Failed"},
            )
    assert app.extensions["listing_rebuild_slots"].taken == {}
    response = client.get(GET_POSTS, headers={**headers, "If-Match": tag})
    assert (response.status_code, response.headers["ETag"]) == (200, tag)
    assert [len(p["text"]) for p in response.json] == [size] * 3
    response.close()
    assert app.extensions["listing_rebuild_slots"].taken == {}


@pytest.mark.parametrize("setting", UNCACHED)
def test_reads_of_an_uncached_listing_hold_at_most_the_accounts_share(
    make_app, real_redis_url, setting
):
    app = make_app(**UNCACHED[setting](real_redis_url), LISTING_REBUILD_SLOTS=1)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "a" * 500)
    assert get(client, headers).status_code == 200  # the tag alone is cached
    uid = token_user_id(app, headers)
    slots = app.extensions["listing_rebuild_slots"]
    slots.take(uid)  # another request of the account streams its listing
    try:
        response = get(client, headers)
        assert (response.status_code, response.headers["Retry-After"]) == (503, "1")
        assert response.json == {
            "detail": "Too many requests for this listing at once, retry shortly"
        }
        stranger = AuthActions(client).register("stranger@example.com")
        assert get(client, stranger).status_code == 200  # other accounts go on
    finally:
        slots.give_back(uid)
    assert get(client, headers).status_code == 200


def test_concurrent_misses_rebuild_the_listing_once(make_app, real_redis_url):
    apps = [make_app(REDIS_URL=real_redis_url) for _ in range(2)]
    actions = AuthActions(apps[0].test_client())
    headers = actions.register()
    post_id = actions.add_post(headers, "one")
    for n in range(50):
        actions.add_post(headers, "x" * 2000 + str(n))
    for app in apps:
        # Each instance has looked at the announced invalidations, so it
        # trusts its cache (an instance that has just started reads the
        # database until it has: cache.generations.usable).
        get(app.test_client(), headers)
    actions.client.patch(EDIT_POST.format(post_id), json={"text": "e"}, headers=headers)

    def read(app):
        response = get(app.test_client(), headers)
        return response.status_code, response.data

    with executed_sql(apps[0]) as first, executed_sql(apps[1]) as second:
        bodies = at_once([lambda n=n: read(apps[n % 2]) for n in range(8)])
    listings = [
        statement
        for _, statement in first + second
        if "posts.text" in statement and "FROM posts" in statement
    ]
    assert len(listings) == 1
    assert len({body for _, body in bodies}) == 1
    assert {status for status, _ in bodies} == {200}


def test_one_account_holds_at_most_its_share_of_threads(make_app, real_redis_url):
    app = make_app(REDIS_URL=real_redis_url, LISTING_REBUILD_SLOTS=1)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "one")
    uid = token_user_id(app, headers)
    slots = app.extensions["listing_rebuild_slots"]
    slots.take(uid)  # another request of the account reads its listing
    try:
        response = get(client, headers)
        assert (response.status_code, response.json) == (
            503,
            {"detail": "Too many requests for this listing at once, retry shortly"},
        )
        assert response.headers["Retry-After"] == "1"
        other = AuthActions(client)
        stranger = other.register("stranger@example.com")
        assert get(client, stranger).status_code == 200  # other accounts go on
    finally:
        slots.give_back(uid)
    assert get(client, headers).status_code == 200


def test_a_waiter_is_served_what_the_rebuild_stored(make_app, real_redis_url):
    app = make_app(REDIS_URL=real_redis_url)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "one")
    expected = get(
        make_app(REDIS_URL=None, CACHE_TYPE="NullCache").test_client(), headers
    )
    uid = token_user_id(app, headers)
    prefix = app.config["REDIS_KEY_PREFIX"] + ":"
    server = redis.Redis.from_url(real_redis_url)
    claim = prefix + posts_cache.rebuild_key(uid)
    server.set(claim, "elsewhere", px=10_000)  # a rebuild on another instance

    def stored_elsewhere():
        # What that rebuild leaves: the listing and its tag, under the generation.
        generation = server.get(prefix + f"posts:{{{uid}}}:gen")
        link = expected.headers["ETag"].strip('"')
        post_id = expected.json[-1]["id"]
        server.set(
            prefix + posts_cache.listing_key(uid), generation + b"\n" + expected.data
        )
        server.set(
            prefix + posts_cache.tag_key(uid),
            generation + f"\n{post_id} {link}".encode(),
        )

    timer = threading.Timer(0.3, stored_elsewhere)
    timer.start()
    with executed_sql(app) as executed:
        response = get(client, headers)
    timer.join()
    assert server.get(claim) == b"elsewhere"  # it never took the claim
    server.delete(claim)
    assert response.status_code == 200
    assert response.data == expected.data
    assert response.headers["ETag"] == expected.headers["ETag"]
    assert not any("FROM posts" in statement for _, statement in executed)


def committed_rows(app, uid, texts):
    """Posts stored without the service (no cache told), and their rows as
    a listing selects them, with their versions."""

    with app.app_context():
        ids = []
        for text in texts:
            result = db.session.execute(
                insert(Post).values(user_id=uid, text=text).returning(Post.id)
            )
            ids.append(result.scalar())
        db.session.commit()
        rows = db.session.execute(
            select(*listing.columns(), Post.version)
            .where(Post.id.in_(ids))
            .order_by(Post.id)
        ).all()
        db.session.rollback()
    return rows


def test_adds_that_commit_out_of_order_are_put_in_place(make_app, real_redis_url):
    app = make_app(REDIS_URL=real_redis_url)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    for n in range(5):
        actions.add_post(headers, f"p{n}")
    get(client, headers)  # cached
    uid = token_user_id(app, headers)
    first, second, third = committed_rows(app, uid, ["a", "b", "c"])
    with app.test_request_context():
        # Their scripts run in another order than their ids.
        for row in (third, first, second):
            *post, version = row
            assert posts_cache.appended(uid, post[0], version, listing.encoded(post))
    with executed_sql(app) as executed:
        cached = get(client, headers)
    assert executed == []
    expected = get(
        make_app(REDIS_URL=None, CACHE_TYPE="NullCache").test_client(), headers
    )
    assert cached.data == expected.data
    assert cached.headers["ETag"] == expected.headers["ETag"]
    assert [p["text"] for p in cached.json][-3:] == ["a", "b", "c"]


def during_next_read(monkeypatch, change):
    """``change()`` runs once the next listing read from the database has
    its rows, before that read is stored."""
    whole = listing.whole

    def read_then_changed(*args):
        read = whole(*args)
        monkeypatch.setattr(listing, "whole", whole)
        change()
        return read

    monkeypatch.setattr(listing, "whole", read_then_changed)


def test_adds_during_a_rebuild_are_kept_in_what_it_stores(
    make_app, real_redis_url, monkeypatch
):
    app = make_app(REDIS_URL=real_redis_url)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    post_id = actions.add_post(headers, "old")
    client.patch(EDIT_POST.format(post_id), json={"text": "edited"}, headers=headers)
    during_next_read(
        monkeypatch,
        lambda: [actions.add_post(headers, "new"), actions.add_post(headers, "newer")],
    )
    assert [p["text"] for p in get(client, headers).json] == ["edited"]
    with executed_sql(app) as executed:
        after = get(client, headers)
    assert executed == []  # stored, with the adds put in place
    assert [p["text"] for p in after.json] == ["edited", "new", "newer"]
    expected = get(
        make_app(REDIS_URL=None, CACHE_TYPE="NullCache").test_client(), headers
    )
    assert (after.data, after.headers["ETag"]) == (
        expected.data,
        expected.headers["ETag"],
    )


def test_an_edit_during_a_rebuild_keeps_it_from_being_stored(
    make_app, real_redis_url, monkeypatch
):
    app = make_app(REDIS_URL=real_redis_url)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    post_id = actions.add_post(headers, "old")
    client.delete(
        DELETE_POST.format(actions.add_post(headers, "gone")), headers=headers
    )
    during_next_read(
        monkeypatch,
        lambda: client.patch(
            EDIT_POST.format(post_id), json={"text": "edited"}, headers=headers
        ),
    )
    assert [p["text"] for p in get(client, headers).json] == ["old"]  # the racing read
    assert [p["text"] for p in get(client, headers).json] == ["edited"]


@pytest.mark.redis
@pytest.mark.parametrize("quiet", ["just started", "idle"])
def test_a_burst_after_a_quiet_spell_is_served_from_the_cache(
    make_app, real_redis_url, monkeypatch, quiet
):
    """The first request after a quiet spell looks at the announced
    invalidations before it trusts the cache; the requests that arrive
    while it looks wait for that look, then are served from the cache: none
    is sent to the database for it, none is turned away."""
    app = make_app(REDIS_URL=real_redis_url, LISTING_REBUILD_SLOTS=1)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "one")
    expected = get(client, headers)
    health = app.extensions["cache_health"]
    health.confirmed_at = (
        -math.inf if quiet == "just started" else time.monotonic() - 60
    )
    waiting = announcements.waiting

    def slow_look(app, after=0):
        time.sleep(0.3)  # a database busy serving other requests
        return waiting(app, after)

    monkeypatch.setattr(announcements, "waiting", slow_look)

    def read(tag):
        response = get(app.test_client(), headers, tag)
        return tag, response.status_code, response.data

    tags = [None, expected.headers["ETag"]] * 4  # plain and conditional reads
    with executed_sql(app) as executed:
        answers = at_once([lambda tag=tag: read(tag) for tag in tags])
    assert sorted((tag is None, status) for tag, status, _ in answers) == sorted(
        (tag is None, 200 if tag is None else 304) for tag in tags
    ), answers
    assert {body for tag, _, body in answers if tag is None} == {expected.data}
    assert not [s for _, s in executed if "FROM posts" in s or "FROM users" in s]

"""The per-user get-posts cache: hits, invalidation, isolation and failure."""

import logging
import socket
import time

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from postservice.cache import generations
from postservice.cache import health as cache_health
from postservice.extensions import cache
from postservice.posts import listing
from postservice.posts.cache import listing_format, listing_key

from ..support.auth import AuthActions, token_user_id
from ..support.sql import executed_sql

GET_POSTS = "/api/v1/posts/get-posts"


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
def cached_app(request, make_app):
    if request.param == "redis":
        return make_app(REDIS_URL=request.getfixturevalue("real_redis_url"))
    return make_app(REDIS_URL=None)


def texts(actions, headers):
    return [post["text"] for post in actions.posts(headers)]


def test_hit_runs_no_sql_and_returns_same_bytes(cached_app):
    client = cached_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "first")
    miss = client.get(GET_POSTS, headers=headers)
    with executed_sql(cached_app) as executed:
        hit = client.get(GET_POSTS, headers=headers)
    assert executed == []
    assert hit.status_code == 200
    assert hit.data == miss.data
    assert hit.content_type == "application/json"


def test_miss_queries_the_database(cached_app):
    client = cached_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    with executed_sql(cached_app) as executed:
        assert actions.posts(headers) == []
    assert any("posts" in statement for _, statement in executed)


def test_client_reads_its_own_writes(cached_app):
    actions = AuthActions(cached_app.test_client())
    headers = actions.register()
    assert texts(actions, headers) == []
    first = actions.add_post(headers, "one")
    assert texts(actions, headers) == ["one"]
    actions.add_post(headers, "two")
    assert texts(actions, headers) == ["one", "two"]
    response = actions.client.delete(
        f"/api/v1/posts/delete-post/{first}", headers=headers
    )
    assert response.status_code == 204
    assert texts(actions, headers) == ["two"]


def test_entries_are_per_user(cached_app):
    actions = AuthActions(cached_app.test_client())
    alice, bob = actions.register(), actions.register()
    actions.add_post(alice, "alice's")
    assert texts(actions, alice) == ["alice's"]
    assert texts(actions, bob) == []
    actions.add_post(bob, "bob's")
    assert texts(actions, alice) == ["alice's"]
    assert texts(actions, bob) == ["bob's"]


def test_writer_between_miss_and_store_cannot_leave_stale_entry(
    cached_app, monkeypatch
):
    """A reader that stores old rows after a writer invalidated is ignored."""
    client = cached_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "old")
    whole = listing.whole

    def read_then_someone_writes(*args):
        read = whole(*args)  # the old rows, read before the write commits
        monkeypatch.setattr(listing, "whole", whole)
        actions.add_post(headers, "new")  # commits and invalidates
        return read

    monkeypatch.setattr(listing, "whole", read_then_someone_writes)
    assert texts(actions, headers) == ["old"]  # the racing read itself
    assert texts(actions, headers) == ["old", "new"]


def test_redis_entry_is_plain_json_with_configured_ttl(make_app, real_redis_url):
    app = make_app(REDIS_URL=real_redis_url, POSTS_CACHE_TTL=77)
    client = app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "zürich ☃")
    body = client.get(GET_POSTS, headers=headers).data
    uid = token_user_id(app, headers)
    server = redis.Redis.from_url(real_redis_url)
    prefix = app.config["REDIS_KEY_PREFIX"]
    generation = server.get(f"{prefix}:posts:{{{uid}}}:gen")
    entry = server.get(f"{prefix}:posts:{{{uid}}}:list:{listing_format()}")
    assert entry == generation + b"\n" + body
    [post] = actions.listing(headers)
    post_id, created, updated = post["id"], post["created_at"], post["updated_at"]
    assert body.decode("utf-8") == (
        f'[{{"id":{post_id},"text":"zürich ☃",'
        f'"created_at":"{created}","updated_at":"{updated}"}}]'
    )
    assert 0 < server.ttl(f"{prefix}:posts:{{{uid}}}:list:{listing_format()}") <= 77


def test_hit_is_one_redis_round_trip(redis_app, monkeypatch):
    client = redis_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    actions.add_post(headers, "x")
    actions.posts(headers)  # warm
    with redis_app.app_context():
        backend = cache.cache
    commands = []
    original = backend._read_client.execute_command

    def counting(*args, **kwargs):
        commands.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(backend._read_client, "execute_command", counting)
    assert texts(actions, headers) == ["x"]
    # One MGET in all: the token's verdict rides along with the entry.
    assert [command[0] for command in commands] == ["MGET"]
    uid = token_user_id(redis_app, headers)
    keys = [key.decode() if isinstance(key, bytes) else key for key in commands[0][1:]]
    prefix = redis_app.config["REDIS_KEY_PREFIX"]
    assert keys[0] == f"{prefix}:tokens:{{{uid}}}:gen"
    assert keys[1].startswith(f"{prefix}:tokens:{{{uid}}}:")
    assert keys[2] == f"{prefix}:posts:{{{uid}}}:gen"
    assert keys[3] == f"{prefix}:posts:{{{uid}}}:tag:{listing_format()}"
    assert keys[4] == f"{prefix}:posts:{{{uid}}}:list:{listing_format()}"
    assert len(keys) == 5


def test_a_page_does_not_read_the_cached_listing(redis_app, monkeypatch):
    """A paged get-posts is served from the database: its token check reads
    the token's verdict alone, never the listing's bytes (up to 1 MiB)."""
    client = redis_app.test_client()
    actions = AuthActions(client)
    headers = actions.register()
    big = "x" * (512 * 1024)
    actions.add_post(headers, big)
    actions.add_post(headers, "small")
    assert [len(t) for t in texts(actions, headers)] == [len(big), 5]  # stored
    with redis_app.app_context():
        backend = cache.cache
    listing = f"{redis_app.config['REDIS_KEY_PREFIX']}:{listing_key(0)}"
    posts_keys = listing.rsplit("{", 1)[0]  # the listing's and its generation
    commands, answered = [], []
    original = backend._read_client.execute_command

    def counting(*args, **kwargs):
        reply = original(*args, **kwargs)
        commands.append(args)
        values = reply if isinstance(reply, list) else [reply]
        answered.append(sum(len(v) for v in values if isinstance(v, bytes)))
        return reply

    monkeypatch.setattr(backend._read_client, "execute_command", counting)
    for query in ("limit=1", "after_id=0", "limit=1&after_id=1"):
        response = client.get(f"{GET_POSTS}?{query}", headers=headers)
        page = response.get_json()  # reads the streamed page to its end
        response.close()
        assert response.status_code == 200, (query, page)
        assert isinstance(page, list), (query, page)
        assert {len(post["text"]) for post in page} <= {len(big), 5}, query
        keys = [
            key.decode() if isinstance(key, bytes) else str(key)
            for command in commands
            for key in command[1:]
        ]
        assert sum(answered) < 1024, (
            f"?{query}: Redis answered {sum(answered)} bytes to {keys}"
        )
        read = [key for key in keys if key.startswith(posts_keys)]
        assert read == [], f"?{query} read the cached listing's keys: {read}"
        commands.clear()
        answered.clear()
    # The listing itself is still one round trip, with the listing read along.
    assert [len(t) for t in texts(actions, headers)] == [len(big), 5]
    assert [command[0] for command in commands] == ["MGET"]
    assert sum(answered) > len(big)


def test_writes_through_one_app_are_seen_by_another(make_app, real_redis_url):
    """Two processes sharing Redis: a write through one invalidates the other."""
    reader = AuthActions(make_app(REDIS_URL=real_redis_url).test_client())
    writer = AuthActions(make_app(REDIS_URL=real_redis_url).test_client())
    headers = reader.register()
    assert texts(reader, headers) == []  # cached empty listing
    post_id = writer.add_post(headers, "via the other app")
    assert texts(reader, headers) == ["via the other app"]
    writer.client.delete(f"/api/v1/posts/delete-post/{post_id}", headers=headers)
    assert texts(reader, headers) == []


def test_unreachable_redis_serves_from_database_with_one_warning(make_app, caplog):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens on port 1
    actions = AuthActions(app.test_client())
    caplog.set_level(logging.WARNING, logger="postservice.posts.cache")
    started = time.monotonic()
    headers = actions.register()
    actions.add_post(headers, "kept")
    for _ in range(5):
        assert texts(actions, headers) == ["kept"]
    assert time.monotonic() - started < 5
    warnings = [r for r in caplog.records if "cache unavailable" in r.getMessage()]
    assert len(warnings) == 1


@pytest.fixture
def silent_redis():
    """A port that accepts connections and never answers: a hung Redis."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


def test_hung_redis_costs_a_fraction_of_a_second(make_app, silent_redis):
    app = make_app(REDIS_URL=silent_redis, REDIS_TIMEOUT=0.2)
    actions = AuthActions(app.test_client())
    headers = actions.register()
    actions.add_post(headers, "kept")
    slowest = 0.0
    for _ in range(3):
        started = time.monotonic()
        assert texts(actions, headers) == ["kept"]
        slowest = max(slowest, time.monotonic() - started)
    # One socket timeout at most, not redis-py's default retries of 5 s each.
    assert slowest < 1.0


def test_invalidation_missed_while_redis_failed_is_replayed(redis_app, monkeypatch):
    """An entry cached before an outage is not served after Redis returns."""
    actions = AuthActions(redis_app.test_client())
    headers = actions.register()
    actions.add_post(headers, "before")
    assert texts(actions, headers) == ["before"]  # cached
    with redis_app.app_context():
        backend = cache.cache
    original_set = backend.set

    def failing_set(key, *args, **kwargs):
        raise RedisConnectionError("simulated outage")

    monkeypatch.setattr(backend, "set", failing_set)
    actions.add_post(headers, "during")  # committed; invalidation fails
    assert texts(actions, headers) == ["before", "during"]  # from the database
    monkeypatch.setattr(backend, "set", original_set)
    monkeypatch.setattr(cache_health, "RETRY_AFTER", 0)
    with redis_app.app_context():
        redis_app.extensions["cache_health"].down_until = 0
    assert texts(actions, headers) == ["before", "during"]


def test_write_while_backing_off_still_invalidates_other_instances(
    make_app, real_redis_url
):
    """After a failure an instance leaves Redis alone for reads, but not for
    invalidations: another instance may be filling the cache again already."""
    writer_app = make_app(REDIS_URL=real_redis_url)
    reader_app = make_app(REDIS_URL=real_redis_url)
    writer = AuthActions(writer_app.test_client())
    reader = AuthActions(reader_app.test_client())
    headers = writer.register()
    writer.add_post(headers, "before")
    assert texts(reader, headers) == ["before"]  # now cached by the reader
    writer_app.extensions["cache_health"].down_until = time.monotonic() + 60
    writer.add_post(headers, "after")
    assert texts(reader, headers) == ["before", "after"]


def test_write_is_invalidated_before_it_is_acknowledged(redis_app, monkeypatch):
    """Another thread flushing the owed invalidations must not delay this one.

    A reader's flush swaps the owed set out and sends it a moment later; a
    write that merely joined that set could be acknowledged before its token
    was replaced, and the client's next read through another instance would
    miss it. Simulate that flusher by making the owed set vanish.
    """
    actions = AuthActions(redis_app.test_client())
    headers = actions.register()
    uid = token_user_id(redis_app, headers)
    assert texts(actions, headers) == []  # cached, under the current token
    server = redis.Redis.from_url(redis_app.config["REDIS_URL"])
    key = f"{redis_app.config['REDIS_KEY_PREFIX']}:posts:{{{uid}}}:gen"
    before = server.get(key)

    def flushed_by_someone_else(health):
        with health.lock:
            health.pending = set()

    monkeypatch.setattr(generations, "_flush_pending", flushed_by_someone_else)
    actions.add_post(headers, "acknowledged")
    assert server.get(key) != before

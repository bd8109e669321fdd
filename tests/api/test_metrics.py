"""Prometheus metrics: exact counts after known traffic.

Their own listener on the production server: tests/server/test_metrics_listener.py.
"""

import secrets
from importlib import metadata

import bcrypt

from postservice.ops import metrics

from ..support.auth import PASSWORD, AuthActions
from ..support.metrics import cache, parse, requests_total, value
from ..support.processes import free_port
from ..support.servers import RedisServer

GET_POSTS = "/api/v1/posts/get-posts"
LOGIN = "/api/v1/users/login"


def scrape(app):
    return parse(metrics.exposition(app))


def checked_out(scrape):
    """Connections lent out by every pool."""
    return sum(
        sample
        for (name, _), sample in scrape.items()
        if name == "postservice_database_pool_checked_out"
    )


def signed_up(app):
    """A client of ``app`` with a registered user, and that user's headers."""
    actions = AuthActions(app.test_client())
    return actions, actions.register()


def test_requests_are_counted_by_endpoint_method_and_status(app, auth, client):
    headers = auth.register()
    auth.add_post(headers, "hello")
    assert client.get(GET_POSTS).status_code == 401
    for _ in range(3):
        auth.posts(headers)
    assert client.get("/no/such/page").status_code == 404
    assert client.get("/no/other/page").status_code == 404
    assert client.delete("/api/v1/posts/get-posts").status_code == 405
    assert client.open("/healthz", method="BREW").status_code == 405

    seen = scrape(app)
    assert requests_total(seen, "users.register", "POST", 201) == 1
    assert requests_total(seen, "posts.add_post", "POST", 200) == 1
    assert requests_total(seen, "posts.get_posts", "GET", 401) == 1
    assert requests_total(seen, "posts.get_posts", "GET", 200) == 3
    # Unknown paths share one label; the raw path never becomes one.
    assert requests_total(seen, "none", "GET", 404) == 2
    assert requests_total(seen, "none", "DELETE", 405) == 1
    assert requests_total(seen, "none", "other", 405) == 1
    assert "/no/such/page" not in metrics.exposition(app)
    histogram = "postservice_http_request_duration_seconds_count"
    assert value(seen, histogram, endpoint="posts.get_posts", method="GET") == 4


def test_duration_buckets_resolve_a_cache_hit_and_a_login(app, auth):
    auth.register()
    seen = scrape(app)
    bounds = {
        dict(labels)["le"]
        for (name, labels) in seen
        if name == "postservice_http_request_duration_seconds_bucket"
    }
    # Bounds on both sides of 0.5 ms and of 300 ms.
    assert {"0.00025", "0.0005", "0.001", "0.25", "0.5"} <= bounds
    bucket = "postservice_http_request_duration_seconds_bucket"
    labels = {"endpoint": "users.register", "method": "POST"}
    assert value(seen, bucket, le="+Inf", **labels) == 1


def test_the_listing_cache_counts_misses_and_hits(app, auth):
    headers = auth.register()
    auth.add_post(headers, "first")
    auth.posts(headers)
    auth.posts(headers)
    auth.posts(headers)
    # On Redis the add is appended to the cached listing and the next read
    # hits; the in-process cache has no scripts to append with, and misses.
    appended = bool(app.config["REDIS_URL"])
    second = auth.add_post(headers, "second")
    auth.posts(headers)
    auth.client.delete(f"/api/v1/posts/delete-post/{second}", headers=headers)
    auth.posts(headers)  # a new generation: this read misses
    auth.client.get(GET_POSTS + "?limit=1", headers=headers)  # pages bypass it

    seen = scrape(app)
    expected = (2, 3) if appended else (3, 2)
    assert (cache(seen, "miss"), cache(seen, "hit")) == expected
    assert (cache(seen, "error"), cache(seen, "bypass")) == (0, 0)


def test_a_listing_too_big_to_cache_counts_as_bypass(make_app):
    app = make_app(POSTS_CACHE_MAX_BYTES=0)
    actions, headers = signed_up(app)
    actions.add_post(headers, "anything is too big")
    actions.posts(headers)
    actions.posts(headers)
    seen = scrape(app)
    assert cache(seen, "bypass") == 2
    assert cache(seen, "miss") == cache(seen, "hit") == 0


def test_a_streamed_listing_is_counted_when_it_ends(make_app):
    app = make_app(POSTS_CACHE_MAX_BYTES=100_000)
    actions, headers = signed_up(app)
    for _ in range(3):
        actions.add_post(headers, "x" * 50_000)
    response = actions.client.get(GET_POSTS, headers=headers)
    assert "Content-Length" not in response.headers  # streamed
    # The stream holds its database connection until it is read or closed.
    assert checked_out(scrape(app)) == 1
    assert len(response.get_data()) > 150_000
    response.close()
    seen = scrape(app)
    assert cache(seen, "bypass") == 1
    assert cache(seen, "miss") == 0
    assert checked_out(seen) == 0


def test_redis_outage_shows_cache_errors_and_redis_down(make_app, tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    try:
        app = make_app(REDIS_URL=server.url)
        actions, headers = signed_up(app)
        actions.add_post(headers, "kept in the database")
        actions.posts(headers)
        actions.posts(headers)
        before = scrape(app)
        server.kill()
        listing = actions.posts(headers)
        after = scrape(app)
    finally:
        server.stop()

    assert value(before, "postservice_dependency_up", dependency="redis") == 1
    assert (cache(before, "miss"), cache(before, "hit")) == (1, 1)
    assert listing == [{"id": listing[0]["id"], "text": "kept in the database"}]
    # One error for the request that found Redis gone, not also a bypass.
    assert (cache(after, "error"), cache(after, "bypass")) == (1, 0)
    assert value(after, "postservice_dependency_up", dependency="redis") == 0
    assert value(after, "postservice_dependency_up", dependency="database") == 1


def test_unreachable_database_shows_database_down(make_app):
    app = make_app(
        SQLALCHEMY_DATABASE_URI=f"mysql+pymysql://root@127.0.0.1:{free_port()}/gone"
    )
    assert app.test_client().get("/readyz").status_code == 503
    seen = scrape(app)
    assert value(seen, "postservice_dependency_up", dependency="database") == 0
    assert requests_total(seen, "health.readyz", "GET", 503) == 1


def test_without_redis_there_is_no_redis_series(make_app):
    seen = scrape(make_app(REDIS_URL=None))
    assert value(seen, "postservice_dependency_up", dependency="database") == 1
    assert not [key for key in seen if ("dependency", "redis") in key[1]]


def test_throttled_logins_are_counted(make_app):
    app = make_app(
        LOGIN_RATE_LIMIT="2/minute", REDIS_KEY_PREFIX="m-" + secrets.token_hex(8)
    )
    client = app.test_client()
    AuthActions(client).register(email="limited@example.com")
    body = {"email": "limited@example.com", "password": PASSWORD}
    statuses = [client.post(LOGIN, json=body).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    seen = scrape(app)
    assert value(seen, "postservice_throttled_total", endpoint="users.login") == 1
    assert requests_total(seen, "users.login", "POST", 429) == 1
    assert requests_total(seen, "users.login", "POST", 200) == 2


def test_logout_counts_a_revocation(app, auth, client):
    headers = auth.register()
    assert client.post("/api/v1/users/logout", headers=headers).status_code == 204
    assert client.post("/api/v1/users/logout", headers=headers).status_code == 401
    seen = scrape(app)
    revocations = "postservice_token_revocations_total"
    assert value(seen, revocations, kind="logout") == 1
    for kind in ("logout_all", "password_change", "account_deleted"):
        assert (revocations, (("kind", kind),)) in seen
        assert value(seen, revocations, kind=kind) == 0


def test_password_hash_slots_in_use_while_hashing(app, auth, monkeypatch):
    registry = app.extensions["metrics"].registry
    seen_while_hashing = []
    real_hashpw = bcrypt.hashpw

    def observed_hashpw(password, salt):
        gauge = registry.get_sample_value("postservice_password_hash_slots_in_use")
        seen_while_hashing.append(gauge)
        return real_hashpw(password, salt)

    monkeypatch.setattr(bcrypt, "hashpw", observed_hashpw)
    auth.register()
    auth.register()
    assert seen_while_hashing == [1, 1]
    seen = scrape(app)
    assert value(seen, "postservice_password_hash_slots_in_use") == 0
    slots = app.config["PASSWORD_HASH_SLOTS"]
    assert value(seen, "postservice_password_hash_slots") == slots


def test_build_info_names_the_version(app):
    version = metadata.version("postservice")
    assert value(scrape(app), "postservice_build_info", version=version) == 1


def test_each_app_counts_on_its_own(make_app):
    busy, idle = make_app(), make_app()
    busy.test_client().get("/healthz")
    assert requests_total(scrape(busy), "health.healthz", "GET", 200) == 1
    assert requests_total(scrape(idle), "health.healthz", "GET", 200) == 0


def test_each_database_pool_has_its_series(make_app):
    app = make_app(DATABASE_POOL_SIZE=7)
    signed_up(app)
    seen = scrape(app)
    pools = {
        dict(labels)["pool"]: sample
        for (name, labels), sample in seen.items()
        if name == "postservice_database_pool_size"
    }
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("mysql"):
        # Single statements run on the autocommit engine's own pool.
        assert pools == {"transactions": 7, "autocommit": 7}
    else:
        assert list(pools) == ["transactions"]

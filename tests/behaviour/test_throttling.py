"""Throttling of login and registration, per client address and per email."""

import secrets

import pytest

import config

from ..support.auth import PASSWORD, AuthActions
from ..support.throttle import limited_app

LOGIN = "/api/v1/users/login"
REGISTER = "/api/v1/users/register"


def credentials(email):
    return {"email": email, "password": PASSWORD}


def assert_throttled(response):
    assert response.status_code == 429
    assert response.json == {"detail": "Too many requests, try again later"}
    # At most the one-minute window, rounded up to the next whole second.
    assert 1 <= int(response.headers["Retry-After"]) <= 61
    assert response.content_type == "application/json"


def test_login_is_throttled_per_address(make_app, storage):
    app = limited_app(make_app, storage, LOGIN_RATE_LIMIT="3/minute")
    client = app.test_client()
    AuthActions(client).register(email="a@example.com")
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        assert client.post(LOGIN, json=credentials(email)).status_code in (200, 404)
    assert_throttled(client.post(LOGIN, json=credentials("d@example.com")))
    # Another address is counted on its own.
    other = client.post(
        LOGIN,
        json=credentials("a@example.com"),
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert other.status_code == 200


def test_login_is_throttled_per_email_across_addresses(make_app, storage):
    app = limited_app(make_app, storage, ACCOUNT_FAILURE_RATE_LIMIT="2/minute")
    client = app.test_client()
    AuthActions(client).register(email="target@example.com")
    for number, email in enumerate(
        ("target@example.com", " TARGET@example.com", "target@example.com")
    ):
        response = client.post(
            LOGIN,
            json={"email": email, "password": "wrong password"},
            environ_base={"REMOTE_ADDR": f"192.0.2.{number + 1}"},
        )
        if number < 2:
            assert response.status_code == 401
        else:
            assert_throttled(response)
    # The email's limit does not hold back other accounts.
    response = client.post(
        LOGIN,
        json=credentials("someone-else@example.com"),
        environ_base={"REMOTE_ADDR": "192.0.2.9"},
    )
    assert response.status_code == 404


def test_registration_is_throttled(make_app, storage):
    app = limited_app(make_app, storage, REGISTER_RATE_LIMIT="2/minute")
    client = app.test_client()
    for number in range(2):
        email = f"new{number}@example.com"
        assert client.post(REGISTER, json=credentials(email)).status_code == 201
    assert_throttled(client.post(REGISTER, json=credentials("new2@example.com")))


def test_limits_are_shared_by_instances_sharing_redis(make_app, real_redis_url):
    prefix = "test-" + secrets.token_hex(8)
    settings = {
        "REDIS_URL": real_redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "LOGIN_RATE_LIMIT": "2/minute",
    }
    one = make_app(**settings).test_client()
    other = make_app(**settings).test_client()
    assert one.post(LOGIN, json=credentials("x@example.com")).status_code == 404
    assert other.post(LOGIN, json=credentials("y@example.com")).status_code == 404
    assert_throttled(one.post(LOGIN, json=credentials("z@example.com")))


def test_forwarded_for_is_ignored_without_trusted_proxies(make_app, storage):
    app = limited_app(make_app, storage, LOGIN_RATE_LIMIT="1/minute")
    client = app.test_client()
    assert client.post(LOGIN, json=credentials("p@example.com")).status_code == 404
    spoofed = client.post(
        LOGIN,
        json=credentials("q@example.com"),
        headers={"X-Forwarded-For": "198.51.100.1"},
    )
    assert_throttled(spoofed)


def test_forwarded_for_names_the_client_behind_a_trusted_proxy(make_app, storage):
    app = limited_app(
        make_app, storage, LOGIN_RATE_LIMIT="1/minute", TRUSTED_PROXY_COUNT=1
    )
    client = app.test_client()
    for address in ("198.51.100.1", "198.51.100.2"):
        response = client.post(
            LOGIN,
            json=credentials(f"{address}@example.com"),
            headers={"X-Forwarded-For": address},
        )
        assert response.status_code == 404
    again = client.post(
        LOGIN,
        json=credentials("r@example.com"),
        headers={"X-Forwarded-For": "198.51.100.1"},
    )
    assert_throttled(again)


def test_unreachable_redis_counts_in_the_process_instead(make_app, caplog):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0", LOGIN_RATE_LIMIT="2/minute")
    client = app.test_client()
    AuthActions(client).register(email="still@example.com")
    for _ in range(2):
        response = client.post(LOGIN, json=credentials("still@example.com"))
        assert response.status_code == 200
    assert_throttled(client.post(LOGIN, json=credentials("still@example.com")))
    unreachable = [
        r for r in caplog.records if "throttle store unavailable" in r.message
    ]
    assert len(unreachable) == 1


def test_limits_and_proxy_count_come_from_the_environment(tmp_path):
    env = {
        "LOGIN_RATE_LIMIT": "3 per second; 20/hour",
        "REGISTER_RATE_LIMIT": "1/minute",
        "TRUSTED_PROXY_COUNT": "2",
    }
    settings = config.settings_for(env, str(tmp_path))
    assert settings["LOGIN_RATE_LIMIT"] == "3 per second; 20/hour"
    assert settings["REGISTER_RATE_LIMIT"] == "1/minute"
    assert settings["TRUSTED_PROXY_COUNT"] == 2
    defaults = config.settings_for({}, str(tmp_path))
    assert defaults["LOGIN_RATE_LIMIT"] == "10/minute"
    assert defaults["TRUSTED_PROXY_COUNT"] == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOGIN_RATE_LIMIT", "lots"),
        ("REGISTER_RATE_LIMIT", "5/fortnight"),
        ("TRUSTED_PROXY_COUNT", "-1"),
    ],
)
def test_unreadable_limits_refuse_to_start(tmp_path, name, value):
    with pytest.raises(config.ConfigError) as raised:
        config.settings_for({name: value}, str(tmp_path))
    assert name in str(raised.value)


def wrong(email):
    return {"email": email, "password": "not the password"}


ATTACKER = {"REMOTE_ADDR": "192.0.2.66"}
OWNER = {"REMOTE_ADDR": "198.51.100.10"}


def test_an_attacker_cannot_lock_the_owner_out(make_app, storage):
    app = limited_app(
        make_app,
        storage,
        LOGIN_RATE_LIMIT="100/minute",
        LOGIN_FAILURE_RATE_LIMIT="3/minute",
    )
    client = app.test_client()
    AuthActions(client).register(email="bob@example.com")
    statuses = [
        client.post(LOGIN, json=wrong("bob@example.com"), environ_base=ATTACKER)
        for _ in range(12)
    ]
    assert [r.status_code for r in statuses[:3]] == [401, 401, 401]
    for response in statuses[3:]:
        assert_throttled(response)
    # Even the right password is refused to the guessing address for now...
    assert_throttled(
        client.post(LOGIN, json=credentials("bob@example.com"), environ_base=ATTACKER)
    )
    # ...while the owner, elsewhere, logs in at once, and more than once.
    for _ in range(3):
        owner = client.post(
            LOGIN, json=credentials("bob@example.com"), environ_base=OWNER
        )
        assert owner.status_code == 200


def test_only_failures_count_toward_the_account_limits(make_app, storage):
    app = limited_app(
        make_app,
        storage,
        LOGIN_FAILURE_RATE_LIMIT="2/minute",
        ACCOUNT_FAILURE_RATE_LIMIT="2/minute",
    )
    client = app.test_client()
    AuthActions(client).register(email="busy@example.com")
    for _ in range(6):
        response = client.post(LOGIN, json=credentials("busy@example.com"))
        assert response.status_code == 200


def test_unknown_emails_count_as_failures(make_app, storage):
    app = limited_app(make_app, storage, LOGIN_FAILURE_RATE_LIMIT="2/minute")
    client = app.test_client()
    for _ in range(2):
        response = client.post(LOGIN, json=credentials("nobody@example.com"))
        assert response.status_code == 404
    assert_throttled(client.post(LOGIN, json=credentials("nobody@example.com")))


@pytest.mark.parametrize(
    "body",
    [
        {"data": b"[" * 100_000 + b"]" * 100_000},  # deeper than any parser
        {"data": b'{"email": "bob@example.com", "password": '},  # cut off
        {"data": b"email=bob@example.com", "content_type": "text/plain"},
        {"json": {"email": "bob@example.com"}},  # no password: 422
    ],
    ids=["over-deep", "malformed", "not-json", "invalid"],
)
def test_no_body_escapes_the_address_count(make_app, storage, body):
    app = limited_app(make_app, storage, LOGIN_RATE_LIMIT="2/minute")
    client = app.test_client()
    body = {"content_type": "application/json", **body}
    for _ in range(2):
        assert client.post(LOGIN, **body).status_code in (400, 415, 422)
    assert_throttled(client.post(LOGIN, json=credentials("bob@example.com")))


def test_password_checks_on_the_account_routes_are_throttled(make_app, storage):
    app = limited_app(make_app, storage, LOGIN_FAILURE_RATE_LIMIT="2/minute")
    client = app.test_client()
    headers = AuthActions(client).register(email="carol@example.com")
    change = {"current_password": "not it", "new_password": "a new password"}
    for _ in range(2):
        response = client.post(
            "/api/v1/users/change-password", json=change, headers=headers
        )
        assert response.status_code == 401
        assert response.json == {"detail": "Incorrect password"}
    assert_throttled(
        client.delete("/api/v1/users/me", json={"password": PASSWORD}, headers=headers)
    )
    # Another address may still use the right password.
    other = client.post(
        "/api/v1/users/change-password",
        json={"current_password": PASSWORD, "new_password": "a new password"},
        headers=headers,
        environ_base=OWNER,
    )
    assert other.status_code == 200


def test_counters_are_kept_apart_from_the_cache(make_app, real_redis_url, tmp_path):
    """Flushing or filling the cache's Redis must not reset anyone's count."""
    import redis

    from ..support.servers import RedisServer

    cache_server = RedisServer(tmp_path)
    cache_server.start()
    try:
        app = limited_app(
            make_app,
            {"REDIS_URL": cache_server.url, "RATELIMIT_STORAGE_URL": real_redis_url},
            LOGIN_RATE_LIMIT="2/minute",
        )
        client = app.test_client()
        for _ in range(2):
            response = client.post(LOGIN, json=credentials("z@example.com"))
            assert response.status_code == 404  # no such account, not throttled
        redis.Redis.from_url(cache_server.url).flushall()
        assert_throttled(client.post(LOGIN, json=credentials("z@example.com")))
    finally:
        cache_server.stop()

"""Password guessing at the production limits: who is slowed, who is not.

- Guesses spread over many addresses use up the account's ceiling
  (``ACCOUNT_FAILURE_RATE_LIMIT``) for new addresses, never for an address
  the owner has logged in from, which keeps its own budget.
- Addresses are counted as IPv4 addresses and IPv6 /64 networks.
- Concurrent wrong passwords from one address never get more password
  checks than the per-address limit allows.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from limits import parse_many

import config
from postservice.users import passwords

from ..support.auth import PASSWORD, TOKEN_PAIR_FIELDS, AuthActions
from ..support.throttle import limited_app

LOGIN = "/api/v1/users/login"
CHANGE_PASSWORD = "/api/v1/users/change-password"
THROTTLED = {"detail": "Too many requests, try again later"}
# The limits a production instance starts with.
PRODUCTION_LIMITS = {
    "LOGIN_RATE_LIMIT": config.Config.LOGIN_RATE_LIMIT,
    "LOGIN_FAILURE_RATE_LIMIT": config.Config.LOGIN_FAILURE_RATE_LIMIT,
    "ACCOUNT_FAILURE_RATE_LIMIT": config.Config.ACCOUNT_FAILURE_RATE_LIMIT,
}
OWNER = "198.51.100.10"
# Longer than any request takes here; a broken test fails, never hangs.
WAIT = 30


def login(client, address, email, password=PASSWORD):
    return client.post(
        LOGIN,
        json={"email": email, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def wrong(client, address, email):
    return login(client, address, email, password="not the password")


def assert_throttled(response, most_seconds):
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.json == THROTTLED
    assert 1 <= int(response.headers["Retry-After"]) <= most_seconds


def test_guesses_from_twenty_addresses_do_not_lock_the_owner_out(make_app, storage):
    app = limited_app(make_app, storage, **PRODUCTION_LIMITS)
    client = app.test_client()
    AuthActions(client).register(email="owner@example.com")
    assert login(client, OWNER, "owner@example.com").status_code == 200
    # 20 addresses, 5 wrong passwords each: each address's own budget, and
    # together the account's 100 an hour.
    for n in range(20):
        for attempt in range(5):
            response = wrong(client, f"203.0.113.{n + 1}", "owner@example.com")
            assert response.status_code == 401, (n, attempt, response.json)
    # The ceiling is used up: an address new to the account is refused, even
    # with the right password...
    assert_throttled(login(client, "192.0.2.200", "owner@example.com"), 3600)
    # ...while the owner, from where they logged in before, is not.
    owner = login(client, OWNER, "owner@example.com")
    assert owner.status_code == 200, owner.get_data(as_text=True)
    assert set(owner.json) == TOKEN_PAIR_FIELDS


def test_a_known_address_keeps_only_its_own_budget(make_app, storage):
    app = limited_app(
        make_app,
        storage,
        LOGIN_FAILURE_RATE_LIMIT="3/minute",
        ACCOUNT_FAILURE_RATE_LIMIT="4/minute",
    )
    client = app.test_client()
    AuthActions(client).register(email="kept@example.com")
    assert login(client, OWNER, "kept@example.com").status_code == 200
    for address in ("203.0.113.1", "203.0.113.2"):
        for _ in range(2):
            assert wrong(client, address, "kept@example.com").status_code == 401
    assert_throttled(wrong(client, "203.0.113.3", "kept@example.com"), 61)
    # The owner's address is checked against its own 3 failures a minute:
    # a guesser there gets no more than anywhere else.
    for _ in range(3):
        assert wrong(client, OWNER, "kept@example.com").status_code == 401
    assert_throttled(login(client, OWNER, "kept@example.com"), 61)


def test_a_login_makes_the_address_known_to_the_account_routes(make_app, storage):
    """A stolen token used to guess the password from many addresses does
    not keep the owner, from where they log in, from changing it."""
    app = limited_app(make_app, storage, ACCOUNT_FAILURE_RATE_LIMIT="3/minute")
    client = app.test_client()
    AuthActions(client).register(email="dave@example.com")
    response = login(client, OWNER, "dave@example.com")
    assert response.status_code == 200
    headers = {"Authorization": "Bearer " + response.json["access_token"]}
    guess = {"current_password": "not it", "new_password": "a new password"}
    for n in range(3):
        response = client.post(
            CHANGE_PASSWORD,
            json=guess,
            headers=headers,
            environ_base={"REMOTE_ADDR": f"203.0.113.{n + 1}"},
        )
        assert response.status_code == 401
    refused = client.post(
        CHANGE_PASSWORD,
        json={"current_password": PASSWORD, "new_password": "a new password"},
        headers=headers,
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    assert_throttled(refused, 61)
    owner = client.post(
        CHANGE_PASSWORD,
        json={"current_password": PASSWORD, "new_password": "a new password"},
        headers=headers,
        environ_base={"REMOTE_ADDR": OWNER},
    )
    assert owner.status_code == 200, owner.get_data(as_text=True)


def test_ipv6_addresses_are_counted_per_64(make_app, storage):
    app = limited_app(make_app, storage, LOGIN_RATE_LIMIT="2/minute")
    client = app.test_client()
    for address in ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"):
        assert login(client, address, "nobody@example.com").status_code == 404
    assert_throttled(login(client, "2001:db8:1:2::abcd", "nobody@example.com"), 61)
    # The next /64 is another client.
    assert login(client, "2001:db8:1:3::1", "nobody@example.com").status_code == 404
    # An IPv4-mapped address is its IPv4 address, and IPv4 is counted whole.
    assert login(client, "192.0.2.44", "nobody@example.com").status_code == 404
    assert login(client, "::ffff:192.0.2.44", "nobody@example.com").status_code == 404
    assert_throttled(login(client, "192.0.2.44", "nobody@example.com"), 61)
    assert login(client, "192.0.2.45", "nobody@example.com").status_code == 404


def test_failures_are_counted_per_64(make_app, storage):
    app = limited_app(make_app, storage, LOGIN_FAILURE_RATE_LIMIT="2/minute")
    client = app.test_client()
    AuthActions(client).register(email="six@example.com")
    for address in ("2001:db8:5:6::1", "2001:db8:5:6::2"):
        assert wrong(client, address, "six@example.com").status_code == 401
    assert_throttled(login(client, "2001:db8:5:6::3", "six@example.com"), 61)
    assert login(client, "2001:db8:5:7::1", "six@example.com").status_code == 200


BURSTS = 3
BURST = 8


def test_concurrent_wrong_passwords_get_no_more_checks_than_the_limit(
    make_app, storage
):
    """3 bursts of 8 wrong passwords at once from one address.

    Each password check is held until every request of its burst has
    either reached a check or been answered, so all of a burst are in
    flight together, whatever the scheduler does.
    """
    (failures,) = parse_many(config.Config.LOGIN_FAILURE_RATE_LIMIT)
    limit = failures.amount  # 5 per 15 minutes
    app = limited_app(
        make_app,
        storage,
        **PRODUCTION_LIMITS,
        PASSWORD_HASH_SLOTS=BURST,  # every check gets its hash, none a 503
    )
    AuthActions(app.test_client()).register(email="burst@example.com")

    settled = threading.Condition()
    state = {"checks": 0, "settled": 0}
    real_check = passwords.check_password

    def held_check(*args):
        with settled:
            state["checks"] += 1
            state["settled"] += 1
            settled.notify_all()
            settled.wait_for(lambda: state["settled"] >= BURST, timeout=WAIT)
        return real_check(*args)

    def guess(_):
        response = wrong(app.test_client(), "192.0.2.80", "burst@example.com")
        if response.status_code != 401:  # answered without a check
            with settled:
                state["settled"] += 1
                settled.notify_all()
        return response

    responses = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "check_password", held_check)
        for _ in range(BURSTS):
            state["settled"] = 0
            with ThreadPoolExecutor(BURST) as pool:
                futures = [pool.submit(guess, n) for n in range(BURST)]
                responses += [future.result(timeout=3 * WAIT) for future in futures]

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {401, 429}, statuses
    for response in responses:
        if response.status_code == 429:
            assert response.json == THROTTLED
            assert int(response.headers["Retry-After"]) >= 1
    assert state["checks"] <= limit, (
        f"{state['checks']} passwords checked against {failures}; statuses {statuses}"
    )
    assert statuses.count(401) == state["checks"]


def test_an_attempt_without_a_verdict_does_not_count(make_app, storage):
    """A 503 (too many password checks at once) checked no password: it
    gives back what it took, so retrying it never throttles the owner."""
    app = limited_app(
        make_app,
        storage,
        LOGIN_FAILURE_RATE_LIMIT="2/minute",
        ACCOUNT_FAILURE_RATE_LIMIT="2/minute",
    )
    client = app.test_client()
    AuthActions(client).register(email="busy@example.com")

    def busy(*args):
        raise passwords.HashingBusy()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "check_password", busy)
        for _ in range(5):
            response = login(client, OWNER, "busy@example.com")
            assert response.status_code == 503, response.get_data(as_text=True)
    for _ in range(2):
        assert wrong(client, OWNER, "busy@example.com").status_code == 401
    assert_throttled(login(client, OWNER, "busy@example.com"), 61)

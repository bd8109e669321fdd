"""Password guessing against ``python -m postservice.serve`` behind a proxy.

The server runs the production limits and believes one proxy's
``X-Forwarded-For``, as the compose deployment's nginx sends it: the
clients below are the addresses that header names.
"""

import requests

import config

from ..support.auth import PASSWORD, TOKEN_PAIR_FIELDS

LOGIN = "/api/v1/users/login"
REGISTER = "/api/v1/users/register"
PRODUCTION_LIMITS = {
    "LOGIN_RATE_LIMIT": config.Config.LOGIN_RATE_LIMIT,
    "LOGIN_FAILURE_RATE_LIMIT": config.Config.LOGIN_FAILURE_RATE_LIMIT,
    "ACCOUNT_FAILURE_RATE_LIMIT": config.Config.ACCOUNT_FAILURE_RATE_LIMIT,
}
EMAIL = "owner@example.com"
OWNER = "198.51.100.10"
TIMEOUT = 30


def login(session, base, client, password=PASSWORD, email=EMAIL):
    return session.post(
        base + LOGIN,
        json={"email": email, "password": password},
        headers={"X-Forwarded-For": client},
        timeout=TIMEOUT,
    )


def test_guesses_through_the_proxy_do_not_lock_the_owner_out(start_server):
    base = start_server(TRUSTED_PROXY="127.0.0.1", **PRODUCTION_LIMITS)
    with requests.Session() as session:
        registered = session.post(
            base + REGISTER,
            json={"email": EMAIL, "password": PASSWORD},
            timeout=TIMEOUT,
        )
        assert registered.status_code == 201, registered.text
        assert login(session, base, OWNER).status_code == 200
        statuses = [
            login(session, base, f"203.0.113.{n + 1}", password="a guess").status_code
            for n in range(20)
            for _ in range(5)
        ]
        assert statuses == [401] * 100, statuses
        # The ceiling, 100 failures an hour, holds new clients back...
        newcomer = login(session, base, "192.0.2.200")
        assert newcomer.status_code == 429, newcomer.text
        assert newcomer.json() == {"detail": "Too many requests, try again later"}
        assert 60 < int(newcomer.headers["Retry-After"]) <= 3600
        # ...and not the owner, where they logged in before.
        owner = login(session, base, OWNER)
        assert owner.status_code == 200, owner.text
        assert set(owner.json()) == TOKEN_PAIR_FIELDS

        # One IPv6 /64 is one client: its addresses share its 10 logins a
        # minute (to emails of no account: each of them one failure).
        for n in range(10):
            response = login(
                session,
                base,
                f"2001:db8:7:7::{n + 1:x}",
                email=f"nobody{n}@example.com",
            )
            assert response.status_code == 404, (n, response.text)
        same_64 = login(
            session, base, "2001:db8:7:7:abcd::1", email="nobody@example.com"
        )
        assert same_64.status_code == 429, same_64.text
        next_64 = login(session, base, "2001:db8:7:8::1", email="nobody@example.com")
        assert next_64.status_code == 404, next_64.text

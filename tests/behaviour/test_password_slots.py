"""A burst of logins cannot hold every server thread while it waits for bcrypt."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from ..support.auth import PASSWORD, AuthActions

LOGIN = "/api/v1/users/login"


def test_login_beyond_the_slots_is_a_quick_503(make_app):
    app = make_app(PASSWORD_HASH_SLOTS=1)
    actions = AuthActions(app.test_client())
    actions.register("busy@example.com")
    credentials = {"email": "busy@example.com", "password": PASSWORD}
    slots = app.extensions["password_hash_slots"]
    assert slots.acquire(blocking=False)  # another request is hashing
    try:
        busy = actions.client.post(LOGIN, json=credentials)
        register = actions.client.post(
            "/api/v1/users/register",
            json={"email": "later@example.com", "password": PASSWORD},
        )
    finally:
        slots.release()
    assert busy.status_code == 503
    assert busy.headers["Retry-After"] == "1"
    assert busy.json == {"detail": "Too many password checks at once, retry shortly"}
    assert register.status_code == 503
    assert actions.client.post(LOGIN, json=credentials).status_code == 200
    # The refused registration stored nothing: the email is still free.
    actions.register("later@example.com")


def test_logins_in_flight_do_not_stall_other_requests(start_server):
    """Many clients logging in at cost 12 on 4 threads; listings still answer."""
    base = start_server(threads=4, BCRYPT_ROUNDS="12", PASSWORD_HASH_SLOTS="2")
    response = requests.post(
        base + "/api/v1/users/register",
        json={"email": "crowd@example.com", "password": PASSWORD},
        timeout=30,
    )
    headers = {"Authorization": "Bearer " + response.json()["access_token"]}
    stop = threading.Event()
    statuses = []

    def log_in_repeatedly():
        session = requests.Session()
        while not stop.is_set():
            answer = session.post(
                base + LOGIN,
                json={"email": "crowd@example.com", "password": PASSWORD},
                timeout=30,
            )
            statuses.append(answer.status_code)

    with ThreadPoolExecutor(16) as pool:
        for _ in range(16):
            pool.submit(log_in_repeatedly)
        time.sleep(0.5)  # let the logins fill the server
        slowest = 0.0
        listings = 0
        try:
            for _ in range(20):
                started = time.monotonic()
                listing = requests.get(
                    base + "/api/v1/posts/get-posts", headers=headers, timeout=10
                )
                slowest = max(slowest, time.monotonic() - started)
                assert listing.status_code == 200
                listings += 1
        finally:
            stop.set()
    assert listings == 20
    # Hang check, not a speed target: with every thread waiting for bcrypt a
    # listing would wait seconds, for as long as the logins kept coming.
    assert slowest < 2.0, slowest
    assert set(statuses) <= {200, 503}
    assert 200 in statuses
    assert 503 in statuses


def test_default_slots_leave_half_the_threads_free(monkeypatch):
    import config

    monkeypatch.setattr(config.os, "cpu_count", lambda: 16)
    assert config._default_hash_slots({}) == 4  # 8 threads by default
    assert config._default_hash_slots({"WAITRESS_THREADS": "40"}) == 20
    assert config._default_hash_slots({"WAITRESS_THREADS": "100"}) == 32
    assert config._default_hash_slots({"WAITRESS_THREADS": "1"}) == 1

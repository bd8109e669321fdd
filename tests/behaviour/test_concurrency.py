"""Concurrent clients against real servers (``python -m postservice.serve``)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from ..support.auth import PASSWORD

REGISTER = "/api/v1/users/register"


def register(base, email):
    return requests.post(
        base + REGISTER, json={"email": email, "password": PASSWORD}, timeout=30
    )


def token_headers(response):
    assert response.status_code == 201, response.text
    return {"Authorization": "Bearer " + response.json()["access_token"]}


def test_simultaneous_registrations_of_one_email(start_server):
    # A hash slot for every thread: this is about the race for the email,
    # not about turning away hashes beyond capacity (test_password_slots).
    base = start_server(threads=8, PASSWORD_HASH_SLOTS="8")
    for attempt in range(3):
        email = f"race{attempt}@example.com"
        barrier = threading.Barrier(8)

        def attempt_register(_, email=email, barrier=barrier):
            barrier.wait()
            return register(base, email)

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(attempt_register, range(8)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] + [400] * 7, statuses
        for response in responses:
            assert response.headers["Content-Type"] == "application/json"
            if response.status_code == 400:
                assert response.json() == {"detail": "User already exists"}


def read_your_writes(add_base, read_base, headers, rounds):
    """Adds and deletes posts, checking every listing right after each write.

    Returns the number of listings that missed an acknowledged write.
    """
    session = requests.Session()
    stale = 0
    mine = []
    for n in range(rounds):
        response = session.post(
            add_base + "/api/v1/posts/add-post",
            json={"text": f"post {n}"},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        mine.append(response.json()["PostID"])
        listed = session.get(
            read_base + "/api/v1/posts/get-posts", headers=headers, timeout=30
        ).json()
        stale += [post["id"] for post in listed] != mine
        if n % 3 == 2:
            gone = mine.pop(0)
            response = session.delete(
                f"{add_base}/api/v1/posts/delete-post/{gone}",
                headers=headers,
                timeout=30,
            )
            assert response.status_code == 204
            listed = session.get(
                read_base + "/api/v1/posts/get-posts", headers=headers, timeout=30
            ).json()
            stale += [post["id"] for post in listed] != mine
    return stale


def hammer_reads(base, headers, stop):
    """Keeps the user's cache entry being missed and refilled meanwhile."""
    session = requests.Session()
    while not stop.is_set():
        assert (
            session.get(
                base + "/api/v1/posts/get-posts", headers=headers, timeout=30
            ).status_code
            == 200
        )


def run_clients(add_base, read_base, users=4, rounds=30):
    headers = [
        token_headers(register(add_base, f"rw{i}@example.com")) for i in range(users)
    ]
    stop = threading.Event()
    with ThreadPoolExecutor(users * 2) as pool:
        readers = [pool.submit(hammer_reads, read_base, h, stop) for h in headers]
        writers = [
            pool.submit(read_your_writes, add_base, read_base, h, rounds)
            for h in headers
        ]
        stale = sum(w.result() for w in writers)
        stop.set()
        for reader in readers:
            reader.result()
    return stale


def test_concurrent_writers_always_read_their_writes(start_server):
    base = start_server(threads=8)
    assert run_clients(base, base) == 0


def test_write_through_one_instance_read_through_another(start_server, real_redis_url):
    first = start_server(threads=4, REDIS_URL=real_redis_url)
    second = start_server(threads=4, REDIS_URL=real_redis_url)
    assert run_clients(first, second) == 0

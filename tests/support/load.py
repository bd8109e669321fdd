"""Clients that write through one instance and read through another.

Each writer is one user: it adds posts through one instance, deletes some,
and after every write reads its listing through a different instance. A
listing is stale when it misses a post whose add was acknowledged (200),
still shows one whose delete was acknowledged (204), or is out of order.
A write that failed may or may not have been committed (the connection can
die after the commit), so posts from failed adds may appear or not.
Readers meanwhile keep every user's cache entry being missed and refilled.
Every response is timed and its status counted.
"""

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import requests

from .auth import PASSWORD

# Far above any expected answer: a request that takes this long is a hang.
HANG = 15
# Failed requests a summary names, the first ones.
NAMED_FAILURES = 10


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.statuses = Counter()
        self.errors = Counter()  # no HTTP answer at all, by exception type
        self.bad_bodies = []  # failures that are not a JSON {"detail": ...}
        self.slowest = 0.0
        self.slowest_request = ""
        self.stale = 0
        self.listings = 0
        self.failures_at = []  # monotonic times of non-2xx answers and errors
        self.failed_requests = []  # "METHOD /path: status or error", in order

    def record(self, what, started, response=None, error=None):
        elapsed = time.monotonic() - started
        with self.lock:
            self.requests += 1
            if elapsed > self.slowest:
                self.slowest = elapsed
                outcome = type(error).__name__ if error else response.status_code
                self.slowest_request = f"{what} {outcome}"
            if error is not None:
                self.errors[type(error).__name__] += 1
                self.failures_at.append(started)
                self.failed_requests.append(f"{what}: {error!r}")
                return
            self.statuses[response.status_code] += 1
            if response.status_code >= 300:
                self.failures_at.append(started)
                self.failed_requests.append(f"{what}: {response.status_code}")
                if not _is_json_error(response):
                    self.bad_bodies.append((response.status_code, response.text[:200]))

    @property
    def failed(self):
        return sum(self.errors.values()) + sum(
            n for status, n in self.statuses.items() if status >= 300
        )

    def summary(self, name):
        counts = (
            f"{name}: {self.requests} requests, {self.failed} failed "
            f"(statuses {dict(sorted(self.statuses.items()))}, "
            f"errors {dict(self.errors)}), slowest {self.slowest:.3f} s "
            f"({self.slowest_request}), "
            f"{self.listings} listings checked, {self.stale} stale"
        )
        return counts + named_failures(self.failed_requests)


def named_failures(failed):
    """The first of ``failed`` requests, to follow a summary."""
    if not failed:
        return ""
    more = len(failed) - NAMED_FAILURES
    return (
        "; failed: "
        + "; ".join(failed[:NAMED_FAILURES])
        + (f"; and {more} more" if more > 0 else "")
    )


def report(capsys, *lines):
    """Print the numbers in the test output even when output is captured."""
    with capsys.disabled():
        print(*lines)


def _is_json_error(response):
    try:
        return isinstance(response.json().get("detail"), str)
    except (ValueError, AttributeError):
        return False


def _call(stats, session, method, url, **kwargs):
    what = f"{method} {urlsplit(url).path}"
    started = time.monotonic()
    try:
        response = session.request(method, url, timeout=HANG, **kwargs)
    except requests.RequestException as e:
        stats.record(what, started, error=e)
        return None
    stats.record(what, started, response)
    return response


def register_users(base, count, prefix):
    headers = []
    for n in range(count):
        response = requests.post(
            base + "/api/v1/users/register",
            json={"email": f"{prefix}{n}@example.com", "password": PASSWORD},
            timeout=HANG,
        )
        assert response.status_code == 201, response.text
        headers.append({"Authorization": "Bearer " + response.json()["access_token"]})
    return headers


class Writer:
    """One user's writes and the listings that must reflect them."""

    def __init__(self, name, headers, write_base, read_base, stats, keyed=False):
        self.name = name
        self.headers = headers
        self.keyed = keyed  # each add-post carries an Idempotency-Key
        self.write_base = write_base
        self.read_base = read_base
        self.stats = stats
        self.session = requests.Session()
        self.present = {}  # id -> text, acknowledged and not deleted
        self.gone = set()  # acknowledged deletes
        self.unsure_texts = set()  # adds that failed: committed or not
        self.unsure_ids = set()  # deletes that failed: done or not
        self.count = 0

    def step(self):
        self.count += 1
        text = f"{self.name} post {self.count}"
        headers = self.headers
        if self.keyed:
            headers = {**headers, "Idempotency-Key": f"{self.name}-{self.count}"}
        response = _call(
            self.stats,
            self.session,
            "POST",
            self.write_base + "/api/v1/posts/add-post",
            json={"text": text},
            headers=headers,
        )
        if response is not None and response.status_code == 200:
            self.present[response.json()["PostID"]] = text
        else:
            self.unsure_texts.add(text)
        self.check_listing()
        if self.count % 3 == 0 and self.present:
            oldest = min(self.present)
            response = _call(
                self.stats,
                self.session,
                "DELETE",
                f"{self.write_base}/api/v1/posts/delete-post/{oldest}",
                headers=self.headers,
            )
            text = self.present.pop(oldest)
            if response is not None and response.status_code == 204:
                self.gone.add(oldest)
            else:
                self.unsure_ids.add(oldest)
                self.unsure_texts.add(text)
            self.check_listing()

    def check_listing(self):
        response = _call(
            self.stats,
            self.session,
            "GET",
            self.read_base + "/api/v1/posts/get-posts",
            headers=self.headers,
        )
        if response is None or response.status_code != 200:
            return
        listed = {post["id"]: post["text"] for post in response.json()}
        ids = list(listed)
        stale = (
            ids != sorted(ids)
            or any(post_id not in listed for post_id in self.present)
            or any(post_id in listed for post_id in self.gone)
            or any(
                text not in self.unsure_texts
                for post_id, text in listed.items()
                if post_id not in self.present
            )
        )
        with self.stats.lock:
            self.stats.listings += 1
            self.stats.stale += stale


def _read_forever(base, headers, stats, stop):
    session = requests.Session()
    while not stop.is_set():
        _call(stats, session, "GET", base + "/api/v1/posts/get-posts", headers=headers)


def run_load(
    bases, headers, stats, *, rounds=None, stop=None, readers=True, keyed=False
):
    """Each user writes through ``bases[i]`` and reads through the next instance.

    Runs ``rounds`` steps per writer, or until ``stop`` is set. With
    ``keyed``, every other writer sends an ``Idempotency-Key`` with each
    add-post. Returns the writers, whose ``present`` posts are the
    acknowledged ones.
    """
    stop = stop or threading.Event()
    writers = [
        Writer(
            f"user{n}",
            h,
            bases[n % len(bases)],
            bases[(n + 1) % len(bases)],
            stats,
            keyed=keyed and n % 2 == 1,
        )
        for n, h in enumerate(headers)
    ]

    def write(writer):
        done = 0
        while not stop.is_set() and (rounds is None or done < rounds):
            writer.step()
            done += 1

    readers_stop = threading.Event()
    with ThreadPoolExecutor(len(writers) * 2) as pool:
        reading = []
        if readers:
            reading = [
                pool.submit(
                    _read_forever, bases[(n + 2) % len(bases)], h, stats, readers_stop
                )
                for n, h in enumerate(headers)
            ]
        for future in [pool.submit(write, w) for w in writers]:
            future.result()
        readers_stop.set()
        for future in reading:
            future.result()
    return writers


def load_in_background(bases, headers, stats, **options):
    """``run_load`` (with ``options``) until the returned ``finish()``, which
    returns the writers."""
    stop = threading.Event()
    result = {}

    def run():
        result["writers"] = run_load(bases, headers, stats, stop=stop, **options)

    thread = threading.Thread(target=run)
    thread.start()

    def finish():
        stop.set()
        thread.join(timeout=120)
        assert not thread.is_alive(), "clients hung"
        return result["writers"]

    return finish

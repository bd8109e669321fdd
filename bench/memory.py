"""Memory of the service while it streams a 100 MiB listing to 4 clients at once.

    .venv/bin/python bench/memory.py

A user with 100 posts of 1 MiB; the service's resident memory (VmRSS) is
sampled every few milliseconds while four clients read the whole listing at
the same time. Streaming from a server-side cursor should keep the growth far
below the size of one listing. Writes ``results/memory.md``.
"""

import hashlib
import http.client
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

POSTS = 100
POST_BYTES = 1024 * 1024
CLIENTS = 4


def big_text(n):
    # Mostly ASCII with some two- and three-byte characters, 1 MiB of UTF-8.
    unit = "ü☃" + "x" * 59  # 64 bytes
    text = f"{n:03d} " + unit * (POST_BYTES // 64)
    return text.encode("utf-8")[:POST_BYTES].decode("utf-8", "ignore")


def expected_listing(config, user_id):
    """The listing as ``json.dumps`` writes the rows, times as RFC 3339 in UTC
    (the database stores them in UTC without a zone)."""
    rows = common.mysql_query(
        config,
        "SELECT id, text, created_at, updated_at FROM posts"
        " WHERE user_id = %s ORDER BY id",
        (user_id,),
    )
    posts = [
        {
            "id": post_id,
            "text": text,
            "created_at": created.isoformat(timespec="seconds") + "Z",
            "updated_at": updated.isoformat(timespec="seconds") + "Z",
        }
        for post_id, text, created, updated in rows
    ]
    return json.dumps(posts, ensure_ascii=False, separators=(",", ":")).encode()


def fetch(base, token, into):
    """Read the whole listing as a client would, keeping only its hash."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    conn.request(
        "GET", "/api/v1/posts/get-posts", headers={"Authorization": "Bearer " + token}
    )
    response = conn.getresponse()
    digest, size = hashlib.sha256(), 0
    while chunk := response.read(1024 * 1024):
        digest.update(chunk)
        size += len(chunk)
    conn.close()
    into.append(
        {
            "status": response.status,
            "chunked": response.getheader("Transfer-Encoding") == "chunked",
            "bytes": size,
            "sha256": digest.hexdigest(),
        }
    )


def peak_rss_while(pid, work):
    """Run ``work()`` and return the highest RSS of ``pid`` seen meanwhile."""
    peak = common.rss_bytes(pid)
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, common.rss_bytes(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        work()
    finally:
        done.set()
        sampler.join()
    return peak


def main():
    config = common.settings()
    common.reset_database(config)
    # Four streams of one account at once: more than the account's share of
    # the threads by default (a quarter of them), which would answer 503.
    env = common.server_env(config, LISTING_REBUILD_SLOTS=CLIENTS)
    with common.waitress("postservice:create_app", env) as (
        base,
        pid,
    ):
        token = common.register(base, "big@bench.example")
        small = common.register(base, "small@bench.example")
        texts = [big_text(n) for n in range(POSTS)]
        user_id = common.user_id_of(token)
        common.insert_posts(config, user_id, texts, batch=4)
        del texts
        expected = expected_listing(config, user_id)
        expected_sha = hashlib.sha256(expected).hexdigest()
        common.request("GET", base + "/api/v1/posts/get-posts", token=small)
        baseline = common.rss_bytes(pid)

        one = []
        peak_one = peak_rss_while(pid, lambda: fetch(base, token, one))
        many = []

        def four():
            threads = [
                threading.Thread(target=fetch, args=(base, token, many))
                for _ in range(CLIENTS)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        started = time.monotonic()
        peak_many = peak_rss_while(pid, four)
        seconds = time.monotonic() - started
        after = common.rss_bytes(pid)

    for result in one + many:
        assert result["status"] == 200, result
        assert result["chunked"], result
        assert result["sha256"] == expected_sha, "streamed body differs"
    mib = 2**20
    report = {
        "listing_bytes": len(expected),
        "baseline_rss_mib": baseline / mib,
        "peak_rss_one_client_mib": peak_one / mib,
        "peak_rss_four_clients_mib": peak_many / mib,
        "growth_four_clients_mib": (peak_many - baseline) / mib,
        "rss_after_mib": after / mib,
        "four_clients_seconds": seconds,
    }
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    (common.RESULTS / "memory.json").write_text(json.dumps(report, indent=2))
    markdown = (
        f"Streaming {len(expected) / mib:.1f} MiB of JSON (100 posts of 1 MiB) "
        f"to {CLIENTS} clients at once, byte-identical to `json.dumps` of the rows: "
        f"service RSS {baseline / mib:.0f} MiB before, peak "
        f"{peak_one / mib:.0f} MiB with one client, peak {peak_many / mib:.0f} MiB "
        f"with four (**+{(peak_many - baseline) / mib:.0f} MiB**, target under "
        f"128 MiB); {CLIENTS * len(expected) / mib / seconds:.0f} MiB/s in all.\n"
    )
    (common.RESULTS / "memory.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()

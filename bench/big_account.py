"""A user with 10,000 posts: the full listing and a page, cold and warm.

    .venv/bin/python bench/big_account.py

Checks the answers (every post, in order; a page and its Link) and times
them. "Cold" is the first request to a freshly started process with an
empty cache; the database server is shared and stays running, so its own
buffers may be warm. "Warm" is the median of the following requests. The
full listing (about 2.2 MB) is over ``POSTS_CACHE_MAX_BYTES`` and so is
streamed from the database every time; it is also timed with the limit
raised so that it is cached. Writes ``results/big_account.md``.
"""

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

POSTS = 10_000
TEXT_BYTES = 200
PAGE = 100


def timed(url, token):
    started = time.perf_counter()
    status, headers, body = common.request("GET", url, token=token)
    elapsed = time.perf_counter() - started
    assert status == 200, (status, body[:200])
    return elapsed * 1000, headers, body


def measure(base, token, ids, warm_runs):
    get = base + "/api/v1/posts/get-posts"
    middle = ids[len(ids) // 2]
    page_url = f"{get}?limit={PAGE}&after_id={middle}"
    full_cold, _, body = timed(get, token)
    posts = json.loads(body)
    assert [p["id"] for p in posts] == ids, "the full listing is not every post"
    page_cold, headers, page = timed(page_url, token)
    page_ids = [p["id"] for p in json.loads(page)]
    start = ids.index(middle) + 1
    assert page_ids == ids[start : start + PAGE], "wrong page"
    assert headers["Link"] == (
        f'</api/v1/posts/get-posts?limit={PAGE}&after_id={page_ids[-1]}>; rel="next"'
    )
    full_warm = statistics.median(timed(get, token)[0] for _ in range(warm_runs))
    page_warm = statistics.median(timed(page_url, token)[0] for _ in range(warm_runs))
    return {
        "listing_bytes": len(body),
        "full_cold_ms": full_cold,
        "full_warm_ms": full_warm,
        "page_cold_ms": page_cold,
        "page_warm_ms": page_warm,
    }


def main():
    config = common.settings()
    common.reset_database(config)
    with common.waitress("postservice:create_app", common.server_env(config)) as (
        base,
        _,
    ):
        token = common.register(base, "many@bench.example")
        texts = [f"{n} " + "y" * (TEXT_BYTES - len(f"{n} ")) for n in range(POSTS)]
        ids = common.insert_posts(config, common.user_id_of(token), texts, batch=1000)
    # Fresh processes: the first request of each is the cold one.
    with common.waitress("postservice:create_app", common.server_env(config)) as (
        base,
        _,
    ):
        streamed = measure(base, token, ids, warm_runs=9)
    env = common.server_env(config, POSTS_CACHE_MAX_BYTES=8 * 2**20)
    with common.waitress("postservice:create_app", env) as (base, _):
        cached = measure(base, token, ids, warm_runs=9)

    report = {"streamed": streamed, "cache_limit_8_mib": cached}
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    (common.RESULTS / "big_account.json").write_text(json.dumps(report, indent=2))
    size = streamed["listing_bytes"] / 1e6
    markdown = "\n".join(
        [
            f"A user with {POSTS:,} posts of {TEXT_BYTES} B ({size:.1f} MB listing); "
            "times in ms, one client:",
            "",
            "| request | cold | warm (median of 9) |",
            "|---|---:|---:|",
            f"| full listing, streamed (default cache limit) | "
            f"{streamed['full_cold_ms']:.1f} | {streamed['full_warm_ms']:.1f} |",
            f"| full listing, `POSTS_CACHE_MAX_BYTES` = 8 MiB (cached when warm) | "
            f"{cached['full_cold_ms']:.1f} | {cached['full_warm_ms']:.1f} |",
            f"| one page, `?limit={PAGE}&after_id=<middle>` | "
            f"{streamed['page_cold_ms']:.1f} | {streamed['page_warm_ms']:.1f} |",
            "",
        ]
    )
    (common.RESULTS / "big_account.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()

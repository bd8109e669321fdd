"""Conditional reads, edits, and a listing read while it is written to.

    .venv/bin/python bench/posts.py [--seconds 5] [--rounds 3] [--only mixed]

Three comparisons, each measured in one run, rounds alternating the order:

- **304**: a get-posts with the current tag in ``If-None-Match``, against
  the read floor (``reference_app.py``: the same listing's bytes from one
  Redis ``GET``), 8 connections, for a listing of 20 posts and one of
  2,000;
- **edit**: edit-post of 64 posts of one account in turn (the connections
  edit different posts), against the write floor's ``INSERT``
  (``write_floor.py``), 8 connections;
- **mixed**: one account of 2,000 posts, its whole listing read by 8
  connections while 4 connections add posts to it, against each alone.
  Before each run the account is put back to its 2,000 posts.

Prints each figure and ratio; ``--markdown FILE`` writes them as a table.
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import run

LISTING_POSTS = 2000
# The listings revalidated: a short one, and one as large as the mixed case's.
CONDITIONAL_POSTS = (20, LISTING_POSTS)
EDITED_POSTS = 64
GET_POSTS = "/api/v1/posts/get-posts"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument(
        "--only",
        choices=("conditional", "edit", "mixed"),
        action="append",
        help="run these comparisons alone (repeatable); default: all three",
    )
    args = parser.parse_args(argv)
    wanted = set(args.only or ("conditional", "edit", "mixed"))

    config = common.settings()
    common.ensure_wrk()
    common.reset_database(config)
    env = common.server_env(config)
    reference_env, floor_env, floor_user = run.floor_envs(config, env)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        ours = stack.enter_context(common.waitress("postservice:create_app", env))[0]
        reference = stack.enter_context(
            common.waitress("reference_app:create_app", reference_env)
        )[0]
        floor = stack.enter_context(
            common.waitress("write_floor:create_app", floor_env)
        )[0]
        lines = []
        if "conditional" in wanted:
            lines += conditional(config, ours, reference, args)
        if "edit" in wanted:
            lines += edit(config, ours, floor, floor_user, tmp, args)
        if "mixed" in wanted:
            lines += mixed(config, ours, tmp, args)
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text(
            "# Posts: 304, edit-post, and a listing under writes\n\n"
            "`bench/posts.py`; ratios of figures measured in one run.\n\n"
            + "\n".join(f"- {line}" for line in lines)
            + "\n",
            encoding="utf-8",
        )


def median_rps(results):
    return statistics.median(r["rps"] for r in results)


ERROR_KINDS = ("connect_errors", "read_errors", "write_errors", "timeouts", "non_2xx")


def errors(results):
    """How many requests failed, and how, as wrk counts them."""
    counts = {kind: sum(r[kind] for r in results) for kind in ERROR_KINDS}
    total = sum(counts.values())
    if not total:
        return "0"
    return f"{total} ({', '.join(f'{k} {n}' for k, n in counts.items() if n)})"


def conditional(config, ours, reference, args):
    """The 304 beside the read floor, for a small listing and a large one: a
    304 costs the token check whatever the listing's size, the floor its
    bytes."""
    return [
        conditional_at(config, ours, reference, args, posts)
        for posts in CONDITIONAL_POSTS
    ]


def conditional_at(config, ours, reference, args, posts):
    token = common.register(ours, f"conditional{posts}@bench.example")
    common.insert_posts(
        config,
        common.user_id_of(token),
        [run.text_of(run.SMALL_TEXT, n) for n in range(posts)],
    )
    status, headers, body = common.request("GET", ours + GET_POSTS, token=token)
    assert status == 200, status
    run.store_reference_body(config, body)
    tag = headers["ETag"]
    env = {"BENCH_TOKEN": token, "BENCH_TAG": tag}
    floor, revalidated, full = [], [], []
    for _ in range(args.rounds):
        floor.append(
            common.wrk(reference, GET_POSTS, "get_posts.lua", 8, args.seconds, env)
        )
        revalidated.append(
            common.wrk(
                ours, GET_POSTS, "get_posts_conditional.lua", 8, args.seconds, env
            )
        )
        full.append(common.wrk(ours, GET_POSTS, "get_posts.lua", 8, args.seconds, env))
    ratios = [a["rps"] / b["rps"] for a, b in zip(revalidated, floor, strict=True)]
    full_ratios = [a["rps"] / b["rps"] for a, b in zip(full, floor, strict=True)]
    return (
        f"304 ({posts}-post listing, {len(body):,} bytes, c=8): "
        f"{median_rps(revalidated):.0f} req/s; read floor "
        f"{median_rps(floor):.0f} req/s; ratio {statistics.median(ratios):.3f} "
        f"(a full cached read: {median_rps(full):.0f} req/s, ratio "
        f"{statistics.median(full_ratios):.3f}); errors {errors(revalidated)}"
    )


def edit(config, ours, floor, floor_user, tmp, args):
    token = common.register(ours, "editor@bench.example")
    ids = common.insert_posts(
        config,
        common.user_id_of(token),
        [run.text_of(run.SMALL_TEXT, n) for n in range(EDITED_POSTS)],
    )
    body_file = run.add_body_file(tmp, run.SMALL_TEXT)
    env = {
        "BENCH_TOKEN": token,
        "BENCH_BODY_FILE": body_file,
        "BENCH_IDS_FILE": run.ids_file(tmp, "edited", ids),
    }
    edits, inserts = [], []
    for _ in range(args.rounds):
        edits.append(
            common.wrk(
                ours,
                "/api/v1/posts/edit-post/1",
                "edit_post.lua",
                8,
                args.seconds,
                env,
            )
        )
        inserts.append(
            common.wrk(
                floor, "/api/v1/posts/add-post", "add_post.lua", 8, args.seconds, env
            )
        )
        common.mysql_query(
            config, "DELETE FROM posts WHERE user_id = %s", (floor_user,)
        )
    ratios = [a["rps"] / b["rps"] for a, b in zip(edits, inserts, strict=True)]
    return [
        f"edit-post ({EDITED_POSTS} posts of one account in turn, c=8): "
        f"{median_rps(edits):.0f} req/s; write floor {median_rps(inserts):.0f} "
        f"req/s; ratio {statistics.median(ratios):.3f}; errors {errors(edits)}"
    ]


def run_together(**runs):
    """Each of ``runs`` on its own thread, at once; their results by name."""
    results = {}
    threads = [
        threading.Thread(target=lambda n=name, r=run_: results.setdefault(n, r()))
        for name, run_ in runs.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def mixed(config, ours, tmp, args):
    token = common.register(ours, "busy@bench.example")
    user_id = common.user_id_of(token)
    ids = common.insert_posts(
        config, user_id, [run.text_of(run.SMALL_TEXT, n) for n in range(LISTING_POSTS)]
    )
    body_file = run.add_body_file(tmp, run.SMALL_TEXT)
    env = {"BENCH_TOKEN": token, "BENCH_BODY_FILE": body_file}

    def reset():
        """Back to the 2,000 posts, with the listing cached again."""
        run.drain(ours)  # adds wrk left queued would land after the delete
        common.mysql_query(
            config,
            "DELETE FROM posts WHERE user_id = %s AND id > %s",
            (user_id, ids[-1]),
        )
        # A delete through the service makes the cached listing stale.
        extra = common.request(
            "POST", ours + "/api/v1/posts/add-post", {"text": "x"}, token=token
        )
        post_id = json.loads(extra[2])["PostID"]
        common.request(
            "DELETE", ours + f"/api/v1/posts/delete-post/{post_id}", token=token
        )
        status, _, body = common.request("GET", ours + GET_POSTS, token=token)
        assert status == 200, status
        assert len(json.loads(body)) == LISTING_POSTS

    def reads():
        return common.wrk(ours, GET_POSTS, "get_posts.lua", 8, args.seconds, env)

    def adds():
        return common.wrk(
            ours, "/api/v1/posts/add-post", "add_post.lua", 4, args.seconds, env
        )

    alone_reads, alone_adds, mixed_reads, mixed_adds = [], [], [], []
    for _ in range(args.rounds):
        reset()
        alone_reads.append(reads())
        reset()
        alone_adds.append(adds())
        reset()
        together = run_together(reads=reads, adds=adds)
        mixed_reads.append(together["reads"])
        mixed_adds.append(together["adds"])
    read_ratios = [
        a["rps"] / b["rps"] for a, b in zip(mixed_reads, alone_reads, strict=True)
    ]
    add_ratios = [
        a["rps"] / b["rps"] for a, b in zip(mixed_adds, alone_adds, strict=True)
    ]
    return [
        f"mixed, {LISTING_POSTS}-post listing: reads alone (c=8) "
        f"{median_rps(alone_reads):.0f} req/s, adds alone (c=4) "
        f"{median_rps(alone_adds):.0f} req/s",
        f"mixed, together: reads {median_rps(mixed_reads):.0f} req/s (ratio "
        f"{statistics.median(read_ratios):.3f} of alone), adds "
        f"{median_rps(mixed_adds):.0f} req/s (ratio "
        f"{statistics.median(add_ratios):.3f}); errors "
        f"{errors(mixed_reads + mixed_adds)}",
    ]


if __name__ == "__main__":
    main()

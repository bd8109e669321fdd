"""The benchmark: throughput and latency of every endpoint, against the floor.

    ./bench/run.sh            # the full run (about 5 minutes)
    ./bench/run.sh --quick    # seconds: proves the script works; figures are noise

Starts the service under waitress on MariaDB and Redis (its own database and
Redis database, see ``common.settings``), loads users and posts, drives it
with wrk and prints one table. In the same run it measures the reference app
(``reference_app.py``, the floor for a cached get-posts) and the machine's
bcrypt rate (the ceiling for login), so every target is a ratio of figures
taken minutes apart on the same machine. Writes ``results/latest.json``,
``results/results.md`` and ``results/chart.png``; ``memory.py`` and
``big_account.py`` follow unless ``--quick`` or ``--table-only``.
"""

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bcrypt

from postservice.users import passwords

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

CONNECTIONS = (1, 8, 64)
ERROR_KINDS = ("connect_errors", "read_errors", "write_errors", "timeouts", "non_2xx")
SMALL_TEXT = 200
BIG_TEXT = 1024 * 1024
ROWS = [
    ("get-posts cached, 20 posts", "cached20"),
    ("get-posts uncached, 20 posts", "uncached20"),
    ("reference app, same bytes", "reference"),
    ("get-posts cached, 100 posts", "cached100"),
    ("get-posts uncached, 100 posts", "uncached100"),
    ("add-post 200 B", "add_small"),
    ("add-post 1 MiB", "add_big"),
    ("delete-post", "delete"),
    ("login", "login"),
]


def _hash_for(seconds, hashed, count, niceness):
    os.nice(niceness)
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline:
        bcrypt.checkpw(common.PASSWORD.encode(), hashed)
        done += 1
    count.value = done


def bcrypt_ceiling(seconds, niceness=0):
    """Password checks per second at our cost with every core busy."""
    hashed = bcrypt.hashpw(
        common.PASSWORD.encode(), bcrypt.gensalt(common.BCRYPT_ROUNDS)
    )
    cores = os.cpu_count() or 1
    counts = [multiprocessing.Value("i", 0) for _ in range(cores)]
    started = time.monotonic()
    workers = [
        multiprocessing.Process(target=_hash_for, args=(seconds, hashed, c, niceness))
        for c in counts
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(c.value for c in counts) / (time.monotonic() - started)


def text_of(size, n=0):
    base = f"post {n} "
    return base + "x" * (size - len(base))


def add_body_file(directory, size):
    path = Path(directory) / f"add-{size}.json"
    path.write_text(json.dumps({"text": text_of(size)}), encoding="utf-8")
    return path


def ids_file(directory, name, ids):
    path = Path(directory) / f"{name}.ids"
    path.write_text("\n".join(map(str, ids)) + "\n", encoding="ascii")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    seconds = args.seconds or (1 if args.quick else 5)
    connections = (1, 8) if args.quick else CONNECTIONS
    results_dir = Path(tempfile.mkdtemp()) if args.quick else common.RESULTS
    results_dir.mkdir(parents=True, exist_ok=True)

    config = common.settings()
    common.ensure_wrk()
    common.reset_database(config)
    machine = common.machine(config)
    print("machine:", json.dumps(machine), flush=True)
    ceiling = bcrypt_ceiling(1 if args.quick else 5)
    # The service hashes at a raised nice value (users/passwords.py); on a
    # machine shared with other work that alone gets it a smaller share.
    ceiling_niced = bcrypt_ceiling(1 if args.quick else 5, passwords.NICENESS)
    print(
        f"bcrypt ceiling: {ceiling:.2f} checks/s at cost {common.BCRYPT_ROUNDS}, "
        f"{ceiling_niced:.2f} at nice {passwords.NICENESS}"
    )

    env = common.server_env(config)
    # The honest always-miss: the same server and Redis, but no listing is
    # small enough to be stored, so every request does the whole miss path
    # (the MGET, the query, the streamed JSON) except the final SET.
    nocache_env = common.server_env(
        config, POSTS_CACHE_MAX_BYTES=0, REDIS_URL=config["nocache_redis_url"]
    )
    reference_env = dict(
        env, REFERENCE_REDIS_URL=config["redis_url"], REFERENCE_KEY="bench:reference"
    )
    figures, extra = {}, {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        common.waitress("postservice:create_app", env) as (base, pid),
        common.waitress("postservice:create_app", nocache_env) as (nocache, _),
        common.waitress("reference_app:create_app", _ref_env(reference_env)) as (
            reference,
            _,
        ),
    ):
        users = setup_users(config, base, tmp, quick=args.quick)
        body20 = check_cached(base, nocache, users)
        import redis

        redis.Redis.from_url(config["redis_url"]).set("bench:reference", body20)
        status, _, ref_body = common.request(
            "GET", reference + "/api/v1/posts/get-posts"
        )
        assert status == 200, status
        assert ref_body == body20, "the reference app answers other bytes"

        for conns in connections:
            for label, key in ROWS:
                figures.setdefault(key, {})[conns] = run_cell(
                    key, conns, seconds, base, nocache, reference, users, tmp, config
                )
                drain(base, nocache, reference)
                f = figures[key][conns]
                print(
                    f"{label:32} c={conns:<3} {f['rps']:9.1f} req/s "
                    f"p50 {f['p50_ms']:8.2f} ms  p99 {f['p99_ms']:8.2f} ms  "
                    f"errors {errors(f)}",
                    flush=True,
                )
        extra["paired"] = paired_ratios(
            base, nocache, reference, users, seconds, rounds=1 if args.quick else 3
        )
        extra["com_select"] = com_select_check(config, base, users, seconds)
        extra["login_under_load"] = login_under_load(
            base, users, seconds, (2,) if args.quick else (2, 8, 64)
        )
        extra["server_rss_mib"] = common.rss_bytes(pid) / 2**20

    report = {
        "machine": machine,
        "seconds_per_cell": seconds,
        "bcrypt_ceiling": ceiling,
        "bcrypt_ceiling_niced": ceiling_niced,
        "figures": {k: {str(c): v for c, v in d.items()} for k, d in figures.items()},
        **extra,
    }
    report["ratios"] = ratios(report, connections)
    (results_dir / "latest.json").write_text(json.dumps(report, indent=2))
    markdown = to_markdown(report, connections)
    (results_dir / "results.md").write_text(markdown)
    print()
    print(markdown)
    import chart

    chart.draw(report, connections, results_dir / "chart.png")
    print(f"written: {results_dir}/results.md, chart.png, latest.json")
    if not (args.quick or args.table_only):
        for script in ("memory.py", "big_account.py"):
            subprocess.run(
                [sys.executable, str(common.BENCH / script)],
                check=True,
                cwd=common.ROOT,
            )


def _ref_env(env):
    # reference_app.py sits beside this script, not in the package.
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(common.BENCH), env.get("PYTHONPATH")])
    )
    return env


def setup_users(config, base, tmp, quick):
    users = {}
    for name, count in (("reader20", 20), ("reader100", 100)):
        token = common.register(base, f"{name}@bench.example")
        common.insert_posts(
            config,
            common.user_id_of(token),
            [text_of(SMALL_TEXT, n) for n in range(count)],
        )
        users[name] = token
    users["writer"] = common.register(base, "writer@bench.example")
    users["deleter"] = common.register(base, "deleter@bench.example")
    users["login"] = common.register(base, "login@bench.example")
    users["body_small"] = add_body_file(tmp, SMALL_TEXT)
    users["body_big"] = add_body_file(tmp, BIG_TEXT)
    users["delete_count"] = 2_000 if quick else 15_000
    return users


def check_cached(base, nocache, users):
    """Warm the caches and check both servers give the same bytes."""
    bodies = []
    for server in (base, base, nocache):
        status, _, body = common.request(
            "GET", server + "/api/v1/posts/get-posts", token=users["reader20"]
        )
        assert status == 200, status
        bodies.append(body)
    assert bodies[0] == bodies[1] == bodies[2], "cached and uncached bodies differ"
    common.request("GET", base + "/api/v1/posts/get-posts", token=users["reader100"])
    return bodies[0]


def run_cell(key, conns, seconds, base, nocache, reference, users, tmp, config):
    get = "/api/v1/posts/get-posts"
    if key in ("cached20", "uncached20", "cached100", "uncached100", "reference"):
        server = {"cached": base, "uncached": nocache, "reference": reference}[
            key.rstrip("0123456789")
        ]
        token = users["reader100" if key.endswith("100") else "reader20"]
        return common.wrk(
            server, get, "get_posts.lua", conns, seconds, {"BENCH_TOKEN": token}
        )
    if key in ("add_small", "add_big"):
        body = users["body_small" if key == "add_small" else "body_big"]
        result = common.wrk(
            base,
            "/api/v1/posts/add-post",
            "add_post.lua",
            conns,
            seconds,
            {"BENCH_TOKEN": users["writer"], "BENCH_BODY_FILE": body},
        )
        # Keep the bench database small: 1 MiB posts add up quickly.
        drain(base)
        common.mysql_query(
            config,
            "DELETE FROM posts WHERE user_id = %s",
            (common.user_id_of(users["writer"]),),
        )
        return result
    if key == "delete":
        ids = common.insert_posts(
            config,
            common.user_id_of(users["deleter"]),
            [text_of(SMALL_TEXT, n) for n in range(users["delete_count"])],
        )
        return common.wrk(
            base,
            "/api/v1/posts/delete-post/1",
            "delete_post.lua",
            conns,
            seconds,
            {
                "BENCH_TOKEN": users["deleter"],
                "BENCH_IDS_FILE": ids_file(tmp, f"delete-{conns}", ids),
            },
        )
    if key == "login":
        return common.wrk(
            base,
            "/api/v1/users/login",
            "login.lua",
            conns,
            seconds,
            {"BENCH_EMAIL": "login@bench.example", "BENCH_PASSWORD": common.PASSWORD},
        )
    raise ValueError(key)


def drain(*servers):
    """Wait until the requests wrk left queued when it stopped have been served.

    wrk stops at its deadline, but waitress still serves every request it
    had queued (64 logins take many seconds). A probe joins the end of the
    same first-in-first-out queue, so when it is answered the queue is empty
    and the next measurement starts on an idle server.
    """
    for server in servers:
        for _ in range(2):
            common.request("GET", server + "/", timeout=300)


def paired_ratios(base, nocache, reference, users, seconds, rounds):
    """The target ratios again, from back-to-back pairs of runs at c=8.

    The machine is shared and its load drifts; a ratio of two runs taken
    seconds apart, alternating which goes first, is steadier than one of
    two table cells taken minutes apart. The median of the pairs is kept.
    """
    drain(base, nocache, reference)
    get = "/api/v1/posts/get-posts"
    pairs = {
        "cached_vs_reference": ((base, "reader20"), (reference, "reader20")),
        "cached_vs_uncached_100": ((base, "reader100"), (nocache, "reader100")),
    }
    out = {}
    for name, (ours, theirs) in pairs.items():
        values = []
        for n in range(rounds):
            order = (ours, theirs) if n % 2 == 0 else (theirs, ours)
            rps = {}
            for server, user in order:
                drain(server)
                rps[server] = common.wrk(
                    server,
                    get,
                    "get_posts.lua",
                    8,
                    seconds,
                    {"BENCH_TOKEN": users[user]},
                )["rps"]
            values.append(rps[ours[0]] / rps[theirs[0]])
        out[name] = {"median": statistics.median(values), "rounds": values}
        print(f"{name}: " + ", ".join(f"{v:.2f}" for v in values), flush=True)
    return out


def errors(f):
    return sum(
        f[k]
        for k in (
            "connect_errors",
            "read_errors",
            "write_errors",
            "timeouts",
            "non_2xx",
        )
    )


def com_select_check(config, base, users, seconds):
    """SELECTs the database ran during a batch of cache hits, and while idle."""
    before = common.com_select(config)
    hits = common.wrk(
        base,
        "/api/v1/posts/get-posts",
        "get_posts.lua",
        8,
        seconds,
        {"BENCH_TOKEN": users["reader20"]},
    )
    during = common.com_select(config) - before
    before = common.com_select(config)
    time.sleep(hits["seconds"])
    idle = common.com_select(config) - before
    result = {"requests": hits["requests"], "during": during, "idle": idle}
    print(
        f"Com_select: +{during} during {hits['requests']} cached requests, "
        f"+{idle} over the same time idle (the counter is server-wide)"
    )
    return result


def login_under_load(base, users, seconds, login_connections):
    """get-posts latency alone, then while logins keep every core busy."""
    get_env = {"BENCH_TOKEN": users["reader20"]}
    login_env = {
        "BENCH_EMAIL": "login@bench.example",
        "BENCH_PASSWORD": common.PASSWORD,
    }
    drain(base)
    alone = common.wrk(
        base, "/api/v1/posts/get-posts", "get_posts.lua", 8, seconds, get_env
    )
    result = {"get_posts_alone": alone}
    for login_conns in login_connections:
        logins = {}

        def log_in(conns=login_conns, into=logins):
            into.update(
                common.wrk(
                    base,
                    "/api/v1/users/login",
                    "login.lua",
                    conns,
                    seconds + 2,
                    login_env,
                )
            )

        thread = threading.Thread(target=log_in)
        thread.start()
        time.sleep(1)  # let the logins pile up first
        during = common.wrk(
            base, "/api/v1/posts/get-posts", "get_posts.lua", 8, seconds, get_env
        )
        thread.join()
        drain(base)
        result[f"logins_{login_conns}"] = {"get_posts": during, "login": logins}
        print(
            f"get-posts c=8 alone p50 {alone['p50_ms']:.2f} p99 {alone['p99_ms']:.2f} "
            f"ms; with {login_conns} login connections p50 {during['p50_ms']:.2f} "
            f"p99 {during['p99_ms']:.2f} ms, {during['rps']:.0f} req/s; "
            f"logins {logins['rps']:.2f}/s",
            flush=True,
        )
    return result


def ratios(report, connections):
    f = report["figures"]

    def rps(key, c):
        return f[key][str(c)]["rps"]

    paired = report["paired"]
    out = {
        "cached_vs_reference_c8": paired["cached_vs_reference"]["median"],
        "cached_vs_uncached_100_posts_c8": paired["cached_vs_uncached_100"]["median"],
        "table_cached_vs_reference_c8": rps("cached20", 8) / rps("reference", 8),
        "table_cached_vs_uncached_100_posts_c8": rps("cached100", 8)
        / rps("uncached100", 8),
        "login_vs_bcrypt_ceiling": max(rps("login", c) for c in connections)
        / report["bcrypt_ceiling"],
        "login_vs_niced_ceiling": max(rps("login", c) for c in connections)
        / report["bcrypt_ceiling_niced"],
    }
    out["errors_at_max_connections"] = sum(
        errors(f[key][str(connections[-1])]) for key in f
    )
    return out


def to_markdown(report, connections):
    m = report["machine"]
    lines = [
        f"Measured on {m['cpu']}, {m['cores']} cores; Python {m['python']}, "
        f"waitress {m['waitress']} ({m['waitress_threads']} threads), "
        f"Flask {m['flask']}, SQLAlchemy {m['sqlalchemy']}, MariaDB {m['mariadb']}, "
        f"Redis {m['redis']}, wrk {m['wrk']} (1 thread, "
        f"{report['seconds_per_cell']:g} s a cell); bcrypt cost {m['bcrypt_rounds']}.",
        "",
        "| request | "
        + " | ".join(f"c={c} req/s | c={c} p50/p99 ms" for c in connections)
        + " |",
        "|---|" + "---:|---:|" * len(connections),
    ]
    for label, key in ROWS:
        cells = []
        for c in connections:
            f = report["figures"][key][str(c)]
            cells.append(f"{f['rps']:.1f}")
            cells.append(f"{f['p50_ms']:.1f} / {f['p99_ms']:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    r = report["ratios"]
    rounds = len(report["paired"]["cached_vs_reference"]["rounds"])
    lines += [
        "",
        f"- cached get-posts / reference app (c=8, median of {rounds} back-to-back "
        f"pairs): **{r['cached_vs_reference_c8']:.2f}** (target at least 0.85; "
        f"from the table cells: {r['table_cached_vs_reference_c8']:.2f})",
        f"- cached / uncached get-posts, 100 posts (c=8, median of {rounds} pairs): "
        f"**{r['cached_vs_uncached_100_posts_c8']:.1f}x** (target at least 3x; "
        f"table: {r['table_cached_vs_uncached_100_posts_c8']:.1f}x)",
        f"- login / bcrypt ceiling ({report['bcrypt_ceiling']:.2f} checks/s on all "
        f"cores): **{r['login_vs_bcrypt_ceiling']:.2f}** (target at least 0.80); "
        f"against the ceiling at the service's nice {passwords.NICENESS} "
        f"({report['bcrypt_ceiling_niced']:.2f}/s): "
        f"{r['login_vs_niced_ceiling']:.2f}",
        f"- errors and timeouts at c={connections[-1]} (all rows): "
        f"**{r['errors_at_max_connections']}**",
        "- logins turned away with 503 because every password-hash slot was "
        "busy (not in the login req/s): "
        + ", ".join(
            f"c={c} {report['figures']['login'][str(c)].get('shed', 0)}"
            for c in connections
        ),
    ]
    cs = report.get("com_select")
    if cs:
        lines.append(
            f"- Com_select grew by {cs['during']} during {cs['requests']} cached "
            f"get-posts, and by {cs['idle']} over as long idle (server-wide counter)"
        )
    lu = report.get("login_under_load")
    if lu:
        alone = lu["get_posts_alone"]
        parts = [f"alone p50 {alone['p50_ms']:.1f} / p99 {alone['p99_ms']:.1f} ms"]
        for key, value in lu.items():
            if key.startswith("logins_"):
                g = value["get_posts"]
                parts.append(
                    f"with {key.split('_')[1]} login connections "
                    f"{g['p50_ms']:.1f} / {g['p99_ms']:.1f} ms "
                    f"({value['login']['rps']:.2f} logins/s, "
                    f"{value['login'].get('shed', 0)} turned away)"
                )
        lines.append("- get-posts (cached, c=8) latency: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

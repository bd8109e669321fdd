"""The benchmark: throughput and latency of every endpoint, against the floors.

    ./bench/run.sh                # the full run (about 7 minutes)
    ./bench/run.sh --quick        # seconds: proves it works; figures are noise
    ./bench/run.sh --ratios-only  # the target ratios and tails, to compare builds

Starts the service under waitress on MariaDB and Redis (its own database and
Redis database, see ``common.settings``), loads users and posts, drives it
with wrk and prints one table. In the same run it measures the floor apps
(``reference_app.py`` for a cached get-posts, ``write_floor.py`` for add-post
and delete-post) and the machine's bcrypt rate (the ceiling for login), so
every target is a ratio of figures taken on the same machine minutes or
seconds apart. Writes ``results/latest.json``, ``results/results.md`` and
``results/chart.png``; ``memory.py`` and ``big_account.py`` follow unless
``--quick``, ``--table-only`` or ``--ratios-only``.
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
from rows import FLOORS, ROWS

CONNECTIONS = (1, 8, 64)
ERROR_KINDS = ("connect_errors", "read_errors", "write_errors", "timeouts", "non_2xx")
SMALL_TEXT = 200
BIG_TEXT = 1024 * 1024
# Where the read floor (reference_app.py) finds the bytes it answers.
REFERENCE_KEY = "bench:reference"
# Targets for the ratios of one run (see ``ratios``).
TARGETS = {
    "cached20": 0.75,  # of the read floor's req/s
    "add_small": 0.45,  # of the write floor's
    "delete": 0.45,  # of the delete floor's
}
TAIL_TARGET = 3  # cached p99 at most this many times the read floor's, at c=64
UNCACHED_SPREAD_TARGET = 10  # uncached p99 under this many times its p50, c=64
# A pair of runs compared for a ratio: each of ours against its floor, and
# the cache's gain.
PAIRS = {**FLOORS, "cached100": "uncached100"}


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
    parser.add_argument("--seconds", type=int, default=None)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument(
        "--ratios-only",
        action="store_true",
        help="only the paired ratios at c=8, the tails at c=64 and the SQL count",
    )
    args = parser.parse_args(argv)
    seconds = args.seconds or (1 if args.quick else 5)
    connections = (1, 8) if args.quick else CONNECTIONS
    scratch = args.quick or args.ratios_only
    results_dir = Path(tempfile.mkdtemp()) if scratch else common.RESULTS
    results_dir.mkdir(parents=True, exist_ok=True)

    config = common.settings()
    common.ensure_wrk()
    common.reset_database(config)
    machine = common.machine(config)
    print("machine:", json.dumps(machine), flush=True)
    ceiling = ceiling_niced = None
    if not args.ratios_only:
        ceiling = bcrypt_ceiling(1 if args.quick else 5)
        # The service hashes at a raised nice value (users/passwords.py); on
        # a machine shared with other work that alone gets it a smaller share.
        ceiling_niced = bcrypt_ceiling(1 if args.quick else 5, passwords.NICENESS)
        print(
            f"bcrypt ceiling: {ceiling:.2f} checks/s at cost "
            f"{common.BCRYPT_ROUNDS}, {ceiling_niced:.2f} at nice {passwords.NICENESS}"
        )

    env = common.server_env(config)
    # The honest always-miss: the same server and Redis, but no listing is
    # small enough to be stored, so every request does the whole miss path
    # (the MGET, the query, the streamed JSON) except the final SET.
    nocache_env = common.server_env(
        config, POSTS_CACHE_MAX_BYTES=0, REDIS_URL=config["nocache_redis_url"]
    )
    reference_env, floor_env, floor_user = floor_envs(config, env)
    figures, extra = {}, {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        common.waitress("postservice:create_app", env) as (base, pid),
        common.waitress("postservice:create_app", nocache_env) as (nocache, _),
        common.waitress("reference_app:create_app", reference_env) as (reference, _),
        common.waitress("write_floor:create_app", floor_env) as (floor, _),
    ):
        servers = {
            "ours": base,
            "nocache": nocache,
            "reference": reference,
            "floor": floor,
        }
        users = setup_users(config, base, tmp)
        users["floor"] = floor_user
        bench = Bench(config, servers, users, tmp)
        body20 = check_cached(base, nocache, users)
        store_reference_body(config, body20)
        status, _, ref_body = common.request(
            "GET", reference + "/api/v1/posts/get-posts"
        )
        assert status == 200, status
        assert ref_body == body20, "the reference app answers other bytes"
        check_write_floor(floor, users)
        # Every thread of both writers opens its database connection here,
        # not inside the first measured cell.
        for key in ("add_small", "insert_floor"):
            bench.cell(key, common.THREADS, 1)

        rows = ROWS
        if args.ratios_only:
            # The tails at the most connections: each pair's members only.
            connections = (CONNECTIONS[-1],)
            wanted = {key for pair in PAIRS.items() for key in pair} | {"uncached20"}
            rows = [(label, key) for label, key in ROWS if key in wanted]
        for conns in connections:
            for label, key in rows:
                figures.setdefault(key, {})[conns] = bench.cell(key, conns, seconds)
                bench.drain()
                f = figures[key][conns]
                print(
                    f"{label:38} c={conns:<3} {f['rps']:9.1f} req/s "
                    f"p50 {f['p50_ms']:8.2f} ms  p99 {f['p99_ms']:8.2f} ms  "
                    f"errors {errors(f)}",
                    flush=True,
                )
        extra["paired"] = paired_ratios(bench, seconds, rounds=1 if args.quick else 3)
        extra["com_select"] = com_select_check(config, base, users, seconds)
        if not args.ratios_only:
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
    if args.ratios_only:
        print()
        print("\n".join(ratio_lines(report, connections)))
        print(f"written: {results_dir}/latest.json")
        return
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


def _bench_env(env, **extra):
    # The floor apps sit beside this script, not in the package.
    env = dict(env, **{k: str(v) for k, v in extra.items()})
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(common.BENCH), env.get("PYTHONPATH")])
    )
    return env


def floor_envs(config, env):
    """The read floor's and the write floor's environments, and the write
    floor's user (made here)."""
    floor_user = floor_user_id(config)
    reference_env = _bench_env(
        env, REFERENCE_REDIS_URL=config["redis_url"], REFERENCE_KEY=REFERENCE_KEY
    )
    return reference_env, _bench_env(env, FLOOR_USER_ID=floor_user), floor_user


def store_reference_body(config, body):
    """Give the read floor the bytes to answer: the service's own listing."""
    import redis

    redis.Redis.from_url(config["redis_url"]).set(REFERENCE_KEY, body)


def floor_user_id(config):
    """A user row for the write floor's posts, made without the service."""
    conn = common.connect(config)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO users (email, password_hash) VALUES (%s, %s)",
                ("floor@bench.example", "!"),
            )
            user_id = cur.lastrowid
        conn.commit()
        return user_id
    finally:
        conn.close()


def setup_users(config, base, tmp):
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
    # More ids than a delete can use in a second, even the delete floor's
    # (about 1,900/s here): a run out of ids would count 404s as errors.
    users["delete_per_second"] = 4_000
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


def check_write_floor(floor, users):
    """The write floor answers what the service answers, and really writes."""
    text = text_of(SMALL_TEXT)
    status, _, body = common.request(
        "POST", floor + "/api/v1/posts/add-post", {"text": text}
    )
    assert status == 200, status
    post_id = json.loads(body)["PostID"]
    status, _, _ = common.request(
        "DELETE", f"{floor}/api/v1/posts/delete-post/{post_id}"
    )
    assert status == 204, status
    status, _, _ = common.request(
        "DELETE", f"{floor}/api/v1/posts/delete-post/{post_id}"
    )
    assert status == 404, status


class Bench:
    """The servers, users and files of one run; ``cell`` measures one figure."""

    def __init__(self, config, servers, users, tmp):
        self.config = config
        self.servers = servers
        self.users = users
        self.tmp = tmp

    def drain(self, *names):
        drain(*(self.servers[n] for n in names or self.servers))

    def cell(self, key, conns, seconds):
        """wrk's figures for request type ``key`` (see ``rows.ROWS``)."""
        users, servers = self.users, self.servers
        if key in ("cached20", "uncached20", "cached100", "uncached100", "reference"):
            server = {
                "cached": "ours",
                "uncached": "nocache",
                "reference": "reference",
            }[key.rstrip("0123456789")]
            token = users["reader100" if key.endswith("100") else "reader20"]
            return common.wrk(
                servers[server],
                "/api/v1/posts/get-posts",
                "get_posts.lua",
                conns,
                seconds,
                {"BENCH_TOKEN": token},
            )
        if key in ("add_small", "add_big", "insert_floor"):
            server = "floor" if key == "insert_floor" else "ours"
            user_id = (
                users["floor"]
                if server == "floor"
                else common.user_id_of(users["writer"])
            )
            body = users["body_big" if key == "add_big" else "body_small"]
            result = common.wrk(
                servers[server],
                "/api/v1/posts/add-post",
                "add_post.lua",
                conns,
                seconds,
                {"BENCH_TOKEN": users["writer"], "BENCH_BODY_FILE": body},
            )
            # Keep the bench database small: 1 MiB posts add up quickly.
            self.drain(server)
            common.mysql_query(
                self.config, "DELETE FROM posts WHERE user_id = %s", (user_id,)
            )
            return result
        if key in ("delete", "delete_floor"):
            server = "floor" if key == "delete_floor" else "ours"
            user_id = (
                users["floor"]
                if server == "floor"
                else common.user_id_of(users["deleter"])
            )
            ids = common.insert_posts(
                self.config,
                user_id,
                [
                    text_of(SMALL_TEXT, n)
                    for n in range(int(users["delete_per_second"] * seconds))
                ],
            )
            result = common.wrk(
                servers[server],
                "/api/v1/posts/delete-post/1",
                "delete_post.lua",
                conns,
                seconds,
                {
                    "BENCH_TOKEN": users["deleter"],
                    "BENCH_IDS_FILE": ids_file(self.tmp, f"{key}-{conns}", ids),
                },
            )
            self.drain(server)
            common.mysql_query(
                self.config, "DELETE FROM posts WHERE user_id = %s", (user_id,)
            )
            return result
        if key == "login":
            return common.wrk(
                servers["ours"],
                "/api/v1/users/login",
                "login.lua",
                conns,
                seconds,
                {
                    "BENCH_EMAIL": "login@bench.example",
                    "BENCH_PASSWORD": common.PASSWORD,
                },
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


def paired_ratios(bench, seconds, rounds):
    """Each target ratio from back-to-back pairs of runs at c=8.

    The machine is shared and its load drifts; a ratio of two runs taken
    seconds apart, alternating which goes first, is steadier than one of
    two table cells taken minutes apart. The median of the pairs is kept.
    """
    bench.drain()
    out = {}
    for ours, theirs in PAIRS.items():
        values, pairs = [], []
        for n in range(rounds):
            order = (ours, theirs) if n % 2 == 0 else (theirs, ours)
            rps = {}
            for key in order:
                rps[key] = bench.cell(key, 8, seconds)["rps"]
                bench.drain()
            values.append(rps[ours] / rps[theirs])
            pairs.append((rps[ours], rps[theirs]))
        out[f"{ours}/{theirs}"] = {
            "median": statistics.median(values),
            "rounds": values,
            "rps": pairs,
        }
        shown = [f"{a / b:.2f} ({a:.0f}/{b:.0f} req/s)" for a, b in pairs]
        print(f"{ours}/{theirs}: " + ", ".join(shown), flush=True)
    return out


def errors(f):
    return sum(f[k] for k in ERROR_KINDS)


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
    """The target ratios: paired medians at c=8, table cells, tails at most c."""
    f = report["figures"]
    most = str(connections[-1])

    def cell(key, c):
        return f.get(key, {}).get(str(c))

    out = {}
    for ours, theirs in PAIRS.items():
        out[f"{ours}/{theirs}"] = report["paired"][f"{ours}/{theirs}"]["median"]
        if cell(ours, 8) and cell(theirs, 8):
            out[f"table {ours}/{theirs}"] = (
                cell(ours, 8)["rps"] / cell(theirs, 8)["rps"]
            )
    for ours, floor in FLOORS.items():
        if cell(ours, most) and cell(floor, most):
            out[f"p99 {ours}/{floor}"] = (
                cell(ours, most)["p99_ms"] / cell(floor, most)["p99_ms"]
            )
    if cell("uncached20", most):
        out["p99/p50 uncached20"] = (
            cell("uncached20", most)["p99_ms"] / cell("uncached20", most)["p50_ms"]
        )
    if report["bcrypt_ceiling"] and "login" in f:
        best = max(f["login"][str(c)]["rps"] for c in connections)
        out["login/bcrypt ceiling"] = best / report["bcrypt_ceiling"]
        out["login/niced ceiling"] = best / report["bcrypt_ceiling_niced"]
    out["errors_at_max_connections"] = sum(
        errors(d[most]) for d in f.values() if most in d
    )
    return out


def ratio_lines(report, connections):
    """The ratios and their targets as Markdown list items."""
    r = report["ratios"]
    rounds = len(report["paired"]["cached20/reference"]["rounds"])
    most = connections[-1]
    names = {
        "cached20": "cached get-posts / read floor",
        "add_small": "add-post 200 B / write floor",
        "delete": "delete-post / delete floor",
    }
    lines = []
    for ours, floor in FLOORS.items():
        table = r.get(f"table {ours}/{floor}")
        lines.append(
            f"- {names[ours]} (c=8, median of {rounds} back-to-back pairs): "
            f"**{r[f'{ours}/{floor}']:.2f}** (target at least {TARGETS[ours]}"
            + (f"; from the table cells: {table:.2f})" if table else ")")
        )
    table = r.get("table cached100/uncached100")
    lines.append(
        f"- cached / uncached get-posts, 100 posts (c=8, median of {rounds} pairs): "
        f"**{r['cached100/uncached100']:.1f}x** (target at least 3x"
        + (f"; table: {table:.1f}x)" if table else ")")
    )
    tails = [
        f"{names[ours].split(' / ')[0]} {r[f'p99 {ours}/{floor}']:.1f}x"
        for ours, floor in FLOORS.items()
        if f"p99 {ours}/{floor}" in r
    ]
    if tails:
        lines.append(
            f"- p99 at c={most} against the floor app's p99: "
            + ", ".join(tails)
            + f" (target for cached get-posts: at most {TAIL_TARGET}x)"
        )
    if "p99/p50 uncached20" in r:
        lines.append(
            f"- uncached get-posts at c={most}: p99 **{r['p99/p50 uncached20']:.1f}x** "
            f"its p50 (target under {UNCACHED_SPREAD_TARGET}x)"
        )
    if "login/bcrypt ceiling" in r:
        lines.append(
            f"- login / bcrypt ceiling ({report['bcrypt_ceiling']:.2f} checks/s on "
            f"all cores): **{r['login/bcrypt ceiling']:.2f}** (target at least "
            f"0.80); against the ceiling at the service's nice {passwords.NICENESS} "
            f"({report['bcrypt_ceiling_niced']:.2f}/s): {r['login/niced ceiling']:.2f}"
        )
    lines.append(
        f"- errors and timeouts at c={most} (all rows): "
        f"**{r['errors_at_max_connections']}**"
    )
    if "login" in report["figures"]:
        lines.append(
            "- logins turned away with 503 because every password-hash slot was "
            "busy (not in the login req/s): "
            + ", ".join(
                f"c={c} {report['figures']['login'][str(c)].get('shed', 0)}"
                for c in connections
            )
        )
    cs = report.get("com_select")
    if cs:
        lines.append(
            f"- Com_select grew by {cs['during']} during {cs['requests']} cached "
            f"get-posts, and by {cs['idle']} over as long idle (server-wide counter)"
        )
    return lines


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
    lines.append("")
    lines += ratio_lines(report, connections)
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

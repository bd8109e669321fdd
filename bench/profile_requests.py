"""Where a request's time goes: microseconds per stage, ours against the floor.

    .venv/bin/python bench/profile_requests.py              # both methods
    .venv/bin/python bench/profile_requests.py --no-py-spy  # in-process only

Two views of the same requests, a cached get-posts and an add-post of
200 bytes, each beside its floor app (``reference_app.py``,
``write_floor.py``):

- in process: the WSGI app called in a loop, first timed plainly (the
  figure to compare), then under cProfile, whose inclusive time per stage
  (divided by the requests) says where it goes. cProfile roughly doubles
  the time of Python code and not that of waiting on a socket, so its
  stages are shares, not absolute costs. The SQL statements and Redis
  commands each request sends are counted too.
- on the server: ``py-spy record`` samples the waitress process while wrk
  drives it at 8 connections. Samples are CPU time (py-spy leaves out
  threads waiting on a socket or for the GIL), attributed to the innermost
  stage on their stack and divided by the requests served meanwhile.

Uses the benchmark's database and Redis database (``common.settings``),
which it empties first. Nothing here runs at import time.
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import run

TEXT = "x" * 200
# Each stage: a name and the (file suffix, function) pairs whose inclusive
# time it is; the pairs of one stage never call each other. Stages may nest:
# the get-posts token check holds its Redis round trip, add_post holds the
# pool checkout, the INSERT and the COMMIT.
LOG_STAGE = (
    "request log line and id",
    [
        ("postservice/requestlog.py", "_start"),
        ("postservice/requestlog.py", "_finish"),
    ],
)
TOKEN_STAGE = (
    "token: Flask-JWT-Extended, PyJWT",
    [("flask_jwt_extended/view_decorators.py", "verify_jwt_in_request")],
)
REDIS_STAGE = ("Redis round trips", [("redis/client.py", "execute_command")])
TEARDOWN_STAGE = ("session teardown", [("postservice/database.py", "release_session")])
HEADERS_STAGE = (
    "security headers",
    [("postservice/headers.py", "add_security_headers")],
)
GET_STAGES = [
    LOG_STAGE,
    TOKEN_STAGE,
    REDIS_STAGE,
    ("view: listing body, Response", [("postservice/posts/routes.py", "get_posts")]),
    HEADERS_STAGE,
    TEARDOWN_STAGE,
]
ADD_STAGES = [
    LOG_STAGE,
    TOKEN_STAGE,
    (
        "body: JSON and schema",
        [
            ("werkzeug/wrappers/request.py", "get_json"),
            ("marshmallow/schema.py", "load"),
        ],
    ),
    ("pool checkout (and ping)", [("sqlalchemy/pool/base.py", "_checkout")]),
    ("INSERT round trip", [("pymysql/cursors.py", "execute")]),
    # None on the autocommit engine (database.py); the write floor's own.
    ("COMMIT round trip", [("pymysql/connections.py", "commit")]),
    REDIS_STAGE,
    ("add_post: ORM and Core rest", [("postservice/posts/service.py", "add_post")]),
    TEARDOWN_STAGE,
    HEADERS_STAGE,
]
# py-spy frames look like "Class.name (path/file.py:line)". A sample belongs
# to the first stage found anywhere on its stack, so the order matters: the
# Redis call inside the token check is Redis, what is left of a view is
# "postservice, other".
SPY_STAGES = [
    ("Redis round trips", ("redis/connection.py", "redis/client.py", "hiredis")),
    ("pool checkout (and ping)", ("sqlalchemy/pool/",)),
    ("INSERT / DELETE round trip", ("execute (pymysql/cursors.py",)),
    ("COMMIT round trip", ("commit (pymysql/connections.py",)),
    ("other PyMySQL", ("pymysql/",)),
    ("SQLAlchemy ORM and Core", ("sqlalchemy/",)),
    ("request log line", ("postservice/requestlog.py", "logging/__init__.py")),
    ("token: Flask-JWT-Extended, PyJWT", ("flask_jwt_extended/", "jwt/")),
    ("body: JSON and schema", ("marshmallow/", "json/", "validation.py")),
    ("postservice, other", ("postservice/", "reference_app.py", "write_floor.py")),
    ("Flask, werkzeug", ("flask/", "werkzeug/")),
    ("waitress", ("waitress/",)),
]


def _environ(method, path, token=None, body=None):
    from werkzeug.test import EnvironBuilder

    headers = {"Authorization": "Bearer " + token} if token else {}
    builder = EnvironBuilder(
        method=method,
        path=path,
        headers=headers,
        data=json.dumps(body) if body is not None else None,
        content_type="application/json" if body is not None else None,
    )
    try:
        return builder.get_environ()
    finally:
        builder.close()


def call(app, environ):
    """One request through the WSGI app, as a server would make it."""
    env = dict(environ)
    data = env.get("bench.body")
    if data is not None:
        env["wsgi.input"] = io.BytesIO(data)
    statuses = []
    result = app(env, lambda status, headers, exc_info=None: statuses.append(status))
    try:
        for _ in result:
            pass
    finally:
        if hasattr(result, "close"):
            result.close()
    return statuses[0]


def _with_body(environ):
    environ["bench.body"] = environ["wsgi.input"].read()
    return environ


def timed(app, environ, count):
    """Wall and CPU microseconds per request, each the median of three loops.

    The CPU time (of this thread: the loop runs in one) leaves out the
    waits for MariaDB and Redis and what other processes take, so it
    moves far less than the wall time on a busy machine.
    """
    walls, cpus = [], []
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(count):
            call(app, environ)
        walls.append((time.perf_counter() - wall) / count * 1e6)
        cpus.append((time.thread_time() - cpu) / count * 1e6)
    return sorted(walls)[1], sorted(cpus)[1]


def profiled(app, environ, count):
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        call(app, environ)
    profiler.disable()
    return pstats.Stats(profiler)


def stage_table(stats, stages, count):
    """Microseconds per request per stage (inclusive) and the calls each made."""
    out = {}
    for name, functions in stages:
        total, calls = 0.0, 0
        for (filename, _, function), row in stats.stats.items():
            if any(
                filename.endswith(suffix) and function == wanted
                for suffix, wanted in functions
            ):
                total += row[3]
                calls += row[1]
        out[name] = (total / count * 1e6, calls / count)
    total = stats.total_tt / count * 1e6
    return total, out


def in_process(config, count):
    """Times and stage tables for both request types, ours and the floors."""
    from flask_migrate import upgrade
    from sqlalchemy import event

    import postservice
    from postservice.extensions import db

    ours = postservice.create_app(
        {
            "MODE": "production",
            "SQLALCHEMY_DATABASE_URI": common.database_url(config),
            "REDIS_URL": config["redis_url"],
            "JWT_SECRET_KEY": common.server_env(config)["JWT_SECRET_KEY"],
            "BCRYPT_ROUNDS": common.BCRYPT_ROUNDS,
            "MAIL_URL": common.server_env(config)["MAIL_URL"],
            "PUBLIC_URL": common.server_env(config)["PUBLIC_URL"],
        }
    )
    with ours.app_context():
        upgrade()
    client = ours.test_client()
    response = client.post(
        "/api/v1/users/register",
        json={"email": "profile@bench.example", "password": common.PASSWORD},
    )
    token = response.json["access_token"]
    user_id = common.user_id_of(token)
    common.insert_posts(config, user_id, [TEXT] * 20)
    get = _environ("GET", "/api/v1/posts/get-posts", token)
    add = _with_body(_environ("POST", "/api/v1/posts/add-post", token, {"text": TEXT}))
    assert call(ours, get).startswith("200"), "get-posts failed"
    body = client.get(
        "/api/v1/posts/get-posts", headers={"Authorization": "Bearer " + token}
    ).data

    run.store_reference_body(config, body)
    os.environ.update(
        REFERENCE_REDIS_URL=config["redis_url"],
        REFERENCE_KEY=run.REFERENCE_KEY,
        FLOOR_USER_ID=str(user_id),
    )
    import reference_app
    import write_floor

    read_floor = reference_app.create_app()
    insert_floor = write_floor.create_app()

    statements = []
    with ours.app_context():
        engines = list(db.engines.values())  # the autocommit one on MySQL too
    for engine in engines:
        event.listen(
            engine, "before_cursor_execute", lambda *a: statements.append(a[2])
        )

    results = {}
    for name, app, environ, stages in (
        ("get-posts cached", ours, get, GET_STAGES),
        ("read floor", read_floor, get, GET_STAGES),
        ("add-post 200 B", ours, add, ADD_STAGES),
        ("write floor", insert_floor, add, ADD_STAGES),
    ):
        for _ in range(50):
            call(app, environ)  # warm: connections, caches, memo
        statements.clear()
        plain, cpu = timed(app, environ, count)
        sql = len(statements) / (3 * count)
        total, table = stage_table(profiled(app, environ, count), stages, count)
        results[name] = {
            "us": plain,
            "cpu_us": cpu,
            "profiled_us": total,
            "stages": table,
            "sql_per_request": sql,
        }
    common.mysql_query(config, "DELETE FROM posts WHERE user_id = %s", (user_id,))
    with ours.app_context():
        db.engine.dispose()
    return results, token


def spy(config, token, seconds):
    """py-spy on each server under wrk at 8 connections: CPU us per stage."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(py_spy, os.X_OK):
        raise SystemExit("bench: py-spy is missing: .venv/bin/pip install py-spy")
    env = common.server_env(config)
    user_id = common.user_id_of(token)
    bench_env = run._bench_env(
        env,
        REFERENCE_REDIS_URL=config["redis_url"],
        REFERENCE_KEY=run.REFERENCE_KEY,
        FLOOR_USER_ID=user_id,
    )
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "add.json"
        body.write_text(json.dumps({"text": TEXT}), encoding="utf-8")
        cases = (
            (
                "get-posts cached",
                "postservice:create_app",
                env,
                "/api/v1/posts/get-posts",
                "get_posts.lua",
            ),
            (
                "read floor",
                "reference_app:create_app",
                bench_env,
                "/api/v1/posts/get-posts",
                "get_posts.lua",
            ),
            (
                "add-post 200 B",
                "postservice:create_app",
                env,
                "/api/v1/posts/add-post",
                "add_post.lua",
            ),
            (
                "write floor",
                "write_floor:create_app",
                bench_env,
                "/api/v1/posts/add-post",
                "add_post.lua",
            ),
        )
        for name, spec, server_env, path, script in cases:
            with common.waitress(spec, server_env) as (base, pid):
                wrk_env = {"BENCH_TOKEN": token, "BENCH_BODY_FILE": body}
                # Warm: every thread's database connection, the token memo.
                common.wrk(base, path, script, 8, 1, wrk_env)
                common.request("GET", base + "/", timeout=60)  # drained
                raw = Path(tmp) / f"{name}.txt"
                recorder = subprocess.Popen(
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--rate",
                        "250",
                        "--duration",
                        str(seconds),
                        "--format",
                        "raw",
                        "--nonblocking",
                        "--output",
                        str(raw),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(0.5)  # py-spy attaches
                before = server_cpu(pid)
                figures = common.wrk(base, path, script, 8, seconds - 1, wrk_env)
                after = server_cpu(pid)
                recorder.wait(timeout=seconds + 30)
                common.request("GET", base + "/", timeout=60)  # drained
            requests = figures["requests"]  # all served while py-spy recorded
            out[name] = {
                "rps": figures["rps"],
                "stages": attribute(raw, requests),
                "server": [
                    (b - a) / requests for a, b in zip(before, after, strict=True)
                ],
            }
    common.mysql_query(config, "DELETE FROM posts WHERE user_id = %s", (user_id,))
    return out


def server_cpu(pid):
    """The server's CPU seconds (user, system) and context switches so far.

    The kernel's own count for every thread, whatever it was doing: what
    throughput follows when the process is the bottleneck, GIL hand-offs
    and socket calls included, which py-spy's samples do not all show.
    """
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    switches = 0
    for thread in Path(f"/proc/{pid}/task").iterdir():
        # Waitress's threads live as long as the server: none ends meanwhile.
        for line in (thread / "status").read_text().splitlines():
            if "ctxt_switches:" in line:
                switches += int(line.split()[1])
    return int(fields[11]) / tick, int(fields[12]) / tick, switches


def attribute(raw_file, requests):
    """CPU microseconds per request per stage from py-spy's collapsed stacks."""
    samples = {}
    for line in Path(raw_file).read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            # A frame that holds a line break (a thread or function name)
            # splits its stack over lines; the part without the count is
            # not a sample.
            print(f"profile: skipped a broken stack line: {line[:120]!r}")
            continue
        frames = stack.split(";")
        stage = next(
            (
                name
                for name, marks in SPY_STAGES
                if any(mark in frame for frame in frames for mark in marks)
            ),
            "other (interpreter, threads)",
        )
        samples[stage] = samples.get(stage, 0) + int(count)
    # 250 samples a second: one sample is 4,000 us of one thread's CPU.
    return {stage: n * 4000 / requests for stage, n in samples.items()}


def print_tables(process, spied):
    for ours, floor, stages in (
        ("get-posts cached", "read floor", GET_STAGES),
        ("add-post 200 B", "write floor", ADD_STAGES),
    ):
        a, b = process[ours], process[floor]
        print(f"\nin process, {ours} against the {floor} (us per request)")
        print(f"| stage | {ours} | {floor} |")
        print("|---|---:|---:|")
        print(f"| whole request, not profiled | {a['us']:.0f} | {b['us']:.0f} |")
        print(f"| its CPU time | {a['cpu_us']:.0f} | {b['cpu_us']:.0f} |")
        print(
            f"| whole request, under cProfile | {a['profiled_us']:.0f} | "
            f"{b['profiled_us']:.0f} |"
        )
        for name, _ in stages:
            cells = []
            for side in (a, b):
                us, calls = side["stages"][name]
                cells.append(f"{us:.0f} ({calls:g} calls)" if calls else "-")
            print(f"| {name} | {cells[0]} | {cells[1]} |")
        print(f"| SQL statements per request | {a['sql_per_request']:g} | n/a |")
        if spied:
            s, t = spied[ours], spied[floor]
            print("\nunder waitress and wrk (c=8), py-spy CPU us per request")
            print(f"| stage | {ours} | {floor} |")
            print("|---|---:|---:|")
            print(f"| req/s while recorded | {s['rps']:.0f} | {t['rps']:.0f} |")
            names = [n for n, _ in SPY_STAGES] + ["other (interpreter, threads)"]
            for name in names:
                x, y = s["stages"].get(name, 0), t["stages"].get(name, 0)
                if x or y:
                    print(f"| {name} | {x:.0f} | {y:.0f} |")
            print(
                f"| all CPU | {sum(s['stages'].values()):.0f} | "
                f"{sum(t['stages'].values()):.0f} |"
            )
            for label, i, scale in (
                ("server CPU from the kernel, user", 0, 1e6),
                ("server CPU from the kernel, system", 1, 1e6),
                ("context switches (count)", 2, 1),
            ):
                x, y = s["server"][i] * scale, t["server"][i] * scale
                print(f"| {label} | {x:.0f} | {y:.0f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=6, help="per py-spy recording")
    parser.add_argument("--no-py-spy", action="store_true")
    args = parser.parse_args(argv)
    if args.seconds < 2:
        # wrk runs for a second less than the recording, to be inside it.
        parser.error("--seconds must be at least 2")
    config = common.settings()
    common.reset_database(config)
    process, token = in_process(config, args.requests)
    spied = None if args.no_py_spy else spy(config, token, args.seconds)
    print_tables(process, spied)
    print(json.dumps({"in_process": process, "py_spy": spied}), file=sys.stderr)


if __name__ == "__main__":
    main()

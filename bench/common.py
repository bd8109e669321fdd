"""What the benchmark scripts share: settings, database, servers, wrk, machine.

Run from the repository root with the project's virtual environment (see
``bench/run.sh``). Nothing here runs at import time.
"""

import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
# Where scripts write their figures; the smoke run points it at a scratch
# directory, so that its noise never replaces a measurement.
RESULTS = Path(os.environ.get("BENCH_RESULTS", BENCH / "results"))
LUA = BENCH / "lua"
PASSWORD = "bench password 1"
BCRYPT_ROUNDS = 12  # the production minimum: what login really costs
THREADS = 8  # waitress threads, for our app and the reference app alike


def settings():
    """Where the benchmark's own database and Redis database are."""
    return {
        "server_url": os.environ.get(
            "BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306"
        ),
        "database": os.environ.get("BENCH_DATABASE", "postservice_bench"),
        "redis_url": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        # The always-miss server needs a Redis of its own: in the shared one
        # it would serve the entries the normal server stored.
        "nocache_redis_url": os.environ.get(
            "BENCH_NOCACHE_REDIS_URL", "redis://127.0.0.1:6379/13"
        ),
    }


def database_url(config):
    return f"{config['server_url']}/{config['database']}"


def reset_database(config):
    """Create the bench database if needed, empty it and migrate it afresh."""
    import pymysql
    from sqlalchemy.engine import make_url

    url = make_url(config["server_url"])
    conn = pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
    )
    name = config["database"]
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise SystemExit(f"bench: unusual database name {name!r}")
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(
            f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        )
    conn.close()
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "postservice", "db", "upgrade"],
        env=server_env(config),
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    import redis

    for url in (config["redis_url"], config["nocache_redis_url"]):
        redis.Redis.from_url(url).flushdb()  # the bench's own databases only


def connect(config):
    """A PyMySQL connection to the benchmark's database."""
    import pymysql
    from sqlalchemy.engine import make_url

    url = make_url(config["server_url"])
    return pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        database=config["database"],
        charset="utf8mb4",
    )


def mysql_query(config, sql, params=None):
    conn = connect(config)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def com_select(config):
    return int(mysql_query(config, "SHOW GLOBAL STATUS LIKE 'Com_select'")[0][1])


_SECRET = secrets.token_urlsafe(48)


def server_env(config, **extra):
    env = dict(os.environ)
    env.update(
        POSTSERVICE_ENV="production",
        JWT_SECRET_KEY=_SECRET,
        BCRYPT_ROUNDS=str(BCRYPT_ROUNDS),
        DATABASE_URL=database_url(config),
        REDIS_URL=config["redis_url"],
        # The throttle would answer almost every benchmark login with 429:
        # the benchmark measures logins, not how quickly it refuses them.
        LOGIN_RATE_LIMIT="1000000/second",
        REGISTER_RATE_LIMIT="1000000/second",
        # Production requires them; the benchmark runs no mail worker, so the
        # verification mails of its accounts wait in the outbox, unsent.
        MAIL_URL="smtp://127.0.0.1:1",
        PUBLIC_URL="https://bench.example",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def waitress(app_spec, env, threads=THREADS, cwd=ROOT):
    """Serve ``app_spec`` (``module:factory``); yields (base, pid).

    The server is the service's own (``serve_app.py``), for the service and
    the floors alike. It imports ``app_spec`` from ``cwd`` first: another
    checkout there serves its own code (see ``compare.py``).
    """
    port = free_port()
    env = dict(env, HOST="127.0.0.1", PORT=str(port), WAITRESS_THREADS=str(threads))
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "serve_app.py"), app_spec],
        env=env,
        cwd=cwd,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise SystemExit(f"bench: {app_spec} exited with {process.returncode}")
            try:
                urllib.request.urlopen(base + "/", timeout=1)
            except urllib.error.HTTPError:
                break  # answering, even if with 404
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"bench: {app_spec} did not start") from None
                time.sleep(0.05)
            else:
                break
        yield base, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def request(method, url, body=None, token=None, timeout=120):
    """A small HTTP client on the standard library; returns (status, headers, body)."""
    data = None
    headers = {}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def register(base, email):
    status, _, body = request(
        "POST",
        base + "/api/v1/users/register",
        {"email": email, "password": PASSWORD},
    )
    if status != 201:
        raise SystemExit(f"bench: register {email}: {status} {body[:200]!r}")
    return json.loads(body)["access_token"]


def user_id_of(token):
    import base64

    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return int(json.loads(base64.urlsafe_b64decode(payload))["sub"])


def insert_posts(config, user_id, texts, batch=200):
    """Insert posts directly (faster than the API for thousands); returns their ids."""
    conn = connect(config)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COALESCE(MAX(id), 0) FROM posts")
            (before,) = cur.fetchone()
            for start in range(0, len(texts), batch):
                cur.executemany(
                    "INSERT INTO posts (user_id, text) VALUES (%s, %s)",
                    [(user_id, t) for t in texts[start : start + batch]],
                )
                conn.commit()
            cur.execute(
                "SELECT id FROM posts WHERE user_id = %s AND id > %s ORDER BY id",
                (user_id, before),
            )
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def wrk(base, path, script, connections, seconds, env=None):
    """Run wrk against ``base + path`` with a Lua script; returns its figures."""
    run_env = dict(os.environ)
    run_env.update({k: str(v) for k, v in (env or {}).items()})
    run_env["BENCH_LUA_DIR"] = str(LUA)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA / script),
            base + path,
        ],
        env=run_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("BENCH_JSON ")]
    if not line:
        raise SystemExit(f"bench: wrk printed no figures:\n{out}")
    return json.loads(line[-1].removeprefix("BENCH_JSON "))


def ensure_wrk():
    if shutil.which("wrk"):
        return
    print("bench: installing wrk (Debian package wrk)", flush=True)
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", "wrk"], check=True)


def rss_bytes(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def machine(config):
    """The machine and the versions the figures were measured on."""
    from importlib.metadata import version

    import redis

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    wrk_version = subprocess.run(
        ["wrk", "-v"], capture_output=True, text=True, check=False
    ).stdout.split()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
        "mariadb": mysql_query(config, "SELECT VERSION()")[0][0],
        "redis": redis.Redis.from_url(config["redis_url"]).info("server")[
            "redis_version"
        ],
        "wrk": wrk_version[1] if len(wrk_version) > 1 else "?",
        **{
            name: version(name)
            for name in ("flask", "waitress", "sqlalchemy", "pymysql", "bcrypt")
        },
        "waitress_threads": THREADS,
        "bcrypt_rounds": BCRYPT_ROUNDS,
    }

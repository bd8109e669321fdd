"""Whether a password-reset request takes as long for an unknown email as for
an account's: the SQL statements each one runs, and their times.

Runs in process (Flask's test client, no server) against MariaDB and Redis,
alternating a known and an unknown email so that drift hits both alike:

    BENCH_DATABASE_URL=mysql+pymysql://root@127.0.0.1:3306/<db> \\
    BENCH_REDIS_URL=redis://127.0.0.1:6379/<n> \\
    .venv/bin/python bench/reset_timing.py [--count 1000]

It migrates and then wipes that database and flushes that Redis database.
It prints numbers and asserts nothing: the request does the same work for
both (one INSERT into the outbox and its COMMIT); the account is looked up
later, by the worker.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import redis
from flask_migrate import upgrade
from sqlalchemy import event, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postservice import create_app
from postservice.extensions import db

RESET = "/api/v1/users/password-reset"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    database_url = os.environ["BENCH_DATABASE_URL"]
    redis_url = os.environ["BENCH_REDIS_URL"]
    redis.Redis.from_url(redis_url).flushdb()
    app = create_app(
        {
            "MODE": "testing",
            "SQLALCHEMY_DATABASE_URI": database_url,
            "REDIS_URL": redis_url,
            "JWT_SECRET_KEY": "bench-" + "k" * 60,
        }
    )
    with app.app_context():
        upgrade()
        for table in ("posts", "users", "mail_outbox"):
            db.session.execute(text(f"DELETE FROM {table}"))  # noqa: S608
        db.session.commit()
        engines = list(db.engines.values())
    client = app.test_client()
    client.post(
        "/api/v1/users/register",
        json={"email": "known@example.com", "password": "correct horse"},
    )
    statements = []

    def record(conn, cursor, statement, *rest):
        statements.append(statement.split()[0].upper())

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    samples = {"known": [], "unknown": []}
    shapes = {"known": set(), "unknown": set()}
    for n in range(args.count):
        for kind in ("known", "unknown"):
            email = (
                f"{kind}@example.com" if kind == "known" else f"nobody{n}@example.com"
            )
            statements.clear()
            start = time.perf_counter()
            response = client.post(RESET, json={"email": email})
            samples[kind].append(time.perf_counter() - start)
            assert response.status_code == 202, response.get_data(as_text=True)
            shapes[kind].add(tuple(statements))
    print(f"{args.count} requests each, alternating; {database_url.split('@')[-1]}")
    for kind in ("known", "unknown"):
        times = sorted(samples[kind])
        ms = [t * 1000 for t in times]
        print(
            f"{kind:8} median {statistics.median(ms):.3f} ms  "
            f"mean {statistics.fmean(ms):.3f} ms  "
            f"p95 {ms[int(len(ms) * 0.95)]:.3f} ms  "
            f"p99 {ms[int(len(ms) * 0.99)]:.3f} ms"
        )
        print(f"{'':8} statements: {sorted(shapes[kind])}")
    difference = statistics.median(samples["known"]) - statistics.median(
        samples["unknown"]
    )
    print(f"median known - unknown: {difference * 1e6:+.1f} us")


if __name__ == "__main__":
    main()

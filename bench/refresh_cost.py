"""What a refresh costs: SQL statements, Redis commands and refreshes a second.

Runs in process (Flask's test client, no server) against MariaDB and Redis,
so the counts are exact and the rate is the app's own, without sockets:

    BENCH_DATABASE_URL=mysql+pymysql://root@127.0.0.1:3306/<db> \\
    BENCH_REDIS_URL=redis://127.0.0.1:6379/<n> \\
    .venv/bin/python bench/refresh_cost.py [--count 500]

It migrates and then wipes that database and flushes that Redis database.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import redis
from flask_migrate import upgrade
from sqlalchemy import event, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postservice import create_app
from postservice.extensions import db


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
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
        db.session.execute(text("DELETE FROM users"))
        db.session.commit()
        engines = list(db.engines.values())
    client = app.test_client()
    pair = client.post(
        "/api/v1/users/register",
        json={"email": "bench@example.com", "password": "correct horse"},
    ).json
    statements = []

    def record(conn, cursor, statement, *rest):
        statements.append(statement.split()[0].upper())

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    # Every Redis command the process sends (the cache's and the throttle's).
    calls = []
    original = redis.Redis.execute_command

    def counting(self, *command, **options):
        calls.append(command[0])
        return original(self, *command, **options)

    redis.Redis.execute_command = counting
    token = pair["refresh_token"]
    start = time.perf_counter()
    for _ in range(args.count):
        response = client.post("/api/v1/users/refresh", json={"refresh_token": token})
        assert response.status_code == 200, response.json
        token = response.json["refresh_token"]
    elapsed = time.perf_counter() - start
    redis.Redis.execute_command = original
    for engine in engines:
        event.remove(engine, "before_cursor_execute", record)
    kinds = {}
    for statement in statements:
        kinds[statement] = kinds.get(statement, 0) + 1
    per = {k: round(v / args.count, 2) for k, v in sorted(kinds.items())}
    print(f"refreshes: {args.count} in {elapsed:.2f} s: {args.count / elapsed:.0f}/s")
    print(f"SQL statements per refresh: {len(statements) / args.count:.2f} {per}")
    names = {}
    for name in calls:
        names[name] = names.get(name, 0) + 1
    redis_per = {k: round(v / args.count, 2) for k, v in sorted(names.items())}
    print(f"Redis commands per refresh: {len(calls) / args.count:.2f} {redis_per}")


if __name__ == "__main__":
    main()

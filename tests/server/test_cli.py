"""The flask CLI database commands, the WSGI entry points and the factory."""

import os
import subprocess
import sys
from pathlib import Path

import requests
from sqlalchemy import create_engine, insert, inspect, text

from postservice import create_app
from postservice.extensions import db
from postservice.models import UpgradeTask

from ..support.auth import AuthActions
from ..support.processes import free_port, run_in_repo, server_env, wait_for_http
from ..support.settings import ROOT

BIN = Path(sys.executable).parent


def run(args, env, check=True):
    result = run_in_repo(args, env, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_db_upgrade_creates_schema_on_fresh_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    env = server_env(url, None)
    run([BIN / "flask", "--app", "postservice", "db", "upgrade"], env)
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"users", "posts", "alembic_version"} <= tables
    check = run([BIN / "flask", "--app", "postservice", "db", "check"], env)
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_db_check_is_clean_on_the_test_database(runner):
    result = runner.invoke(args=["db", "check"])
    assert result.exit_code == 0, result.output


def test_each_factory_call_builds_an_independent_app(database_url):
    first = create_app({"MODE": "testing", "SQLALCHEMY_DATABASE_URI": database_url})
    second = create_app({"MODE": "testing", "POSTS_CACHE_TTL": 5})
    assert first is not second
    assert second.config["POSTS_CACHE_TTL"] == 5
    assert first.config["POSTS_CACHE_TTL"] == 300
    assert first.config["TESTING"] is True


def test_wsgi_module_exposes_app(database_url):
    env = server_env(database_url, None)
    result = run([sys.executable, "-c", "import wsgi; print(wsgi.app.name)"], env)
    assert result.stdout.strip() == "postservice"


def test_waitress_serve_console_script_serves_the_app(database_url, redis_url):
    port = free_port()
    env = server_env(database_url, redis_url)
    process = subprocess.Popen(
        [
            BIN / "waitress-serve",
            "--host=127.0.0.1",
            f"--port={port}",
            "--call",
            "postservice:create_app",
        ],
        env=env,
        cwd=ROOT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/", process)
        response = requests.post(
            base + "/api/v1/users/register",
            json={"email": "served@example.com", "password": "password123"},
            timeout=10,
        )
        assert response.status_code == 201
        assert response.json()["token_type"] == "bearer"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_production_refuses_to_start_in_one_line(tmp_path):
    env = dict(os.environ, POSTSERVICE_ENV="production", BCRYPT_ROUNDS="12")
    env.pop("JWT_SECRET_KEY", None)
    result = run(
        [BIN / "waitress-serve", "--port=0", "--call", "postservice:create_app"],
        env,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "JWT_SECRET_KEY" in lines[0]


# A port where nothing listens: the database or Redis refuses at once.
UNREACHABLE_MYSQL = "mysql+pymysql://root@127.0.0.1:1/postservice"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
MAINTENANCE = [
    ["tokens", "purge"],
    ["posts", "purge-keys"],
    ["mail", "status"],
    ["mail", "retry"],
    ["mail", "purge-tokens"],
    ["mail", "deliver", "--once"],
    ["users", "revoke", "someone@example.com"],
]


def flask_command(args, env):
    return run([BIN / "flask", "--app", "postservice", *args], env, check=False)


def test_maintenance_commands_without_their_database_fail_in_one_line(tmp_path):
    """As wait-for-db does: the reason, not the driver's traceback."""
    for url in (UNREACHABLE_MYSQL, f"sqlite:///{tmp_path / 'never-migrated.sqlite'}"):
        for args in MAINTENANCE:
            result = flask_command(args, server_env(url, None))
            assert result.returncode == 1, (args, result.stdout)
            assert "Traceback" not in result.stderr, (args, result.stderr)
            [line] = result.stderr.strip().splitlines()
            assert line.startswith("Error: the database cannot be used: "), (args, line)


def test_import_legacy_without_redis_stops_only_a_first_start(make_app, database_url):
    """The container's start goes on while Redis is down once the logouts
    of 1.x are in the database, or when there are no accounts to protect;
    the first start of an upgraded deployment waits for Redis, as tokens
    logged out under 1.x would work again otherwise."""
    down = server_env(database_url, UNREACHABLE_REDIS)
    start = ["tokens", "import-legacy", "--skip-unreachable"]
    skipped = "Redis not answering; no logouts of 1.x left to import: "

    # No accounts yet: nothing to protect, and recorded so.
    result = flask_command(start, down)
    assert (result.returncode, result.stderr[: len(skipped)]) == (0, skipped)

    # Accounts, and the import never ran: the start waits for Redis.
    app = make_app(REDIS_URL=None)
    AuthActions(app.test_client()).register()
    with app.app_context():
        db.session.execute(text("DELETE FROM upgrade_tasks"))
        db.session.commit()
    for args in (["tokens", "import-legacy"], start):
        result = flask_command(args, down)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.strip().startswith("Error: Redis cannot be used: ")
        assert "Traceback" not in result.stderr

    # Once it has run with Redis answering, later starts go on without it.
    with app.app_context():
        db.session.execute(insert(UpgradeTask).values(name="import-legacy", done_at=1))
        db.session.commit()
    result = flask_command(start, down)
    assert (result.returncode, result.stderr[: len(skipped)]) == (0, skipped)
    assert "--skip-unreachable" in (ROOT / "docker" / "entrypoint.sh").read_text()


def test_a_mail_worker_metrics_port_it_cannot_use_is_one_line(database_url):
    env = server_env(database_url, None)
    for options, expected in (
        (["--metrics-port", "70000"], "Invalid value for '--metrics-port'"),
        (["--metrics-port", "0"], "Invalid value for '--metrics-port'"),
        (
            ["--metrics-port", "8125", "--metrics-host", "nosuchhost.invalid"],
            "Error: --metrics-host nosuchhost.invalid --metrics-port 8125 "
            "cannot be used: ",
        ),
    ):
        result = flask_command(["mail", "deliver", *options], env)
        assert result.returncode in (1, 2), result.stderr
        assert expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_wait_for_db_refuses_a_timeout_that_never_ends(database_url):
    env = server_env(database_url, None)
    for timeout in ("nan", "inf", "-1", "soon"):
        result = flask_command(["wait-for-db", "--timeout", timeout], env)
        assert result.returncode == 2, (timeout, result.stdout)
        assert "Invalid value for '--timeout'" in result.stderr

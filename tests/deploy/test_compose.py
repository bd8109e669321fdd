"""Deployment files: the compose files validate, and the container start script
waits for its database, migrates a fresh one, serves, and stops cleanly."""

import os
import re
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from postservice import serve

from ..support.processes import require_program, run_in_repo
from ..support.servers import AppInstance, MariaDBServer
from ..support.settings import ROOT

ENTRYPOINT = str(ROOT / "docker" / "entrypoint.sh")
BIN = str(Path(sys.executable).parent)


def settings_with_secrets(folder):
    """.env.example with a generated value for each secret it leaves empty."""
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not value and not name.startswith("#"):
            line = f"{name}={secrets.token_urlsafe(32)}"
        lines.append(line)
    path = folder / "generated.env"
    path.write_text("\n".join(lines) + "\n")
    return path


def compose(folder, *files):
    program = require_program("docker-compose")
    args = [program, "--env-file", str(settings_with_secrets(folder))]
    for name in files:
        args += ["-f", str(ROOT / name)]
    return args


@pytest.mark.parametrize(
    ("files", "services"),
    [
        (
            ["docker-compose.yml", "docker-compose.override.yml"],
            {"mysql", "redis", "redis-state", "app", "nginx"},
        ),
        (
            ["docker-compose.yml", "docker-compose.scale.yml"],
            {"mysql", "redis", "redis-state", "app", "nginx"},
        ),
        (
            ["docker-compose.yml", "docker-compose.redis-cluster.yml"],
            {"mysql", "redis", "redis-state", "app", "nginx", "redis-cluster-init"}
            | {f"redis-node-{n}" for n in range(1, 7)},
        ),
        (
            ["docker-compose.yml", "docker-compose.galera.yml"],
            {"mysql", "redis", "redis-state", "app", "nginx"}
            | {"galera-1", "galera-2", "galera-3"},
        ),
    ],
)
def test_compose_files_are_valid(files, services, tmp_path):
    check = subprocess.run(
        [*compose(tmp_path, *files), "config", "--services"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert set(check.stdout.split()) == services
    # nginx, the only way in, is published whichever files are named.
    full = subprocess.run(
        [*compose(tmp_path, *files), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    nginx = yaml.safe_load(full.stdout)["services"]["nginx"]
    assert nginx["ports"] == ["127.0.0.1:8000:8000/tcp"]


def test_compose_refuses_to_run_without_the_secrets(tmp_path):
    program = require_program("docker-compose")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    check = run_in_repo(
        [program, "--env-file", str(empty), "-f", "docker-compose.yml", "config"]
    )
    assert check.returncode != 0
    assert "in .env" in check.stderr


def test_example_settings_hold_no_secret():
    example = (ROOT / ".env.example").read_text()
    values = dict(
        line.split("=", 1)
        for line in example.splitlines()
        if line and not line.startswith("#")
    )
    for name in ("JWT_SECRET_KEY", "MYSQL_PASSWORD", "MYSQL_ROOT_PASSWORD"):
        assert values[name] == "", name
    assert "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'" in example


def test_compose_refuses_the_example_settings_as_they_are():
    """Every secret empty: compose stops before starting anything."""
    program = require_program("docker-compose")
    check = run_in_repo(
        [program, "--env-file", ".env.example", "-f", "docker-compose.yml", "config"]
    )
    assert check.returncode != 0
    assert "in .env" in check.stderr


def entrypoint_instance(tmp_path, database_url, redis_url):
    """docker/entrypoint.sh with the settings of the image, in production mode."""
    return AppInstance(
        tmp_path,
        database_url,
        redis_url,
        POSTSERVICE_ENV="production",
        JWT_SECRET_KEY=secrets.token_urlsafe(48),
        BCRYPT_ROUNDS="12",
        DATABASE_WAIT_TIMEOUT="60",
        PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
    )


def check_serves_and_stops(instance):
    base = instance.base
    assert requests.get(base + "/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(base + "/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "ok", "redis": "ok"}
    registered = requests.post(
        base + "/api/v1/users/register",
        json={"email": "deployed@example.com", "password": "password123"},
        timeout=30,
    )
    assert registered.status_code == 201, registered.text
    token = registered.json()["access_token"]
    added = requests.post(
        base + "/api/v1/posts/add-post",
        json={"text": "first post"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert added.status_code == 200
    assert instance.terminate() == 0
    log = instance.log_tail()
    assert "Running upgrade" in log  # the fresh database was migrated
    assert "stopped" in log


def test_entrypoint_on_fresh_sqlite(tmp_path, real_redis_url):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    instance = entrypoint_instance(tmp_path, url, real_redis_url)
    instance.start([ENTRYPOINT])
    check_serves_and_stops(instance)


def test_entrypoint_waits_for_mariadb_then_migrates_it(tmp_path, real_redis_url):
    server = MariaDBServer(tmp_path)
    instance = entrypoint_instance(tmp_path, server.url("postservice"), real_redis_url)
    # Start the container's script first, as compose would without health
    # checks: it must wait for the database rather than fail.
    starting = threading.Thread(target=instance.start, args=([ENTRYPOINT],))
    try:
        starting.start()
        time.sleep(2)
        assert instance.process.poll() is None, instance.log_tail()
        server.start()
        server.create_database("postservice")
        starting.join(timeout=90)
        check_serves_and_stops(instance)
        assert "database is answering" in instance.log_tail()
    finally:
        starting.join(timeout=90)
        instance.stop()
        server.stop()


def test_entrypoint_gives_up_when_the_database_never_answers(tmp_path):
    url = "mysql+pymysql://root@127.0.0.1:1/nothing"
    env = dict(os.environ, DATABASE_URL=url, POSTSERVICE_ENV="testing")
    env["DATABASE_WAIT_TIMEOUT"] = "1"
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    result = run_in_repo([ENTRYPOINT], env)
    assert result.returncode == 1
    assert "database not answering after 1 s" in result.stderr


def test_replicas_migrating_at_once_take_turns(tmp_path):
    """Three start scripts upgrading one fresh MariaDB database together."""
    server = MariaDBServer(tmp_path)
    server.start()
    try:
        for attempt in range(3):
            name = f"together{attempt}"
            server.create_database(name)
            env = dict(os.environ, DATABASE_URL=server.url(name))
            env["POSTSERVICE_ENV"] = "testing"
            upgrades = [
                subprocess.Popen(
                    [
                        os.path.join(BIN, "flask"),
                        "--app",
                        "postservice",
                        "db",
                        "upgrade",
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for _ in range(3)
            ]
            outputs = [p.communicate(timeout=120)[0] for p in upgrades]
            assert [p.returncode for p in upgrades] == [0, 0, 0], outputs
            assert sum("Running upgrade" in out for out in outputs) == 1, outputs
    finally:
        server.stop()


def test_nginx_closes_idle_app_connections_before_the_app_does():
    """A kept-alive connection closed by the app as nginx sends a POST on it
    is a 502 (nginx sends a POST only once): nginx must let go first."""
    conf = (ROOT / "nginx.conf").read_text()
    upstream = re.search(r"upstream postservice \{(.*?)\}", conf, re.S).group(1)
    assert re.search(r"^\s*keepalive \d+;", upstream, re.M)  # connections reused
    nginx_idle = int(re.search(r"keepalive_timeout (\d+)s;", upstream).group(1))
    assert nginx_idle < serve.CHANNEL_TIMEOUT

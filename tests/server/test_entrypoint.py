"""The image's start script, docker/entrypoint.sh: it waits for its database,
migrates a fresh one, serves with the production server and stops cleanly."""

import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from ..support.processes import run_in_repo
from ..support.servers import AppInstance, MariaDBServer
from ..support.settings import ROOT

ENTRYPOINT = str(ROOT / "docker" / "entrypoint.sh")
BIN = str(Path(sys.executable).parent)


def entrypoint_instance(tmp_path, database_url, redis_url):
    """docker/entrypoint.sh with the settings of the image, in production mode."""
    return AppInstance(
        tmp_path,
        database_url,
        redis_url,
        POSTSERVICE_ENV="production",
        JWT_SECRET_KEY=secrets.token_urlsafe(48),
        BCRYPT_ROUNDS="12",
        # Production needs both; nothing is mailed here, so no server listens.
        MAIL_URL="smtp://127.0.0.1:9",
        PUBLIC_URL="https://posts.example.test",
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

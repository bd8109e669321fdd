"""Deployment files: the compose files validate, refuse to run without their
secrets, and nginx lets go of idle app connections first.

The container's start script against real servers: tests/server/test_entrypoint.py.
"""

import re
import secrets
import subprocess

import pytest
import yaml

import config

from ..support.processes import require_program, run_in_repo
from ..support.settings import ROOT


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
            {"mysql", "redis", "redis-state", "app", "nginx", "worker", "mailcatcher"},
        ),
        (
            ["docker-compose.yml", "docker-compose.scale.yml"],
            {"mysql", "redis", "redis-state", "app", "nginx", "worker", "mailcatcher"},
        ),
        (
            ["docker-compose.yml", "docker-compose.redis-cluster.yml"],
            {"mysql", "redis", "redis-state", "app", "nginx", "redis-cluster-init"}
            | {"worker", "mailcatcher"}
            | {f"redis-node-{n}" for n in range(1, 7)},
        ),
        (
            ["docker-compose.yml", "docker-compose.galera.yml"],
            {"mysql", "redis", "redis-state", "app", "nginx", "worker", "mailcatcher"}
            | {"galera-1", "galera-2", "galera-3", "galera-proxy"},
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
    services = yaml.safe_load(full.stdout)["services"]
    assert services["nginx"]["ports"] == ["127.0.0.1:8000:8000/tcp"]
    # The metrics listen on the compose network, for Prometheus there
    # (METRICS_HOST is 127.0.0.1 by default, unreachable from another
    # container), and are published nowhere.
    app = services["app"]
    settings = config.server_settings(app["environment"])
    assert settings.metrics_port == 9100
    assert settings.metrics_host == "0.0.0.0"  # noqa: S104 (inside the container)
    assert str(settings.metrics_port) in app["expose"]
    # Production mode takes the app's settings: a mail server and the links' base.
    config.settings_for(app["environment"], str(tmp_path))
    # The worker sends the outbox; it and the mail catcher publish nothing.
    worker = services["worker"]
    assert worker["entrypoint"][-2:] == ["mail", "deliver"]
    assert worker["environment"]["MAIL_URL"] == app["environment"]["MAIL_URL"]
    assert worker["environment"]["DATABASE_URL"] == app["environment"]["DATABASE_URL"]
    published = [
        port for service in services.values() for port in service.get("ports", [])
    ]
    assert not any(str(settings.metrics_port) in str(port) for port in published)


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


def test_nginx_closes_idle_app_connections_before_the_app_does():
    """A kept-alive connection closed by the app as nginx sends a POST on it
    is a 502 (nginx sends a POST only once): nginx must let go first."""
    conf = (ROOT / "nginx.conf").read_text()
    upstream = re.search(r"upstream postservice \{(.*?)\}", conf, re.S).group(1)
    assert re.search(r"^\s*keepalive \d+;", upstream, re.M)  # connections reused
    nginx_idle = int(re.search(r"keepalive_timeout (\d+)s;", upstream).group(1))
    assert nginx_idle < config.DEFAULT_CHANNEL_TIMEOUT


def test_the_galera_proxy_settings_are_valid():
    """docker/haproxy-galera.cfg as HAProxy reads it; the node names resolve
    only on the compose network, and the proxy starts without them."""
    program = require_program("haproxy")
    check = run_in_repo([program, "-c", "-f", "docker/haproxy-galera.cfg"])
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Configuration file is valid" in check.stdout + check.stderr


def test_the_app_reaches_galera_through_the_proxy(tmp_path):
    files = ["docker-compose.yml", "docker-compose.galera.yml"]
    full = subprocess.run(
        [*compose(tmp_path, *files), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    services = yaml.safe_load(full.stdout)["services"]
    assert "@galera-proxy:3306/" in services["app"]["environment"]["DATABASE_URL"]
    depends = services["galera-proxy"]["depends_on"]
    assert set(depends) == {"galera-1", "galera-2", "galera-3"}
    assert {d["condition"] for d in depends.values()} == {"service_healthy"}

"""Compose stacks that a test owns: one project each, always taken down.

Skipped without an engine (``docker version`` must answer, e.g. through
``DOCKER_HOST``) and a failure under ``CI=true``. The official images are
swapped for the local stand-ins of ``docker/ci/build-bases.sh``, which the
session builds when they are missing. Every stack gets its own compose
project and secrets, and talks to the tests only through the port nginx
publishes on 127.0.0.1; ``down -v`` removes it whatever happens.
"""

import email
import json
import os
import secrets
import shutil
import time
import uuid
from email import policy

import pytest
import requests

from .processes import free_port, run_in_repo
from .settings import IN_CI, ROOT

# Debian's docker.io: the client that builds with BuildKit without plugins.
DOCKER = "/usr/bin/docker"
PASSWORD = "container password"
SINGLE = ("docker-compose.yml", "docker-compose.override.yml")
SCALED = ("docker-compose.yml", "docker-compose.scale.yml")
GALERA = ("docker-compose.yml", "docker-compose.galera.yml")


def unavailable(why):
    if IN_CI:
        pytest.fail(why)
    pytest.skip(why)


def run(args, env, timeout=600, check=True):
    result = run_in_repo(args, env, timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited with {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def engine_env():
    """The environment for docker and docker-compose, with the stand-ins built."""
    compose = shutil.which("docker-compose")
    if not compose or not shutil.which(DOCKER):
        unavailable("needs docker.io and docker-compose (Debian packages)")

    env = dict(os.environ)
    # Compose builds through the docker CLI, which must be the BuildKit one.
    env["PATH"] = "/usr/bin:" + env.get("PATH", "")
    env["DOCKER_BUILDKIT"] = "1"
    env["COMPOSE_DOCKER_CLI_BUILD"] = "1"
    if run([DOCKER, "version"], env, timeout=30, check=False).returncode != 0:
        unavailable("no Docker engine answers (start one: docker/ci/dockerd.sh start)")
    run([str(ROOT / "docker" / "ci" / "build-bases.sh")], env, timeout=1800)
    images = run([str(ROOT / "docker" / "ci" / "build-bases.sh"), "--print"], env)
    env["POSTSERVICE_TEST_IMAGES"] = images.stdout
    return env


def secret():
    return secrets.token_urlsafe(32)


class Stack:
    """One compose project from ``files``, published on a spare local port."""

    def __init__(self, engine, tmp_path, files, **settings):
        self.engine = engine
        self.project = "pstest" + uuid.uuid4().hex[:10]
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env_file = tmp_path / f"{self.project}.env"
        values = {
            "JWT_SECRET_KEY": secret(),
            "MYSQL_PASSWORD": secret(),
            "MYSQL_ROOT_PASSWORD": secret(),
            "APP_BIND": "127.0.0.1",
            "APP_PORT": str(self.port),
            # The stack's own mail catcher, as .env.example sets it.
            "MAIL_URL": "smtp://mailcatcher:1025?starttls=off",
            "PUBLIC_URL": self.base,
            **settings,
        }
        lines = [f"{name}={value}" for name, value in values.items()]
        lines += engine["POSTSERVICE_TEST_IMAGES"].split()
        self.env_file.write_text("\n".join(lines) + "\n")
        self.files = files

    def command(self):
        args = ["docker-compose", "--project-name", self.project]
        args += ["--env-file", str(self.env_file)]
        for name in self.files:
            args += ["--file", str(ROOT / name)]
        return args

    def compose(self, *args, timeout=600, check=True):
        return run([*self.command(), *args], self.engine, timeout, check)

    def down(self):
        self.compose("down", "--volumes", "--timeout", "1", check=False)

    def containers(self, service):
        ids = self.compose("ps", "--quiet", service).stdout.split()
        assert ids, f"no {service} container"
        return ids

    def docker(self, *args, timeout=120, check=True):
        return run([DOCKER, *args], self.engine, timeout, check)

    def ps(self, *args, check=True):
        """``docker ps`` of this project's containers (without compose: fast)."""
        label = f"label=com.docker.compose.project={self.project}"
        return self.docker("ps", "--filter", label, *args, check=check)

    def health(self, container):
        """The container's health: starting, healthy, unhealthy (or empty)."""
        return self.docker(
            "inspect", "--format", "{{.State.Health.Status}}", container
        ).stdout.strip()

    def wait_ready(self, timeout=180):
        """Until /readyz answers 200 through nginx."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = requests.get(self.base + "/readyz", timeout=5)
                if last.status_code == 200:
                    return last.json()
            except requests.ConnectionError as exc:
                last = exc
            time.sleep(0.5)
        logs = self.compose("logs", "--no-color", "--tail", "40", check=False)
        raise AssertionError(f"not ready after {timeout} s: {last}\n{logs.stdout}")

    def wait_status(self, path, status, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base + path, timeout=5).status_code == status:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{path} never answered {status} in {timeout} s")

    def register(self, email):
        answer = requests.post(
            self.base + "/api/v1/users/register",
            json={"email": email, "password": PASSWORD},
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
        return {"Authorization": "Bearer " + answer.json()["access_token"]}

    def mails(self):
        """Every mail the stack's mail catcher kept, parsed, oldest first."""
        folder = "/app/instance/mail"
        names = self.compose(
            "exec", "-T", "mailcatcher", "ls", folder, check=False
        ).stdout.split()
        names.sort(key=lambda name: int(name.split(".")[0]))
        return [
            email.message_from_bytes(
                self.compose(
                    "exec", "-T", "mailcatcher", "cat", f"{folder}/{name}"
                ).stdout.encode(),
                policy=policy.default,
            )
            for name in names
        ]


def published(stack):
    """{container name: its published ports} for every container of the stack."""
    names = stack.ps("--format", "{{.Names}}").stdout.split()
    ports = {}
    for name in names:
        raw = stack.docker(
            "inspect", "--format", "{{json .NetworkSettings.Ports}}", name
        )
        bindings = json.loads(raw.stdout) or {}
        ports[name] = {
            (port, binding["HostIp"])
            for port, hosts in bindings.items()
            for binding in hosts or []
        }
    return ports


def started(engine, folder, files):
    """A stack up and ready, for a fixture to yield; taken down afterwards."""
    stack = Stack(engine, folder, files)
    try:
        stack.compose("up", "--detach", "--build", timeout=1200)
        stack.wait_ready()
        yield stack
    finally:
        stack.down()

"""Programs the tests run: from the repository root, on free ports, with the
settings of the test session."""

import os
import shutil
import socket
import subprocess
import time

import pytest
import requests

from .settings import IN_CI, JWT_SECRET, ROOT

# Servers such as mariadbd are installed in sbin, often not on a user's PATH.
SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"]
)


def require_program(program, why=None):
    """The path of ``program``, a name or a path; skipped locally when it is
    missing, a failure in CI. ``why`` says what the test needs it for."""
    path = shutil.which(program, path=SEARCH_PATH)
    if path:
        return path
    if why is None:
        message = f"{program} is not installed (Debian: mariadb-server, redis-server)"
        local = ci = message
    else:
        local = f"install {program} to run this: {why}"
        ci = f"{program} must be installed in CI: {why}"
    if IN_CI:
        pytest.fail(ci)
    pytest.skip(local)
    return None


def run_in_repo(args, env=None, timeout=60):
    """Run a command from the repository root; returns it finished, never raises."""
    return subprocess.run(
        args,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url, process, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not start")


def server_env(database_url, redis_url, **extra):
    """The environment of a server process on the test database and Redis."""
    env = dict(os.environ)
    for name in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET_KEY"):
        env.pop(name, None)
    env.update(
        POSTSERVICE_ENV="testing",
        DATABASE_URL=database_url,
        JWT_SECRET_KEY=JWT_SECRET,
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env

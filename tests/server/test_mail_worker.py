"""The mail worker as a process (``flask mail deliver``), and the development
server delivering mail itself when no ``MAIL_URL`` is set."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from ..support.processes import server_env
from ..support.settings import ROOT

BIN = Path(sys.executable).parent
TOKEN = r"[A-Za-z0-9_-]{43}"


def register(base, email):
    response = requests.post(
        base + "/api/v1/users/register",
        json={"email": email, "password": "password123"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response


def test_the_worker_sends_and_stops_on_sigterm(
    start_server, database_url, redis_url, smtp, tmp_path
):
    base = start_server(MAIL_URL=smtp.url)
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [BIN / "flask", "--app", "postservice", "mail", "deliver"],
            env=server_env(database_url, redis_url, MAIL_URL=smtp.url),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        register(base, "worker@example.com")
        [mail] = smtp.inbox.wait_for(1)
        assert mail["To"] == "worker@example.com"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    text = log.read_text()
    assert "stopped" in text, text
    assert "token=" not in text


def test_the_development_server_prints_mail_without_mail_url(start_server, tmp_path):
    base = start_server(MAIL_URL="")
    register(base, "console@example.com")
    [log] = tmp_path.glob("app-*.log")
    # Its links open the server itself, on the port it was started on.
    link = re.compile(re.escape(base) + r"/verify-email\?token=" + TOKEN)
    deadline = time.monotonic() + 30
    while not link.search(log.read_text()):
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)
    line = next(line for line in log.read_text().splitlines() if link.search(line))
    assert "to console@example.com" in line
    assert "Confirm your email address" in line

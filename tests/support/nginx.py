"""An nginx in front of app instances, as ``nginx.conf`` proxies to replicas.

Debian's ``nginx`` package, started on a spare port with a configuration of
its own in the test's directory: the upstream settings of ``nginx.conf``
that matter to a replica stopping (kept-alive upstream connections over
HTTP/1.1, the next replica tried on an error, a POST only when it was
never sent), none of its error pages.
"""

import contextlib
import getpass
import os
import signal
import subprocess
from pathlib import Path

import requests

from .processes import require_program
from .servers import _tail, _wait, freeze, spare_port

CONFIG = """\
daemon off;
worker_processes {workers};
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
{user}
events {{
    worker_connections 1024;
}}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;

    upstream postservice {{
{servers}
        keepalive 32;
        keepalive_timeout 20s;
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://postservice;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
            proxy_next_upstream error timeout http_502 http_503;
        }}
    }}
}}
"""


class _Worker:
    """An nginx worker process, as ``freeze`` takes a process."""

    def __init__(self, pid):
        self.pid = pid

    def send_signal(self, signum):
        os.kill(self.pid, signum)


class NginxServer:
    """nginx on a spare port of 127.0.0.1, proxying to ``upstream_ports``
    with ``workers`` worker processes."""

    def __init__(self, workdir, upstream_ports, workers=2):
        self.program = require_program(
            "nginx",
            "it checks that a replica stopping behind nginx fails no request "
            "(Debian: nginx)",
        )
        self.directory = workdir / "nginx"
        self.port = spare_port()
        self.upstream_ports = upstream_ports
        self.workers = workers
        self.process = None

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self):
        return self.directory / "error.log"

    def _config(self):
        servers = "\n".join(
            f"        server 127.0.0.1:{port} max_fails=3 fail_timeout=5s;"
            for port in self.upstream_ports
        )
        # The workers of a master started as root run as "nobody" unless
        # told, and could not write in the test's directory.
        user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
        return CONFIG.format(
            directory=self.directory,
            user=user,
            servers=servers,
            port=self.port,
            workers=self.workers,
        )

    def _answers(self):
        try:
            return requests.get(self.base + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def start(self):
        self.directory.mkdir(exist_ok=True)
        config = self.directory / "nginx.conf"
        config.write_text(self._config())
        with open(self.directory / "stderr.log", "ab") as log:
            command = [
                self.program,
                "-p", str(self.directory),
                "-e", str(self.error_log),
                "-c", str(config),
            ]  # fmt: skip
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait(self._answers, self.process, self.error_log, "nginx", 20)
        return self.base

    def worker_pids(self):
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(child) for child in children.split()]

    @contextlib.contextmanager
    def frozen(self):
        """Every worker stopped (SIGSTOP) inside, continued on leaving:
        what reaches nginx meanwhile waits for it in the kernel."""
        workers = [_Worker(pid) for pid in self.worker_pids()]
        try:
            for worker in workers:
                freeze(worker)
            yield
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGCONT)

    def errors(self):
        """The errors nginx logged about its upstreams (not its warnings,
        such as an upstream being left alone for a while)."""
        return [
            line
            for line in _tail(self.error_log, 10_000).splitlines()
            if "[error]" in line and "upstream" in line
        ]

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

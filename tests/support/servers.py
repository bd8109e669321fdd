"""Servers that a test owns and may kill: redis-server, mariadbd and app instances.

An app instance is the production server, ``python -m postservice.serve``
(``SERVE``), started by ``AppInstance`` alone: the ``start_server`` fixture
and every test that needs the app behind a real socket go through it.

Each listens on its own spare port on 127.0.0.1 and keeps its files in the
test's temporary directory, so killing one never touches the shared servers.
A killed Redis or MariaDB is restarted on the same port (and for MariaDB the
same data directory), as an operator's supervisor would. A TLS redis-server
gets a CA and certificates made by ``openssl`` for it alone.
"""

import contextlib
import getpass
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql
import redis
from flask_migrate import upgrade

from postservice import create_app
from postservice.extensions import db

from .processes import require_program, run_in_repo, server_env, wait_for_http
from .settings import ROOT

# The production entry point, as the README and the image run it.
SERVE = (sys.executable, "-m", "postservice.serve")


def _bindable(port):
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def spare_port(offset=None):
    """A free port whose ``port + offset`` is free as well (a cluster bus).

    Below the kernel's range of ephemeral ports: a node killed and started
    again on its port must not find it taken meanwhile by the local end of
    some client's connection.
    """
    highest = _ephemeral_low() - 1 - (offset or 0)
    for _ in range(1000):
        port = random.randint(min(10000, highest), highest)
        if _bindable(port) and (offset is None or _bindable(port + offset)):
            return port
    raise RuntimeError("no spare port")


def freeze(process, timeout=10):
    """SIGSTOP ``process`` and wait until every one of its threads has stopped.

    ``kill`` returns before the stop has reached all threads: one woken by
    a request meanwhile can still answer it.
    """
    process.send_signal(signal.SIGSTOP)
    tasks = Path(f"/proc/{process.pid}/task")
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for task in tasks.iterdir():
            try:
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue  # a thread that ended meanwhile
        if all(state in ("T", "t") for state in states):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {process.pid} did not stop: {states}")
        time.sleep(0.005)


def _tail(path, lines=30):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except FileNotFoundError:
        return ""


def _wait(check, process, log, what, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            status = process.returncode
            raise RuntimeError(f"{what} exited with {status}:\n{_tail(log)}")
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start in {timeout} s:\n{_tail(log)}")


class RedisServer:
    """A redis-server without persistence: a restart starts it empty.

    ``options`` are more command-line settings, e.g. ``"--maxmemory", "2mb"``.
    """

    def __init__(self, workdir, *options):
        self.program = require_program("redis-server")
        self.options = list(options)
        self.workdir = workdir
        self.port = spare_port()
        self.log = workdir / "redis.log"
        self.process = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def listening(self):
        """The command-line settings that say how clients reach it."""
        return ["--port", str(self.port)]

    def client(self, **kwargs):
        return redis.Redis(port=self.port, socket_timeout=0.5, **kwargs)

    def _answers(self):
        try:
            return self.client().ping()
        except redis.RedisError:
            return False

    def start(self):
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    self.program,
                    *self.listening(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                    *self.options,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait(self._answers, self.process, self.log, "redis-server", 20)

    def kill(self):
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.kill()


@dataclass(frozen=True)
class Certificates:
    """PEM files of a throwaway CA and of what it signed, for a TLS Redis."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args):
    result = run_in_repo([require_program("openssl"), *args])
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed:\n{result.stderr}")


def certificate_authority(directory, name):
    """A self-signed CA: returns the paths of its certificate and key."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
        "-subj", f"/CN=postservice test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _signed(directory, name, ca, extensions):
    """A key and a certificate for ``name`` signed by ``ca`` (cert, key)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    request, extfile = directory / f"{name}.csr", directory / f"{name}.ext"
    extfile.write_text(
        "\n".join(
            [
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,digitalSignature,keyEncipherment",
                "subjectKeyIdentifier=hash",
                "authorityKeyIdentifier=keyid",
                *extensions,
            ]
        )
        + "\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(request),
        "-subj", f"/CN=postservice test {name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-out", str(cert), "-days", "2",
        "-extfile", str(extfile),
    )  # fmt: skip
    return cert, key


def issue_certificates(directory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    ca = certificate_authority(directory, "ca")
    server = _signed(
        directory,
        "server",
        ca,
        ["subjectAltName=IP:127.0.0.1", "extendedKeyUsage=serverAuth"],
    )
    client = _signed(directory, "client", ca, ["extendedKeyUsage=clientAuth"])
    return Certificates(ca[0], *server, *client)


class TLSRedisServer(RedisServer):
    """A redis-server that speaks only TLS and admits only clients with a
    certificate its CA signed."""

    def __init__(self, workdir, certificates):
        super().__init__(workdir)
        self.certificates = certificates

    @property
    def url(self):
        return f"rediss://127.0.0.1:{self.port}/0"

    def listening(self):
        files = self.certificates
        return [
            "--port", "0", "--tls-port", str(self.port),
            "--tls-cert-file", str(files.server_cert),
            "--tls-key-file", str(files.server_key),
            "--tls-ca-cert-file", str(files.ca),
            "--tls-auth-clients", "yes",
        ]  # fmt: skip

    def client(self, **kwargs):
        files = self.certificates
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=0.5,
            ssl=True,
            ssl_ca_certs=str(files.ca),
            ssl_certfile=str(files.client_cert),
            ssl_keyfile=str(files.client_key),
            **kwargs,
        )


def install_datadir(install, datadir, user):
    """A fresh MariaDB data directory, root without a password."""
    result = run_in_repo(
        [
            install,
            "--no-defaults",
            f"--datadir={datadir}",
            f"--user={user}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def create_database(connection, name):
    """``name`` in utf8mb4 through ``connection``, which is then closed."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE DATABASE IF NOT EXISTS `{name}` "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
    finally:
        connection.close()


def connect_root(port, database=None, **options):
    """An autocommit connection as root to the MariaDB on ``port``."""
    return pymysql.connect(
        host="127.0.0.1",
        port=port,
        user="root",
        database=database,
        connect_timeout=2,
        autocommit=True,
        **options,
    )


def migrated_database(server, name):
    """The URL of database ``name`` on ``server``, created and migrated."""
    server.create_database(name)
    url = server.url(name)
    app = create_app({"MODE": "testing", "SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return url


class MariaDBServer:
    """A mariadbd with its own data directory; root without a password."""

    def __init__(self, workdir):
        self.program = require_program("mariadbd")
        self.install = require_program("mariadb-install-db")
        self.datadir = workdir / "mariadb"
        self.socket = workdir / "mariadb.sock"
        self.log = workdir / "mariadb.log"
        self.port = spare_port()
        self.process = None
        self.user = getpass.getuser()

    def url(self, database):
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}"

    def initialise(self):
        install_datadir(self.install, self.datadir, self.user)

    def connect(self, database=None):
        return connect_root(self.port, database)

    def _answers(self):
        try:
            self.connect().close()
            return True
        except pymysql.MySQLError:
            return False

    def start(self):
        """Start (or restart, after a kill: crash recovery) on the same port."""
        if not self.datadir.exists():
            self.initialise()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    self.program,
                    "--no-defaults",
                    f"--datadir={self.datadir}",
                    f"--socket={self.socket}",
                    f"--pid-file={self.datadir / 'mariadbd.pid'}",
                    f"--port={self.port}",
                    "--bind-address=127.0.0.1",
                    f"--user={self.user}",
                    "--character-set-server=utf8mb4",
                    "--collation-server=utf8mb4_unicode_ci",
                    "--innodb-buffer-pool-size=64M",
                    "--max-connections=300",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait(self._answers, self.process, self.log, "mariadbd", 90)

    def create_database(self, name):
        create_database(self.connect(), name)

    def kill(self):
        self.process.kill()  # SIGKILL: no shutdown, InnoDB recovers on start
        self.process.wait(timeout=10)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


class AppInstance:
    """``python -m postservice.serve`` on a spare port, its log in ``workdir``.

    ``env`` adds to or overrides the test session's settings (``server_env``);
    ``open_files`` sets the process's limit of file descriptors, as
    ``ulimit -n`` would (soft and hard).
    ``start`` takes another command only for a script that runs the same
    entry point in the end, such as the image's ``docker/entrypoint.sh``.
    """

    def __init__(
        self, workdir, database_url, redis_url, threads=8, open_files=None, **env
    ):
        self.port = spare_port()
        self.open_files = open_files
        self.log = workdir / f"app-{self.port}.log"
        self.env = server_env(
            database_url,
            redis_url,
            **{
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "WAITRESS_THREADS": str(threads),
                **env,
            },
        )
        self.process = None

    @property
    def base(self):
        return f"http://{self.env['HOST']}:{self.port}"

    def start(self, command=None):
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                list(command or SERVE),
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=None if self.open_files is None else self._limits,
            )
        try:
            wait_for_http(self.base + "/healthz", self.process, timeout=60)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{_tail(self.log)}") from None
        return self.base

    def _limits(self):
        """In the child, before the server starts: ``open_files``."""
        limit = (self.open_files, self.open_files)
        resource.setrlimit(resource.RLIMIT_NOFILE, limit)

    def terminate(self, timeout=30):
        """SIGTERM and wait; returns the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self):
        return _tail(self.log)


@contextlib.contextmanager
def serving(server):
    """A ``GracefulServer``'s main loop in a thread, stopped and joined on leaving."""
    loop = threading.Thread(target=server.run, args=(5,), daemon=True)
    loop.start()
    try:
        yield
    finally:
        server.request_stop()
        loop.join(10)
    assert not loop.is_alive()

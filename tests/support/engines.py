"""Multi-server topologies a test owns: Redis Cluster, Redis Sentinel, Galera.

Each runs as local processes on spare ports of 127.0.0.1, with its files in
a directory of its own, and can have single servers killed (SIGKILL),
frozen (SIGSTOP) and restarted. The fixtures at the end are module-scoped:
a topology takes seconds to form, so the tests of one module share it.
"""

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql
import pytest
import redis

from .processes import require_program, run_in_repo
from .servers import (
    RedisServer,
    _tail,
    _wait,
    connect_root,
    create_database,
    freeze,
    install_datadir,
    spare_port,
)
from .settings import IN_CI

GALERA_PROVIDER = "/usr/lib/galera/libgalera_smm.so"
SENTINEL_SERVICE = "postservice"


def _until(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not reached in {timeout} s")


class Process:
    """One server process that can be killed, frozen, thawed and restarted."""

    def __init__(self, name, command, log):
        self.name = name
        self.command = command
        self.log = log
        self.process = None

    def start(self):
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def kill(self):
        if self.running:
            self.process.send_signal(signal.SIGCONT)  # a frozen one dies too
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=30)

    def freeze(self):
        freeze(self.process)

    def thaw(self):
        self.process.send_signal(signal.SIGCONT)


class RedisNode(RedisServer):
    """A redis-server on a chosen port that can also be frozen and thawed."""

    def __init__(self, directory, port, *options):
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(directory, *options)
        self.port = port

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def client(self, **kwargs):
        return redis.Redis(port=self.port, socket_timeout=1, **kwargs)

    def kill(self):
        if self.running:
            self.process.send_signal(signal.SIGCONT)  # a frozen one dies too
            super().kill()

    def freeze(self):
        freeze(self.process)

    def thaw(self):
        self.process.send_signal(signal.SIGCONT)


class RedisCluster:
    """Three masters with a replica each; a replica takes over a dead master
    after ``NODE_TIMEOUT_MS``."""

    NODE_TIMEOUT_MS = 1000

    def __init__(self, workdir, masters=3):
        self.redis_cli = require_program("redis-cli")
        self.nodes = [
            RedisNode(
                workdir / f"cluster-{n}",
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(self.NODE_TIMEOUT_MS),
                # Any replica may take over, however long its master was away.
                "--cluster-replica-validity-factor",
                "0",
            )
            for n, port in enumerate(spare_port(10000) for _ in range(masters * 2))
        ]

    @property
    def url(self):
        seeds = ",".join(node.address for node in self.nodes)
        return f"redis+cluster://{seeds}"

    def start(self):
        for node in self.nodes:
            node.start()
        created = run_in_repo(
            [
                self.redis_cli,
                "--cluster",
                "create",
                *(node.address for node in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
        )
        assert created.returncode == 0, created.stdout + created.stderr
        self.wait_until_healthy()

    def info(self, node):
        return node.client().cluster("INFO")

    def roles(self):
        """``{node: "master" | "slave"}`` for the running, unfrozen nodes."""
        roles = {}
        for node in self.nodes:
            with contextlib.suppress(redis.RedisError):
                roles[node] = node.client().role()[0].decode()
        return roles

    def masters(self):
        return [node for node, role in self.roles().items() if role == "master"]

    def master_of(self, key):
        """The node that serves ``key`` now, as the slot map of a master says."""
        client = self.masters()[0].client()
        slot = client.cluster("KEYSLOT", key)
        for first, last, master, *_ in client.cluster("SLOTS"):
            if first <= slot <= last:
                return next(n for n in self.nodes if n.port == int(master[1]))
        raise RuntimeError(f"no master serves {key!r}")

    def wait_until_healthy(self, timeout=30):
        """Every running node says ``cluster_state:ok`` and every master has a
        replica in sync."""

        def healthy():
            running = [n for n in self.nodes if n.running]
            if not all(self.info(n)["cluster_state"] == "ok" for n in running):
                return False
            replicas = [r for r in self.roles().values() if r == "slave"]
            synced = [
                n
                for n in running
                if n.client().info("replication").get("master_link_status") == "up"
            ]
            return len(replicas) == len(synced) and len(synced) >= len(running) // 2

        _until(healthy, timeout, "a healthy cluster")

    def stop(self):
        for node in self.nodes:
            node.kill()


class RedisSentinel:
    """A master, one replica and three sentinels agreeing (2 of 3) on failover."""

    DOWN_AFTER_MS = 1000

    def __init__(self, workdir):
        self.workdir = workdir
        master_port, replica_port = spare_port(), spare_port()
        self.master = RedisNode(workdir / "master", master_port)
        self.replica = RedisNode(
            workdir / "replica",
            replica_port,
            "--replicaof",
            "127.0.0.1",
            str(master_port),
        )
        self.sentinels = []
        for n in range(3):
            directory = workdir / f"sentinel-{n}"
            directory.mkdir(parents=True)
            port = spare_port()
            conf = directory / "sentinel.conf"  # sentinels rewrite their file
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} "
                f"{self.DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SENTINEL_SERVICE} 3000\n"
            )
            sentinel = Process(
                f"sentinel:{port}",
                [require_program("redis-server"), str(conf), "--sentinel"],
                directory / "sentinel.log",
            )
            sentinel.port = port
            self.sentinels.append(sentinel)

    @property
    def url(self):
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}"

    def sentinel_client(self, sentinel):
        return redis.Redis(port=sentinel.port, socket_timeout=1)

    def current_master(self):
        """The port every running sentinel names as master, or None if they differ."""
        named = {
            int(
                self.sentinel_client(s).execute_command(
                    "SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE
                )[1]
            )
            for s in self.sentinels
            if s.running
        }
        return named.pop() if len(named) == 1 else None

    def node(self, port):
        return next(n for n in (self.master, self.replica) if n.port == port)

    def start(self):
        self.master.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()

        def ready():
            client = self.sentinel_client(self.sentinels[0])
            replicas = client.execute_command("SENTINEL", "replicas", SENTINEL_SERVICE)
            others = client.execute_command("SENTINEL", "sentinels", SENTINEL_SERVICE)
            return self.current_master() == self.master.port and (
                len(replicas) == 1 and len(others) == 2
            )

        _until(ready, 30, "sentinels agreeing on the master")

    def stop(self):
        for process in (*self.sentinels, self.master, self.replica):
            process.kill()


class GaleraNode(Process):
    def __init__(self, cluster, n):
        self.cluster = cluster
        self.directory = cluster.directory / f"node-{n}"
        self.datadir = self.directory / "data"
        self.port = spare_port()
        self.group_port = spare_port()
        self.ist_port = spare_port()
        self.sst_port = spare_port()
        super().__init__(f"galera-{n}", [], self.directory / "error.log")

    def url(self, database):
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}"

    def connect(self, database=None):
        return connect_root(self.port, database, read_timeout=5)

    def status(self, name):
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW STATUS LIKE %s", (name,))
                row = cursor.fetchone()
            return row[1] if row else None
        finally:
            connection.close()

    def synced(self):
        try:
            return (
                self.status("wsrep_local_state_comment") == "Synced"
                and self.status("wsrep_ready") == "ON"
            )
        except pymysql.MySQLError:
            return False

    def start(self, new_cluster=False):
        self.directory.mkdir(parents=True, exist_ok=True)
        self.datadir.mkdir(exist_ok=True)
        self.cluster.own(self.directory)
        self.command = [
            self.cluster.mariadbd,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.directory / 'mariadb.sock'}",
            f"--pid-file={self.directory / 'mariadbd.pid'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--user={self.cluster.user}",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M",
            "--max-connections=200",
            "--binlog-format=ROW",
            "--innodb-autoinc-lock-mode=2",
            "--wsrep-on=ON",
            f"--wsrep-provider={GALERA_PROVIDER}",
            f"--wsrep-cluster-address={self.cluster.address}",
            f"--wsrep-node-address=127.0.0.1:{self.group_port}",
            f"--wsrep-node-incoming-address=127.0.0.1:{self.port}",
            "--wsrep-provider-options="
            f"gmcast.listen_addr=tcp://127.0.0.1:{self.group_port};"
            f"ist.recv_addr=127.0.0.1:{self.ist_port};gcache.size=64M",
            f"--wsrep-sst-receive-address=127.0.0.1:{self.sst_port}",
            "--wsrep-sst-method=rsync",
            *(["--wsrep-new-cluster"] if new_cluster else []),
        ]
        super().start()
        _wait(self.synced, self.process, self.log, self.name, 90)


class GaleraCluster:
    """Three MariaDB nodes replicating every commit to each other (galera-4).

    The nodes run as the ``mysql`` user when the tests run as root: rsync
    state transfer refuses to work as root. Their files live under a
    directory of their own that user can reach (pytest's are private).
    """

    def __init__(self):
        self.mariadbd = require_program("mariadbd")
        self.install = require_program("mariadb-install-db")
        require_program("rsync")
        if not os.path.exists(GALERA_PROVIDER):
            why = f"{GALERA_PROVIDER} is missing (Debian: galera-4)"
            if IN_CI:
                pytest.fail(why)
            pytest.skip(why)
        self.user = "mysql" if os.geteuid() == 0 else pwd.getpwuid(os.getuid())[0]
        self.directory = Path(tempfile.mkdtemp(prefix="galera-"))
        self.directory.chmod(0o755)
        self.nodes = [GaleraNode(self, n) for n in range(3)]

    @property
    def address(self):
        return "gcomm://" + ",".join(
            f"127.0.0.1:{node.group_port}" for node in self.nodes
        )

    def own(self, path):
        if os.geteuid() == 0:
            shutil.chown(path, self.user, self.user)
            for child in path.rglob("*"):
                shutil.chown(child, self.user, self.user)

    def start(self):
        first = self.nodes[0]
        first.directory.mkdir(parents=True)
        install_datadir(self.install, first.datadir, self.user)
        first.start(new_cluster=True)
        for node in self.nodes[1:]:
            node.start()  # joins, and copies the first node's data (rsync)
        _until(
            lambda: all(
                node.status("wsrep_cluster_size") == "3" for node in self.nodes
            ),
            60,
            "a three-node Galera cluster",
        )

    def url(self, database):
        return self.nodes[0].url(database)

    def create_database(self, name):
        create_database(self.nodes[0].connect(), name)

    def stop(self):
        for node in self.nodes:
            if node.running:
                node.process.terminate()
                try:
                    node.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    node.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def logs(self):
        return "\n".join(_tail(node.log, 15) for node in self.nodes)


def running(topology):
    """Start ``topology``, yield it, and stop it whatever happened: for fixtures."""
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()

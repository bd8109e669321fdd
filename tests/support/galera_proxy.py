"""HAProxy in front of a local Galera cluster, set up as docker-compose.galera.yml.

The proxy's settings are docker/haproxy-galera.cfg itself, with the
compose network's names and ports replaced by the local nodes' (and Docker's
DNS left out). Each node's health check is docker/galera-check.sh served by
socat, as in the node containers, asking the node with the mariadb client
instead of the image's healthcheck.sh: 200 while its wsrep_local_state is 4
(Synced), 503 otherwise.
"""

import re
import time

import pymysql

from .engines import Process, _until
from .processes import require_program
from .servers import connect_root, spare_port
from .settings import ROOT

RECIPE = ROOT / "docker" / "haproxy-galera.cfg"
CHECK = ROOT / "docker" / "galera-check.sh"
# Whether the node on port $1 is synced: what healthcheck.sh --galera_online
# asks inside a container.
SYNCED = """#!/bin/sh
state=$(mariadb --host=127.0.0.1 --port="$1" --user=root --connect-timeout=2 \\
    --batch --skip-column-names \\
    --execute="SHOW GLOBAL STATUS LIKE 'wsrep_local_state'" | cut -f2)
[ "$state" = 4 ]
"""


class NodeCheck(Process):
    """docker/galera-check.sh for ``node``, served by socat on a spare port."""

    def __init__(self, node, directory):
        socat = require_program("socat")
        require_program("mariadb")
        synced = directory / "synced.sh"
        synced.write_text(SYNCED)
        self.port = spare_port()
        super().__init__(
            f"check-{node.port}",
            [
                socat,
                f"TCP-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork",
                f"EXEC:sh {CHECK} sh {synced} {node.port}",
            ],
            directory / f"check-{node.port}.log",
        )


def local_settings(text, port, nodes, checks):
    """docker/haproxy-galera.cfg for nodes on 127.0.0.1."""
    text = re.sub(r"\nresolvers docker\n(?:[ \t].*\n|#.*\n)*", "\n", text)
    text = text.replace(" resolvers docker init-addr last,libc,none", "")
    text = text.replace("check port 9200", "check")
    text = text.replace("bind :3306", f"bind 127.0.0.1:{port}")
    for n, (node, check) in enumerate(zip(nodes, checks, strict=True), start=1):
        text, found = re.subn(
            rf"server galera-{n} galera-{n}:3306",
            f"server galera-{n} 127.0.0.1:{node.port} port {check.port}",
            text,
        )
        assert found == 1, f"galera-{n} is not in {RECIPE}"
    return text


class GaleraProxy(Process):
    def __init__(self, cluster, directory):
        self.program = require_program("haproxy")
        self.cluster = cluster
        self.port = spare_port()
        self.directory = directory
        self.checks = []
        settings = self.directory / "haproxy.cfg"
        super().__init__(
            "haproxy",
            [self.program, "-W", "-db", "-f", str(settings)],
            self.directory / "haproxy.log",
        )

    def url(self, database):
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}"

    def start(self):
        self.checks = [NodeCheck(node, self.directory) for node in self.cluster.nodes]
        for check in self.checks:
            check.start()
        settings = local_settings(
            RECIPE.read_text(), self.port, self.cluster.nodes, self.checks
        )
        (self.directory / "haproxy.cfg").write_text(settings)
        super().start()
        _until(lambda: routed_port(self), 30, "a node answering through haproxy")

    def stop(self):
        self.kill()
        for check in self.checks:
            check.kill()


def rerouted_port(proxy, timeout=10):
    """The port of the node a new connection reaches once the proxy routes
    around a node that just died.

    Until the proxy has marked the node down, a connection may be handed to
    it and closed during the handshake (2013), as the app's may be: the app
    connects again (DATABASE_RETRIES), and so does this.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return routed_port(proxy)
        except pymysql.err.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def routed_port(proxy):
    """The port of the node the proxy routes a new connection to.

    Given as long as the app's connections get (DATABASE_READ_TIMEOUT): the
    proxy may take a few seconds to reach another node after one died.
    """
    connection = connect_root(proxy.port, read_timeout=10)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@port")
            return cursor.fetchone()[0]
    finally:
        connection.close()

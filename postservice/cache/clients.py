"""One Redis client for every topology, built from one URL.

- ``redis://host:port/db`` and ``rediss://...`` (TLS): one server.
- ``redis+cluster://host:port,host:port`` (or ``rediss+cluster://``): a
  Redis Cluster; the listed nodes are only where the slot map is first read.
- ``redis+sentinel://host:port,host:port/<service>``: the master of
  ``service`` as the sentinels name it. ``db``, ``password`` and
  ``sentinel_password`` are query options: the path is the service name only.

Every client connects on first use, so the app starts while Redis is down;
calls give up after ``timeout`` seconds. Sentinel reads go to the master as
writes do: a replica can be behind the write that just invalidated a listing.

``REDIS_ERRORS`` is what any of these clients raises when Redis cannot
answer. The cluster client raises ``RedisClusterException`` (not a
``RedisError``) when it cannot reach a node or map a slot.
"""

import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from limits.storage import storage_from_string
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry
from redis.sentinel import Sentinel

REDIS_ERRORS = (RedisError, RedisClusterException)

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SINGLE_SCHEMES = ("redis", "rediss", "unix")


class RedisURLError(ValueError):
    """The URL names no topology this module can build."""


@dataclass
class TLS:
    """Client-side TLS settings; ``ca_certs`` verifies the server."""

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    @classmethod
    def from_settings(cls, config):
        """The ``REDIS_SSL_*`` settings of an app's ``config``."""
        return cls(
            ca_certs=config.get("REDIS_SSL_CA_CERTS"),
            certfile=config.get("REDIS_SSL_CERTFILE"),
            keyfile=config.get("REDIS_SSL_KEYFILE"),
        )

    def options(self):
        return {
            "ssl_ca_certs": self.ca_certs,
            "ssl_certfile": self.certfile,
            "ssl_keyfile": self.keyfile,
            "ssl_cert_reqs": "required",
        }


@dataclass
class ParsedURL:
    scheme: str
    hosts: list = field(default_factory=list)
    service: str = ""
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    db: int = 0

    @property
    def tls(self):
        return self.scheme.startswith("rediss")


def check_url(url, *, memory=False):
    """Refuse a URL the clients below would fail on or misread: a scheme
    they do not know (``memory://`` only where ``memory``), a port that is
    not a number, a malformed host, a database that is not a number.

    redis-py reads ``redis://host/x`` as database 0 without a word: a
    deployment's keys would land in another's database.
    """
    # The errors never quote the URL, nor urllib's words, which may quote
    # a piece of a password holding "/", "?" or "#".
    try:
        parts = urlsplit(url)
    except ValueError:
        raise RedisURLError("a malformed host") from None
    scheme = parts.scheme.lower()
    if memory and scheme == "memory":
        return
    if memory and scheme == "unix":
        raise RedisURLError("a socket is not a store of throttle counters here")
    if scheme not in SINGLE_SCHEMES:
        parse_url(url)  # raises for an unknown scheme too
        return
    databases = parse_qs(parts.query).get("db", [])
    if scheme != "unix":
        try:
            parts.port  # noqa: B018 (reading it raises ValueError when malformed)
        except ValueError:
            raise RedisURLError("a port that is not a number from 0 to 65535") from None
        if not parts.hostname:
            raise RedisURLError("a Redis URL needs a host")
        databases.append(parts.path.strip("/") or "0")
    for db in databases:
        if not (db.isascii() and db.isdigit()):
            raise RedisURLError(f"the database must be a number, got {db!r}")


def parse_url(url):
    """Split a ``redis+cluster://`` or ``redis+sentinel://`` URL.

    Raises ``RedisURLError`` for an unknown scheme, a missing host or
    service, or a ``db`` that is not a number (or not 0 on a cluster).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in CLUSTER_SCHEMES + SENTINEL_SCHEMES:
        raise RedisURLError(f"unknown Redis URL scheme {parts.scheme!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    hosts = []
    for location in filter(None, hostlist.split(",")):
        host, _, port = location.rpartition(":")
        if not host or not port.isdigit():
            raise RedisURLError(f"{location!r} is not host:port")
        hosts.append((host, int(port)))
    if not hosts:
        raise RedisURLError("a Redis URL needs at least one host:port")
    try:
        db = int(query.get("db", "0"))
    except ValueError:
        raise RedisURLError(f"db must be a number, got {query['db']!r}") from None
    parsed = ParsedURL(
        scheme=scheme,
        hosts=hosts,
        service=unquote(parts.path.strip("/")),
        username=unquote(username) or query.get("username"),
        password=unquote(password) or query.get("password"),
        sentinel_password=query.get("sentinel_password"),
        db=db,
    )
    if scheme in SENTINEL_SCHEMES and (not parsed.service or "/" in parsed.service):
        raise RedisURLError("a sentinel URL ends in /<service name>, nothing else")
    if scheme in CLUSTER_SCHEMES and db != 0:
        raise RedisURLError("a Redis Cluster has only database 0: use a key prefix")
    return parsed


class LazyCluster:
    """A ``RedisCluster`` built on first use, and again after a failed build.

    Everything but ``instance()`` is the cluster client's own attribute
    (``get`` is the Redis command).

    ``RedisCluster(...)`` reads the slot map while it is constructed, so
    building it in the factory would stop the app from starting while the
    cluster is down.
    """

    def __init__(self, **options):
        self.options = options
        self.lock = threading.Lock()
        self.client = None

    def instance(self):
        client = self.client
        if client is None:
            with self.lock:
                if self.client is None:
                    self.client = RedisCluster(**self.options)
                client = self.client
        return client

    def __getattr__(self, name):
        return getattr(self.instance(), name)


class Topology:
    """A client and how to tell whether its topology can serve."""

    def __init__(self, client):
        self.client = client

    def status(self):
        """Fields for ``/readyz`` beyond ``redis``; raises one of ``REDIS_ERRORS``."""
        self.client.ping()
        return {}


class ClusterTopology(Topology):
    def status(self):
        # CLUSTER INFO goes to one node; a node answers "fail" while any slot
        # has no reachable master, which is when some keys cannot be served.
        info = self.client.instance().cluster_info(target_nodes=RedisCluster.RANDOM)
        return {"redis_cluster_state": info.get("cluster_state", "unknown")}


class SentinelTopology(Topology):
    def __init__(self, client, sentinel, service):
        super().__init__(client)
        self.sentinel = sentinel
        self.service = service

    def status(self):
        host, port = self.sentinel.discover_master(self.service)
        self.client.ping()
        return {"redis_sentinel_master": f"{host}:{port}"}


def connect(url, *, timeout, tls=None, retries=0):
    """A ``Topology`` for ``url``; nothing is contacted until it is used.

    ``timeout`` bounds every connect, read and write in seconds;
    ``retries`` is how often a failed call is tried again (0 for a cache,
    which has the database to fall back on). Raises ``RedisURLError``.
    """
    tls = tls or TLS()
    base = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), retries),
    }
    check_url(url)
    scheme = urlsplit(url).scheme.lower()
    if scheme in SINGLE_SCHEMES:
        options = dict(base, **tls.options()) if scheme == "rediss" else base
        return Topology(redis.Redis.from_url(url, **options))
    parsed = parse_url(url)
    auth = {"username": parsed.username, "password": parsed.password}
    security = tls.options() | {"ssl": True} if parsed.tls else {}
    if scheme in CLUSTER_SCHEMES:
        cluster = LazyCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in parsed.hosts],
            **base,
            **auth,
            **security,
        )
        return ClusterTopology(cluster)
    sentinel = Sentinel(
        parsed.hosts,
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "password": parsed.sentinel_password,
            **security,
        },
        **base,
    )
    master = sentinel.master_for(parsed.service, db=parsed.db, **auth, **security)
    return SentinelTopology(master, sentinel, parsed.service)


def limits_storage(url, *, timeout, key_prefix, tls=None):
    """A ``limits`` storage for ``url`` (any scheme above, or ``memory://``).

    Built on first use by the caller: limits' cluster storage reads the slot
    map, and its sentinel storage asks for the master, when constructed.
    Sentinel reads go to the master here too (limits reads replicas by
    default), and ``db`` and ``sentinel_password`` come from the query.
    A ``rediss`` scheme uses ``tls`` as ``connect`` does: limits knows no
    ``rediss+cluster`` or ``rediss+sentinel``, so those become the plain
    scheme with TLS switched on in the options.
    Raises ``RedisURLError``, ``limits.errors.ConfigurationError`` or one
    of ``REDIS_ERRORS``.
    """
    options = {"key_prefix": key_prefix, "wrap_exceptions": True}
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return storage_from_string(url, **options)
    tls = tls or TLS()
    options.update(
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    if scheme in SENTINEL_SCHEMES:
        parsed = parse_url(url)
        security = tls.options() | {"ssl": True} if parsed.tls else {}
        hosts = ",".join(f"{host}:{port}" for host, port in parsed.hosts)
        url = f"redis+sentinel://{hosts}/{parsed.service}"
        options.update(
            db=parsed.db,
            use_replicas=False,
            sentinel_kwargs={
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "password": parsed.sentinel_password,
                **security,
            },
            **security,
        )
        if parsed.password:
            options["password"] = parsed.password
    elif scheme in CLUSTER_SCHEMES:
        parsed = parse_url(url)  # refuses what the cluster client would misread
        url = "redis+cluster" + url[len(scheme) :]
        if parsed.tls:
            options.update(tls.options(), ssl=True)
    elif scheme == "rediss":
        options.update(tls.options())
    return storage_from_string(url, **options)

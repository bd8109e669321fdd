"""The Redis backend for Flask-Caching, storing bytes as they are.

cachelib pickles every value by default. The post listings are already
JSON bytes, so they are stored verbatim: nothing read back from Redis is
ever unpickled, and other tools can read the entries.

The client comes from ``redis_client``, so the cache works the same on one
server, a Cluster or behind Sentinel, and connects on first use.
"""

from cachelib.serializers import BaseRedisSerializer
from flask_caching.backends.rediscache import RedisCache

from config import ConfigError
from postservice.cache import clients, namespace
from postservice.extensions import cache


def cache_settings(config, prefix):
    """Flask-Caching's settings, from ours in ``config`` and the namespace's
    ``prefix`` (``cache.namespace``)."""
    settings = {
        "CACHE_KEY_PREFIX": prefix + ":",
        "CACHE_DEFAULT_TIMEOUT": config["POSTS_CACHE_TTL"],
    }
    if not config["REDIS_URL"]:
        # One process's memory: the embedded default of a single instance.
        return settings | {"CACHE_TYPE": "SimpleCache", "CACHE_THRESHOLD": 10000}
    return settings | {
        "CACHE_TYPE": f"{__name__}.{RedisBytesCache.__name__}",
        "CACHE_REDIS_URL": config["REDIS_URL"],
        # redis-py retries and waits seconds by default; the cache is an
        # optimisation, so it fails fast (no retries) and the caller uses
        # the database.
        "CACHE_OPTIONS": {
            "timeout": config["REDIS_TIMEOUT"],
            "ssl_ca_certs": config["REDIS_SSL_CA_CERTS"],
            "ssl_certfile": config["REDIS_SSL_CERTFILE"],
            "ssl_keyfile": config["REDIS_SSL_KEYFILE"],
        },
    }


def init_app(app):
    """Flask-Caching on the app, with the settings that follow from ours."""
    for key, value in cache_settings(app.config, namespace.key_prefix(app)).items():
        if app.config.get(key) is None:  # a test's own settings win
            app.config[key] = value
    cache.init_app(app)


class RawBytesSerializer(BaseRedisSerializer):
    def dumps(self, value, protocol=None):
        if not isinstance(value, bytes):
            raise TypeError(f"only bytes are cached, not {type(value).__name__}")
        return value

    def loads(self, value):
        return value


class RedisBytesCache(RedisCache):
    serializer = RawBytesSerializer()

    def __init__(self, topology, **kwargs):
        super().__init__(host=topology.client, **kwargs)
        self.topology = topology
        self._scripts = {}

    @classmethod
    def factory(cls, app, config, args, kwargs):
        """Built by Flask-Caching from ``CACHE_REDIS_URL`` and ``CACHE_OPTIONS``.

        ``CACHE_OPTIONS`` holds ``timeout`` (seconds) and the TLS file paths
        ``ssl_ca_certs``, ``ssl_certfile`` and ``ssl_keyfile``.
        """
        options = config.get("CACHE_OPTIONS") or {}
        try:
            topology = clients.connect(
                config["CACHE_REDIS_URL"],
                timeout=options["timeout"],
                tls=clients.TLS(
                    ca_certs=options.get("ssl_ca_certs"),
                    certfile=options.get("ssl_certfile"),
                    keyfile=options.get("ssl_keyfile"),
                ),
            )
        except clients.RedisURLError as e:
            raise ConfigError(f"REDIS_URL: {e}") from None
        return cls(
            topology,
            key_prefix=config.get("CACHE_KEY_PREFIX"),
            default_timeout=config.get("CACHE_DEFAULT_TIMEOUT", 300),
        )

    def script(self, source):
        """A Lua script run with ``(keys, args)``, keys named as for ``get``.

        The keys of one call must share a slot on a Cluster (one user's do).
        redis-py sends the script's digest and the source only when Redis
        does not know it yet.
        """
        run = self._scripts.get(source)
        if run is None:
            script = self._write_client.register_script(source)

            def run(keys, args):
                prefix = self._get_prefix()
                return script(keys=[prefix + key for key in keys], args=args)

            self._scripts[source] = run
        return run

    def ping(self):
        """Raises one of ``clients.REDIS_ERRORS`` when Redis does not answer."""
        return self.topology.client.ping()

    def status(self):
        """Fields for ``/readyz`` (``clients.Topology.status``); may raise."""
        return self.topology.status()

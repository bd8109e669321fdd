"""The Redis backend for Flask-Caching, storing bytes as they are.

cachelib pickles every value by default. The post listings are already
JSON bytes, so they are stored verbatim: nothing read back from Redis is
ever unpickled, and other tools can read the entries.
"""

from cachelib.serializers import BaseRedisSerializer
from flask_caching.backends.rediscache import RedisCache


class RawBytesSerializer(BaseRedisSerializer):
    def dumps(self, value, protocol=None):
        if not isinstance(value, bytes):
            raise TypeError(f"only bytes are cached, not {type(value).__name__}")
        return value

    def loads(self, value):
        return value


class RedisBytesCache(RedisCache):
    serializer = RawBytesSerializer()

    def ping(self):
        """Raises ``redis.exceptions.RedisError`` when Redis does not answer."""
        return self._write_client.ping()

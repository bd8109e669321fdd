"""Settings read from the environment, one class per mode.

``settings_for()`` turns the environment into a plain dict for
``app.config``. Nothing here runs at import time: the environment is read
when an app is created, so tests can build differently-configured apps.
"""

import collections
import hashlib
import itertools
import math
import os
import re
import secrets
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

from limits import parse_many

MODES = ("development", "testing", "production")
# What secrets.token_urlsafe(32) gives: 32 random bytes, 43 characters.
MIN_SECRET_CHARS = 43
# The character-frequency entropy of token_urlsafe(32) output is above 180
# bits in 100,000 samples out of 100,000; a repeated, sequential or wordy
# string scores far lower.
MIN_SECRET_ESTIMATED_BITS = 170
# A random key of 32 bytes has a run like "abcdefgh" or "44444444" once in
# millions; a typed one often does.
MAX_SECRET_RUN = 8
# Bits a word of a passphrase is worth (a Diceware word is 12.9).
BITS_PER_WORD = 13
# Values published as examples: anyone who read the repository knows them.
PLACEHOLDER_SECRETS = frozenset(
    {
        "replace-with-the-output-of-the-command-above",
        "change-me",
        "changeme",
        "changethis",
        "secret",
        "secret-key",
        "your-secret-key",
        "you-will-never-guess",
        "...",
    }
)
LOG_FORMATS = ("text", "json")
MIN_PRODUCTION_BCRYPT_ROUNDS = 12
POST_TEXT_MAX_BYTES = 1024 * 1024
# A 1 MiB text can be 6 MiB of JSON when every byte is sent as a \uXXXX
# escape; the body cap leaves room for that and the envelope, no more.
MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_WAITRESS_THREADS = 8
# Connections the pool may open beyond DATABASE_POOL_SIZE under load.
DATABASE_MAX_OVERFLOW = 5
# A listing larger than this is streamed to the client and not kept in the
# cache: one user's posts must not fill Redis or a process's memory.
POSTS_CACHE_MAX_BYTES = 1024 * 1024
# The bind of the MySQL engine whose connections autocommit (postservice/database.py).
AUTOCOMMIT_BIND = "autocommit"


class ConfigError(SystemExit):
    """A setting is missing or unsafe.

    A ``SystemExit`` so that ``flask``, ``waitress-serve`` and ``wsgi.py``
    stop with this one line on stderr and exit status 1, not a traceback.
    """

    def __init__(self, message):
        super().__init__(f"postservice: configuration error: {message}")


def _int(env, name, default, minimum=None):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env, name, default):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be above zero, got {raw!r}")
    return value


def _rate_limit(env, name, default):
    """A rate limit such as ``10/minute`` or ``5 per second; 100/hour``."""
    raw = (env.get(name) or "").strip() or default
    try:
        parse_many(raw)
    except ValueError:
        raise ConfigError(
            f"{name} must be a rate limit such as '10/minute', got {raw!r}"
        ) from None
    return raw


def _default_hash_slots(env):
    """Two per core (every core busy, one hash queued behind each), but never
    more than half the server's threads, so logins cannot hold them all."""
    threads = _int(env, "WAITRESS_THREADS", DEFAULT_WAITRESS_THREADS, 1)
    return max(1, min(2 * (os.cpu_count() or 1), threads // 2))


class Config:
    """Defaults shared by every mode; each can be overridden from the environment."""

    BCRYPT_ROUNDS = 12
    JWT_ACCESS_TOKEN_EXPIRES = 3600
    POSTS_CACHE_TTL = 300
    # Every login attempt from one address, whatever its outcome or body.
    LOGIN_RATE_LIMIT = "10/minute"
    # Failed logins for one account from one address: slows a guesser without
    # locking the owner out, who logs in from elsewhere.
    LOGIN_FAILURE_RATE_LIMIT = "5 per 15 minutes"
    # Failed logins for one account from anywhere: the ceiling against guessing
    # spread over many addresses. Only failures count.
    ACCOUNT_FAILURE_RATE_LIMIT = "100 per hour"
    REGISTER_RATE_LIMIT = "5/minute"
    DEBUG = False
    TESTING = False

    @classmethod
    def from_env(cls, env, instance_path):
        database_url = env.get("DATABASE_URL") or (
            "sqlite:///" + os.path.join(instance_path, "postservice.sqlite")
        )
        settings = {
            "MODE": cls.MODE,
            "DEBUG": cls.DEBUG,
            "TESTING": cls.TESTING,
            "MAX_CONTENT_LENGTH": MAX_BODY_BYTES,
            "POST_TEXT_MAX_BYTES": POST_TEXT_MAX_BYTES,
            "SQLALCHEMY_DATABASE_URI": database_url,
            "JWT_SECRET_KEY": env.get("JWT_SECRET_KEY") or None,
            "JWT_ACCESS_TOKEN_EXPIRES": timedelta(
                seconds=_int(
                    env, "JWT_ACCESS_TOKEN_EXPIRES", cls.JWT_ACCESS_TOKEN_EXPIRES, 1
                )
            ),
            "BCRYPT_ROUNDS": _int(env, "BCRYPT_ROUNDS", cls.BCRYPT_ROUNDS, 4),
            "PASSWORD_HASH_SLOTS": _int(
                env, "PASSWORD_HASH_SLOTS", _default_hash_slots(env), 1
            ),
            "POSTS_CACHE_TTL": _int(env, "POSTS_CACHE_TTL", cls.POSTS_CACHE_TTL, 1),
            "POSTS_CACHE_MAX_BYTES": _int(
                env, "POSTS_CACHE_MAX_BYTES", POSTS_CACHE_MAX_BYTES, 0
            ),
            "REDIS_URL": env.get("REDIS_URL") or None,
            "REDIS_KEY_PREFIX": env.get("REDIS_KEY_PREFIX") or None,
            "RATELIMIT_STORAGE_URL": env.get("RATELIMIT_STORAGE_URL") or None,
            "REDIS_TIMEOUT": _float(env, "REDIS_TIMEOUT", 0.25),
            "REDIS_SSL_CA_CERTS": env.get("REDIS_SSL_CA_CERTS") or None,
            "REDIS_SSL_CERTFILE": env.get("REDIS_SSL_CERTFILE") or None,
            "REDIS_SSL_KEYFILE": env.get("REDIS_SSL_KEYFILE") or None,
            "DATABASE_POOL_SIZE": _int(env, "DATABASE_POOL_SIZE", 10, 1),
            "DATABASE_CONNECT_TIMEOUT": _int(env, "DATABASE_CONNECT_TIMEOUT", 3, 1),
            "DATABASE_READ_TIMEOUT": _int(env, "DATABASE_READ_TIMEOUT", 5, 1),
            "DATABASE_WRITE_TIMEOUT": _int(env, "DATABASE_WRITE_TIMEOUT", 5, 1),
            "DATABASE_RETRIES": _int(env, "DATABASE_RETRIES", 3, 0),
            "DATABASE_WSREP_SYNC_WAIT": _int(env, "DATABASE_WSREP_SYNC_WAIT", None, 0),
            "LOGIN_RATE_LIMIT": _rate_limit(
                env, "LOGIN_RATE_LIMIT", cls.LOGIN_RATE_LIMIT
            ),
            "LOGIN_FAILURE_RATE_LIMIT": _rate_limit(
                env, "LOGIN_FAILURE_RATE_LIMIT", cls.LOGIN_FAILURE_RATE_LIMIT
            ),
            "ACCOUNT_FAILURE_RATE_LIMIT": _rate_limit(
                env, "ACCOUNT_FAILURE_RATE_LIMIT", cls.ACCOUNT_FAILURE_RATE_LIMIT
            ),
            "REGISTER_RATE_LIMIT": _rate_limit(
                env, "REGISTER_RATE_LIMIT", cls.REGISTER_RATE_LIMIT
            ),
            # The same count waitress uses with TRUSTED_PROXY, so the app
            # reads X-Forwarded-For as the server did (and under other servers).
            "TRUSTED_PROXY_COUNT": _int(
                env, "TRUSTED_PROXY_COUNT", 1 if env.get("TRUSTED_PROXY") else 0, 0
            ),
            "LOG_FORMAT": log_format(env),
        }
        if settings["BCRYPT_ROUNDS"] > 31:
            raise ConfigError("BCRYPT_ROUNDS must be at most 31")
        return settings


class DevelopmentConfig(Config):
    MODE = "development"
    DEBUG = False  # the debugger would turn errors into HTML pages


class TestingConfig(Config):
    MODE = "testing"
    TESTING = True
    BCRYPT_ROUNDS = 4
    # Suites register and log in hundreds of times from one address; the
    # throttling tests set low limits of their own.
    LOGIN_RATE_LIMIT = "100000/minute"
    LOGIN_FAILURE_RATE_LIMIT = "100000/minute"
    ACCOUNT_FAILURE_RATE_LIMIT = "100000/minute"
    REGISTER_RATE_LIMIT = "100000/minute"


class ProductionConfig(Config):
    MODE = "production"


CONFIGS = {c.MODE: c for c in (DevelopmentConfig, TestingConfig, ProductionConfig)}


def settings_for(env, instance_path, overrides=None):
    """Build the app settings from ``env`` (usually ``os.environ``).

    ``overrides`` (a dict, used by tests) wins over the environment, and the
    result is checked as a whole so that overrides cannot bypass the
    production rules.

    Raises ``ConfigError`` for an unknown mode, an unreadable number, or an
    unsafe production setting.
    """
    overrides = dict(overrides or {})
    mode = overrides.pop("MODE", None) or env.get("POSTSERVICE_ENV") or "development"
    if mode not in CONFIGS:
        raise ConfigError(
            f"POSTSERVICE_ENV must be one of {', '.join(MODES)}, got {mode!r}"
        )
    settings = CONFIGS[mode].from_env(env, instance_path)
    settings.update(overrides)
    _check_production(settings)
    for key, value in _derived(settings).items():
        if settings.get(key) is None:  # an override of a library setting wins
            settings[key] = value
    return settings


def secret_weakness(secret):
    """Why ``secret`` is not fit to sign tokens, or None when it is.

    Anyone who can guess the key can sign a token for any user, so it must
    be as strong as ``secrets.token_urlsafe(32)``: 256 random bits. Randomness
    cannot be proven from one string; these rules refuse what is known
    (published placeholders) and what is plainly not random (short,
    repeated, sequential, or made of words).
    """
    if secret.strip().lower() in PLACEHOLDER_SECRETS:
        return "is a published placeholder"
    if len(secret) < MIN_SECRET_CHARS:
        return f"is shorter than {MIN_SECRET_CHARS} characters"
    words = re.split(r"[\s-]+", secret.strip())
    if len(words) >= 3 and all(_is_word(word) for word in words):
        if len(words) * BITS_PER_WORD < 256:
            return f"is a passphrase of {len(words)} words, too few to guess"
        return None
    if _longest_run(secret) >= MAX_SECRET_RUN:
        return "has a run of repeated or consecutive characters"
    if _estimated_bits(secret) < MIN_SECRET_ESTIMATED_BITS:
        return "repeats too few characters too often to be random"
    return None


def _is_word(text):
    """Written as a word is: letters in one case, or capitalised.

    ``token_urlsafe`` output may hold hyphens between runs of letters, but
    its letters change case at random, which words do not.
    """
    return text.isalpha() and (text.islower() or text.isupper() or text.istitle())


def _estimated_bits(text):
    counts = collections.Counter(text)
    size = len(text)
    return -size * sum(n / size * math.log2(n / size) for n in counts.values())


def _longest_run(text):
    """The longest stretch like ``aaaa``, ``abcd`` or ``4321``."""
    longest = run = 1
    step = None
    for before, after in itertools.pairwise(text):
        difference = ord(after) - ord(before)
        if difference in (-1, 0, 1) and difference == step:
            run += 1
        else:
            run = 2 if difference in (-1, 0, 1) else 1
        step = difference
        longest = max(longest, run)
    return longest


def _check_production(settings):
    """Production refuses a missing or weak signing key and a cheap bcrypt cost."""
    secret = settings["JWT_SECRET_KEY"]
    if settings["MODE"] == "production":
        if not secret:
            raise ConfigError("JWT_SECRET_KEY is required in production")
        weakness = secret_weakness(secret)
        if weakness:
            raise ConfigError(
                f"JWT_SECRET_KEY {weakness}; generate one with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if settings["BCRYPT_ROUNDS"] < MIN_PRODUCTION_BCRYPT_ROUNDS:
            raise ConfigError(
                f"BCRYPT_ROUNDS must be at least {MIN_PRODUCTION_BCRYPT_ROUNDS} "
                "in production"
            )


def _derived(settings):
    """Library settings that follow from ours."""
    url = settings["SQLALCHEMY_DATABASE_URI"]
    # SQL parameters hold post text, emails and password hashes: never let
    # them into an exception message that could reach a log.
    engine = {"pool_pre_ping": True, "hide_parameters": True}
    if url.startswith(("mysql", "mariadb")):
        # Imported here: the package imports this module before its own.
        from postservice.db.pool import SocketCheckedPool

        engine.update(
            # A dead pooled connection is found by polling its socket, not
            # by a ping round trip before every request (see db_pool.py).
            pool_pre_ping=False,
            poolclass=SocketCheckedPool,
            # Below MySQL's default wait_timeout, so idle connections are
            # replaced before the server drops them.
            pool_recycle=1800,
            pool_size=settings["DATABASE_POOL_SIZE"],
            max_overflow=DATABASE_MAX_OVERFLOW,
            pool_timeout=5,
            connect_args={
                "connect_timeout": settings["DATABASE_CONNECT_TIMEOUT"],
                # A hung server (or a Galera node cut off from the others)
                # costs a request this long, then a 503, not a stuck thread.
                "read_timeout": settings["DATABASE_READ_TIMEOUT"],
                "write_timeout": settings["DATABASE_WRITE_TIMEOUT"],
                "charset": "utf8mb4",
            },
        )
        if settings["DATABASE_WSREP_SYNC_WAIT"] is not None:
            # Galera applies other nodes' commits after acknowledging them:
            # 1 makes each read wait until this node has applied every
            # commit the cluster acknowledged before the read began.
            engine["connect_args"]["init_command"] = (
                f"SET SESSION wsrep_sync_wait={settings['DATABASE_WSREP_SYNC_WAIT']}"
            )
    binds = {}
    if url.startswith(("mysql", "mariadb")):
        binds[AUTOCOMMIT_BIND] = {
            "url": url,
            **engine,
            # Statements that are their own transaction (database.py): no
            # COMMIT to send, and no ROLLBACK when the connection goes back.
            "isolation_level": "AUTOCOMMIT",
            "skip_autocommit_rollback": True,
        }
    prefix = settings["REDIS_KEY_PREFIX"] or default_key_prefix(url)
    derived = {
        "SQLALCHEMY_BINDS": binds,
        "REDIS_KEY_PREFIX": prefix,
        "SQLALCHEMY_ENGINE_OPTIONS": engine,
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
        "JWT_TOKEN_LOCATION": ["headers"],
        "JWT_ALGORITHM": "HS256",
        "JWT_DECODE_ALGORITHMS": ["HS256"],
        "JWT_ERROR_MESSAGE_KEY": "detail",
        # Tokens travel in headers only; a csrf claim would be dead weight.
        "JWT_COOKIE_CSRF_PROTECT": False,
        "CACHE_KEY_PREFIX": prefix + ":",
        "CACHE_DEFAULT_TIMEOUT": settings["POSTS_CACHE_TTL"],
        "RATELIMIT_STORAGE_URL": settings["RATELIMIT_STORAGE_URL"]
        or settings["REDIS_URL"]
        or "memory://",
    }
    if settings["REDIS_URL"]:
        timeout = settings["REDIS_TIMEOUT"]
        derived.update(
            CACHE_TYPE="postservice.cache.backend.RedisBytesCache",
            CACHE_REDIS_URL=settings["REDIS_URL"],
            # redis-py retries and waits seconds by default; the cache is an
            # optimisation, so it fails fast (redis_client, no retries) and
            # the caller uses the database.
            CACHE_OPTIONS={
                "timeout": timeout,
                "ssl_ca_certs": settings["REDIS_SSL_CA_CERTS"],
                "ssl_certfile": settings["REDIS_SSL_CERTFILE"],
                "ssl_keyfile": settings["REDIS_SSL_KEYFILE"],
            },
        )
    else:
        derived.update(CACHE_TYPE="SimpleCache", CACHE_THRESHOLD=10000)
    return derived


def default_key_prefix(database_url):
    """A Redis key prefix of this deployment's own: a digest of its database.

    Two deployments that share a Redis database but not a database then
    never read each other's keys. The password is left out, so rotating it
    keeps the cache.
    """
    parts = urlsplit(database_url)
    if parts.password is not None:
        netloc = parts.netloc.replace(":" + parts.password + "@", "@", 1)
        parts = parts._replace(netloc=netloc)
    digest = hashlib.sha256(urlunsplit(parts).encode()).hexdigest()
    return "ps-" + digest[:12]


def development_secret(instance_path):
    """A per-installation signing key for development, kept in the instance folder.

    Generated once so tokens survive a restart, and never committed.
    """
    path = os.path.join(instance_path, "jwt-secret")
    try:
        with open(path, encoding="ascii") as fh:
            secret = fh.read().strip()
        if secret:
            return secret
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secret)
    return secret


def log_format(env):
    """``LOG_FORMAT``: ``text`` (readable lines, the default) or ``json``."""
    value = (env.get("LOG_FORMAT") or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be text or json, got {value!r}")
    return value

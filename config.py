"""Settings read from the environment: the only code that reads it.

``app_settings()`` turns the environment into a plain dict for
``app.config`` (one class per mode gives the defaults), and
``server_settings()`` into the typed settings of ``python -m
postservice.serve``. Each variable is parsed once, here. Nothing here runs
at import time and nothing here imports the package: the environment is
read when an app or a server is made, so tests can build differently
configured apps side by side.
"""

import collections
import functools
import itertools
import math
import os
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parseaddr
from urllib.parse import parse_qs, unquote, urlsplit

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
# The guesses a key needs when the attacker tries words, names, common
# passwords, keyboard walks, repetitions, sequences and dates first
# (``secret_guess_bits``), as a power of two: the usual 128-bit security
# level. Generated keys are far above it (token_urlsafe(32) scored at least
# 162 in 100,000 samples, token_hex(32) at least 175); typed phrases of a
# dozen words, with their capitals, digits and dates, score 70 to 115.
MIN_SECRET_GUESS_BITS = 128
# The estimate reads at most this many characters: its cost grows with the
# length, and a key's first characters are never harder to guess than the
# whole key, so judging them alone can only refuse, never let a weak key in.
SECRET_CHARS_JUDGED = 128
# A repetition, greedy ("aabaab" twice) and lazy ("aa" twice), as zxcvbn
# looks for them.
REPEATED = re.compile(r"(.+)\1+", re.DOTALL)
REPEATED_LAZILY = re.compile(r"(.+?)\1+", re.DOTALL)
# The fewest guesses zxcvbn counts for a part of a longer key: 50.
MIN_PART_BITS = math.log2(50)
# The beginnings of words kept to cut the search for words short.
WORD_PREFIX_CHARS = 4
# Character classes a random character is drawn from, and their sizes.
SECRET_CHARACTER_CLASSES = (
    (str.islower, 26),
    (str.isupper, 26),
    (str.isdigit, 10),
    (lambda c: not c.isalnum(), 33),
)
# Letters people write as digits or signs ("p4ssw0rd"), read back as the
# letters before looking for words; "1", "|" and "7" may stand for "l" too.
L33T_READINGS = (
    str.maketrans(
        {
            **dict.fromkeys("4@", "a"),
            "8": "b",
            **dict.fromkeys("({[<", "c"),
            "3": "e",
            **dict.fromkeys("69", "g"),
            **dict.fromkeys("!1|", "i"),
            "0": "o",
            **dict.fromkeys("$5", "s"),
            **dict.fromkeys("+7", "t"),
            "%": "x",
            "2": "z",
        }
    ),
    str.maketrans(dict.fromkeys("1|7", "l")),
)
# zxcvbn knows the years up to 2019 by pattern; these are any year written
# with four digits that a person may put in a key.
YEAR = re.compile(r"1[89]\d\d|20\d\d")
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
DEFAULT_DATABASE_POOL_SIZE = 10
# Seconds a MySQL read or write may wait for the server. Above what a Galera
# node, with its default settings, holds a commit while the cluster decides
# that a silent node is gone (evs.suspect_timeout 5 s, checked every
# evs.inactive_check_period 0.5 s, then a new view): a request caught in that
# wait completes slowly instead of failing (docs/deployment/scaling.md).
DEFAULT_DATABASE_IO_TIMEOUT = 10
# Connections the pool may open beyond DATABASE_POOL_SIZE under load.
DATABASE_MAX_OVERFLOW = 5
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# Seconds an idle connection is kept (waitress: 120). Idle connections hold
# a slot of WAITRESS_CONNECTION_LIMIT each; clients that keep one open for
# minutes without a request are better made to reconnect.
DEFAULT_CHANNEL_TIMEOUT = 30
# waitress answers bodies over its own limit with a plain-text 413 before the
# app sees them; keeping it just above MAX_BODY_BYTES means a body slightly
# too large still gets the app's JSON 413, and a huge one is never buffered.
SERVER_BODY_LIMIT = MAX_BODY_BYTES + 1024 * 1024
DEFAULT_SHUTDOWN_TIMEOUT = 20.0
DEFAULT_PROXY_HEADERS = "x-forwarded-for x-forwarded-proto"
# A listing larger than this is streamed to the client and not kept in the
# cache: one user's posts must not fill Redis or a process's memory.
POSTS_CACHE_MAX_BYTES = 1024 * 1024
# Each instance keeps the cached listings it served, up to this many bytes,
# and reads only their tags from Redis (``postservice.posts.copies``).
POSTS_LOCAL_COPY_BYTES = 64 * 1024 * 1024
MAIL_SCHEMES = {"smtp": 25, "smtps": 465}
DEFAULT_MAIL_FROM = "postservice <no-reply@localhost>"


class ConfigError(SystemExit):
    """A setting is missing or unsafe.

    A ``SystemExit`` so that ``flask``, ``waitress-serve`` and ``wsgi.py``
    stop with this one line on stderr and exit status 1, not a traceback.
    """

    def __init__(self, message):
        super().__init__(f"postservice: configuration error: {message}")


# The largest whole number any setting takes: a C int, an INTEGER column, 68
# years in seconds. Beyond it a duration overflows a date before its first use.
INT_MAX = 2**31 - 1
PORT_MAX = 65535
# Lifetimes and delays that are stored as a time to come (a token's expiry, a
# mail's next try, in INTEGER columns of Unix seconds): a year at most keeps
# them far inside the column.
LIFETIME_MAX = 366 * 24 * 3600


def _int(env, name, default, minimum=None, maximum=INT_MAX):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


def _float(env, name, default):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    # nan compares false with everything: it would pass a bound and then
    # fail every call that uses it; inf would mean "never".
    if not math.isfinite(value) or value <= 0 or value > INT_MAX:
        raise ConfigError(f"{name} must be a number of seconds above zero, got {raw!r}")
    return value


def _bool(env, name, default):
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


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


def _default_rebuild_slots(env):
    """A quarter of the server's threads, at least one: what one account's
    listing may hold while it is rebuilt (``posts.rebuilds``)."""
    threads = _int(env, "WAITRESS_THREADS", DEFAULT_WAITRESS_THREADS, 1)
    return max(1, threads // 4)


class Config:
    """Defaults shared by every mode; each can be overridden from the environment."""

    BCRYPT_ROUNDS = 12
    JWT_ACCESS_TOKEN_EXPIRES = 900
    # Counted from the last refresh: a session used once a month stays open.
    JWT_REFRESH_TOKEN_EXPIRES = 30 * 24 * 3600
    # Seconds a rotated refresh token is still answered like the first time
    # (two tabs refreshing at once); later, it is taken for a stolen one.
    REFRESH_REUSE_INTERVAL = 10
    POSTS_CACHE_TTL = 300
    # Every login attempt from one address, whatever its outcome or body.
    LOGIN_RATE_LIMIT = "10/minute"
    # Failed logins for one account from one address: slows a guesser without
    # locking the owner out, who logs in from elsewhere.
    LOGIN_FAILURE_RATE_LIMIT = "5 per 15 minutes"
    # Failed logins for one account from anywhere: the ceiling against guessing
    # spread over many addresses. Only failures count. It holds back addresses
    # new to the account, never one the account logged in from lately.
    ACCOUNT_FAILURE_RATE_LIMIT = "100 per hour"
    # Days an address is remembered as the account's after a successful login.
    LOGIN_KNOWN_ADDRESS_DAYS = 30
    REGISTER_RATE_LIMIT = "5/minute"
    # Reset mails asked for one email, from anywhere: an inbox is not flooded.
    PASSWORD_RESET_RATE_LIMIT = "5/hour"  # noqa: S105 (a rate, not a secret)
    # Verification mails asked for again by one account.
    VERIFY_EMAIL_RATE_LIMIT = "5/hour"
    PASSWORD_RESET_TOKEN_EXPIRES = 30 * 60
    EMAIL_VERIFICATION_TOKEN_EXPIRES = 2 * 24 * 3600
    # The first retry of a mail the server did not take, in seconds; doubled
    # at each failure up to MAIL_RETRY_MAX.
    MAIL_RETRY_INITIAL = 5
    MAIL_RETRY_MAX = 300
    # Tries before a mail is set aside as failed (about 8 hours at the cap).
    MAIL_MAX_ATTEMPTS = 100
    MAIL_TIMEOUT = 10
    DEBUG = False
    TESTING = False

    @classmethod
    def from_env(cls, env, instance_path):
        database_url = env.get("DATABASE_URL") or (
            "sqlite:///" + os.path.join(instance_path, "postservice.sqlite")
        )
        _check_database_url(database_url)
        return {
            "MODE": cls.MODE,
            "DEBUG": cls.DEBUG,
            "TESTING": cls.TESTING,
            "MAX_CONTENT_LENGTH": MAX_BODY_BYTES,
            "POST_TEXT_MAX_BYTES": POST_TEXT_MAX_BYTES,
            "SQLALCHEMY_DATABASE_URI": database_url,
            "JWT_SECRET_KEY": env.get("JWT_SECRET_KEY") or None,
            "JWT_ACCESS_TOKEN_EXPIRES": timedelta(
                seconds=_int(
                    env,
                    "JWT_ACCESS_TOKEN_EXPIRES",
                    cls.JWT_ACCESS_TOKEN_EXPIRES,
                    1,
                    LIFETIME_MAX,
                )
            ),
            "JWT_REFRESH_TOKEN_EXPIRES": timedelta(
                seconds=_int(
                    env,
                    "JWT_REFRESH_TOKEN_EXPIRES",
                    cls.JWT_REFRESH_TOKEN_EXPIRES,
                    60,
                    LIFETIME_MAX,
                )
            ),
            "REFRESH_REUSE_INTERVAL": _int(
                env,
                "REFRESH_REUSE_INTERVAL",
                cls.REFRESH_REUSE_INTERVAL,
                0,
                LIFETIME_MAX,
            ),
            "BCRYPT_ROUNDS": _int(env, "BCRYPT_ROUNDS", cls.BCRYPT_ROUNDS, 4, 31),
            "PASSWORD_HASH_SLOTS": _int(
                env, "PASSWORD_HASH_SLOTS", _default_hash_slots(env), 1
            ),
            "POSTS_CACHE_TTL": _int(env, "POSTS_CACHE_TTL", cls.POSTS_CACHE_TTL, 1),
            "POSTS_CACHE_MAX_BYTES": _int(
                env, "POSTS_CACHE_MAX_BYTES", POSTS_CACHE_MAX_BYTES, 0
            ),
            "POSTS_LOCAL_COPY_BYTES": _int(
                env, "POSTS_LOCAL_COPY_BYTES", POSTS_LOCAL_COPY_BYTES, 0
            ),
            "LISTING_REBUILD_SLOTS": _int(
                env, "LISTING_REBUILD_SLOTS", _default_rebuild_slots(env), 1
            ),
            "REDIS_URL": env.get("REDIS_URL") or None,
            # Unset: the database's own identity (``postservice.cache.namespace``).
            "REDIS_KEY_PREFIX": env.get("REDIS_KEY_PREFIX") or None,
            "RATELIMIT_STORAGE_URL": env.get("RATELIMIT_STORAGE_URL") or None,
            "REDIS_TIMEOUT": _float(env, "REDIS_TIMEOUT", 0.25),
            "REDIS_SSL_CA_CERTS": env.get("REDIS_SSL_CA_CERTS") or None,
            "REDIS_SSL_CERTFILE": env.get("REDIS_SSL_CERTFILE") or None,
            "REDIS_SSL_KEYFILE": env.get("REDIS_SSL_KEYFILE") or None,
            "DATABASE_POOL_SIZE": _int(
                env, "DATABASE_POOL_SIZE", DEFAULT_DATABASE_POOL_SIZE, 1
            ),
            "DATABASE_MAX_OVERFLOW": DATABASE_MAX_OVERFLOW,
            "DATABASE_CONNECT_TIMEOUT": _int(env, "DATABASE_CONNECT_TIMEOUT", 3, 1),
            "DATABASE_READ_TIMEOUT": _int(
                env, "DATABASE_READ_TIMEOUT", DEFAULT_DATABASE_IO_TIMEOUT, 1
            ),
            "DATABASE_WRITE_TIMEOUT": _int(
                env, "DATABASE_WRITE_TIMEOUT", DEFAULT_DATABASE_IO_TIMEOUT, 1
            ),
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
            "LOGIN_KNOWN_ADDRESS_DAYS": _int(
                env, "LOGIN_KNOWN_ADDRESS_DAYS", cls.LOGIN_KNOWN_ADDRESS_DAYS, 1, 36500
            ),
            "PASSWORD_RESET_RATE_LIMIT": _rate_limit(
                env, "PASSWORD_RESET_RATE_LIMIT", cls.PASSWORD_RESET_RATE_LIMIT
            ),
            "VERIFY_EMAIL_RATE_LIMIT": _rate_limit(
                env, "VERIFY_EMAIL_RATE_LIMIT", cls.VERIFY_EMAIL_RATE_LIMIT
            ),
            "PASSWORD_RESET_TOKEN_EXPIRES": _int(
                env,
                "PASSWORD_RESET_TOKEN_EXPIRES",
                cls.PASSWORD_RESET_TOKEN_EXPIRES,
                60,
                LIFETIME_MAX,
            ),
            "EMAIL_VERIFICATION_TOKEN_EXPIRES": _int(
                env,
                "EMAIL_VERIFICATION_TOKEN_EXPIRES",
                cls.EMAIL_VERIFICATION_TOKEN_EXPIRES,
                60,
                LIFETIME_MAX,
            ),
            "REQUIRE_VERIFIED_EMAIL": _bool(env, "REQUIRE_VERIFIED_EMAIL", False),
            **mail_settings(env),
            "PUBLIC_URL": public_url(env),
            "MAIL_RETRY_INITIAL": _int(
                env, "MAIL_RETRY_INITIAL", cls.MAIL_RETRY_INITIAL, 1, LIFETIME_MAX
            ),
            "MAIL_RETRY_MAX": _int(
                env, "MAIL_RETRY_MAX", cls.MAIL_RETRY_MAX, 1, LIFETIME_MAX
            ),
            "MAIL_MAX_ATTEMPTS": _int(
                env, "MAIL_MAX_ATTEMPTS", cls.MAIL_MAX_ATTEMPTS, 1
            ),
            "MAIL_TIMEOUT": _int(env, "MAIL_TIMEOUT", cls.MAIL_TIMEOUT, 1),
            **proxy_settings(env),
            "LOG_FORMAT": log_format(env),
        }


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
    PASSWORD_RESET_RATE_LIMIT = "100000/minute"  # noqa: S105
    VERIFY_EMAIL_RATE_LIMIT = "100000/minute"


class ProductionConfig(Config):
    MODE = "production"


CONFIGS = {c.MODE: c for c in (DevelopmentConfig, TestingConfig, ProductionConfig)}


def app_settings(instance_path, overrides=None, env=None):
    """The app's settings from the process's environment (or ``env``)."""
    return settings_for(os.environ if env is None else env, instance_path, overrides)


def settings_for(env, instance_path, overrides=None):
    """Build the app settings from ``env`` (a mapping like ``os.environ``).

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
    if mode == "production" and _flask_debug(env):
        raise ConfigError(
            "FLASK_DEBUG (flask run --debug) is refused in production: its "
            "debugger runs the code a browser sends it"
        )
    settings = CONFIGS[mode].from_env(env, instance_path)
    settings.update(overrides)
    settings.update(parse_mail_url(settings["MAIL_URL"]))
    _check_production(settings)
    if settings.get("PUBLIC_URL") is None:
        settings["PUBLIC_URL"] = served_url(env)
    for key, value in _derived(settings).items():
        if settings.get(key) is None:  # an override of a library setting wins
            settings[key] = value
    return settings


def _flask_debug(env):
    """``FLASK_DEBUG`` exactly as Flask reads it (``flask run --debug`` sets it
    before the app is built): on unless empty, ``0``, ``false`` or ``no``,
    spaces included (``"0 "`` is on)."""
    value = env.get("FLASK_DEBUG")
    return bool(value and value.lower() not in ("0", "false", "no"))


def secret_weakness(secret):
    """Why ``secret`` is not fit to sign tokens, or None when it is.

    Anyone who can guess the key can sign a token for any user, and anyone
    holding one token can try guesses offline, so it must be as strong as
    ``secrets.token_urlsafe(32)``: 256 random bits. Randomness cannot be
    proven from one string; these rules refuse what is known (published
    placeholders), what is plainly not random (short, runs like "abcdefgh",
    few characters repeated), and what takes fewer than
    2^``MIN_SECRET_GUESS_BITS`` guesses to an attacker who tries what people
    type first (``secret_guess_bits``).
    """
    if secret.strip().lower() in PLACEHOLDER_SECRETS:
        return "is a published placeholder"
    if len(secret) < MIN_SECRET_CHARS:
        return f"is shorter than {MIN_SECRET_CHARS} characters"
    if _longest_run(secret) >= MAX_SECRET_RUN:
        return "has a run of repeated or consecutive characters"
    if _estimated_bits(secret) < MIN_SECRET_ESTIMATED_BITS:
        return "repeats too few characters too often to be random"
    bits = secret_guess_bits(secret)
    if bits < MIN_SECRET_GUESS_BITS:
        return (
            "is made of guessable parts (words, names, keyboard walks, "
            f"repetitions, sequences or dates): about 2^{bits:.0f} guesses "
            f"find it, fewer than 2^{MIN_SECRET_GUESS_BITS}"
        )
    return None


def secret_guess_bits(secret):
    """log2 of the guesses ``secret`` takes to an attacker who knows how
    people make keys: zxcvbn's patterns, priced as zxcvbn prices them.

    The key is covered by the cheapest sequence of parts: a word, name or
    common password of zxcvbn's lists (its rank; more for capitals, digits
    written for letters, or reversed), a keyboard walk, a repetition, a
    sequence or a date, and otherwise one character at a time, at the size
    of the character classes the key uses (a sign used again between words
    is counted as one choice). Only the first ``SECRET_CHARS_JUDGED``
    characters are read.
    """
    from zxcvbn import matching  # its word lists load only to judge a key

    text = secret[:SECRET_CHARS_JUDGED]
    matches = [
        *_word_matches(text),
        *matching.spatial_match(text),
        *matching.sequence_match(text),
        *matching.regex_match(text, _regexen={"recent_year": YEAR}),
        *matching.date_match(text),
    ]
    ending = collections.defaultdict(list)
    for match in matches:
        ending[match["j"]].append(match)
    repeats = collections.defaultdict(list)
    for i, j, bits in _repeats(text):
        repeats[j].append((i, bits))
    character_bits = math.log2(
        sum(size for test, size in SECRET_CHARACTER_CLASSES if any(map(test, text)))
    )
    uses = collections.Counter(text)
    cheapest = [0.0]
    for j, character in enumerate(text):
        cost = character_bits
        if not character.isalnum():
            cost /= uses[character]
        best = cheapest[j] + cost
        for match in ending[j]:
            before = cheapest[match["i"]]
            # A word costs at least its rank: most cannot beat what is known.
            if before + math.log2(match.get("rank", 1)) < best:
                best = min(best, before + _guess_bits(match, text))
        for i, bits in repeats[j]:
            best = min(best, cheapest[i] + bits)
        cheapest.append(best)
    return cheapest[-1]


def _guess_bits(match, text):
    from zxcvbn import scoring

    return math.log2(int(scoring.estimate_guesses(match, text)))


def _repeats(text):
    """``(i, j, bits)`` for each repetition in ``text``, as zxcvbn finds them
    ("abcabcabc": "abc" three times): the bits of what is repeated, judged
    as a key of its own, and of how many times."""
    found = []
    start = 0
    while match := REPEATED.search(text, start):
        shortest = REPEATED_LAZILY.search(text, start)
        if len(match[0]) <= len(shortest[0]):
            match = shortest
        unit = REPEATED_LAZILY.fullmatch(match[0])[1]
        times = len(match[0]) // len(unit)
        bits = secret_guess_bits(unit) + math.log2(times)
        if match.end() - match.start() < len(text):  # zxcvbn's floor for a part
            bits = max(bits, MIN_PART_BITS)
        found.append((match.start(), match.end() - 1, bits))
        start = match.end()
    return found


@functools.cache
def _ranked_words():
    """Each word of zxcvbn's lists with its best rank; the longest length;
    and every beginning of a word up to ``WORD_PREFIX_CHARS`` characters,
    so that a search gives up early on what starts no word."""
    from zxcvbn.matching import RANKED_DICTIONARIES

    ranks = {}
    for ranked in RANKED_DICTIONARIES.values():
        for word, rank in ranked.items():
            if rank < ranks.get(word, rank + 1):
                ranks[word] = rank
    beginnings = {
        word[:size] for word in ranks for size in range(1, WORD_PREFIX_CHARS + 1)
    }
    return ranks, max(map(len, ranks)), beginnings


def _word_matches(text):
    """zxcvbn's dictionary matches of ``text``: forward, reversed, and in
    each of ``L33T_READINGS`` (zxcvbn's own l33t matcher tries every mix of
    readings, which takes tens of milliseconds on a key of hex digits)."""
    matches = _words_in(text, text)
    last = len(text) - 1
    backwards = text[::-1]
    for match in _words_in(backwards, backwards):
        i, j = last - match["j"], last - match["i"]
        match.update(i=i, j=j, token=text[i : j + 1], reversed=True)
        matches.append(match)
    for reading in L33T_READINGS:
        read = text.translate(reading)
        if read == text:
            continue
        for match in _words_in(read, text):
            token = match["token"]
            if token.lower() == match["matched_word"]:
                continue  # a word as written, found above
            written = read[match["i"] : match["j"] + 1]
            match["l33t"] = True
            match["sub"] = {c: r for c, r in zip(token, written, strict=True) if c != r}
            matches.append(match)
    return matches


def _words_in(read, text):
    """Dictionary matches in ``read``, whose tokens are taken from ``text``."""
    ranks, longest, beginnings = _ranked_words()
    lower = read.lower()
    found = []
    for i in range(len(lower)):
        for j in range(i + 1, min(len(lower), i + longest) + 1):
            part = lower[i:j]
            rank = ranks.get(part)
            if rank is not None:
                found.append(
                    {
                        "pattern": "dictionary",
                        "i": i,
                        "j": j - 1,
                        "token": text[i:j],
                        "matched_word": part,
                        "rank": rank,
                        "reversed": False,
                        "l33t": False,
                    }
                )
            elif j - i <= WORD_PREFIX_CHARS and part not in beginnings:
                break  # no word starts so
    return found


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
    """Production refuses a missing or weak signing key, a cheap bcrypt cost,
    and no mail server or public address for the links in mails."""
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
        if not settings["MAIL_URL"]:
            raise ConfigError(
                "MAIL_URL is required in production: password resets and "
                "verification mails go through it (smtp://host:port)"
            )
        if not settings["PUBLIC_URL"]:
            raise ConfigError(
                "PUBLIC_URL is required in production: the links in mails "
                "start with it (https://example.com)"
            )


JWT_DECODE_LEEWAY = 5


def _derived(settings):
    """Library settings that follow from ours (the database engines' options
    follow in ``postservice.db.engines``, the cache's in
    ``postservice.cache.backend``)."""
    return {
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
        "JWT_TOKEN_LOCATION": ["headers"],
        "JWT_ALGORITHM": "HS256",
        "JWT_DECODE_ALGORITHMS": ["HS256"],
        "JWT_ERROR_MESSAGE_KEY": "detail",
        # Seconds by which instances' clocks may disagree: a token's iat and
        # nbf are whole seconds of the issuer's clock, and an instance whose
        # clock is behind would refuse a pair it was just handed. Expiry is
        # that much later too.
        "JWT_DECODE_LEEWAY": JWT_DECODE_LEEWAY,
        # Tokens travel in headers only; a csrf claim would be dead weight.
        "JWT_COOKIE_CSRF_PROTECT": False,
        "RATELIMIT_STORAGE_URL": settings["RATELIMIT_STORAGE_URL"]
        or settings["REDIS_URL"]
        or "memory://",
    }


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


def _check_database_url(url):
    """A URL SQLAlchemy can read, of a driver that is installed (what the
    engines would fail on at their first request, with a traceback)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    # The errors never quote the URL: it may hold a password.
    try:
        parsed = make_url(url)
        parsed.get_dialect().import_dbapi()
    except (NoSuchModuleError, ImportError):  # before ArgumentError, its base
        raise ConfigError(
            "DATABASE_URL names a database driver not installed"
        ) from None
    except (ArgumentError, ValueError):
        raise ConfigError(
            "DATABASE_URL must be a URL such as "
            "mysql+pymysql://user:password@host:3306/name"
        ) from None
    # SQLAlchemy takes any text for a host ("[bad"): every connection would
    # fail, each request a 503. None: a socket, or a file (SQLite).
    if parsed.host is not None and not _HOST.fullmatch(parsed.host):
        raise ConfigError("DATABASE_URL has a malformed host")


# A name, an IPv4 address, or an IPv6 address (brackets already taken off).
_HOST = re.compile(r"[A-Za-z0-9_.-]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.%A-Za-z]*")


def _split(name, url):
    # Fixed words, not urllib's: its message may quote a piece of a password.
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"{name} has a malformed host") from None
    try:
        parts.port  # noqa: B018 (reading it raises ValueError when malformed)
    except ValueError:
        raise ConfigError(
            f"{name} has a port that is not a number from 0 to 65535"
        ) from None
    return parts


def mail_settings(env):
    """``MAIL_URL`` as given (``parse_mail_url`` reads it) and ``MAIL_FROM``."""
    sender = (env.get("MAIL_FROM") or "").strip() or DEFAULT_MAIL_FROM
    if "\n" in sender or "\r" in sender:
        raise ConfigError("MAIL_FROM must be one line")
    _name, address = parseaddr(sender)
    local, _, domain = address.rpartition("@")
    if not local or not domain or any(c.isspace() for c in address):
        raise ConfigError(
            "MAIL_FROM must be an address, as 'Name <name@example.com>', "
            f"got {sender!r}"
        )
    return {
        "MAIL_URL": (env.get("MAIL_URL") or "").strip() or None,
        "MAIL_DEFAULT_SENDER": sender,
    }


def parse_mail_url(url):
    """``MAIL_URL`` (``smtp://[user:pass@]host[:port]``, or ``smtps://`` for
    TLS from the first byte) as Flask-Mailman's settings.

    Without it each mail becomes a line of the log (development). With
    ``smtp://``, STARTTLS is used whenever the server offers it, unless the
    URL ends ``?starttls=off`` (a catcher whose certificate nobody trusts).
    """
    if not url:
        return {"MAIL_BACKEND": "postservice.mail.console.EmailBackend"}
    parts = _split("MAIL_URL", url)
    scheme = parts.scheme.lower()
    if scheme not in MAIL_SCHEMES or not parts.hostname:
        raise ConfigError(
            "MAIL_URL must look like smtp://[user:password@]host[:port] or smtps://..."
        )
    port = parts.port or MAIL_SCHEMES[scheme]
    options = parse_qs(parts.query)
    starttls = (options.get("starttls") or ["auto"])[0].lower()
    if starttls not in ("auto", "off"):
        raise ConfigError("MAIL_URL's starttls must be auto or off")
    return {
        "MAIL_BACKEND": "postservice.mail.smtp.EmailBackend",
        "MAIL_SERVER": parts.hostname,
        "MAIL_PORT": port,
        "MAIL_USERNAME": unquote(parts.username) if parts.username else None,
        "MAIL_PASSWORD": unquote(parts.password) if parts.password else None,
        "MAIL_USE_SSL": scheme == "smtps",
        "MAIL_STARTTLS": scheme == "smtp" and starttls == "auto",
    }


def public_url(env):
    """``PUBLIC_URL``: where the site's pages are, the start of mailed links."""
    raw = (env.get("PUBLIC_URL") or "").strip()
    if not raw:
        return None  # outside production, ``served_url`` in settings_for
    parts = _split("PUBLIC_URL", raw)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() or not c.isprintable() for c in raw)
    ):
        raise ConfigError(f"PUBLIC_URL must be an http(s) URL, got {raw!r}")
    if parts.query or parts.fragment:
        raise ConfigError("PUBLIC_URL must have no query or fragment")
    return raw.rstrip("/")


# Addresses that name no one host: a link needs one the browser can reach.
ANY_ADDRESS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104  (not bound)


def served_url(env):
    """Where ``python -m postservice.serve`` answers, by ``HOST`` and ``PORT``:
    development's ``PUBLIC_URL``, so that mailed links reach the server
    started with ``PORT=8765 ./scripts/serve.sh`` too. Production requires
    ``PUBLIC_URL`` instead."""
    host = (env.get("HOST") or "").strip()
    if host in ANY_ADDRESS:
        host = DEFAULT_HOST
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address, bracketed in a URL
    return f"http://{host}:{_port(env)}"


def _port(env):
    """``PORT``: where the server listens, and development's links point."""
    return _int(env, "PORT", DEFAULT_PORT, 1, PORT_MAX)


def log_format(env):
    """``LOG_FORMAT``: ``text`` (readable lines, the default) or ``json``."""
    value = (env.get("LOG_FORMAT") or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be text or json, got {value!r}")
    return value


def proxy_settings(env):
    """The proxy in front, whose ``X-Forwarded-*`` headers are believed.

    ``TRUSTED_PROXY`` is its address (``*``: any peer). ``TRUSTED_PROXY_COUNT``
    proxies are believed (1 by default with ``TRUSTED_PROXY``); set alone, it
    believes that many from any peer, as ``TRUSTED_PROXY=*`` would
    (``postservice.http.proxy``).
    """
    proxy = (env.get("TRUSTED_PROXY") or "").strip() or None
    count = _int(env, "TRUSTED_PROXY_COUNT", 1 if proxy else 0, 0)
    if proxy and count < 1:
        raise ConfigError("TRUSTED_PROXY_COUNT must be at least 1 with TRUSTED_PROXY")
    headers = env.get("TRUSTED_PROXY_HEADERS") or DEFAULT_PROXY_HEADERS
    return {
        "TRUSTED_PROXY": proxy,
        "TRUSTED_PROXY_COUNT": count,
        "TRUSTED_PROXY_HEADERS": headers.replace(",", " ").lower().split(),
    }


@dataclass(frozen=True)
class ServerSettings:
    """What ``python -m postservice.serve`` needs beyond the app's settings."""

    host: str
    port: int
    threads: int
    connection_limit: int
    channel_timeout: int
    shutdown_timeout: float
    metrics_port: int | None
    log_format: str
    metrics_host: str = "127.0.0.1"
    max_request_body_size: int = SERVER_BODY_LIMIT

    def waitress(self):
        """The keyword arguments of waitress's ``create_server``."""
        return {
            "host": self.host,
            "port": self.port,
            "threads": self.threads,
            "connection_limit": self.connection_limit,
            "channel_timeout": self.channel_timeout,
            "max_request_body_size": self.max_request_body_size,
            "ident": "postservice",
        }


def server_settings(env=None, *, pool_size=None):
    """The server's settings from the environment (or ``env``).

    ``pool_size`` is the database pool's size (``DATABASE_POOL_SIZE`` when
    None). Raises ``ConfigError`` for unreadable numbers; when there are
    more threads than database connections (a thread waiting for a
    connection would stall its request for the pool timeout and then fail);
    and when ``METRICS_PORT`` is the public port (the metrics are never
    served where clients reach the API).
    """
    env = os.environ if env is None else env
    threads = _int(env, "WAITRESS_THREADS", DEFAULT_WAITRESS_THREADS, 1)
    if pool_size is None:
        pool_size = _int(env, "DATABASE_POOL_SIZE", DEFAULT_DATABASE_POOL_SIZE, 1)
    most = pool_size + DATABASE_MAX_OVERFLOW
    if threads > most:
        raise ConfigError(
            f"WAITRESS_THREADS is {threads} but the database pool holds at most "
            f"{most} connections (DATABASE_POOL_SIZE {pool_size} + "
            f"{DATABASE_MAX_OVERFLOW} overflow): lower WAITRESS_THREADS or raise "
            "DATABASE_POOL_SIZE"
        )
    port = _port(env)
    metrics_port = _int(env, "METRICS_PORT", None, 1, PORT_MAX)
    if metrics_port is not None and metrics_port == port:
        raise ConfigError(
            f"METRICS_PORT must differ from PORT ({port}): the metrics "
            "are never served on the public port"
        )
    return ServerSettings(
        host=(env.get("HOST") or "").strip() or DEFAULT_HOST,
        port=port,
        threads=threads,
        connection_limit=_int(env, "WAITRESS_CONNECTION_LIMIT", 100, 1),
        channel_timeout=_int(
            env, "WAITRESS_CHANNEL_TIMEOUT", DEFAULT_CHANNEL_TIMEOUT, 1
        ),
        shutdown_timeout=_float(env, "SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT),
        metrics_port=metrics_port,
        # Scrapers only: on this machine unless told otherwise, whatever
        # HOST the public port is on.
        metrics_host=(env.get("METRICS_HOST") or "").strip() or "127.0.0.1",
        log_format=log_format(env),
    )

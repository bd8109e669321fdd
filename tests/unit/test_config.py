"""Settings: read from the environment per mode, refused when unsafe."""

import os
import re
import secrets
import sys
from datetime import timedelta

import pytest

import config as settings
from postservice import create_app

from ..support.processes import run_in_repo
from ..support.settings import ROOT

SETTINGS_FROM_ENV = (
    "POSTSERVICE_ENV",
    "DATABASE_URL",
    "REDIS_URL",
    "JWT_SECRET_KEY",
    "BCRYPT_ROUNDS",
    "JWT_ACCESS_TOKEN_EXPIRES",
    "JWT_REFRESH_TOKEN_EXPIRES",
    "REFRESH_REUSE_INTERVAL",
    "POSTS_CACHE_TTL",
    "REDIS_TIMEOUT",
    "DATABASE_POOL_SIZE",
    "DATABASE_CONNECT_TIMEOUT",
    "MAIL_URL",
    "MAIL_FROM",
    "PUBLIC_URL",
    "REQUIRE_VERIFIED_EMAIL",
    "HOST",
    "PORT",
)
# What production needs besides a signing key: where mail goes and what
# the links in it open.
PRODUCTION_MAIL = {
    "MAIL_URL": "smtp://mail.example.com:587",
    "PUBLIC_URL": "https://posts.example.com",
}
# As the README says to make one.
STRONG_SECRET = secrets.token_urlsafe(32)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Each test starts from an environment that sets none of the app's variables."""
    for name in SETTINGS_FROM_ENV:
        monkeypatch.delenv(name, raising=False)


def refused(config):
    with pytest.raises(SystemExit) as excinfo:
        create_app(config)
    return str(excinfo.value)


def test_production_requires_a_secret():
    assert "JWT_SECRET_KEY" in refused({"MODE": "production"})


def test_production_refuses_a_31_byte_secret():
    message = refused({"MODE": "production", "JWT_SECRET_KEY": "s" * 31})
    assert "JWT_SECRET_KEY" in message


def test_production_accepts_every_generated_secret():
    # 2,000 fresh keys a run, a millisecond or two each to judge;
    # bench/secret_strength.py scores 100,000 of each kind.
    for _ in range(1000):
        for secret in (secrets.token_urlsafe(32), secrets.token_hex(32)):
            assert settings.secret_weakness(secret) is None, secret


@pytest.mark.parametrize(
    "secret",
    [
        # token_urlsafe(32) outputs whose hyphens split them into runs of
        # letters: random case, not words.
        "nP-dAhVmiXIBuJvvbkYWZzOQjI-WvEjbPSjcYSLNOig",
        "eMtFZLGEVCOLTqzNOGwsPPXq_kDjT-xMhEkuHbeSUkk",
    ],
)
def test_random_keys_with_hyphens_are_not_passphrases(secret):
    assert settings.secret_weakness(secret) is None


def published_placeholders():
    """Every value given for JWT_SECRET_KEY in the files a reader can see."""
    found = set()
    names = (".env.example", "README.md", "docker-compose.yml", "bench/README.md")
    manual = sorted((ROOT / "docs").rglob("*.md"))
    for path in [*(ROOT / name for name in names), *manual]:
        if path.exists():
            text = path.read_text(encoding="utf-8")
            found.update(re.findall(r"JWT_SECRET_KEY[=:]\s*([^\s`'\"]+)", text))
    return found - {"", "${JWT_SECRET_KEY"}


@pytest.mark.parametrize(
    "secret",
    [
        "replace-with-the-output-of-the-command-above",
        "s" * 64,
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789" * 6,
        "correct-horse-battery-staple-correct-horse-battery-staple",
        "the quick brown fox jumps over the lazy dog and runs away again",
        "abcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabc",
        "Passw0rd!" * 6,
        "é" * 16,  # 32 bytes, but 16 of the same character
        secrets.token_urlsafe(24),  # random, but only 192 bits
        # Long, varied, and guessable: words, keyboard walks, repetition, dates.
        "password" * 8,
        "qwertyuiopasdfghjklzxcvbnmqwertyuiopasdfghjkl",
        "Secret_Key_For_Postservice_Production_Use_2026",
        "this-is-my-very-long-and-super-secret-jwt-key-1",
        "postservice-jwt-secret-key-for-production-2026!!",
        "QwErTyUiOpAsDfGhJkLz-XcVbNmQwErTyUiOp-AsDfG",
        "Th1s-1s-my-v3ry-l0ng-s3cr3t-jwt-k3y-f0r-pr0duct10n",
        "ThisIsTheJwtSigningKeyOfPostserviceInProductionSince2024",
        "MyCompanyName2026ProductionJwtSigningKeyForThePostService",
        "2026-01-15.postservice.production.key.2026-01-15.postservice",
        "zxcvbnm,./asdfghjkl;'qwertyuiop[]1234567890-=ZXCVBNM<>?",
    ],
)
def test_production_refuses_weak_or_published_secrets(secret):
    message = refused({"MODE": "production", "JWT_SECRET_KEY": secret})
    assert "JWT_SECRET_KEY" in message
    assert "token_urlsafe(32)" in message  # says how to make a good one


@pytest.mark.parametrize(
    "secret",
    [
        "password" * 8,
        "qwertyuiopasdfghjklzxcvbnmqwertyuiopasdfghjkl",
        "Secret_Key_For_Postservice_Production_Use_2026",
        "this-is-my-very-long-and-super-secret-jwt-key-1",
        "postservice-jwt-secret-key-for-production-2026!!",
    ],
)
def test_a_guessable_secret_is_refused_saying_why(secret):
    message = refused({"MODE": "production", "JWT_SECRET_KEY": secret})
    assert message.startswith("postservice: configuration error: JWT_SECRET_KEY ")
    assert "guessable parts" in message
    assert "fewer than 2^128" in message
    assert settings.secret_guess_bits(secret) < settings.MIN_SECRET_GUESS_BITS


def test_a_long_secret_is_judged_by_its_beginning():
    # Only the first characters are read, so the estimate costs the same
    # for any length: a strong beginning is enough, a weak one is refused.
    strong = secrets.token_urlsafe(32)
    assert settings.secret_weakness(strong + secrets.token_urlsafe(75_000)) is None
    assert settings.secret_weakness("password" * 12_500 + strong)


def test_random_words_enough_for_256_bits_pass_and_a_few_do_not():
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    words = FREQUENCY_LISTS["english_wikipedia"][:7776]  # a Diceware list's size
    choose = secrets.SystemRandom().choice
    long_phrase = "-".join(choose(words) for _ in range(24))
    assert settings.secret_weakness(long_phrase) is None, long_phrase
    short_phrase = "-".join(choose(words) for _ in range(8))
    assert settings.secret_weakness(short_phrase), short_phrase


def test_production_refuses_every_placeholder_the_repository_shows():
    for placeholder in published_placeholders():
        assert settings.secret_weakness(placeholder), placeholder


def test_production_refuses_fewer_than_12_bcrypt_rounds():
    config = {
        "MODE": "production",
        "JWT_SECRET_KEY": STRONG_SECRET,
        "BCRYPT_ROUNDS": 11,
    }
    assert "BCRYPT_ROUNDS" in refused(config)


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "0 ", " false"])
def test_production_refuses_flask_debug(monkeypatch, value):
    """``flask run --debug`` serves Werkzeug's debugger, which runs the code
    a browser sends it, whatever the app's own DEBUG says."""
    monkeypatch.setenv("FLASK_DEBUG", value)
    config = {"MODE": "production", "JWT_SECRET_KEY": STRONG_SECRET, **PRODUCTION_MAIL}
    assert "FLASK_DEBUG" in refused(config)
    monkeypatch.setenv("FLASK_DEBUG", "0")
    assert create_app(config).config["DEBUG"] is False


def test_flask_run_debug_is_refused_in_production(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "POSTSERVICE_ENV": "production",
        "JWT_SECRET_KEY": STRONG_SECRET,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'debug.sqlite'}",
        **PRODUCTION_MAIL,
    }
    command = [sys.executable, "-m", "flask", "--app", "postservice"]
    command += ["run", "--debug", "--port", "0"]
    result = run_in_repo(command, env)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("postservice: configuration error: FLASK_DEBUG")
    ), result.stderr


def test_production_builds_with_safe_settings(database_url):
    app = create_app(
        {
            "MODE": "production",
            "JWT_SECRET_KEY": STRONG_SECRET,
            "BCRYPT_ROUNDS": 12,
            "SQLALCHEMY_DATABASE_URI": database_url,
            **PRODUCTION_MAIL,
        }
    )
    assert app.config["MODE"] == "production"
    assert app.config["JWT_SECRET_KEY"] == STRONG_SECRET
    assert app.config["TESTING"] is False
    assert app.config["DEBUG"] is False


def test_production_secret_from_environment_is_checked(monkeypatch):
    monkeypatch.setenv("POSTSERVICE_ENV", "production")
    monkeypatch.setenv("JWT_SECRET_KEY", "short")
    with pytest.raises(SystemExit, match="JWT_SECRET_KEY"):
        create_app()


def test_production_refusal_is_one_line_without_traceback():
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_FROM_ENV}
    env["POSTSERVICE_ENV"] = "production"
    result = run_in_repo(
        [sys.executable, "-c", "from postservice import create_app; create_app()"],
        env,
    )
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "JWT_SECRET_KEY" in lines[0]
    assert "Traceback" not in result.stderr


def test_unknown_mode_is_refused(monkeypatch):
    monkeypatch.setenv("POSTSERVICE_ENV", "staging")
    with pytest.raises(SystemExit, match="POSTSERVICE_ENV"):
        create_app()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BCRYPT_ROUNDS", "abc"),
        ("BCRYPT_ROUNDS", "3"),
        ("BCRYPT_ROUNDS", "32"),
        ("JWT_ACCESS_TOKEN_EXPIRES", "0"),
        ("JWT_REFRESH_TOKEN_EXPIRES", "59"),
        ("JWT_REFRESH_TOKEN_EXPIRES", "1h"),
        ("REFRESH_REUSE_INTERVAL", "-1"),
        ("REFRESH_REUSE_INTERVAL", "2.5"),
        ("POSTS_CACHE_TTL", "1.5"),
        ("REDIS_TIMEOUT", "-1"),
        ("LOGIN_KNOWN_ADDRESS_DAYS", "0"),
        ("LOGIN_KNOWN_ADDRESS_DAYS", "a month"),
        # Numbers that would overflow a date or a C int before their first use.
        ("JWT_ACCESS_TOKEN_EXPIRES", "100000000000000"),
        ("JWT_REFRESH_TOKEN_EXPIRES", "99999999999999999"),
        # Stored as a time to come in INTEGER columns: a year at most.
        ("JWT_REFRESH_TOKEN_EXPIRES", "400000000"),
        ("PASSWORD_RESET_TOKEN_EXPIRES", str(367 * 24 * 3600)),
        ("MAIL_RETRY_MAX", str(367 * 24 * 3600)),
        ("LOGIN_KNOWN_ADDRESS_DAYS", "36501"),
        ("POSTS_CACHE_TTL", str(2**31)),
        # nan passes every comparison's "no"; inf means never.
        ("REDIS_TIMEOUT", "nan"),
        ("REDIS_TIMEOUT", "inf"),
        ("PORT", "70000"),
    ],
)
def test_unreadable_or_out_of_range_number_is_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=name) as excinfo:
        create_app({"MODE": "testing"})
    assert str(excinfo.value).startswith("postservice: configuration error: ")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PUBLIC_URL", "http://[::1"),
        ("PUBLIC_URL", "http://posts.example.com:abc"),
        ("PUBLIC_URL", "http://posts example.com"),
        ("MAIL_URL", "smtp://[::1"),
        ("MAIL_FROM", "not an address"),
        ("MAIL_FROM", "posts <@example.com>"),
        ("REDIS_URL", "redis://[::1/6"),
        ("REDIS_URL", "redis://:secretpw@127.0.0.1:abc/6"),
        # A password with "?", "/" or "#" ends the host early: urllib's
        # message would quote its first part.
        ("REDIS_URL", "redis://:secretpw?x@cache:6379/0"),
        ("RATELIMIT_STORAGE_URL", "redis://:secretpw/x@cache:6379/0"),
        ("PUBLIC_URL", "https://u:secretpw#x@posts.example.com"),
        ("RATELIMIT_STORAGE_URL", "unix:///tmp/redis.sock"),
        ("REDIS_URL", "redis://127.0.0.1:99999/6"),
        ("REDIS_URL", "redis://127.0.0.1:6379/x"),  # redis-py would take db 0
        ("RATELIMIT_STORAGE_URL", "redis://127.0.0.1:abc/6"),
        ("RATELIMIT_STORAGE_URL", "bogus://x"),
        ("DATABASE_URL", "nonsense"),
        ("DATABASE_URL", "mysql+pymysql://u:secretpw@db:abc/posts"),
        ("DATABASE_URL", "nosuchdriver://db/posts"),
        ("DATABASE_URL", "mysql+pymysql://u:secretpw@[bad/posts"),
        ("DATABASE_URL", "mysql+pymysql://u:secretpw@bad]/posts"),
        ("DATABASE_URL", "mysql+pymysql://u:secretpw@db host/posts"),
    ],
)
def test_an_unusable_address_is_refused_in_one_line(monkeypatch, name, value):
    """At start, naming the setting, never quoting a password: not a
    traceback then, nor a 500 at every request later."""
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as excinfo:
        create_app({"MODE": "testing"})
    message = str(excinfo.value)
    assert message.startswith("postservice: configuration error: ")
    assert name in message
    assert "secretpw" not in message


@pytest.mark.parametrize(
    "url",
    [
        "mysql+nosuchdriver://u:secretpw@db/posts",  # a dialect without it
        "mysql+mysqlconnector://u:secretpw@db/posts",  # a driver not installed
        "postgresql+pg8000://u:secretpw@db/posts",
    ],
)
def test_a_database_driver_that_is_not_installed_is_refused(monkeypatch, url):
    monkeypatch.setenv("DATABASE_URL", url)
    assert refused({"MODE": "testing"}) == (
        "postservice: configuration error: DATABASE_URL names a database "
        "driver not installed"
    )


def test_development_builds_with_no_variables():
    app = create_app()
    assert app.config["MODE"] == "development"
    assert app.config["BCRYPT_ROUNDS"] == 12
    assert app.config["POSTS_CACHE_TTL"] == 300
    assert app.config["JWT_SECRET_KEY"]
    assert app.config["CACHE_TYPE"] == "SimpleCache"
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        (None, None, "http://127.0.0.1:8000"),
        (None, "8765", "http://127.0.0.1:8765"),
        ("0.0.0.0", "8765", "http://127.0.0.1:8765"),  # noqa: S104
        ("::", "9000", "http://127.0.0.1:9000"),
        ("192.0.2.7", "8000", "http://192.0.2.7:8000"),
        ("::1", "8765", "http://[::1]:8765"),
    ],
)
def test_development_links_point_where_the_server_answers(monkeypatch, host, port, url):
    # Mailed links open the server started on HOST and PORT, when no
    # PUBLIC_URL says otherwise.
    for name, value in (("HOST", host), ("PORT", port)):
        if value is not None:
            monkeypatch.setenv(name, value)
    assert create_app().config["PUBLIC_URL"] == url


def test_a_set_public_url_wins_over_the_port(monkeypatch):
    monkeypatch.setenv("PORT", "8765")
    monkeypatch.setenv("PUBLIC_URL", "https://posts.example.com/")
    assert create_app().config["PUBLIC_URL"] == "https://posts.example.com"


def test_development_secret_survives_a_restart():
    assert (
        create_app().config["JWT_SECRET_KEY"] == create_app().config["JWT_SECRET_KEY"]
    )


def test_testing_mode_uses_cheap_bcrypt():
    app = create_app({"MODE": "testing"})
    assert app.config["BCRYPT_ROUNDS"] == 4
    assert app.config["TESTING"] is True


def test_testing_mode_without_secret_gets_a_random_one():
    first = create_app({"MODE": "testing"}).config["JWT_SECRET_KEY"]
    second = create_app({"MODE": "testing"}).config["JWT_SECRET_KEY"]
    assert first
    assert first != second


def test_token_lifetime_is_read_from_environment(monkeypatch):
    monkeypatch.setenv("JWT_ACCESS_TOKEN_EXPIRES", "120")
    app = create_app({"MODE": "testing"})
    assert app.config["JWT_ACCESS_TOKEN_EXPIRES"] == timedelta(seconds=120)


def test_token_lifetimes_and_reuse_interval_defaults():
    app = create_app({"MODE": "testing"})
    assert app.config["JWT_ACCESS_TOKEN_EXPIRES"] == timedelta(seconds=900)
    assert app.config["JWT_REFRESH_TOKEN_EXPIRES"] == timedelta(days=30)
    assert app.config["REFRESH_REUSE_INTERVAL"] == 10


def test_refresh_lifetime_and_reuse_interval_are_read_from_environment(monkeypatch):
    monkeypatch.setenv("JWT_REFRESH_TOKEN_EXPIRES", "86400")
    monkeypatch.setenv("REFRESH_REUSE_INTERVAL", "0")
    app = create_app({"MODE": "testing"})
    assert app.config["JWT_REFRESH_TOKEN_EXPIRES"] == timedelta(days=1)
    assert app.config["REFRESH_REUSE_INTERVAL"] == 0


def test_cache_ttl_is_read_from_environment(monkeypatch):
    monkeypatch.setenv("POSTS_CACHE_TTL", "42")
    app = create_app({"MODE": "testing"})
    assert app.config["POSTS_CACHE_TTL"] == 42
    assert app.config["CACHE_DEFAULT_TIMEOUT"] == 42


def test_known_address_days_are_read_from_environment(tmp_path):
    defaults = settings.settings_for({}, str(tmp_path))
    assert defaults["LOGIN_KNOWN_ADDRESS_DAYS"] == 30
    env = {"LOGIN_KNOWN_ADDRESS_DAYS": "7"}
    assert settings.settings_for(env, str(tmp_path))["LOGIN_KNOWN_ADDRESS_DAYS"] == 7


def test_bcrypt_rounds_are_read_from_environment(monkeypatch):
    monkeypatch.setenv("BCRYPT_ROUNDS", "6")
    assert create_app({"MODE": "testing"}).config["BCRYPT_ROUNDS"] == 6


def test_redis_url_selects_the_redis_cache(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    app = create_app({"MODE": "testing"})
    assert app.config["CACHE_TYPE"] == "postservice.cache.backend.RedisBytesCache"
    assert app.config["CACHE_REDIS_URL"] == "redis://127.0.0.1:1/0"


def test_database_url_is_read_from_environment(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'env.sqlite'}"
    monkeypatch.setenv("DATABASE_URL", url)
    assert create_app({"MODE": "testing"}).config["SQLALCHEMY_DATABASE_URI"] == url


def test_overrides_win_over_environment(monkeypatch):
    monkeypatch.setenv("POSTS_CACHE_TTL", "42")
    assert (
        create_app({"MODE": "testing", "POSTS_CACHE_TTL": 7}).config["POSTS_CACHE_TTL"]
        == 7
    )


def production(**settings):
    return {"MODE": "production", "JWT_SECRET_KEY": STRONG_SECRET, **settings}


def test_production_requires_a_mail_server():
    message = refused(production(PUBLIC_URL="https://posts.example.com"))
    assert "MAIL_URL is required in production" in message


def test_production_requires_the_public_url():
    message = refused(production(MAIL_URL="smtp://mail.example.com"))
    assert "PUBLIC_URL is required in production" in message


def test_mail_url_becomes_the_smtp_settings():
    env = {
        "MAIL_URL": "smtp://user%40example.com:p%3Ass@mail.example.com:2525",
        "PUBLIC_URL": "https://posts.example.com/",
    }
    config = settings.settings_for(env, "/tmp")
    assert config["MAIL_SERVER"] == "mail.example.com"
    assert config["MAIL_PORT"] == 2525
    assert config["MAIL_USERNAME"] == "user@example.com"
    assert config["MAIL_PASSWORD"] == "p:ss"
    assert config["MAIL_USE_SSL"] is False
    assert config["MAIL_STARTTLS"] is True
    assert config["PUBLIC_URL"] == "https://posts.example.com"


def test_smtps_and_starttls_off():
    smtps = settings.settings_for({"MAIL_URL": "smtps://mail.example.com"}, "/tmp")
    assert (smtps["MAIL_PORT"], smtps["MAIL_USE_SSL"]) == (465, True)
    plain = settings.settings_for(
        {"MAIL_URL": "smtp://catcher:1025?starttls=off"}, "/tmp"
    )
    assert (plain["MAIL_PORT"], plain["MAIL_STARTTLS"]) == (1025, False)


def test_without_mail_url_mail_goes_to_the_console():
    config = settings.settings_for({}, "/tmp")
    assert config["MAIL_BACKEND"] == "postservice.mail.console.EmailBackend"
    assert config["PUBLIC_URL"] == "http://127.0.0.1:8000"
    assert config["REQUIRE_VERIFIED_EMAIL"] is False


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAIL_URL": "http://mail.example.com"}, "MAIL_URL"),
        ({"MAIL_URL": "smtp://mail.example.com:port"}, "MAIL_URL"),
        ({"MAIL_URL": "smtp://h?starttls=maybe"}, "starttls"),
        ({"PUBLIC_URL": "posts.example.com"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://posts.example.com/?a=b"}, "PUBLIC_URL"),
        ({"REQUIRE_VERIFIED_EMAIL": "maybe"}, "REQUIRE_VERIFIED_EMAIL"),
        ({"PASSWORD_RESET_RATE_LIMIT": "often"}, "PASSWORD_RESET_RATE_LIMIT"),
        ({"MAIL_FROM": "a@example.com\nBcc: b@example.com"}, "MAIL_FROM"),
    ],
)
def test_mail_settings_refused(env, named):
    with pytest.raises(SystemExit, match=named):
        settings.settings_for(env, "/tmp")

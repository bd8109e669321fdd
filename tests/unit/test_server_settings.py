"""The production server's settings, read from the environment by config.py."""

import pytest

import config
from config import MAX_BODY_BYTES, ConfigError, server_settings


def test_defaults():
    settings = server_settings({}).waitress()
    assert settings["threads"] == 8
    assert settings["host"] == "127.0.0.1"
    assert settings["port"] == 8000
    assert settings["connection_limit"] == 100
    assert settings["channel_timeout"] == 30
    assert "trusted_proxy" not in settings  # the app's concern, under any server
    # Just above Flask's limit, so a slightly larger body gets the JSON 413.
    assert settings["max_request_body_size"] > MAX_BODY_BYTES
    assert settings["max_request_body_size"] <= 2 * MAX_BODY_BYTES
    assert server_settings({}).shutdown_timeout == 20.0


def test_settings_from_the_environment():
    env = {
        "HOST": "10.1.2.3",
        "PORT": "9000",
        "WAITRESS_THREADS": "15",
        "WAITRESS_CONNECTION_LIMIT": "500",
        "WAITRESS_CHANNEL_TIMEOUT": "45",
        "SHUTDOWN_TIMEOUT": "7.5",
        "METRICS_PORT": "9100",
        "LOG_FORMAT": "json",
    }
    typed = server_settings(env)
    settings = typed.waitress()
    assert settings["host"] == "10.1.2.3"
    assert settings["port"] == 9000
    assert settings["threads"] == 15
    assert settings["connection_limit"] == 500
    assert settings["channel_timeout"] == 45
    assert typed.shutdown_timeout == 7.5
    assert typed.metrics_port == 9100
    assert typed.log_format == "json"


def test_the_trusted_proxy_is_read_once_for_the_app():
    env = {
        "TRUSTED_PROXY": "10.0.0.2",
        "TRUSTED_PROXY_HEADERS": "x-forwarded-for, X-Forwarded-Proto",
    }
    settings = config.proxy_settings(env)
    assert settings["TRUSTED_PROXY"] == "10.0.0.2"
    assert settings["TRUSTED_PROXY_HEADERS"] == [
        "x-forwarded-for",
        "x-forwarded-proto",
    ]
    assert settings["TRUSTED_PROXY_COUNT"] == 1
    with pytest.raises(ConfigError, match="TRUSTED_PROXY_COUNT must be at least 1"):
        config.proxy_settings({**env, "TRUSTED_PROXY_COUNT": "0"})


def test_more_threads_than_database_connections_is_refused():
    with pytest.raises(ConfigError) as raised:
        server_settings({"WAITRESS_THREADS": "16"})
    assert "WAITRESS_THREADS is 16" in str(raised.value)
    assert "at most 15 connections" in str(raised.value)
    assert server_settings({"WAITRESS_THREADS": "16", "DATABASE_POOL_SIZE": "11"})
    assert server_settings({"WAITRESS_THREADS": "16"}, pool_size=11)


@pytest.mark.parametrize("value", ["many", "0", "-2"])
def test_unreadable_thread_count_is_refused(value):
    with pytest.raises(ConfigError):
        server_settings({"WAITRESS_THREADS": value})


def metrics_port_setting(env, public_port):
    return config.server_settings({**env, "PORT": str(public_port)}).metrics_port


def test_metrics_port_must_differ_from_the_public_port():
    assert metrics_port_setting({}, 8000) is None
    assert metrics_port_setting({"METRICS_PORT": "9100"}, 8000) == 9100
    with pytest.raises(config.ConfigError, match="METRICS_PORT must differ"):
        metrics_port_setting({"METRICS_PORT": "8000"}, 8000)
    with pytest.raises(config.ConfigError):
        metrics_port_setting({"METRICS_PORT": "ninety"}, 8000)


def test_the_metrics_listen_on_this_machine_unless_told_otherwise():
    # Whatever HOST the public port is on (the image listens on every address).
    public = {"HOST": "10.1.2.3", "METRICS_PORT": "9100"}
    assert server_settings(public).metrics_host == "127.0.0.1"
    assert server_settings({**public, "METRICS_HOST": " "}).metrics_host == (
        "127.0.0.1"
    )
    told = server_settings({**public, "METRICS_HOST": "10.9.8.7"})
    assert told.metrics_host == "10.9.8.7"
    assert told.waitress()["host"] == "10.1.2.3"
    assert "metrics_host" not in told.waitress()

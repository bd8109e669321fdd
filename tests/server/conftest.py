"""Fixtures of the tests that run the production server."""

import pytest

from ..support.servers import AppInstance


@pytest.fixture
def instance(tmp_path, database_url, redis_url):
    """``python -m postservice.serve`` on a spare port, with 4 threads."""
    server = AppInstance(tmp_path, database_url, redis_url, threads=4)
    server.start()
    yield server
    server.stop()

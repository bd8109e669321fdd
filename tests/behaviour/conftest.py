"""Fixtures of the behaviour tests."""

import pytest


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
def storage(request):
    """Where the limits are counted: the process's memory, or the real Redis."""
    if request.param == "redis":
        return {"REDIS_URL": request.getfixturevalue("real_redis_url")}
    return {"REDIS_URL": None}

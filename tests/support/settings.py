"""Where the tests run: the repository, the servers they are given, CI or not."""

import os
import secrets
from pathlib import Path

import pytest

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")
IN_CI = os.environ.get("CI", "").lower() == "true"
ROOT = Path(__file__).resolve().parents[2]
# One signing key per test session, shared by every app and server it starts,
# so a token from one is accepted by the others as in a real deployment.
JWT_SECRET = secrets.token_urlsafe(48)


def require(url, name, why):
    """Skip locally when a server is not configured; in CI that is a failure."""
    if url:
        return url
    if IN_CI:
        pytest.fail(f"{name} must be set in CI: {why}")
    pytest.skip(f"set {name} to run this: {why}")
    return None

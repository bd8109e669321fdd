#!/bin/sh
# Install into .venv with the test tools and run the whole suite.
# Set TEST_DATABASE_URL and TEST_REDIS_URL to run it against MySQL/MariaDB
# and Redis as well; arguments are passed to pytest.
EXTRAS="[test]"
. "$(dirname "$0")/bootstrap.sh"
exec python -m pytest "$@"

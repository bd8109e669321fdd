#!/bin/sh
# Install into .venv, migrate the database and serve on http://127.0.0.1:8000.
# With no environment this uses SQLite in instance/ and an in-process cache.
EXTRAS=""
. "$(dirname "$0")/bootstrap.sh"
flask --app postservice db upgrade
exec waitress-serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" \
    --call postservice:create_app

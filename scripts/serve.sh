#!/bin/sh
# Install into .venv, migrate the database and serve on http://127.0.0.1:8000.
# With no environment this uses SQLite in instance/ and an in-process cache.
# The server is postservice.serve: waitress with the 9 MiB body cap, and a
# graceful stop on Ctrl-C or SIGTERM.
EXTRAS=""
. "$(dirname "$0")/bootstrap.sh"
flask --app postservice db upgrade
exec python -m postservice.serve

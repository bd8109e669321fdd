#!/bin/sh
# Container start: wait for the database, bring its schema up to date, then
# replace this shell with the server (or with the command given), so that
# the server is the process that receives SIGTERM.
set -eu
flask --app postservice wait-for-db --timeout "${DATABASE_WAIT_TIMEOUT:-60}"
flask --app postservice db upgrade
# Logouts recorded by 1.x in Redis alone; adds nothing once imported. The
# service runs without Redis, so its start does not wait for it.
flask --app postservice tokens import-legacy --skip-unreachable
if [ "$#" -eq 0 ]; then
    set -- python -m postservice.serve
fi
exec "$@"

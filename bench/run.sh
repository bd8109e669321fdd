#!/bin/sh
# The benchmark in one command: installs what it needs into .venv (the
# service, matplotlib for the chart) and wrk with apt if it is missing, then
# runs bench/run.py with these arguments (--quick for a smoke test).
# BENCH_MYSQL_URL, BENCH_DATABASE and BENCH_REDIS_URL say where to run; see
# bench/README.md.
set -eu
EXTRAS=""
. "$(dirname "$0")/../scripts/bootstrap.sh"
python -c 'import matplotlib' 2>/dev/null || python -m pip install --quiet matplotlib
if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq wrk
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq wrk
    fi
fi
exec python bench/run.py "$@"

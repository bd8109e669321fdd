# Sourced by serve.sh and test.sh: make sure .venv exists and holds this
# checkout (editable) with the extras named in $EXTRAS. Reinstalls only when
# setup.cfg changed since the last install.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "postservice needs Python 3.11 or newer (found $("$PYTHON" --version 2>&1))" >&2
    exit 1
}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.installed-$EXTRAS"
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet --editable ".$EXTRAS"
    touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"

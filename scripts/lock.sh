#!/bin/sh
# Regenerate requirements.lock: every package the image installs, pinned with
# its hashes, resolved from setup.cfg's install_requires plus the build
# backend named in pyproject.toml (the image installs the app itself without
# fetching anything). Run after changing either file; tests/deploy/test_lock.py
# fails while the lock no longer matches them.
EXTRAS=""
. "$(dirname "$0")/bootstrap.sh"
python -m pip install --quiet "uv>=0.5,<1"
python -c 'import tomllib
with open("pyproject.toml", "rb") as fh:
    print("\n".join(tomllib.load(fh)["build-system"]["requires"]))' |
    uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
        --custom-compile-command ./scripts/lock.sh \
        --output-file requirements.lock setup.cfg -

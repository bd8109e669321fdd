"""The live service against its own OpenAPI document, with schemathesis.

The production server (``python -m postservice.serve``, through the
``start_server`` fixture) is tested from the document it serves, with every
schemathesis check: no 5xx; every status code, content type, header and
body is one the document declares; invalid input is refused and valid
input accepted; protected operations refuse a request without a token.
The number of examples is bounded (tests/support/schemathesis.toml) so a run takes
well under a minute.

Every operation documents the 400, 413, 431 and 501 the server answers
itself (tests/server/test_server_answers.py sends each), so a 400 the app
gives where its operation promises none passes here: the API tests check
each operation's own statuses.

Each run draws a new seed and prints it; ``CONTRACT_SEED=<seed>`` replays a
run's cases (against a new database, so the stateful phase may differ).
"""

import os
import subprocess
import sys
from pathlib import Path

import requests

from ..support.auth import PASSWORD
from ..support.settings import ROOT

CONFIG = ROOT / "tests" / "support" / "schemathesis.toml"
EMAIL = "contract@example.com"


def test_service_matches_its_document(start_server):
    base = start_server()
    response = requests.post(
        base + "/api/v1/users/register",
        json={"email": EMAIL, "password": PASSWORD},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    env = dict(
        os.environ,
        CONTRACT_EMAIL=EMAIL,
        CONTRACT_PASSWORD=PASSWORD,
        NO_COLOR="1",
        SCHEMATHESIS_HOOKS="tests.support.contract_hooks",
    )
    cli = Path(sys.executable).with_name("schemathesis")
    seed = os.environ.get("CONTRACT_SEED")
    result = subprocess.run(
        [
            str(cli),
            "--config-file",
            str(CONFIG),
            "run",
            base + "/api/v1/openapi.json",
            "--url",
            base,
            "--checks",
            "all",
            *(["--seed", seed] if seed else []),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr

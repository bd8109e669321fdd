"""Every benchmark script once, briefly, so that none breaks unnoticed.

    .venv/bin/python bench/smoke.py

Each script runs with the smallest arguments that still take it through
all its steps, on the benchmark's own database and Redis databases
(``common.settings``); what they write goes to a scratch directory
(``BENCH_RESULTS``), so ``results/`` keeps its measurements. The figures
are noise and nothing is asserted about them: a script passes when it
exits 0, which its own checks (byte-identical bodies, no errors) decide.
``run.py --quick`` and ``compare.py`` have smoke runs of their own in CI.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

RUNS = [
    ["posts.py", "--seconds", "1", "--rounds", "1"],
    ["memory.py"],
    ["big_account.py"],
    ["profile_requests.py", "--requests", "50", "--no-py-spy"],
    ["get_posts_micro.py", "--number", "50", "--repeat", "1"],
    ["metrics_overhead.py"],
    ["gc_pauses.py", "--requests", "200"],
    ["secret_strength.py", "--keys", "1000"],
    ["refresh_cost.py", "--count", "20"],
    ["reset_timing.py", "--count", "20"],
]


def main():
    config = common.settings()
    # refresh_cost.py and reset_timing.py take a whole URL; they share the
    # database the others drop and migrate, so it must exist first.
    common.reset_database(config)
    failed = []
    with tempfile.TemporaryDirectory() as scratch:
        env = dict(
            os.environ,
            BENCH_RESULTS=scratch,
            BENCH_DATABASE_URL=common.database_url(config),
            BENCH_REDIS_URL=config["redis_url"],
        )
        for script, *args in RUNS:
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, str(common.BENCH / script), *args],
                env=env,
                cwd=common.ROOT,
                capture_output=True,
                text=True,
            )
            seconds = time.monotonic() - started
            verdict = "ok" if done.returncode == 0 else f"exit {done.returncode}"
            print(f"{verdict:>7}  {seconds:5.1f} s  {script} {' '.join(args)}")
            if done.returncode != 0:
                failed.append(script)
                print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
    if failed:
        sys.exit(f"benchmark scripts that failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()

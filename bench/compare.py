"""Two or more builds side by side, each against the same floors, in one run.

    git worktree add /tmp/candidate <commit>
    .venv/bin/python bench/compare.py . /tmp/candidate --rounds 6

Each argument is a checkout of the service. Its server runs with that
checkout as the working directory, which ``serve_app.py`` puts first on
``sys.path``: the checkout's own ``postservice`` is what serves. (Under
``python -m``, setting ``PYTHONPATH`` would not: the working directory comes
first.) The floors, their server and the database are this checkout's, as
in ``run.py``.

For each request kind, every round runs the floor and each build once, in a
new random order, for ``--seconds`` at ``--connections``. Printed per build:
the median req/s, the median of the per-round ratios to the floor, each
round's ratio, and the median p99. The machine's load drifts; ratios of runs
seconds apart are steadier than single figures, and a build started later
than another was seen to run a few percent faster with identical code, so
compare a build with itself first when a difference is that small.
"""

import argparse
import random
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import run

KINDS = {
    "cached": ("cached20", "reference"),
    "add": ("add_small", "insert_floor"),
    "delete": ("delete", "delete_floor"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="+", type=Path, help="service checkouts")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--kinds", default="cached,add,delete", help=", ".join(KINDS))
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",")
    for kind in kinds:
        if kind not in KINDS:
            parser.error(f"unknown kind {kind!r}: choose from {', '.join(KINDS)}")
    builds = [build.resolve() for build in args.builds]
    for build in builds:
        if not (build / "postservice" / "__init__.py").is_file():
            parser.error(f"{build} is not a checkout of the service")

    config = common.settings()
    common.ensure_wrk()
    common.reset_database(config)
    env = common.server_env(config)
    reference_env, floor_env, floor_user = run.floor_envs(config, env)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        reference = stack.enter_context(
            common.waitress("reference_app:create_app", reference_env)
        )[0]
        floor = stack.enter_context(
            common.waitress("write_floor:create_app", floor_env)
        )[0]
        bases = [
            stack.enter_context(
                common.waitress("postservice:create_app", env, cwd=build)
            )[0]
            for build in builds
        ]
        users = run.setup_users(config, bases[0], tmp)
        users["floor"] = floor_user
        run.store_reference_body(config, run.check_cached(bases[0], bases[-1], users))
        benches = {
            name: run.Bench(
                config,
                {"ours": base, "nocache": base, "reference": reference, "floor": floor},
                users,
                tmp,
            )
            for name, base in zip(names(builds), bases, strict=True)
        }
        for kind in kinds:
            compare(kind, benches, args)


def names(builds):
    """A label per build; a checkout given twice (to compare it with itself)
    gets a number each time."""
    return [
        f"{build} #{n + 1}" if builds.count(build) > 1 else str(build)
        for n, build in enumerate(builds)
    ]


def compare(kind, benches, args):
    ours, theirs = KINDS[kind]
    # Every server has its connections open before the first measured run.
    for bench in benches.values():
        bench.cell(ours, args.connections, 1)
    floor_bench = next(iter(benches.values()))
    floor_bench.cell(theirs, args.connections, 1)
    entrants = [("floor", floor_bench, theirs)] + [
        (name, bench, ours) for name, bench in benches.items()
    ]
    rps = {name: [] for name, _, _ in entrants}
    p99 = {name: [] for name, _, _ in entrants}
    for _ in range(args.rounds):
        random.shuffle(entrants)
        for name, bench, key in entrants:
            figures = bench.cell(key, args.connections, args.seconds)
            rps[name].append(figures["rps"])
            p99[name].append(figures["p99_ms"])
            bench.drain()
    print(
        f"{kind} c={args.connections}: floor {statistics.median(rps['floor']):.0f} "
        f"req/s, p99 {statistics.median(p99['floor']):.1f} ms"
    )
    for name in benches:
        ratios = [a / b for a, b in zip(rps[name], rps["floor"], strict=True)]
        print(
            f"  {name}: {statistics.median(rps[name]):.0f} req/s, "
            f"ratio {statistics.median(ratios):.3f} "
            f"(rounds {' '.join(f'{r:.2f}' for r in ratios)}), "
            f"p99 {statistics.median(p99[name]):.1f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""Warm ``dsim rank --target chest`` and the listings against ``dsim --version`` in the same run
(issue 11, item 7; issue 22, item 5).

    python benchmarks/rank_speed.py            # best of 5 each, alternating; prints the ratios

Goals: the card-only ranking costs at most 3x the bare start-up of the CLI (its second run
reads the predictor's ranking back from the cache: ``dsim.ranking.memo``); each listing
(``dsim zoo``, ``datasets``, ``measures``, ``plugins``; card facts and declared metadata, no
network built, no torch) at most 2x; ``dsim --help`` is shown for the record (no goal: it must
not be slower than before plugins added commands, see benchmarks/RESULTS.md). Both run as fresh
processes (as a user types them), after one warm-up of each; the representation cache is a
fresh temporary folder and the published results are read from the package; byte-code caching
is allowed (``PYTHONDONTWRITEBYTECODE`` is dropped for the runs), as on a user's machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def best(cmd: list[str], env: dict, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=5, help="runs of each command (best is kept)")
    ap.add_argument("--target", default="chest")
    args = ap.parse_args(argv)
    env = {**os.environ, "DSIM_CACHE_DIR": tempfile.mkdtemp(prefix="dsim-speed-")}
    # warm means compiled: a user's Python writes .pyc files (some sandboxes forbid it; not here)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    dsim = [sys.executable, "-m", "dsim"]
    cmds = {
        "--version": [*dsim, "--version"],
        "--help": [*dsim, "--help"],
        f"rank --target {args.target}": [*dsim, "rank", "--target", args.target],
        "zoo --json": [*dsim, "zoo", "--json"],
        "datasets --json": [*dsim, "datasets", "--json"],
        "measures --json": [*dsim, "measures", "--json"],
        "plugins --json": [*dsim, "plugins", "--json"],
    }
    goals = {"--version": None, "--help": None, f"rank --target {args.target}": 3.0}
    for cmd in cmds.values():  # warm-up: OS file cache, .pyc files
        best(cmd, env, 1)
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(args.n):  # alternate, so that load on the machine hits all alike
        for k, cmd in cmds.items():
            times[k].append(best(cmd, env, 1))
    tv = min(times["--version"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"best of {args.n}, alternating; load average {load:.1f}")
    print()
    print("| command | seconds | x `dsim --version` | goal |")
    print("|---|---|---|---|")
    for k, ts in times.items():
        goal = goals.get(k, 2.0)
        print(
            f"| `dsim {k}` | {min(ts):.3f} | {min(ts) / tv:.2f}x | {'' if goal is None else f'<= {goal:g}x'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

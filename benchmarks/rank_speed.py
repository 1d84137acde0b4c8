"""Warm ``dsim rank --target chest`` against ``dsim --version`` in the same run (issue 11, item 7).

    python benchmarks/rank_speed.py            # best of 5 each, alternating; prints the ratio

Goal: the card-only ranking costs at most 3x the bare start-up of the CLI. Both run as fresh
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
    version, rank = [*dsim, "--version"], [*dsim, "rank", "--target", args.target]
    best(version, env, 1), best(rank, env, 1)  # warm-up: OS file cache, .pyc files
    tv, tr = [], []
    for _ in range(args.n):  # alternate, so that load on the machine hits both alike
        tv.append(best(version, env, 1))
        tr.append(best(rank, env, 1))
    ratio = min(tr) / min(tv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"dsim --version: {min(tv):.3f} s; dsim rank --target {args.target}: {min(tr):.3f} s "
        f"(best of {args.n}); ratio {ratio:.2f}x (goal <= 3x); load average {load:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

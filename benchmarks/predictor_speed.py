"""Leave-one-target-out of the default predictor at a user's scale, as a ratio to one fit.

    python benchmarks/predictor_speed.py            # a random 32-source x 41-target table

Generates a random results table the shape of ``dsim results import`` (32 checkpoints x 41
tasks, one AUC per pair, a target-only baseline per task, seeded), fits the default predictor
(:data:`dsim.kernel.defaults.LEARNED_PREDICTOR`) on it once, then runs leave-one-target-out on it (41
fits; the predictor's :meth:`~dsim.Predictor.fold_fitter` may share what the folds have in common),
and prints both times (medians of 5 fits and 3 runs) and their ratio (goal: <= 10 x one fit). Then times the same
leave-one-target-out on the evidence dsim ships (goal: <= 10 s), one progress line a target.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import dsim
from dsim.evaluation.evaluate import evaluate_loto, meta_dataset
from dsim.kernel.defaults import LEARNED_PREDICTOR


def table(n_sources=32, n_targets=41, seed=0):
    rng = np.random.default_rng(seed)
    quality = rng.normal(0, 1, n_sources)
    out = []
    for t in range(n_targets):
        base = float(rng.uniform(0.6, 0.9))
        out.append(dsim.TransferResult(f"task{t}", f"task{t}", 0, base, origin="bench", setup="bench"))
        for s in range(n_sources):
            auc = base + 0.01 * (quality[s] + rng.normal())
            out.append(
                dsim.TransferResult(f"ckpt{s}", f"task{t}", 0, float(auc), origin="bench", setup="bench")
            )
    return out


def main() -> int:
    make = lambda: dsim.get_predictor(LEARNED_PREDICTOR)  # noqa: E731
    import scipy.stats  # noqa: F401  the evaluation's metrics import it once: not a fit's cost

    results = table()
    meta = meta_dataset("bench", results, values=[])
    make().fit(meta.results, meta.values, meta.cards, meta.kinds)  # warm-up (first-call costs)
    # medians of a few runs: on a shared machine one fit (tens of ms) is at the mercy of the load
    ones, lotos = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        make().fit(meta.results, meta.values, meta.cards, meta.kinds)
        ones.append(time.perf_counter() - t0)
    for _ in range(3):
        t0 = time.perf_counter()
        evaluate_loto(make, meta.results, meta.values, meta.cards, meta.kinds, family=lambda t: set())
        lotos.append(time.perf_counter() - t0)
    one, loto = float(np.median(ones)), float(np.median(lotos))
    print(
        f"{LEARNED_PREDICTOR}, 32 x 41 table: one fit {one:.2f} s, leave-one-target-out {loto:.2f} s, ratio {loto / one:.1f} x (goal <= 10 x)"
    )
    shipped = meta_dataset("shipped evidence", dsim.known_results())
    t0 = time.perf_counter()
    rows = evaluate_loto(
        make,
        shipped.results,
        shipped.values,
        shipped.cards,
        shipped.kinds,
        progress=lambda t, i, n: print(f"held-out target {i + 1}/{n}: {t}", file=sys.stderr, flush=True),
    )
    took = time.perf_counter() - t0
    print(
        f"{LEARNED_PREDICTOR}, shipped evidence ({len(rows)} tasks): leave-one-target-out {took:.1f} s (goal <= 10 s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

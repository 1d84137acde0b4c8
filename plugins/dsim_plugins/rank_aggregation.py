"""Rank aggregation: the predictor dsim ranks with when nothing has been learned.

Each measure orders the candidate sources (a distance ascending, a score descending); a
source's aggregate is its mean normalised rank over the measures that could describe it (Borda
count; a measure missing for a source is left out of that source's mean, not counted as worst).
Measured sources keep their measured score; the aggregate of the others is put on that scale by
a line through the measured ones (:func:`dsim.assemble_ranking`), or left in [0, 1].
"""

from __future__ import annotations

from collections import defaultdict

import dsim

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy


def average_ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks of ``v`` ascending, ties sharing their mean rank (``rankdata(method="average")``)."""
    v = np.asarray(v, dtype=float)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v))
    sv = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def normalised_ranks(values: dict[str, float], kind: str) -> dict[str, float]:
    """0 = best, 1 = worst, ties share their mean rank; one value alone gets 0.5."""
    names = list(values)
    if len(names) == 1:
        return {names[0]: 0.5}
    v = np.array([values[n] for n in names], dtype=float)
    r = average_ranks(v if kind == "distance" else -v)
    return dict(zip(names, (r - 1) / (len(names) - 1)))


class RankAggregation(dsim.Predictor):
    name = "rank-aggregation"
    description = "mean normalised rank over the measures (Borda); measured results where they exist"

    def __init__(self, use_measured: bool = True):
        self.use_measured = use_measured

    def aggregate(self, candidates, measure_kinds):
        per_measure = defaultdict(dict)
        for c in candidates:
            for m, v in c.values.items():
                if v is not None and np.isfinite(v):
                    per_measure[m][c.source.name] = float(v)
        nranks = {
            m: normalised_ranks(vals, measure_kinds.get(m, "distance")) for m, vals in per_measure.items()
        }
        agg = {}
        for c in candidates:
            rs = [nranks[m][c.source.name] for m in nranks if c.source.name in nranks[m]]
            if rs:
                agg[c.source.name] = float(np.mean(rs))
        return agg, nranks

    def rank(self, target, candidates, history, measure_kinds):
        agg, nranks = self.aggregate(candidates, measure_kinds)
        contrib = {}
        for c in candidates:
            n = c.source.name
            entry = {}
            for m in c.values:
                e = {}
                if m in nranks and n in nranks[m]:
                    e["normalised_rank"] = float(nranks[m][n])
                e.update({f"differs:{k}": float(x) for k, x in c.contributions.get(m, {}).items()})
                entry[m] = e
            contrib[n] = entry
        return dsim.assemble_ranking(
            self,
            target,
            candidates,
            history if self.use_measured else [],
            {n: 1.0 - a for n, a in agg.items()},
            contributions=contrib,
            measures=nranks,
            unit="aggregate rank score (0-1, higher is better)",
        )


@dsim.hookimpl
def dsim_register_predictors():
    return [RankAggregation]

"""Rank aggregation: the predictor dsim uses when it has learned nothing yet.

Each measure orders the candidate sources (a distance ascending, a score descending); a
source's aggregate is its mean normalised rank over the measures that could describe it (Borda
count; a measure missing for a source is left out of that source's mean, not counted as worst).

Sources with measured fine-tuning results for the target are ranked by their measured
transferability T = (AUC(S->T) - AUC(T)) / AUC(T) x 100 (mean over folds, std as uncertainty)
and marked *measured*. The others are *predicted*: their aggregate rank is put on the T scale by
a least-squares line fitted to the measured sources (uncertainty = the residual spread), or left
as a unitless score in [0, 1] when fewer than two sources are measured.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

import dsim


def normalised_ranks(values: dict[str, float], kind: str) -> dict[str, float]:
    """0 = best, 1 = worst, ties share their mean rank; one value alone gets 0.5."""
    from scipy.stats import rankdata

    names = list(values)
    if len(names) == 1:
        return {names[0]: 0.5}
    v = np.array([values[n] for n in names], dtype=float)
    r = rankdata(v if kind == "distance" else -v, method="average")
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
        measured = dsim.measured_transferability(history, target.name) if self.use_measured else {}
        names = [c.source.name for c in candidates]
        fit_x = [agg[n] for n in names if n in measured and n in agg]
        fit_y = [measured[n][0] for n in names if n in measured and n in agg]
        on_t_scale = bool(measured)
        slope = intercept = None
        spread = float(np.std([m[0] for m in measured.values()], ddof=1)) if len(measured) > 1 else None
        if len(fit_x) >= 2 and np.ptp(fit_x) > 0:
            slope, intercept = np.polyfit(fit_x, fit_y, 1)
            resid = np.array(fit_y) - (slope * np.array(fit_x) + intercept)
            spread = float(np.sqrt(np.sum(resid**2) / max(1, len(fit_x) - 2)))
        rows = []
        for c in candidates:
            n = c.source.name
            contrib = {}
            for m, v in c.values.items():
                entry = {"value": float(v)}
                if m in nranks and n in nranks[m]:
                    entry["normalised_rank"] = float(nranks[m][n])
                entry.update({f"differs:{k}": float(x) for k, x in c.contributions.get(m, {}).items()})
                contrib[m] = entry
            if n in measured:
                t, sd, auc, k = measured[n]
                rows.append(
                    dsim.RankingRow(
                        n, t, "measured", sd, measured_auc=auc, n_measured=k, contributions=contrib
                    )
                )
            elif n in agg:
                if slope is not None:
                    score, unc = float(slope * agg[n] + intercept), spread
                elif on_t_scale:
                    score, unc = float(np.median([m[0] for m in measured.values()])), spread
                else:
                    score, unc = 1.0 - agg[n], None
                rows.append(dsim.RankingRow(n, score, "predicted", unc, contributions=contrib))
        rows.sort(key=lambda r: (-r.score, r.status != "measured", r.source))
        rows = tuple(dsim.RankingRow(**{**r.to_dict(), "rank": i + 1}) for i, r in enumerate(rows))
        notes = []
        if measured and slope is None and any(r.status == "predicted" for r in rows):
            notes.append(
                "too few measured sources share a measure with the others to calibrate "
                "predictions; predicted rows get the median measured transferability"
            )
        return dsim.Ranking(
            target=target.name,
            rows=rows,
            predictor=self.name,
            measures=tuple(sorted(nranks)),
            score_unit="transferability %" if on_t_scale else "aggregate rank score (0-1, higher is better)",
            notes=tuple(notes),
            target_auc=dsim.target_baseline(history, target.name),
        )


@dsim.hookimpl
def dsim_register_predictors():
    return [RankAggregation]

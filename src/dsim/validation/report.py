"""The report of a validation: one :class:`SourceRow` per (source, strategy, train size), the
transferability T of each against the from-scratch baseline of the same fold, the Spearman
correlation between predicted and measured T, and a bar plot of AUC per source.
Pure bookkeeping over finished :class:`dsim.RunResult` records: no training here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dsim.kernel.metrics import transferability
from dsim.kernel.records import RunResult, RunSpec, _Record

__all__ = ["SourceRow", "ValidationReport", "summarise", "spearman", "plot_report"]


@dataclass(frozen=True)
class SourceRow(_Record):
    """Measured (and predicted) transfer of one source under one strategy and train size."""

    source: str
    strategy: str
    train_size: int | None
    folds: int
    auc: float | None
    auc_std: float | None
    accuracy: float | None
    kappa: float | None
    transferability: float | None  # T vs the scratch baseline, mean over folds (%)
    transferability_std: float | None
    predicted: float | None = None  # the ranking's score for this source
    predicted_status: str | None = None
    predicted_rank: int | None = None
    failed: int = 0


@dataclass(frozen=True)
class ValidationReport(_Record):
    """What ``dsim.validate`` measured, with the plan's counts (runs, pretraining jobs)."""

    target: str
    backbone: str
    setup: str
    rows: tuple[SourceRow, ...]
    baseline_auc: float | None
    spearman: float | None  # predicted vs measured transferability over sources
    spearman_n: int
    runs_total: int
    runs_done: int
    runs_skipped: int  # already in the store
    failures: tuple[Mapping[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    store: str = ""
    seconds: float = 0.0
    pretraining_jobs: int = 0  # distinct source checkpoints the runs needed (cached ones included)
    pretrained: int = 0  # of which trained by this validation

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["rows"] = [r.to_dict() for r in self.rows]
        return d


def summarise(
    specs: Sequence[RunSpec],
    results: Mapping[str, RunResult],
    ranking,
    baseline: str | None,
) -> tuple[list[SourceRow], float | None]:
    """One row per (source, strategy, train size) over the finished folds in ``results``, T per
    fold against the baseline of the same fold; and the mean baseline AUC."""

    groups: dict[tuple, list[RunSpec]] = {}
    for s in specs:
        groups.setdefault((s.source, s.strategy, s.hyperparameters.get("train_size")), []).append(s)
    base: dict[tuple, float] = {}  # (train_size, fold) -> scratch AUC
    for s in specs:
        if s.strategy == baseline and s.key in results:
            base[(s.hyperparameters.get("train_size"), s.fold)] = results[s.key].metrics["auc"]
    pred = {r.source: r for r in ranking.rows} if ranking is not None else {}
    rows = []
    base_aucs = [v for (n, _f), v in base.items()]
    for (src, strat, n), ss in groups.items():
        done = [results[s.key] for s in ss if s.key in results]
        aucs = [r.metrics["auc"] for r in done]
        ts = [
            transferability(r.metrics["auc"], base[(n, r.spec.fold)])
            for r in done
            if base.get((n, r.spec.fold))
        ]
        p = pred.get(src)

        def mean(xs):
            return float(np.mean(xs)) if xs else None

        def std(xs):
            return float(np.std(xs, ddof=1)) if len(xs) > 1 else (0.0 if xs else None)

        rows.append(
            SourceRow(
                source=src,
                strategy=strat,
                train_size=n,
                folds=len(done),
                auc=mean(aucs),
                auc_std=std(aucs),
                accuracy=mean(
                    [r.metrics.get("accuracy") for r in done if r.metrics.get("accuracy") is not None]
                ),
                kappa=mean([r.metrics.get("kappa") for r in done if r.metrics.get("kappa") is not None]),
                transferability=mean(ts),
                transferability_std=std(ts),
                predicted=None if p is None else float(p.score),
                predicted_status=None if p is None else p.status,
                predicted_rank=None if p is None else int(p.rank),
                failed=len(ss) - len(done),
            )
        )
    rows.sort(key=lambda r: (r.train_size or 0, -(r.auc if r.auc is not None else -1)))
    return rows, (float(np.mean(base_aucs)) if base_aucs else None)


def spearman(rows: Sequence[SourceRow]) -> tuple[float | None, int]:
    """Spearman's rho between predicted score and measured T (None below 3 sources), and n."""
    pts = [
        (r.predicted, r.transferability)
        for r in rows
        if r.predicted is not None and r.transferability is not None
    ]
    if len(pts) < 3:
        return None, len(pts)
    from scipy.stats import spearmanr

    rho = spearmanr([a for a, _ in pts], [b for _, b in pts]).statistic
    return (None if rho is None or np.isnan(rho) else float(rho)), len(pts)


def plot_report(report: ValidationReport, path: str | Path) -> Path:
    """A PNG of the measured AUC per source (mean ± std over folds), baseline dashed."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = [r for r in report.rows if r.auc is not None]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 2), 3.6), dpi=120)
    labels = [f"{r.source}\n{r.strategy}" + (f"\nn={r.train_size}" if r.train_size else "") for r in rows]
    colors = ["#999999" if r.source == report.target else "#3b75af" for r in rows]
    ax.bar(
        range(len(rows)), [r.auc for r in rows], yerr=[r.auc_std or 0 for r in rows], color=colors, capsize=4
    )
    if report.baseline_auc is not None:
        ax.axhline(report.baseline_auc, ls="--", color="#555555", lw=1, label="from scratch")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=7)
    lo = min([r.auc - (r.auc_std or 0) for r in rows] + [0.5])
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_ylabel("test AUC (mean ± std over folds)")
    title = f"dsim validate: target {report.target} ({report.backbone})"
    if report.spearman is not None:
        title += f"\nSpearman(predicted, measured T) = {report.spearman:.2f} over {report.spearman_n} sources"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path

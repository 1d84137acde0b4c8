"""The report of a validation: one :class:`SourceRow` per (source, strategy, train size), the
transferability T of each against the from-scratch baseline of the same fold, the Spearman
correlation between predicted and measured T, and a bar plot of AUC per source.
Pure bookkeeping over finished :class:`dsim.RunResult` records: no training here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dsim.kernel.metrics import transferability
from dsim.kernel.records import RunResult, RunSpec, _Record
from dsim.validation.store import setup_of

__all__ = [
    "SourceRow",
    "ValidationReport",
    "summarise",
    "spearman",
    "rank_check",
    "plot_report",
    "separability",
]


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
    #: rank of the measured T among the validated sources of this strategy and train size (1 = best)
    measured_rank: int | None = None
    setup: str = ""  # the protocol (network, input size) of these runs; T is against its baseline
    baseline_auc: float | None = None  # the from-scratch AUC of that setup (mean over folds)


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
    #: AUC lost by taking the ranking's best validated source instead of the measured best
    #: (0 when the ranking's first is the measured first; None without a prediction)
    regret_auc: float | None = None
    decidable: bool | None = None  # False: this scale cannot separate the sources (see warnings)
    warnings: tuple[str, ...] = ()  # what the numbers cannot say at this scale, and the scale that would

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["rows"] = [r.to_dict() for r in self.rows]
        return d


def _net(s: RunSpec) -> tuple:
    """The network and input size of a run: runs are compared with the baseline of the same."""
    return (s.backbone, s.hyperparameters.get("image_size"))


def summarise(
    specs: Sequence[RunSpec],
    results: Mapping[str, RunResult],
    ranking,
    baseline: str | None,
    backbone: str | None = None,
) -> tuple[list[SourceRow], float | None]:
    """One row per (source, strategy, train size, network) over the finished folds in
    ``results``, T per fold against the baseline of the same fold trained with the same network at
    the same input size (a checkpoint against its own architecture from scratch, never another
    network's); and the mean baseline AUC of ``backbone`` (the dataset sources' network; default:
    the first baseline planned)."""
    groups: dict[tuple, list[RunSpec]] = {}
    for s in specs:
        groups.setdefault((s.source, s.strategy, s.hyperparameters.get("train_size"), _net(s)), []).append(s)
    base: dict[tuple, float] = {}  # (network, train_size, fold) -> scratch AUC
    nets = []
    for s in specs:
        if s.strategy == baseline and s.key in results:
            base[(_net(s), s.hyperparameters.get("train_size"), s.fold)] = results[s.key].metrics["auc"]
        if s.strategy == baseline and _net(s) not in nets:
            nets.append(_net(s))
    pred = {r.source: r for r in ranking.rows} if ranking is not None else {}
    rows = []
    head = next((n for n in nets if n[0] == backbone), nets[0] if nets else None)
    base_aucs = [v for (net, _n, _f), v in base.items() if net == head]

    def mean(xs):
        return float(np.mean(xs)) if xs else None

    def std(xs):
        return float(np.std(xs, ddof=1)) if len(xs) > 1 else (0.0 if xs else None)

    for (src, strat, n, net), ss in groups.items():
        done = [results[s.key] for s in ss if s.key in results]
        aucs = [r.metrics["auc"] for r in done]
        ts = [
            transferability(r.metrics["auc"], base[(net, n, r.spec.fold)])
            for r in done
            if base.get((net, n, r.spec.fold))
        ]
        p = pred.get(src)
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
                setup=setup_of(ss[0]),
                baseline_auc=mean([v for (bn, bs, _f), v in base.items() if bn == net and bs == n]),
            )
        )
    rows.sort(key=lambda r: (r.train_size or 0, -(r.auc if r.auc is not None else -1)))
    return rows, mean(base_aucs)


def separability(
    rows: Sequence[SourceRow],
    target: str,
    *,
    folds: int,
    epochs: int | None = None,
    default_epochs: int | None = None,
    target_max: int | None = None,
) -> tuple[bool | None, list[str]]:
    """Whether a validation at this scale can tell its sources apart, and warnings naming the
    scale that would (None: fewer than two measured sources, nothing to separate).

    It cannot when the fold spread of T is larger than the differences between the sources'
    mean T (the order of the sources is then noise), or when the networks learnt close to
    nothing (mean AUC at most 0.6: near chance). More folds shrink the error of a mean T as
    1/sqrt(folds): the folds that would separate the range of T seen are named, and more epochs
    or images when folds alone would not do."""
    src = [r for r in rows if r.source != target and r.transferability is not None]
    bigger = []
    if epochs is not None and default_epochs and epochs < default_epochs:
        bigger.append(f"more epochs (--epochs {default_epochs}; now {epochs})")
    if target_max:
        bigger.append(f"more target images (--target-max {target_max * 4} or none; now {target_max})")
    base_chance = sorted(
        {r.setup for r in rows if r.source == target and r.auc is not None and r.auc <= 0.6 and r.setup}
    )
    base_note = (
        f"the from-scratch baseline of {', '.join(base_chance)} is near chance (AUC <= 0.6): T against "
        f"it says only that the pretrained network learns at all; use "
        f"{'; '.join(bigger) or 'more epochs and images'}"
    )
    if len(src) < 2:
        return (False, [base_note]) if base_chance else (None, [])
    ts = [r.transferability for r in src]
    spread = float(np.mean([r.transferability_std or 0.0 for r in src]))
    gap = float(max(ts) - min(ts))
    aucs = [r.auc for r in rows if r.auc is not None]
    chance = bool(aucs) and float(np.mean(aucs)) <= 0.6
    notes = []
    ok = True
    if spread > gap:
        ok = False
        need = int(np.ceil(folds * (2 * spread / max(gap, 1e-9)) ** 2))
        how = (
            f"--folds {need}" + (f", or {'; '.join(bigger)}" if bigger else "")
            if need <= 10
            else ("; ".join(bigger) or "more images or a longer training")
            + " (more folds alone would take "
            + (f"{need}" if need < 1000 else "hundreds of")
            + ")"
        )
        notes.append(
            f"this scale cannot separate the sources: T differs by {gap:.1f} points between them, "
            f"less than its spread over folds (±{spread:.1f}); their order (and the Spearman) is "
            f"noise here. A scale that would: {how}"
        )
    else:  # the table as a whole separates; name the neighbours in T order that do not
        order = sorted(src, key=lambda r: -r.transferability)
        close = [
            f"{a.source} and {b.source}"
            for a, b in zip(order, order[1:])
            if a.transferability - b.transferability
            < max(a.transferability_std or 0.0, b.transferability_std or 0.0)
        ]
        if close:
            notes.append(f"within the fold spread of T, so not told apart at this scale: {'; '.join(close)}")
    for r in rows:  # a baseline at the ceiling: a source can only show harm, not help
        if r.source == target and r.auc is not None and r.auc >= 0.97:
            notes.append(
                f"the from-scratch baseline{f' of {r.setup}' if r.setup else ''} already reaches AUC "
                f"{r.auc:.3f}: T can rise by {100 * (1 - r.auc) / r.auc:.1f} % at most, so what a source "
                "adds barely shows; T here mostly tells which sources hurt"
            )
    if base_chance and not chance:
        ok = False
        notes.append(base_note)
    if chance:
        ok = False
        notes.append(
            f"the networks learnt close to nothing (mean AUC {float(np.mean(aucs)):.2f}, near chance 0.5): "
            f"T compares noise; use {'; '.join(bigger) or 'more epochs and images'}"
        )
    return ok, notes


def _network_of(setup: str) -> str:
    """``dsim:resnet18:224px`` -> ``resnet18 224px``: the network and size of a setup, for a label."""
    parts = setup.split(":")
    return " ".join(parts[1:3]) if len(parts) > 2 else setup


def rank_check(rows: Sequence[SourceRow], target: str) -> tuple[list[SourceRow], float | None]:
    """The rows with the measured rank of each validated source (by T, else AUC, within its
    strategy and train size; the target-only baseline unranked), and the top-1 regret in AUC:
    the best measured AUC minus that of the source the ranking put first, over the group of
    the first strategy with predictions."""

    def value(r):
        return r.transferability if r.transferability is not None else r.auc

    out = list(rows)
    regret = None
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(out):
        if r.source != target and value(r) is not None:
            groups.setdefault((r.strategy, r.train_size), []).append(i)
    for idx in groups.values():
        order = sorted(idx, key=lambda i: -value(out[i]))
        for k, i in enumerate(order):
            out[i] = dataclasses.replace(out[i], measured_rank=k + 1)
        pred = [i for i in idx if out[i].predicted_rank is not None and out[i].auc is not None]
        if regret is None and pred:
            first = min(pred, key=lambda i: out[i].predicted_rank)
            regret = max(out[i].auc for i in pred) - out[first].auc
    return out, regret


def spearman(rows: Sequence[SourceRow]) -> tuple[float | None, int]:
    """Spearman's rho between predicted score and measured T (None below 2 sources), and n."""
    pts = [
        (r.predicted, r.transferability)
        for r in rows
        if r.predicted is not None and r.transferability is not None
    ]
    if len(pts) < 2:
        return None, len(pts)
    if len({a for a, _ in pts}) < 2 or len({b for _, b in pts}) < 2:
        return None, len(pts)  # a constant side: undefined (said in a note), not a scipy warning
    from scipy.stats import spearmanr

    rho = spearmanr([a for a, _ in pts], [b for _, b in pts]).statistic
    return (None if rho is None or np.isnan(rho) else float(rho)), len(pts)


def plot_report(report: ValidationReport, path: str | Path) -> Path:
    """A PNG of the measured AUC per source (mean ± std over folds), baseline dashed."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = [r for r in report.rows if r.auc is not None]
    setups = {r.setup for r in rows if r.setup}
    per_bar = 1.7 if len(setups) > 1 else 0.9  # a third label line: the network and size
    fig, ax = plt.subplots(figsize=(max(5.0, per_bar * len(rows) + 2), 3.8), dpi=120)
    labels = [
        f"{r.source}\n{r.strategy}"
        + (f"\nn={r.train_size}" if r.train_size else "")
        + (f"\n{_network_of(r.setup)}" if len(setups) > 1 else "")
        + (
            f"\npred. #{r.predicted_rank or '-'} / meas. #{r.measured_rank}"
            if r.measured_rank is not None and report.spearman_n
            else ""
        )
        for r in rows
    ]
    colors = ["#999999" if r.source == report.target else "#3b75af" for r in rows]
    ax.bar(
        range(len(rows)), [r.auc for r in rows], yerr=[r.auc_std or 0 for r in rows], color=colors, capsize=4
    )
    if report.baseline_auc is not None and len(setups) <= 1:
        ax.axhline(report.baseline_auc, ls="--", color="#555555", lw=1, label="from scratch")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=7)
    lo = min([r.auc - (r.auc_std or 0) for r in rows] + [0.5])
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_ylabel("test AUC (mean ± std over folds)")
    if len(setups) > 1:  # checkpoints in their own networks: each bar against its own scratch run
        title = f"dsim validate: target {report.target} (T of each network vs. its own from-scratch run)"
    else:
        title = f"dsim validate: target {report.target} ({next(iter(setups), report.setup)})"
    if report.spearman is not None:
        title += f"\nSpearman(predicted, measured T) = {report.spearman:.2f} over {report.spearman_n} sources"
        if report.regret_auc is not None:
            title += (
                f"\ntop-1 regret {report.regret_auc:.3f} AUC (pred. #: rank predicted, meas. #: measured)"
            )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path

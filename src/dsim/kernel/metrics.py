"""Metrics of transfer: AUC as cats-scans computes it and transferability T."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

from dsim.kernel.defaults import DEFAULT_BACKBONE
from dsim.kernel.lazy import lazy_module

np = lazy_module("numpy")  # imported on first use: a card-only ranking needs no numpy

__all__ = [
    "transferability",
    "fold_transferability",
    "transfer_summary",
    "auc_weighted_ovr",
    "label_aucs",
    "mean_label_auc",
    "measured_transferability",
    "measured_basis",
    "target_baseline",
    "measured_setups",
    "primary_setup",
    "setup_baselines",
]


def transferability(auc_source_to_target: float, auc_target_only: float) -> float:
    """T(S->T) = (AUC(S->T) - AUC(T)) / AUC(T) x 100 ("Cats, not CAT scans", eq. 1)."""
    return (auc_source_to_target - auc_target_only) / auc_target_only * 100.0


def fold_transferability(
    folds: Mapping[Any, float], base: Mapping[Any, float], base_mean: float, *, key=None
) -> list[float]:
    """The measured transferability T (%) of one source, fold by fold: each fold's AUC against
    the same fold's target-only AUC in ``base`` (``base_mean`` where that fold has none), folds
    in sorted order (of ``key`` when given). The one place T is measured from AUCs."""
    return [transferability(auc, base.get(k, base_mean)) for k, auc in sorted(folds.items(), key=key)]


def transfer_summary(ts: Sequence[float], aucs: Sequence[float]) -> tuple[float, float, float, int]:
    """(mean T, its sd over folds, mean AUC, n folds) of :func:`fold_transferability`'s values."""
    return (
        float(np.mean(ts)),
        float(np.std(ts, ddof=1)) if len(ts) > 1 else 0.0,
        float(np.mean(aucs)),
        len(ts),
    )


def auc_weighted_ovr(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC; one-vs-rest weighted by class prior for multi-class (scikit-learn's
    ``roc_auc_score(average="weighted", multi_class="ovr")``), as in cats-scans."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]
    if scores.ndim == 1:
        return float(roc_auc_score(labels, scores))
    present = np.unique(labels)
    if len(present) < scores.shape[1]:  # a test fold missing a class: score the present ones
        probs = scores[:, present]
        probs = probs / probs.sum(axis=1, keepdims=True)
        if len(present) == 2:
            return float(roc_auc_score(labels == present[1], probs[:, 1]))
        return float(roc_auc_score(labels, probs, average="weighted", multi_class="ovr", labels=present))
    return float(roc_auc_score(labels, scores, average="weighted", multi_class="ovr"))


def label_aucs(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each column of a multi-label ``(N, L)`` 0/1 matrix from the scores of that
    label, ``(L,)``; NaN for a label without both positive and negative images."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels) > 0
    s = np.asarray(scores, dtype=float)
    out = np.full(y.shape[1], np.nan)
    for j in range(y.shape[1]):
        if 0 < y[:, j].sum() < len(y):
            out[j] = roc_auc_score(y[:, j], s[:, j])
    return out


def mean_label_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean per-label ROC AUC (macro) of a multi-label target over the labels that have both
    positive and negative images (Romero et al.'s and MedMNIST's multi-label AUC)."""
    aucs = label_aucs(labels, scores)
    if not np.isfinite(aucs).any():
        raise ValueError("no label has both positive and negative images: AUC undefined")
    return float(np.nanmean(aucs))


def _by_setup(history, target: str):
    by_setup: dict = defaultdict(lambda: defaultdict(dict))
    for r in history:
        if r.target == target:
            by_setup[r.setup][r.source][(getattr(r, "repeat", 0), r.fold)] = r.auc
    return by_setup


def measured_basis(history, target: str) -> str | None:
    """How :func:`measured_transferability` scores ``target``'s measured sources: ``"T"`` when some
    setup has a target-only baseline (transferability against it), ``"AUC"`` when none has (AUC
    relative to the mean AUC of that setup's sources, in %), None without measured sources."""
    by_setup = _by_setup(history, target)
    if any(table.get(target) for table in by_setup.values()):
        return "T"
    return "AUC" if any(s != target for table in by_setup.values() for s in table) else None


def measured_transferability(history, target: str) -> dict[str, tuple[float, float, float, int]]:
    """source -> (mean score, its std over folds, mean AUC, n folds), per setup, averaged over setups.

    The score is transferability T (%) against the same fold's target-only baseline, over the
    setups that have one. A target no setup has a baseline for (a published table of AUCs only)
    is scored by each source's AUC relative to the mean AUC of its setup's sources (%), so that a
    ranking of measured sources still exists; :func:`measured_basis` says which."""
    by_setup = _by_setup(history, target)
    basis = measured_basis(history, target)
    per_source = defaultdict(list)
    for _setup, table in by_setup.items():
        base = table.get(target)
        if basis == "T" and not base:
            continue
        if base:  # each fold against the same fold's baseline (the mean baseline where it has none)
            base_mean = float(np.mean(list(base.values())))
        else:  # no baseline anywhere: against the mean AUC of the setup's sources
            base, base_mean = {}, float(np.mean([a for folds in table.values() for a in folds.values()]))
        for source, folds in table.items():
            if source == target:
                continue
            per_source[source].append((fold_transferability(folds, base, base_mean), list(folds.values())))
    out = {}
    for source, groups in per_source.items():
        ts = [t for g in groups for t in g[0]]
        aucs = [a for g in groups for a in g[1]]
        out[source] = transfer_summary(ts, aucs)
    return out


def measured_setups(history, target: str) -> dict[str, tuple[str, ...]]:
    """source -> the setups whose results :func:`measured_transferability` scored it by (sorted):
    every setup with a target-only baseline when some setup has one, else every setup that
    measured it. A measured row of a ranking shows these."""
    by_setup = _by_setup(history, target)
    basis = measured_basis(history, target)
    out: dict[str, set[str]] = defaultdict(set)
    for setup, table in by_setup.items():
        if basis == "T" and not table.get(target):
            continue
        for source in table:
            if source != target:
                out[source].add(setup)
    return {s: tuple(sorted(v)) for s, v in out.items()}


def primary_setup(history, target: str) -> str | None:
    """The setup a ranking's header speaks for: of the setups with a target-only baseline for
    ``target``, the one that measured the most sources (ties: ``dsim:<default backbone>:...``,
    then the name first in order); None when no setup has a baseline."""
    by_setup = _by_setup(history, target)
    with_base = [
        (len([s for s in t if s != target]), setup) for setup, t in by_setup.items() if t.get(target)
    ]
    if not with_base:
        return None
    # ties: the dataset sources' default network (dsim's own protocol), then by name
    mine = f"dsim:{DEFAULT_BACKBONE}:"
    return sorted(with_base, key=lambda x: (-x[0], not x[1].startswith(mine), x[1]))[0][1]


def setup_baselines(history, target: str) -> dict[str, float]:
    """setup -> the mean target-only AUC(T) of that setup, for every setup that has one."""
    out: dict[str, list[float]] = defaultdict(list)
    for r in history:
        if r.target == target and r.source == target:
            out[r.setup].append(r.auc)
    return {s: float(np.mean(v)) for s, v in sorted(out.items())}


def target_baseline(history, target: str, setup: str | None = None) -> float | None:
    """Mean AUC(T) of the target-only baseline rows (``source == target``) of one setup: ``setup``,
    else :func:`primary_setup`; None when it has none. The baselines of different setups (another
    network, another input size) are never averaged together."""
    setup = setup or primary_setup(history, target)
    aucs = [r.auc for r in history if r.target == target and r.source == target and r.setup == setup]
    return float(np.mean(aucs)) if aucs else None

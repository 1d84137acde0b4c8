"""Reproducing Juodelyte et al. 2024 ("On dataset transferability in medical image
classification", arXiv:2412.20172) from the tables shipped with dsim: ``dsim reproduce juodelyte``.

For each of the study's two tables (15 source datasets x 12 targets, ResNet-18; 9 ImageNet
architectures x 11 targets) and each target with metric scores (11: chestmnist has none), the
weighted Kendall tau of every metric's scores against the fine-tuned AUCs, computed the paper's
way: ``scipy.stats.weightedtau(score, auc)``, score first (with scipy's default ``rank=True`` the
weigher averages the emphasis on both orderings' top), the target itself excluded as a source;
then the mean over the 11 targets and each metric's rank per target among the paper's seven
(LogME, SFDA, LEEP, PARC, NCTI, NLEEP and the study's own "our"), compared with the released
``ktau_{dataset,model}_rank.csv``.

"our" is the study's combined metric, as its notebooks compute it: per target, ``lp`` (a 5-NN vote
in an NCA embedding of the features) and ``fu`` (a ratio of early-layer gradient norms of a
triplet loss; both from the study's ``src/metrics.py``) are each min-max scaled over the column
(the target's own row included where the released table has one) and multiplied.

For the architecture table the released notebook (``architecture_transferability.ipynb``) does not
use the scores as released: it takes ``1 - score`` for LEEP, NLEEP, PARC and NCTI and reverses the
min-max scaling of ``lp`` and ``fu`` (LogME and SFDA as released); the paper's ranks follow that
orientation. Both orientations are reported; the ranks are compared in the notebook's.

Beside the metrics, the *track record* baseline: each source's AUC z-scored within every other
target of the table (over the target's candidate sources), averaged: "what transferred well
elsewhere transfers well here", which needs no image and no network.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import dsim

from .juodelyte_tables import TABLES, rank_table, wide_table

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy

__all__ = [
    "Juodelyte",
    "juodelyte",
    "weighted_tau",
    "combined_score",
    "track_record",
    "PAPER_METHODS",
    "FLIPPED_IN_NOTEBOOK",
]

#: the seven methods the paper ranks (the columns of ktau_*_rank.csv), in its order
PAPER_METHODS = ("logme", "sfda", "leep", "parc", "ncti", "nleep", "our")
#: every column of the reproduced tau tables
METHODS = PAPER_METHODS + ("lp", "fu", "track record")
#: metrics the architecture notebook turns into 1 - score
FLIPPED_IN_NOTEBOOK = ("leep", "nleep", "parc", "ncti")
TITLE = "Juodelyte et al. 2024, On dataset transferability in medical image classification"


class Juodelyte(dsim.Reproduction):
    name = "juodelyte"
    title = TITLE + " (arXiv:2412.20172)"
    description = (
        "weighted Kendall tau of eight transferability metrics against fine-tuned AUCs, per target, "
        "for 15 source datasets and 9 ImageNet architectures; the paper's metric ranks recomputed; "
        "a track-record baseline beside them"
    )

    def run(self, out: Path | None = None, *, figures: bool = True) -> dict[str, Any]:
        return juodelyte(out, figures=figures)


# ------------------------------------------------------------------------------- the statistics
def weighted_tau(score: dict[str, float], auc: dict[str, float], exclude: str | None = None) -> float | None:
    """``scipy.stats.weightedtau(score, auc)`` over the sources both know (finite values),
    ``exclude`` left out; None when it is undefined (e.g. a constant score)."""
    from scipy.stats import weightedtau

    keys = [
        s for s in score if s != exclude and s in auc and math.isfinite(score[s]) and math.isfinite(auc[s])
    ]
    if len(keys) < 2:
        return None
    tau = float(weightedtau([score[s] for s in keys], [auc[s] for s in keys])[0])
    return None if math.isnan(tau) else tau


def _minmax(col: dict[str, float], reverse: bool = False) -> dict[str, float]:
    lo, hi = min(col.values()), max(col.values())
    if hi == lo:
        return {s: 0.0 for s in col}
    if reverse:  # the architecture notebook: (x - max) / (min - max)
        return {s: (v - hi) / (lo - hi) for s, v in col.items()}
    return {s: (v - lo) / (hi - lo) for s, v in col.items()}


def combined_score(lp: dict[str, float], fu: dict[str, float], reverse: bool = False) -> dict[str, float]:
    """The study's "our": min-max scaled ``lp`` times min-max scaled ``fu`` (each over its own
    column as given), for the sources both have."""
    a, b = _minmax(lp, reverse), _minmax(fu, reverse)
    return {s: a[s] * b[s] for s in a if s in b}


def track_record(auc: dict[str, dict[str, float]], target: str) -> dict[str, float]:
    """Each candidate source of ``target`` (``auc``: source -> target -> AUC), scored by the mean
    of its z-scored AUC on every other target (z over that target's candidate sources, the
    held-out target never among them)."""
    cands = [s for s, row in auc.items() if target in row and s != target]
    others = sorted({u for row in auc.values() for u in row} - {target})
    z: dict[str, list[float]] = {s: [] for s in cands}
    for u in others:
        col = {s: auc[s][u] for s in cands if u in auc[s]}
        if len(col) < 2:
            continue
        mu, sd = float(np.mean(list(col.values()))), float(np.std(list(col.values()), ddof=1))
        if sd == 0:
            continue
        for s, v in col.items():
            z[s].append((v - mu) / sd)
    return {s: float(np.mean(v)) for s, v in z.items() if v}


def _ranks(taus: dict[str, float | None]) -> dict[str, int]:
    """Rank 1 = highest tau among the paper's seven; an undefined tau ranks last (as the paper's
    files rank SFDA's constant scores); ties share the better rank."""
    vals = {m: (taus.get(m) if taus.get(m) is not None else -math.inf) for m in PAPER_METHODS}
    return {m: 1 + sum(1 for o in PAPER_METHODS if vals[o] > vals[m]) for m in PAPER_METHODS}


# --------------------------------------------------------------------------------- one table
def _scores(suffix: str, metric: str, target: str, notebook: bool) -> dict[str, float]:
    col = {s: row[target] for s, row in wide_table(f"{metric}_{suffix}.csv").items() if target in row}
    if notebook and metric in FLIPPED_IN_NOTEBOOK:
        col = {s: 1.0 - v for s, v in col.items()}
    return col


def analyse(table: str, *, notebook: bool = False) -> dict[str, Any]:
    """Per-target weighted tau of every method, their mean, and the seven paper methods' ranks
    next to the released ranks. ``notebook``: the architecture notebook's orientation."""
    fname, suffix, setup, scale = TABLES[table]
    auc = {s: {t: v * scale for t, v in row.items()} for s, row in wide_table(fname).items()}
    targets = list(next(iter(wide_table(f"lp_{suffix}.csv").values())))  # the 11 with scores
    tau: dict[str, dict[str, float | None]] = {}
    for t in targets:
        col = {s: row[t] for s, row in auc.items() if t in row}
        scores = {m: _scores(suffix, m, t, notebook) for m in PAPER_METHODS if m != "our"}
        lp, fu = _scores(suffix, "lp", t, notebook), _scores(suffix, "fu", t, notebook)
        scores["our"] = combined_score(lp, fu, reverse=notebook)
        # alone, as the notebooks' ablation ("perf", "grads"): scaled the same way as in "our"
        scores["lp"], scores["fu"] = (_minmax(lp, True), _minmax(fu, True)) if notebook else (lp, fu)
        scores["track record"] = track_record(auc, t)
        tau[t] = {m: weighted_tau(scores[m], col, exclude=t) for m in METHODS}
    mean = {}
    for m in METHODS:
        xs = [tau[t][m] for t in targets if tau[t][m] is not None]
        mean[m] = float(np.mean(xs)) if xs else None
    ranks = {t: _ranks(tau[t]) for t in targets}
    paper = rank_table(f"ktau_{suffix}_rank.csv")
    cells = [(t, m) for t in targets if t in paper for m in PAPER_METHODS]
    agree = sum(ranks[t][m] == paper[t][m] for t, m in cells)
    differ = sorted({t for t, m in cells if ranks[t][m] != paper[t][m]})
    best = {
        t: max(((s, row[t]) for s, row in auc.items() if t in row), key=lambda x: x[1])[0]
        for t in sorted({u for row in auc.values() for u in row})
    }
    return {
        "setup": setup,
        "orientation": "notebook" if notebook else "released",
        "targets": targets,
        "tau": tau,
        "mean_tau": mean,
        "ranks": ranks,
        "paper_ranks": paper,
        "rank_cells_agree": agree,
        "rank_cells": len(cells),
        "targets_differing": differ,
        "best_source": best,
    }


# ------------------------------------------------------------------------------ the reproduction
def juodelyte(out: str | Path | None = None, *, figures: bool = True) -> dict[str, Any]:
    """Recompute the study's analysis from the shipped tables (see the module docstring).

    Returns a JSON-able report: ``datasets`` and ``architectures`` (the latter with both
    orientations, ``released`` and ``notebook``), ``tables`` and ``lines`` for the terminal, and
    ``figures`` (one PNG, when ``out`` is given and ``figures`` is true)."""
    ds = analyse("dataset")
    arch = {"released": analyse("architectures"), "notebook": analyse("architectures", notebook=True)}
    tables = [
        _tau_table("source datasets (ResNet-18): weighted Kendall tau per target", ds),
        _rank_table(
            "source datasets: rank of each metric per target, recomputed (paper's where it differs)", ds
        ),
        _tau_table(
            "ImageNet architectures: weighted Kendall tau per target, the notebook's orientation "
            "(1 - score for leep, nleep, parc, ncti; reversed scaling in 'our')",
            arch["notebook"],
        ),
        _rank_table(
            "ImageNet architectures: rank of each metric per target, notebook orientation", arch["notebook"]
        ),
        _tau_table(
            "ImageNet architectures: weighted Kendall tau per target, scores as released", arch["released"]
        ),
    ]
    n_img = sum(1 for s in ds["best_source"].values() if s == "imagenet")

    def means(a):
        ms = sorted(((m, v) for m, v in a["mean_tau"].items() if v is not None), key=lambda kv: -kv[1])
        return ", ".join(f"{m} {v:.2f}" for m, v in ms)

    lines = [
        f"source datasets: the paper's ranks recomputed in {ds['rank_cells_agree']} of {ds['rank_cells']} cells"
        + (f" (differing: {', '.join(ds['targets_differing'])})" if ds["targets_differing"] else ""),
        f"architectures: {arch['notebook']['rank_cells_agree']} of {arch['notebook']['rank_cells']} cells in the "
        "notebook's orientation"
        + (
            f" (differing: {', '.join(arch['notebook']['targets_differing'])})"
            if arch["notebook"]["targets_differing"]
            else ""
        )
        + f", {arch['released']['rank_cells_agree']} of {arch['released']['rank_cells']} with the scores as released",
        f"mean weighted tau over {len(ds['targets'])} targets, source datasets: {means(ds)}",
        f"mean weighted tau, architectures (notebook orientation): {means(arch['notebook'])}",
        f"mean weighted tau, architectures (scores as released): {means(arch['released'])}",
        f"best source by AUC: imagenet for {n_img} of {len(ds['best_source'])} targets; "
        + ", ".join(f"{t}: {s}" for t, s in ds["best_source"].items() if s != "imagenet"),
        "these tables have no target-only baseline (no from-scratch runs): the study ranks sources on AUC",
    ]
    report: dict[str, Any] = {
        "study": TITLE,
        "paper": "arXiv:2412.20172",
        "code": "github.com/DovileDo/transferability-in-medical-imaging@7e308c4",
        "datasets": ds,
        "architectures": arch,
        "tables": tables,
        "lines": lines,
        "figures": [],
    }
    if out is not None and figures:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        report["figures"] = [str(_figure(ds, arch["notebook"], out / "juodelyte_weighted_tau.png"))]
    return report


def _tau_table(title: str, a: dict[str, Any]) -> dict[str, Any]:
    rows = [[t, *(a["tau"][t][m] for m in METHODS)] for t in a["targets"]]
    rows.append(["mean", *(a["mean_tau"][m] for m in METHODS)])
    return {"title": title, "columns": ["target", *METHODS], "rows": rows}


def _rank_table(title: str, a: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for t in a["targets"]:
        mine, paper = a["ranks"][t], a["paper_ranks"].get(t, {})
        rows.append(
            [
                t,
                *(
                    str(mine[m]) if paper.get(m) in (None, mine[m]) else f"{mine[m]} (paper {paper[m]})"
                    for m in PAPER_METHODS
                ),
            ]
        )
    return {"title": title, "columns": ["target", *PAPER_METHODS], "rows": rows}


def _figure(ds: dict[str, Any], arch: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(17, 6.8), gridspec_kw={"wspace": 0.35})
    for ax, a, title in (
        (axes[0], ds, "15 source datasets (ResNet-18)"),
        (axes[1], arch, "9 ImageNet architectures (notebook orientation)"),
    ):
        labels = [*a["targets"], "mean"]
        M = np.array(
            [[np.nan if a["tau"][t][m] is None else a["tau"][t][m] for m in METHODS] for t in a["targets"]]
            + [[np.nan if a["mean_tau"][m] is None else a["mean_tau"][m] for m in METHODS]]
        )
        im = ax.imshow(M, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(len(METHODS)), METHODS, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.axhline(len(a["targets"]) - 0.5, color="black", lw=0.8)
        ax.axvline(len(PAPER_METHODS) - 0.5, color="black", lw=0.8, ls=":")
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                txt = "n/a" if np.isnan(M[i, j]) else f"{M[i, j]:.2f}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=7)
        ax.set_title(
            f"{title}\nmetric ranks agree with the paper's in {a['rank_cells_agree']}/{a['rank_cells']} cells",
            fontsize=9,
        )
    fig.colorbar(im, ax=axes, label="weighted Kendall tau (score vs fine-tuned AUC)", shrink=0.8)
    fig.suptitle("Juodelyte et al. 2024, recomputed from the released tables (target excluded)", fontsize=10)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path

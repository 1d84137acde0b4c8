"""Does Fok's finding (more structural filters -> better transfer) hold for dsim's own checkpoints?

    DSIM_DATA_DIR=../shared/data .venv/bin/python benchmarks/filter_structure.py          # ~15 min, 2 cores
    DSIM_DATA_DIR=../shared/data .venv/bin/python benchmarks/filter_structure.py --write  # + docs/filters.md
    DSIM_WEIGHTS_DIR=../shared/weights .venv/bin/python benchmarks/filter_structure.py --sensitivity

The fixed-checkpoint transfer matrices of benchmarks/transfer_matrix.py (``--pretrain-seed 0
--source-max 2000 --pretrain-epochs 10``) transferred from one checkpoint per source. This script
re-creates those checkpoints exactly as the matrices did (``dsim.pretrain`` with the same data and
settings, so the content-keyed cache gives the same files; benchmarks/predictor.py's
``matrices.matrix_checkpoints``), scores each with the ``filter-structure`` measure, and compares the score
with the measured transferability T of every task (setup x target) of the matrices:

* ``smallcnn-w16``: transfer_matrix_results_lp500.csv + _lp500_natural.csv (linear probe, N=500, 7
  targets), _lp200.csv (N=200, 7 targets), _ft500.csv (fine-tuning, N=500, pneumoniamnist);
* ``smallcnn`` (width 32): _lp500_w32.csv and _lp200_w32.csv (7 targets each).

Two score variants, fixed before looking at the results: the default (first-layer kernels) and
activation-maximisation images of the last conv layer (28 px, as the matrices ran). Beside them,
per task: LogME of the same checkpoint on that target (You et al. 2021; the CSVs hold no LogME,
so it is computed here, cached by content) and the track record (each source's T z-scored among
the sources of each *other* target of the same setup, averaged). Reported per task: Spearman rho
and ``scipy.stats.weightedtau(score, T)``; a constant score counts as 0 in the means.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # predictor.py, transfer_matrix.py
REPO = HERE.parent
MATRICES = {
    "smallcnn-w16": (
        "transfer_matrix_results_lp500.csv",
        "transfer_matrix_results_lp500_natural.csv",
        "transfer_matrix_results_lp200.csv",
        "transfer_matrix_results_ft500.csv",
    ),
    "smallcnn": ("transfer_matrix_results_lp500_w32.csv", "transfer_matrix_results_lp200_w32.csv"),
}
#: the score variants (FilterStructure parameters; "last" is replaced by the last conv's name)
VARIANTS = {
    "filters: kernels": {"layer": "first", "view": "kernels"},
    "filters: act. max.": {"layer": "last", "view": "images", "image_size": 28},
}
DOC = REPO / "docs" / "filters.md"
START, END = "<!-- filter-structure-benchmark:start -->", "<!-- filter-structure-benchmark:end -->"


def task_label(setup: str) -> str:
    """``dsim:smallcnn-w16:28px:n500:linear-probe`` -> ``lp n500``; fine-tuning -> ``ft n500``."""
    parts = setup.split(":")
    n = next((p for p in parts if p.startswith("n") and p[1:].isdigit()), "?")
    return f"{'lp' if parts[-1] == 'linear-probe' else 'ft'} {n}"


def tasks_of(results):
    """(setup, target) -> {source: mean T over repeats and folds}; ``matrices.load_matrix`` has
    given every strategy's setup its own copy of the from-scratch baseline."""
    import dsim

    by_setup = defaultdict(list)
    for r in results:
        by_setup[r.setup].append(r)
    out = {}
    for setup, rs in sorted(by_setup.items()):
        for target in sorted({r.target for r in rs}):
            t = dsim.measured_transferability(rs, target)
            if len(t) >= 3:  # the baseline-only setup has none
                out[(setup, target)] = {s: v[0] for s, v in t.items()}
    return out


def track_records(tasks):
    """(setup, target) -> {source: mean z-scored T over the other targets of the setup}."""
    z = defaultdict(dict)  # (setup, source) -> {target: z}
    for (setup, target), ts in tasks.items():
        T = np.array(list(ts.values()))
        if len(T) > 1 and T.std() > 0:
            for s, v in ts.items():
                z[(setup, s)][target] = (v - T.mean()) / T.std()
    out = {}
    for (setup, target), ts in tasks.items():
        rec = {}
        for s in ts:
            zs = [v for t, v in z[(setup, s)].items() if t != target]
            if zs:
                rec[s] = float(np.mean(zs))
        out[(setup, target)] = rec
    return out


def correlations(score: dict, T: dict):
    """(Spearman rho, weighted tau, n) over the sources both have; 0.0 for a constant score."""
    from scipy.stats import spearmanr, weightedtau

    common = [s for s in T if s in score and np.isfinite(score[s])]
    if len(common) < 3:
        return None, None, len(common)
    x = np.array([score[s] for s in common])
    y = np.array([T[s] for s in common])
    if np.ptp(x) == 0:
        return 0.0, 0.0, len(common)
    return float(spearmanr(x, y).statistic), float(weightedtau(x, y).statistic), len(common)


def filter_scores(ckpts: dict, backbone: str, n_null: int):
    """variant -> {source: share}, plus the random-init network's share (the pretraining start)."""
    import dsim
    from dsim_plugins.filter_structure import FilterStructure, conv_layers

    ref = dsim.create_backbone(backbone, weights="random", seed=0)
    last = list(conv_layers(ref))[-1]
    measures = {
        v: FilterStructure(n_null=n_null, **{k: (last if x == "last" else x) for k, x in p.items()})
        for v, p in VARIANTS.items()
    }
    cache = dsim.Cache()
    out = {v: {} for v in VARIANTS}
    random_init = {}
    for v, m in measures.items():
        random_init[v] = m.score_model(ref, cache=cache)
        for src, path in ckpts.items():
            out[v][src] = m.score_model(dsim.create_backbone(backbone, weights=path), cache=cache)
    return out, random_init, last


#: (label, backbone, weights, deeper layer) for the sensitivity table: the shared real
#: checkpoints (DSIM_WEIGHTS_DIR=../shared/weights) and one dsim checkpoint, each beside random init
SENSITIVITY = (
    ("MobileNetV1 ImageNet", "mobilenetv1-x0.25", "imagenet", "stage2.0.3", 64),
    ("MobileNetV1 random", "mobilenetv1-x0.25", "random", "stage2.0.3", 64),
    ("CIFAR ResNet-20", "cifar-resnet20", "cifar10", "layer2.0.conv2", 32),
    ("CIFAR ResNet-56", "cifar-resnet56", "cifar10", "layer2.0.conv2", 32),
    ("CIFAR ResNet-20 random", "cifar-resnet20", "random", "layer2.0.conv2", 32),
    ("smallcnn-w16 pneumoniamnist", "smallcnn-w16", "pneumoniamnist", "features.12", 28),
    ("smallcnn-w16 random", "smallcnn-w16", "random", "features.12", 28),
)
THRESHOLDS = (0.01, 0.05, 0.1)


def sensitivity(n_null: int) -> list[str]:
    """Share of structured filters by method x p-value threshold (min_effect 0.1), and by
    min_effect (autocorr, p < 0.05), for first-layer kernels and a deeper layer's act. max."""
    from matrices import FIXED_PRETRAIN, matrix_checkpoints

    import dsim
    from dsim_plugins.filter_structure import METHODS, FilterStructure, structure_test

    cols = [f"{m} p<{t}" for m in METHODS for t in THRESHOLDS] + ["autocorr eff>=0", "autocorr eff>=0.2"]
    L = [
        "| checkpoint | filters | " + " | ".join(cols) + " |",
        "| --- | --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for label, arch, weights, layer, size in SENSITIVITY:
        if arch.startswith("smallcnn") and weights != "random":
            weights = matrix_checkpoints([weights], {**FIXED_PRETRAIN, "backbone": arch})[weights]
        model = dsim.create_backbone(arch, weights=weights, seed=0)
        for view, lay in (("kernels", "first"), ("images", layer)):
            m = FilterStructure(layer=lay, view=view, image_size=size)
            arrays = m.filters(model)
            tests = {meth: structure_test(arrays, meth, n_null=n_null) for meth in METHODS}
            cells = [
                float(np.mean((tests[meth]["p"] < t) & (tests[meth]["effect"] >= 0.1)))
                for meth in METHODS
                for t in THRESHOLDS
            ]
            a = tests["autocorr"]
            cells += [float(np.mean((a["p"] < 0.05) & (a["effect"] >= e))) for e in (0.0, 0.2)]
            name = f"{m.layer_name(model)} {'kernels' if view == 'kernels' else 'act. max.'} ({len(arrays)})"
            L.append(f"| {label} | {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return L


def _num(x, digits=2):
    return "n/a" if x is None else f"{x:+.{digits}f}"


def report(backbone, tasks, scores, logme, track, random_init, last, n_null) -> list[str]:
    predictors = list(VARIANTS) + ["LogME", "track record"]
    L = [f"### {backbone} ({len(tasks)} tasks)", ""]
    srcs = sorted({s for ts in tasks.values() for s in ts})
    L += [
        "Share of structured filters per source checkpoint (random init, the pretraining start: "
        + ", ".join(f"{v.split(': ')[1]} {random_init[v]:.2f}" for v in VARIANTS)
        + f"; act. max. of `{last}`):",
        "",
        "| score | " + " | ".join(srcs) + " |",
        "| --- | " + " | ".join("---" for _ in srcs) + " |",
    ]
    for v in VARIANTS:
        L.append(
            f"| {v.split(': ')[1]} | "
            + " | ".join(f"{scores[v].get(s, float('nan')):.2f}" for s in srcs)
            + " |"
        )
    L += [
        "",
        "Per task: Spearman rho / weighted tau of each score against the measured T (sources = the "
        "6 others of the target).",
        "",
        "| task | target | " + " | ".join(predictors) + " |",
        "| --- | --- | " + " | ".join("---" for _ in predictors) + " |",
    ]
    agg = {p: ([], []) for p in predictors}
    for (setup, target), T in sorted(tasks.items(), key=lambda kv: (task_label(kv[0][0]), kv[0][1])):
        cells = []
        for p in predictors:
            if p in VARIANTS:
                sc = scores[p]
            elif p == "LogME":
                sc = {s: logme.get((s, target)) for s in T if logme.get((s, target)) is not None}
            else:
                sc = track[(setup, target)]
            rho, tau, _ = correlations(sc, T)
            if rho is not None:
                agg[p][0].append(rho)
                agg[p][1].append(tau)
            cells.append(f"{_num(rho)} / {_num(tau)}")
        L.append(f"| {task_label(setup)} | {target} | " + " | ".join(cells) + " |")
    L.append(
        "| **mean** | | "
        + " | ".join(
            f"**{np.mean(agg[p][0]):+.2f} / {np.mean(agg[p][1]):+.2f}** ({len(agg[p][0])})"
            if agg[p][0]
            else "n/a"
            for p in predictors
        )
        + " |"
    )
    L.append("")
    return L


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", default=",".join(MATRICES), help="which matrices (by backbone)")
    ap.add_argument("--n-null", type=int, default=499)
    ap.add_argument("--no-logme", action="store_true", help="skip LogME (the slow part)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--write", action="store_true", help=f"also replace the section in {DOC.relative_to(REPO)}"
    )
    ap.add_argument(
        "--sensitivity",
        action="store_true",
        help="print the score's sensitivity to method and threshold on the shared checkpoints instead",
    )
    a = ap.parse_args(argv)
    if a.sensitivity:
        import torch

        torch.set_num_threads(a.threads)
        print("\n".join(sensitivity(a.n_null)))
        return 0

    import torch
    from matrices import FIXED_PRETRAIN, load_matrix, matrix_checkpoints, model_scores

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    cmd = "DSIM_DATA_DIR=../shared/data .venv/bin/python benchmarks/filter_structure.py"
    if a.backbones != ",".join(MATRICES):
        cmd += f" --backbones {a.backbones}"
    if a.n_null != 499:
        cmd += f" --n-null {a.n_null}"
    L = [START, "", f"Command: `{cmd}{' --no-logme' if a.no_logme else ''}`", ""]
    summary = {}
    for backbone in [b for b in a.backbones.split(",") if b]:
        if backbone not in MATRICES:
            raise SystemExit(f"error: no matrices for backbone {backbone!r} (one of {', '.join(MATRICES)})")
        results = [r for f in MATRICES[backbone] for r in load_matrix(HERE / f)]
        tasks = tasks_of(results)
        cfg = {**FIXED_PRETRAIN, "backbone": backbone}
        ckpts = matrix_checkpoints(sorted({s for ts in tasks.values() for s in ts}), cfg)
        scores, random_init, last = filter_scores(ckpts, backbone, a.n_null)
        logme = {}
        if not a.no_logme:
            # LogME is computed per checkpoint x target pair; one setup's pairs cover the others
            for v in model_scores(results, ("logme",), cfg):
                logme[(v.source, v.target)] = v.value
        L += report(backbone, tasks, scores, logme, track_records(tasks), random_init, last, a.n_null)
        summary[backbone] = len(tasks)
    L += [
        f"{sum(summary.values())} tasks; this invocation {(time.perf_counter() - t0) / 60:.1f} min (source "
        "checkpoints, filter scores and LogME values come from the content-keyed cache when present).",
        "",
        END,
    ]
    text = "\n".join(L)
    print(text)
    if a.write:
        old = DOC.read_text()
        if START not in old or END not in old:
            raise SystemExit(f"error: {DOC} has no {START} ... {END} section to replace")
        i, j = old.index(START), old.index(END) + len(END)
        DOC.write_text(old[:i] + text + old[j:])
    return 0


if __name__ == "__main__":
    sys.exit(main())

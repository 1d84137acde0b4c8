"""The CPU transfer matrices of benchmarks/transfer_matrix.py as dsim results, and the source
checkpoints they transferred from (shared by benchmarks/predictor.py and filter_structure.py).

``load_matrix`` reads a matrix CSV (source,target,fold,repeat,auc,setup,strategy) into
TransferResults, each strategy its own setup; ``matrix_checkpoints`` re-creates a fixed-pretraining
matrix's source checkpoints through the content-keyed cache of ``dsim.pretrain`` (the very files,
trained now only when absent); ``model_scores`` scores them on the matrix's targets.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: how the fixed-pretraining matrices pretrained their sources (benchmarks/transfer_matrix.py
#: --pretrain-seed 0 --source-max 2000 --pretrain-epochs 10)
FIXED_PRETRAIN = {
    "backbone": "smallcnn-w16",
    "hyperparameters": {"epochs": 10, "image_size": 28, "seed": 0},
    "source_max": 2000,
    "seed": 0,
}


def load_matrix(path: Path):
    """A matrix CSV as TransferResults (repeats in ``repeat``); the from-scratch baseline shared
    by every strategy of its setup is copied into each strategy's setup, so T is defined there."""
    import dsim

    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                setup = row.get("setup") or "cpu"
                strat = row.get("strategy")
                if strat and strat != "scratch" and strat not in setup:
                    setup = f"{setup}:{strat}"  # fine-tuning and linear probe are separate tasks
                out.append(
                    dsim.TransferResult(
                        source=row["source"],
                        target=row["target"],
                        fold=int(row["fold"]),
                        repeat=int(row.get("repeat") or 0),
                        auc=float(row["auc"]),
                        origin="transfer_matrix",
                        setup=setup,
                    )
                )
            except (KeyError, ValueError) as exc:
                raise SystemExit(f"{path}: bad row {row} ({exc})") from None
    setups = {r.setup for r in out if r.source != r.target}
    extra = [
        dataclasses.replace(r, setup=s)
        for r in out
        if r.source == r.target
        for s in setups
        if s != r.setup and s.startswith(r.setup + ":")
    ]
    return out + extra


def computed_values(measures, pairs, options=None, skip=()):
    """``dsim.measure`` for every (measure, source, target) not in ``skip``; a pair a measure
    cannot do is reported on stderr and left out."""
    import dsim

    vals = []
    for m in measures:
        for s, t in pairs:
            if (m, s, t) in skip:
                continue
            try:
                out = dsim.measure(s, t, m, options=options)
            except dsim.DsimError as exc:
                print(f"skipped {m} {s}->{t}: {exc}", file=sys.stderr)
                continue
            vals.append(dsim.MeasureValue(m, s, t, out["value"], None, "computed"))
    return vals


def matrix_checkpoints(sources, cfg=FIXED_PRETRAIN) -> dict[str, str]:
    """source -> checkpoint path of a fixed-pretraining matrix's sources: ``dsim.pretrain`` with
    the matrix's exact data and settings, so the content-keyed cache returns the very files the
    matrix transferred from (trained now if absent). Sources without data here are left out."""
    from transfer_matrix import load_all

    import dsim

    data = load_all(
        Path(os.environ.get("DSIM_DATA_DIR", REPO.parent / "shared" / "data").split(os.pathsep)[0])
    )
    ckpts = {}
    for src in sources:
        if src in data:
            sub = data[src].subsample(cfg["source_max"], seed=cfg["seed"])
            ckpts[src] = str(
                dsim.pretrain(
                    sub,
                    cfg["backbone"],
                    hyperparameters=cfg["hyperparameters"],
                    max_samples=cfg["source_max"],
                    seed=cfg["seed"],
                )
            )
    return ckpts


def model_scores(results, measures=("logme", "h-score"), cfg=FIXED_PRETRAIN):
    """LogME / H-score (or any source-model score) of each source's matrix checkpoint on each
    target (fixed-pretraining matrices only). The backbone is read from the matrix's setup
    (``dsim:<backbone>:28px:...``); a meta-dataset mixing backbones is refused, since a measure
    value is keyed by (source, target) alone."""
    backbones = {r.setup.split(":")[1] for r in results if r.setup.startswith("dsim:")}
    if len(backbones) > 1:
        raise SystemExit(f"model scores: one backbone per meta-dataset, got {sorted(backbones)}")
    cfg = {**cfg, "backbone": backbones.pop() if backbones else cfg["backbone"]}
    pairs = sorted({(r.source, r.target) for r in results if r.source != r.target})
    ckpts = matrix_checkpoints(sorted({s for s, _ in pairs}), cfg)
    opts = {
        "source_checkpoints": ckpts,
        "backbone": cfg["backbone"],
        "image_size": cfg["hyperparameters"]["image_size"],
    }
    return computed_values(measures, [(s, t) for s, t in pairs if s in ckpts], opts)

"""Noise summary of the Juodelyte et al. 2024 fine-tuning runs, one row per (table, source, target).

    .venv/bin/python benchmarks/juodelyte_noise_summary.py \
        --runs ../shared/published/juodelyte2024/finetune_runs.csv \
        --out plugins/dsim_plugins/published_data/juodelyte2024/noise_summary.csv

"On dataset transferability in medical image classification" (Juodelyte, Lu, Jiménez-Sánchez,
Bottazzi, Ferrante, Cheplygina 2024, arXiv:2412.20172) released every fine-tuning run behind its
AUC tables (github.com/DovileDo/transferability-in-medical-imaging, commit 7e308c4,
``finetuned_AUCs/*.csv``; ``finetune_runs.csv`` keeps their run-describing columns). What the
files hold, as read from the study's ``src/fine-tuning*.py`` and notebooks:

* one file per target, ``fined_<target>.csv`` (ResNet-18 from each of 14 sources: ImageNet,
  RadImageNet, leave-target-out MedMNIST and the 11 other MedMNIST sets) and
  ``fined_<target>_imnet.csv`` (8 ImageNet-pretrained torchvision architectures; ``source_flag``
  is the architecture). The 9th architecture of ``AUCs_model.csv``, ``resnet``, is the ImageNet
  ResNet-18 of the dataset files (its AUCs are the ``imagenet`` row of ``AUCs_dataset.csv``).
* each run is one hyper-parameter configuration (learning rate x batch size x momentum x weight
  decay, SGD, cosine schedule, early stopping on validation AUC with patience 50), trained on the
  first of five random draws of the target's training set (100 images per class, 25 per class for
  validation; ``src/data_split.py``) and tested on the official MedMNIST test split at 224 px, with
  the seed fixed at 42. There are no folds (one training draw: fold 0) and no independent repeats:
  where a configuration appears twice or three times, the rows are re-launches of the same seeded
  run (identical AUCs; the run name's "(a b_X)" prefix is the launcher's tag, not a repeat
  number). The ``*_imnet`` files also hold unfinished runs (no metrics), counted here apart.
* the published AUC of a (source, target) pair is the test AUC of the run with the lowest
  validation loss (the notebooks' ``groupby('source_flag')['val_loss'].idxmin()``); this script
  recomputes it and checks it against ``AUCs_dataset.csv``/``AUCs_model.csv`` when given.
* no run trains from scratch, so the tables have no target-only baseline.

Columns written: ``table`` (dataset | architectures), ``source``, ``target``, ``file``, ``n_runs``
(rows), ``n_finished`` (rows with metrics), ``n_configs`` (distinct configurations among the
finished runs), ``n_relaunched`` (configurations with more than one finished run) and
``relaunch_sd_max`` (largest sd of test AUC among the runs of one configuration; 0 = identical),
``auc_best_test`` (best test AUC of any run: an oracle, optimistic), ``auc_val_loss`` and
``acc_val_loss`` (test AUC and accuracy of the lowest-validation-loss run: the paper's number) with
its ``lr``, ``batch_size``, ``momentum``, ``wd`` and ``stopped_at``, ``auc_val_auc`` (test AUC of
the highest-validation-AUC run), ``best_runs``/``best_mean``/``best_sd`` (runs of the selected
configuration and the mean/sd of their test AUC), and ``top_k``/``topk_mean``/``topk_sd``/
``topk_min``/``topk_max`` (test AUC over the ``top_k`` configurations with the highest validation
AUC: how much the number moves with the choice of configuration). Floats are rounded to 6 places.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = ROOT.parent / "shared" / "published" / "juodelyte2024" / "finetune_runs.csv"
DEFAULT_OUT = ROOT / "plugins" / "dsim_plugins" / "published_data" / "juodelyte2024" / "noise_summary.csv"
CONFIG = ("lr", "batch_size", "momentum", "wd")
COLUMNS = (
    "table",
    "source",
    "target",
    "file",
    "n_runs",
    "n_finished",
    "n_configs",
    "n_relaunched",
    "relaunch_sd_max",
    "auc_best_test",
    "auc_val_loss",
    "acc_val_loss",
    "lr",
    "batch_size",
    "momentum",
    "wd",
    "stopped_at",
    "auc_val_auc",
    "best_runs",
    "best_mean",
    "best_sd",
    "top_k",
    "topk_mean",
    "topk_sd",
    "topk_min",
    "topk_max",
)


def _float(x: str) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def read_runs(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"file", "source_flag", "target_flag", "test_auc", "val_auc", "val_loss", "test_acc", *CONFIG}
    missing = need - set(rows[0] if rows else ())
    if missing:
        sys.exit(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return rows


def summarise(runs: list[dict], top_k: int) -> dict:
    """The summary of one (source, target) pair's runs."""
    done = [r for r in runs if _float(r["test_auc"]) is not None and _float(r["val_loss"]) is not None]
    by_config: dict[tuple, list[dict]] = defaultdict(list)
    for r in done:
        by_config[tuple(float(r[c]) for c in CONFIG)].append(r)
    test = lambda rs: [float(r["test_auc"]) for r in rs]  # noqa: E731
    sd = lambda xs: float(np.std(xs, ddof=1)) if len(xs) > 1 else None  # noqa: E731
    relaunch_sds = [sd(test(rs)) for rs in by_config.values() if len(rs) > 1]
    out = {
        "n_runs": len(runs),
        "n_finished": len(done),
        "n_configs": len(by_config),
        "n_relaunched": len(relaunch_sds),
        "relaunch_sd_max": max(relaunch_sds) if relaunch_sds else None,
    }
    if not done:
        return out
    # pandas' idxmin keeps the first row of a tie: so does min() over the file order
    sel = min(done, key=lambda r: float(r["val_loss"]))
    by_val_auc = max(done, key=lambda r: (float(r["val_auc"]), -float(r["val_loss"])))
    cfg = tuple(float(sel[c]) for c in CONFIG)
    best = test(by_config[cfg])
    ranked = sorted(
        by_config.values(),
        key=lambda rs: (
            -float(np.mean([float(r["val_auc"]) for r in rs])),
            float(np.mean([float(r["val_loss"]) for r in rs])),
        ),
    )
    topk = [float(np.mean(test(rs))) for rs in ranked[:top_k]]
    out.update(
        auc_best_test=max(test(done)),
        auc_val_loss=float(sel["test_auc"]),
        acc_val_loss=_float(sel["test_acc"]),
        lr=float(sel["lr"]),
        batch_size=int(float(sel["batch_size"])),
        momentum=float(sel["momentum"]),
        wd=float(sel["wd"]),
        stopped_at=int(float(sel["stopped_at"])) if _float(sel.get("stopped_at")) is not None else None,
        auc_val_auc=float(by_val_auc["test_auc"]),
        best_runs=len(best),
        best_mean=float(np.mean(best)),
        best_sd=sd(best),
        top_k=len(topk),
        topk_mean=float(np.mean(topk)),
        topk_sd=sd(topk),
        topk_min=min(topk),
        topk_max=max(topk),
    )
    return out


def build(rows: list[dict], top_k: int) -> list[dict]:
    groups: dict[tuple[str, str, str, str], list[dict]] = defaultdict(list)
    for r in rows:
        archs = r["file"].endswith("_imnet.csv")
        groups[
            ("architectures" if archs else "dataset", r["source_flag"], r["target_flag"], r["file"])
        ].append(r)
        if not archs and r["source_flag"] == "imagenet":
            # the architecture table's `resnet` is the dataset study's ImageNet ResNet-18
            groups[("architectures", "resnet", r["target_flag"], r["file"])].append(r)
    archs_targets = {t for (tb, _s, t, _f) in groups if tb == "architectures" and _s != "resnet"}
    out = []
    for (table, source, target, fname), runs in sorted(groups.items()):
        if table == "architectures" and target not in archs_targets:
            continue  # chestmnist: no architecture runs, so no `resnet` row either
        out.append(
            {"table": table, "source": source, "target": target, "file": fname, **summarise(runs, top_k)}
        )
    return out


def check_against(summary: list[dict], auc_csv: Path, table: str, scale: float) -> int:
    """Number of cells of a released AUC table that the lowest-validation-loss rule reproduces."""
    with auc_csv.open(newline="") as f:
        released = list(csv.DictReader(f))
    mine = {(r["source"], r["target"]): r.get("auc_val_loss") for r in summary if r["table"] == table}
    n = bad = 0
    for row in released:
        for target, value in row.items():
            if target in ("", "source") or _float(value) is None:
                continue
            n += 1
            got = mine.get((row["source"], target))
            if got is None or abs(got * scale - float(value)) > 1e-9 * scale:
                bad += 1
                print(f"  {auc_csv.name}: {row['source']} -> {target}: released {value}, recomputed {got}")
    print(f"{auc_csv.name}: {n - bad} of {n} cells reproduced by the lowest-validation-loss rule")
    return bad


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(round(v, 6))
    return str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="finetune_runs.csv")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="noise_summary.csv to write")
    ap.add_argument("--top-k", type=int, default=5, help="configurations averaged in topk_* (default 5)")
    args = ap.parse_args(argv)
    if not args.runs.is_file():
        sys.exit(f"{args.runs}: not found (the released finetune_runs.csv)")
    summary = build(read_runs(args.runs), args.top_k)
    bad = 0
    for name, table, scale in (
        ("AUCs_dataset.csv", "dataset", 1.0),
        ("AUCs_model.csv", "architectures", 100.0),
    ):
        released = args.runs.parent / name
        if released.is_file():
            bad += check_against(summary, released, table, scale)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in summary:
            w.writerow([_fmt(r.get(c)) for c in COLUMNS])
    print(f"wrote {args.out} ({len(summary)} rows, {args.out.stat().st_size} bytes)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

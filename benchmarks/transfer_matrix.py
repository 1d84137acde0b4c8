"""A CPU-scale transfer matrix: every shared dataset as a source, the medical ones as targets.

    DSIM_DATA_DIR=../shared/data .venv/bin/python benchmarks/transfer_matrix.py          # ~1 h, 2 cores
    .venv/bin/python benchmarks/transfer_matrix.py --quick                               # smoke test

The design whose noise ceiling reaches 0.8 on the medical targets (benchmarks/HISTORY.md,
section "lp500"; ~25 min on 2 shared cores once the 7 source checkpoints exist)::

    DSIM_DATA_DIR=../shared/data .venv/bin/python benchmarks/transfer_matrix.py --pretrain-seed 0 \
        --section lp500 --csv benchmarks/transfer_matrix_results_lp500.csv --repeats 12 --folds 3 \
        --train-size 500 --target-max 2000 --source-max 2000 --epochs 20 --pretrain-epochs 10 \
        --backbone smallcnn-w16 --strategies linear-probe

i.e. one checkpoint per source for all repeats (as cats-scans: the thing ranked is the source
checkpoint), a convex transfer strategy (linear probe on the frozen features), N = 500 training
images, and a measured ranking that averages 6 repetitions (the ceiling is the Spearman between
two disjoint 6-repetition averages of the 12).

Design (see benchmarks/HISTORY.md for the figures):

* 7 sources (pneumoniamnist, breastmnist, ham10000-8x8, cifar10-sample, coil20, usps,
  mnist-test), each pretrained from random init on at most ``--source-max`` images for at most
  ``--pretrain-epochs`` epochs (early stopping on a hold-out), ``smallcnn`` at 28 px, 3 channels;
* 3 medical targets (pneumoniamnist, breastmnist, ham10000-8x8 upsampled to 28 px); a source is
  never its own target; the from-scratch baseline is stored with source == target;
* 3 stratified folds over a large target pool (test folds of ~1/3 of the pool keep the AUC noise
  low) while each run trains on only ``--train-size`` images (small N, where transfer matters);
* two strategies: ``finetune`` (the cats-scans protocol) and ``linear-probe`` (frozen features,
  logistic regression: convex, so much less training noise);
* ``--repeats`` independent repetitions (other seeds: other folds, other training subsets, other
  source pretraining, other init). The noise ceiling of a target is the Spearman correlation
  between the source rankings (mean AUC over folds) of two repetitions.

Every fold lands in the results store (``--store``, default ``benchmarks/transfer_matrix.sqlite``
beside this file is *not* used: the user data dir's ``transfer_matrix.sqlite``), so an
interrupted benchmark resumes. Outputs: ``benchmarks/transfer_matrix_results.csv`` (source,
target, fold, repeat, auc, accuracy, kappa, strategy, setup) and a section appended to (or
replaced in) ``benchmarks/HISTORY.md``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FILES = {
    "pneumoniamnist": "pneumoniamnist.npz",
    "breastmnist": "breastmnist.npz",
    "ham10000-8x8": "ham10000_hmnist_8x8_L.npz",
    "cifar10-sample": "cifar10_sample.npz",
    "coil20": "coil20_32x32.npz",
    "usps": "usps_16x16.npz",
    "mnist-test": "mnist_test.npz",
}
TARGETS = ("pneumoniamnist", "breastmnist", "ham10000-8x8")
MARK_BEGIN = "<!-- transfer_matrix:begin -->"
MARK_END = "<!-- transfer_matrix:end -->"


def load_all(data_dir: Path):
    import dsim

    out = {}
    for name, f in FILES.items():
        p = data_dir / f
        if not p.exists():
            sys.exit(f"error: {p} not found (set DSIM_DATA_DIR to ../shared/data)")
        d = dsim.load_dataset(str(p))
        out[name] = dsim.ImageSet(
            name=name, images=d.images, labels=d.labels, class_names=d.class_names, source=str(p)
        )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--train-size", type=int, default=200)
    ap.add_argument("--target-max", type=int, default=3000)
    ap.add_argument("--source-max", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--pretrain-epochs", type=int, default=15)
    ap.add_argument("--backbone", default="smallcnn")
    ap.add_argument("--strategies", default="finetune,linear-probe")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--store", default=None)
    ap.add_argument("--csv", default=str(HERE / "transfer_matrix_results.csv"))
    ap.add_argument("--results-md", default=str(HERE / "HISTORY.md"))
    ap.add_argument(
        "--pretrain-seed",
        type=int,
        default=None,
        help="pretrain every source once with this seed for all repeats (the ceiling then "
        "measures the fine-tuning experiment given fixed source checkpoints, as cats-scans' folds)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on 2 cores shared with other work, faster than 2)",
    )
    ap.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the from-scratch baseline runs (ceilings only; no T column)",
    )
    ap.add_argument(
        "--section",
        default=None,
        help="name of this run's section in HISTORY.md (default: by --pretrain-seed)",
    )
    ap.add_argument("--quick", action="store_true", help="tiny smoke test (no HISTORY.md, own store)")
    a = ap.parse_args(argv)
    if a.quick:
        a.repeats, a.folds, a.train_size, a.target_max, a.source_max = 2, 2, 60, 300, 300
        a.epochs, a.pretrain_epochs, a.backbone = 3, 1, "smallcnn-w16"
        a.targets = "breastmnist"
        a.csv, a.results_md = "/tmp/transfer_matrix_quick.csv", None
        a.store = a.store or "/tmp/transfer_matrix_quick.sqlite"

    import platformdirs
    import torch

    import dsim

    torch.set_num_threads(a.threads)
    from dsim.validation.store import ResultsStore

    data_dir = Path(
        os.environ.get("DSIM_DATA_DIR", HERE.parent.parent / "shared" / "data").split(os.pathsep)[0]
    )
    store_path = (
        Path(a.store) if a.store else Path(platformdirs.user_data_dir("dsim")) / "transfer_matrix.sqlite"
    )
    store = ResultsStore(store_path)
    data = load_all(data_dir)
    targets = [t for t in a.targets.split(",") if t]
    strategies = [s for s in a.strategies.split(",") if s]
    hp = {"epochs": a.epochs, "image_size": 28}
    php = {"epochs": a.pretrain_epochs, "image_size": 28}
    if a.pretrain_seed is not None:
        php["seed"] = a.pretrain_seed
    t0 = time.perf_counter()
    failures = []
    for rep in range(a.repeats):
        for target in targets:
            sources = [s for s in FILES if s != target]
            t1 = time.perf_counter()
            rpt = dsim.validate(
                target,
                sources=sources,
                strategy=strategies,
                backbone=a.backbone,
                folds=a.folds,
                train_sizes=[a.train_size],
                seed=rep,
                hyperparameters=hp,
                pretrain_hyperparameters=php,
                target_max=a.target_max,
                source_max=a.source_max,
                store=store,
                inline=data,
                predict=False,
                baseline=None if a.no_baseline else "scratch",
                on_event=lambda k, m: (
                    print(f"[{time.perf_counter() - t0:7.0f}s] {k}: {m}", flush=True)
                    if k in ("error", "warning", "info")
                    else None
                ),
            )
            failures += list(rpt.failures)
            print(
                f"[{time.perf_counter() - t0:7.0f}s] repeat {rep} target {target}: {rpt.runs_done} runs "
                f"({rpt.runs_skipped} from store, {len(rpt.failures)} failed) in {time.perf_counter() - t1:.0f}s",
                flush=True,
            )
    runtime = time.perf_counter() - t0
    rows = collect(store, targets, strategies, a)
    write_csv(rows, a.csv)
    text = report(rows, targets, strategies, a, runtime, failures)
    print(text)
    if a.results_md:
        write_section(Path(a.results_md), text, a)
    return 0


def collect(store, targets, strategies, a):
    """Rows of this benchmark's setup from the store (seed = repeat)."""
    rows = []
    for r in store.rows():
        spec = store.get(r["key"])
        if spec is None:
            continue
        s = spec.spec
        hp = s.hyperparameters
        if (
            s.target not in targets
            or s.backbone != a.backbone
            or s.folds != a.folds
            or hp.get("train_size") != a.train_size
            or hp.get("target_max") != a.target_max
            or hp.get("epochs") != a.epochs
            or s.seed >= a.repeats
        ):
            continue
        if s.strategy not in strategies and s.strategy != "scratch":
            continue
        if s.strategy != "scratch" and (
            (hp.get("pretrain") or {}).get("epochs") != a.pretrain_epochs
            or (hp.get("pretrain") or {}).get("seed") != a.pretrain_seed
            or hp.get("source_max") != a.source_max
        ):
            continue
        rows.append(
            {
                "source": s.source,
                "target": s.target,
                "fold": s.fold,
                "repeat": s.seed,
                "auc": r["auc"],
                "accuracy": r["accuracy"],
                "kappa": r["kappa"],
                "strategy": s.strategy,
                "setup": r["setup"],
                "seconds": float(r["timings"].get("total_s", 0.0)),
            }
        )
    rows.sort(key=lambda d: (d["target"], d["strategy"], d["source"], d["repeat"], d["fold"]))
    return rows


def write_csv(rows, path):
    cols = ["source", "target", "fold", "repeat", "auc", "accuracy", "kappa", "strategy", "setup"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: (f"{r[c]:.4f}" if isinstance(r[c], float) else r[c]) for c in cols})


def auc_index(rows) -> dict:
    """Fold AUCs by (target, strategy, source, repeat), and by (..., None) over every repeat:
    built once per report, so that the split-half ceilings (462 splits at 12 repeats) do not
    rescan the rows."""
    table: dict = {}
    for r in rows:
        for rep in (r["repeat"], None):
            table.setdefault((r["target"], r["strategy"], r["source"], rep), []).append(r["auc"])
    return table


def _mean_auc(idx, target, strategy, source, repeat=None):
    xs = idx.get((target, strategy, source, repeat))
    if xs is None and source == target:  # the from-scratch baseline is stored with source == target
        xs = idx.get((target, "scratch", source, repeat))
    return float(np.mean(xs)) if xs else None


def _rho(a, b):
    """Spearman over the sources both rankings have (None where fewer than three)."""
    from scipy.stats import spearmanr

    ok = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    return float(spearmanr([x for x, _ in ok], [y for _, y in ok]).statistic) if len(ok) >= 3 else None


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def ceilings(idx, target, strategy, repeats, with_scratch=False):
    sources = [s for s in FILES if s != target] + ([target] if with_scratch else [])
    return _mean(
        [
            _rho(
                [_mean_auc(idx, target, strategy, s, r1) for s in sources],
                [_mean_auc(idx, target, strategy, s, r2) for s in sources],
            )
            for r1, r2 in itertools.combinations(range(repeats), 2)
        ]
    )


def split_half_ceiling(idx, target, strategy, repeats, with_scratch=False):
    """Spearman between the rankings of two disjoint halves of the repeats (each averaged), mean
    over the ways to split them: the reliability of a ranking that averages repeats/2 repetitions."""
    if repeats < 4:
        return None
    sources = [s for s in FILES if s != target] + ([target] if with_scratch else [])
    reps = list(range(repeats))
    rhos = []
    for half in itertools.combinations(reps, repeats // 2):
        if 0 not in half:
            continue  # each split once
        other = [r for r in reps if r not in half]
        rhos.append(
            _rho(
                [_mean([_mean_auc(idx, target, strategy, s, r) for r in half]) for s in sources],
                [_mean([_mean_auc(idx, target, strategy, s, r) for r in other]) for s in sources],
            )
        )
    return _mean(rhos)


def report(rows, targets, strategies, a, runtime, failures) -> str:
    from dsim.kernel.metrics import transferability

    idx = auc_index(rows)
    L = [MARK_BEGIN, "## Transfer matrix at 28 px (benchmarks/transfer_matrix.py)", ""]
    if a.pretrain_seed is not None:
        L[1] = L[1][:-1] + f", every source pretrained once (seed {a.pretrain_seed}) for all repeats)"
    L.append(
        "Command: `DSIM_DATA_DIR=../shared/data .venv/bin/python benchmarks/transfer_matrix.py "
        + (f"--pretrain-seed {a.pretrain_seed} " if a.pretrain_seed is not None else "")
        + (f"--section {a.section} " if a.section else "")
        + (
            f"--csv benchmarks/{Path(a.csv).name} "
            if Path(a.csv).name != "transfer_matrix_results.csv"
            else ""
        )
        + ("--no-baseline " if a.no_baseline else "")
        + f"--repeats {a.repeats} --folds {a.folds} --train-size {a.train_size} --target-max {a.target_max} "
        f"--source-max {a.source_max} --epochs {a.epochs} --pretrain-epochs {a.pretrain_epochs} "
        f"--backbone {a.backbone} --strategies {','.join(strategies)}"
        + (f" --targets {','.join(targets)}" if tuple(targets) != TARGETS else "")
        + "`"
    )
    compute = sum(r["seconds"] for r in rows)
    L.append(
        f"Compute: {compute / 60:.1f} min, the sum of the wall times of the {len(rows)} stored fold runs "
        "(source pretraining included in the first run that needed it), one torch thread, on this machine's "
        f"2 CPU cores shared with other work; this invocation: {runtime / 60:.1f} min (finished runs come "
        f"from the results store). {len(failures)} failed runs."
    )
    L.append("")
    L.append(
        "Mean test AUC over folds and repeats (T % vs the from-scratch row in brackets). "
        "Rows: sources; `(scratch)` is the target-only baseline."
    )
    for strat in strategies:
        L.append("")
        L.append(f"**{strat}**")
        L.append("")
        L.append("| source | " + " | ".join(targets) + " |")
        L.append("| --- | " + " | ".join("---" for _ in targets) + " |")
        for s in list(FILES) + ["(scratch)"]:
            cells = []
            for t in targets:
                src = t if s == "(scratch)" else s
                if s == t:
                    cells.append("—")
                    continue
                m = _mean_auc(idx, t, strat if s != "(scratch)" else "scratch", src)
                base = _mean_auc(idx, t, "scratch", t)
                if m is None:
                    cells.append("n/a")
                elif s != "(scratch)" and base:
                    cells.append(f"{m:.3f} ({transferability(m, base):+.1f})")
                else:
                    cells.append(f"{m:.3f}")
            L.append(f"| {s} | " + " | ".join(cells) + " |")
    L.append("")
    varied = (
        "other folds, training subsets and fine-tuning seeds; the same source checkpoints"
        if a.pretrain_seed is not None
        else "other seeds, folds, training subsets, source pretraining and fine-tuning init"
    )
    L.append(
        "Noise ceiling: Spearman between the source rankings (mean AUC over folds) of two independent "
        f"repetitions ({varied}); mean over pairs of repeats."
    )

    def ceiling_table(fn):
        out = [
            "",
            "| target | "
            + " | ".join(f"{s} (6 sources)" for s in strategies)
            + " | "
            + " | ".join(f"{s} (+ scratch)" for s in strategies)
            + " |",
            "| --- | " + " | ".join("---" for _ in strategies * 2) + " |",
        ]
        for t in targets:
            cs = [fn(idx, t, s, a.repeats, with_scratch=w) for w in (False, True) for s in strategies]
            out.append(f"| {t} | " + " | ".join("n/a" if c is None else f"{c:.2f}" for c in cs) + " |")
        return out

    L += ceiling_table(ceilings)
    if a.repeats >= 4:
        L.append("")
        L.append(
            f"Split-half ceiling: Spearman between the rankings of two disjoint halves of the {a.repeats} "
            f"repetitions, each averaged over {a.repeats // 2} repetitions (mean over the splits): the "
            "reliability of a ranking that averages that many repetitions."
        )
        L += ceiling_table(split_half_ceiling)
    if failures:
        L.append("")
        L.append("Failed runs: " + "; ".join(f["error"] for f in failures[:5]))
    L.append("")
    L.append(
        f"CSV of every fold: benchmarks/{Path(a.csv).name} (source,target,fold,repeat,auc,"
        "accuracy,kappa,strategy,setup; the scratch baseline has source == target)."
    )
    L.append(MARK_END)
    return "\n".join(L)


def _marks(a):
    if a is not None and a.section:
        return MARK_BEGIN.replace("matrix:", f"matrix-{a.section}:"), MARK_END.replace(
            "matrix:", f"matrix-{a.section}:"
        )
    if a is None or a.pretrain_seed is None:
        return MARK_BEGIN, MARK_END
    return MARK_BEGIN.replace("matrix:", "matrix-fixed-pretrain:"), MARK_END.replace(
        "matrix:", "matrix-fixed-pretrain:"
    )


def write_section(path: Path, text: str, a=None) -> None:
    """Append this benchmark's section, or replace only its own earlier section."""
    old = path.read_text() if path.exists() else ""
    b, e = _marks(a)
    text = text.replace(MARK_BEGIN, b).replace(MARK_END, e)
    if b in old and e in old:
        i, j = old.index(b), old.index(e) + len(e)
        new = old[:i] + text + old[j:]
    else:
        new = old + ("\n\n" if old and not old.endswith("\n\n") else "") + text + "\n"
    path.write_text(new)


if __name__ == "__main__":
    sys.exit(main())

"""Judge dsim's predictors against every baseline, leave-one-target-out, on every meta-dataset.

    python benchmarks/predictor.py                  # print the markdown report
    python benchmarks/predictor.py --write          # also write benchmarks/results/predictor.md and
                                                    # docs/img/predictor_loto_<meta-dataset>.png
    python benchmarks/predictor.py --only juodelyte-datasets,cats-scans

Meta-datasets: the Juodelyte et al. 2024 tables (15 source datasets x 12 MedMNIST targets; 9
ImageNet architectures x 11 targets; the study's eight metrics as measure values; noise ceilings
from the spread of its near-best configurations), the cats-scans table, and the CPU transfer
matrices of benchmarks/transfer_matrix.py. Each predictor is fitted on all targets but one (and
that target's family) and ranks the held-out target's sources; the per-target weighted Kendall
tau (Juodelyte et al.'s convention), Spearman rho, top-1 hit and regret are reported beside the
noise ceiling, with a paired bootstrap interval of the meta-ranker minus the track record.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # matrices, transfer_matrix
REPO = HERE.parent
OUT = HERE / "results" / "predictor.md"
#: the CPU matrices, each one meta-dataset (their CSVs: source,target,fold,repeat,auc,setup,strategy)
MATRICES = {
    "cpu n200 (ft+lp)": ("transfer_matrix_results.csv",),
    "cpu lp w16": (
        "transfer_matrix_results_lp500.csv",
        "transfer_matrix_results_lp500_natural.csv",
        "transfer_matrix_results_lp200.csv",
    ),
    "cpu lp w32": ("transfer_matrix_results_lp500_w32.csv", "transfer_matrix_results_lp200_w32.csv"),
}
JUODELYTE = "published:juodelyte2024"


def juodelyte(setup: str, name: str):
    """The study's table of one setup as a meta-dataset, and its noise ceilings."""
    import dsim
    from dsim.evaluation.evaluate import meta_dataset, parametric_ceiling

    results = [r for r in dsim.known_results() if r.origin == JUODELYTE and r.setup == setup]
    values = [v for v in dsim.known_measure_values() if v.origin == JUODELYTE]
    meta = meta_dataset(name, results, values)
    sd = noise_sd()
    canon = dsim.canonical_names()
    table = "dataset" if "resnet18" in setup else "architectures"
    by = {(t, canon(s)): v for (tab, s, t), v in sd.items() if tab == table}
    ceil = parametric_ceiling(results, lambda _s, t, src: by.get((t, src)), method="near-best configurations")
    return meta, ceil


def clean_truth(meta, setup: str):
    """The same meta-dataset judged against the cleaner truth re-derived from the study's runs:
    per pair, the mean test AUC of its five best-by-validation configurations (``topk_mean`` of
    noise_summary.csv, from ../shared/published/juodelyte2024/finetune_runs.csv, MIT) instead of
    the one lowest-validation-loss run the published table reports; and that truth's noise
    ceiling (the spread of the five divided by sqrt(5): the sd of their mean)."""
    import dataclasses
    import math
    from importlib import resources

    import dsim
    from dsim.evaluation.evaluate import parametric_ceiling

    text = (
        resources.files("dsim_plugins") / "published_data" / "juodelyte2024" / "noise_summary.csv"
    ).read_text()
    table = "dataset" if "resnet18" in setup else "architectures"
    canon = dsim.canonical_names()
    mean, sem = {}, {}
    for row in csv.DictReader(text.splitlines()):
        if row["table"] == table and row["topk_mean"]:
            key = (canon(row["source"]), row["target"])
            mean[key] = float(row["topk_mean"])
            if row["topk_sd"] and row["top_k"]:  # the sd of a mean of top_k configurations
                sem[key] = float(row["topk_sd"]) / math.sqrt(float(row["top_k"]))
    results = [dataclasses.replace(r, auc=mean.get((r.source, r.target), r.auc)) for r in meta.results]
    ceil = parametric_ceiling(
        results, lambda _s, t, src: sem.get((src, t)), method="mean of the near-best configurations"
    )
    clean = dataclasses.replace(meta, name=meta.name + " (best-by-validation truth)", results=results)
    return clean, ceil


def noise_sd():
    """(table, source, target) -> sd of the test AUC over the study's top-5 configurations."""
    from importlib import resources

    text = (
        resources.files("dsim_plugins") / "published_data" / "juodelyte2024" / "noise_summary.csv"
    ).read_text()
    out = {}
    for row in csv.DictReader(text.splitlines()):
        try:
            out[(row["table"], row["source"], row["target"])] = float(row["topk_sd"])
        except ValueError:
            continue
    return out


def cats_scans():
    import dsim
    from dsim.evaluation.evaluate import meta_dataset, noise_ceiling

    results = [r for r in dsim.known_results() if r.origin == "published:cats-scans"]
    values = [v for v in dsim.known_measure_values() if v.origin == "published:cats-scans"]
    return meta_dataset("cats-scans", results, values), noise_ceiling(results)


def matrix(name: str, files, measures=(), options=None, model_scores=()):
    """A CPU transfer matrix as a meta-dataset; card sizes capped at the 2 000 images each source
    was pretrained on; ``measures`` computed on the shared data, ``model_scores`` on the matrix's
    own source checkpoints (fixed-pretraining matrices)."""
    import dataclasses

    import matrices

    import dsim
    from dsim.evaluation.evaluate import meta_dataset, noise_ceiling

    results = [r for f in files for r in matrices.load_matrix(HERE / f)]
    cards = {
        n: (dataclasses.replace(c, size=min(c.size, 2000)) if c.size else c)
        for n, c in dsim.source_cards().items()
    }
    pairs = sorted({(r.source, r.target) for r in results if r.source != r.target})
    values = list(dsim.known_measure_values()) + matrices.computed_values(measures, pairs, options)
    if model_scores and tuple(files) != MATRICES["cpu n200 (ft+lp)"]:  # that one pretrained per repeat
        values += matrices.model_scores(results, tuple(model_scores))
    return meta_dataset(name, results, values, cards=cards), noise_ceiling(results)


def evaluate(meta, ceil, only_measures=None):
    from dsim.evaluation.evaluate import default_suite, evaluate_suite

    measures = sorted({v.measure for v in meta.values} if only_measures is None else only_measures)
    suite = default_suite(measures)
    return evaluate_suite(suite, meta.results, meta.values, meta.cards, meta.kinds)


def verdict(name, out, ceil) -> list[str]:
    """The paired bootstrap of the meta-ranker against the track record and the best single
    measure, and the goal line."""
    from dsim.evaluation.evaluate import mean_metrics, paired_bootstrap

    sm = {k: mean_metrics(v) for k, v in out.items()}
    lines = []
    singles = {k: v for k, v in sm.items() if k.endswith(" alone")}
    best_single = max(singles, key=lambda k: singles[k].get("weighted_tau", -9)) if singles else None
    from dsim.kernel.defaults import LEARNED_PREDICTOR as D

    m = sm.get(D, {})
    for other in [x for x in ("track-record", "meta-ranker", "fixed-blend", best_single) if x and x in out]:
        b = paired_bootstrap(out[D], out[other], "weighted_tau")
        lines.append(
            f"- {D} minus {other} (weighted tau): {b['mean']:+.2f}, 95 % interval "
            f"{b['low']:+.2f}..{b['high']:+.2f} over {b['n_tasks']} tasks (better on {b['better']}, worse on {b['worse']})"
        )
    hits = int(round(m.get("top1", 0) * m.get("n_tasks", 0)))
    lines.append(
        f"- {D}: mean weighted tau {m.get('weighted_tau', float('nan')):.2f}, top-1 {hits}/{int(m.get('n_tasks', 0))}"
    )
    return lines + [""]


def headroom(meta) -> list[str]:
    import numpy as np

    import dsim
    from dsim.evaluation.evaluate import hindsight, in_sample

    def make():
        return dsim.get_predictor("meta-ranker", select=False)

    hs = hindsight(meta, make)
    ins = in_sample(meta, make)
    if not hs:
        return []
    from collections import Counter

    picked = ", ".join(f"{f} x{n}" for f, n in Counter(f for _, _, f, _ in hs).most_common(6))
    return [
        f"- headroom (neither is a predictor): the best single feature per target chosen *with* its answers "
        f"averages rho {np.mean([r for *_, r in hs]):.2f} ({picked}); the learned model fitted on every "
        f"target, held-out ones included, reaches rho {np.mean([r for *_, r in ins]):.2f}.",
        "",
    ]


def plot(name: str, out, ceil, path: Path) -> Path:
    """Per held-out target: weighted tau of the meta-ranker, the track record and the best single
    score, beside the noise ceiling (one PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dsim.evaluation.evaluate import mean_metrics

    singles = {k: mean_metrics(v).get("weighted_tau", -9) for k, v in out.items() if k.endswith(" alone")}
    best = max(singles, key=singles.get) if singles else None
    shown = [k for k in ("meta-ranker", "track-record", best) if k and k in out]
    keys = [(r["setup"], r["target"]) for r in out[shown[0]]]
    cmap = {(c["setup"], c["target"]): c.get("ceiling_tau", c["ceiling"]) for c in ceil}
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(keys) + 2) + 3, 3.8))
    width = 0.8 / len(shown)
    for i, lab in enumerate(shown):
        by = {(r["setup"], r["target"]): r.get("weighted_tau") for r in out[lab]}
        vals = [np.nan if by.get(k) is None else by[k] for k in keys]
        mean = mean_metrics(out[lab]).get("weighted_tau", float("nan"))
        ax.bar(x + (i - (len(shown) - 1) / 2) * width, vals, width, label=f"{lab} (mean {mean:.2f})")
    ax.scatter(x, [cmap.get(k, np.nan) for k in keys], marker="_", s=400, color="k", label="noise ceiling")
    ax.axhline(0, color="grey", lw=0.5)
    multi = len({s for s, _ in keys}) > 1
    ax.set_xticks(x, [f"{t}\n{s.split(':')[-1]}" if multi else t for s, t in keys], rotation=45, ha="right")
    ax.set_ylabel("weighted Kendall tau")
    ax.set_title(f"{name}: leave-one-target-out")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def aggregate(every) -> list[str]:
    from dsim.evaluation.evaluate import mean_metrics

    labels = [lab for lab in every[0][1] if all(lab in o for _, o in every)]
    lines = [
        "**All meta-datasets** — mean weighted tau per meta-dataset (held-out tasks) and over every task",
        "",
        "| predictor | "
        + " | ".join(f"{n} ({len(next(iter(o.values())))})" for n, o in every)
        + " | all tasks |",
        "|" + "---|" * (len(every) + 2),
    ]
    for lab in labels:
        cells = [f"{mean_metrics(o[lab]).get('weighted_tau', float('nan')):.2f}" for _, o in every]
        allrows = [r for _, o in every for r in o[lab]]
        lines.append(
            f"| {lab} | "
            + " | ".join(cells)
            + f" | **{mean_metrics(allrows).get('weighted_tau', float('nan')):.2f}** |"
        )
    return lines + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"write the report to {OUT.relative_to(REPO)}")
    ap.add_argument("--only", default="", help="comma-separated meta-dataset names (default: all)")
    ap.add_argument(
        "--measures", default="", help="image measures to compute on the CPU matrices (e.g. otdd)"
    )
    ap.add_argument("-o", "--option", action="append", default=[], help="KEY=VALUE measure parameter")
    ap.add_argument(
        "--model-scores",
        default="",
        help="source-model scores of the fixed-pretraining matrices' checkpoints (logme,h-score)",
    )
    ap.add_argument("--headroom", action="store_true", help="also the headroom diagnostics (slow)")
    ap.add_argument(
        "--clean-truth",
        action="store_true",
        help="also judge the Juodelyte tables against the best-by-validation truth (noise_summary.csv)",
    )
    args = ap.parse_args(argv)
    import dsim
    from dsim.evaluation.evaluate import render_table

    opts = dict(kv.split("=", 1) for kv in args.option)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    builders = {
        "juodelyte-datasets": lambda: juodelyte("juodelyte2024:resnet18:224px", "juodelyte-datasets"),
        "juodelyte-architectures": lambda: juodelyte(
            "juodelyte2024:architectures:224px", "juodelyte-architectures"
        ),
        "cats-scans": cats_scans,
    }
    for name, files in MATRICES.items():
        if all((HERE / f).exists() for f in files):
            builders[name] = lambda name=name, files=files: matrix(
                name,
                files,
                [m for m in args.measures.split(",") if m],
                opts,
                [m for m in args.model_scores.split(",") if m],
            )
    cmd = "python benchmarks/predictor.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "## Predictors, leave-one-target-out, on every meta-dataset",
        "",
        f"`DSIM_DATA_DIR=../shared/data {cmd.strip()}` on {time.strftime('%Y-%m-%d')}, dsim {dsim.__version__}, CPU. "
        "Per held-out target: weighted Kendall tau (`scipy.stats.weightedtau(predicted, measured)`, "
        "Juodelyte et al.'s convention), over the sources measured for it; a predictor never sees the held-out "
        "target's results, nor those of datasets holding the same images.",
        "",
    ]
    every = []
    for name, build in builders.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        meta, ceil = build()
        out = evaluate(meta, ceil)
        lines += render_table(out, ceil, f"{name} ({len(meta.results)} results)", metric="weighted_tau")
        lines += verdict(name, out, ceil) + (headroom(meta) if args.headroom else [])
        if name.startswith("juodelyte") and args.clean_truth:
            setup = meta.results[0].setup
            clean, ceil_c = clean_truth(meta, setup)
            out_c = evaluate(clean, ceil_c)
            lines += render_table(out_c, ceil_c, f"{clean.name}", metric="weighted_tau")
            lines += verdict(clean.name, out_c, ceil_c)
        lines += [f"({time.perf_counter() - t0:.0f} s)", ""]
        every.append((name, out))
        if args.write:
            slug = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
            png = plot(name, out, ceil, REPO / "docs" / "img" / f"predictor_loto_{slug}.png")
            lines += [f"![{name}](../../docs/img/{png.name})", ""]
        print(f"done {name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if len(every) > 1:
        lines += aggregate(every)
    text = "\n".join(lines)
    print(text)
    if args.write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text + "\n")
        print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

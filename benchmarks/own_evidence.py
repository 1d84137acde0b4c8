"""dsim's own measured matrices as evidence for the default predictor: what fitting it on every
meta-dataset (published tables + the CPU matrices + the checkpoint zoo) changes.

    python benchmarks/own_evidence.py                 # print the markdown report (~1-2 min)
    python benchmarks/own_evidence.py --write         # also write benchmarks/results/own_evidence.md

For each meta-dataset, leave-one-target-out of the default (``prior-evidence``) fitted (a) on that
meta-dataset alone (today's evaluation), (b) on ALL evidence (every other meta-dataset too; the
held-out target's family is left out of every one), beside the track record on the meta-dataset
alone; per-target weighted tau, mean and paired 95 % bootstrap intervals of (b) - track record and
(b) - (a). The CPU matrices carry the expert distance (card facts, computed here in a second) as
their image measure; the zoo its model scores (benchmarks/zoo_matrix_results_values.csv) and its
checkpoints' cards (parameters). The Juodelyte source-dataset table is judged against the
published truth and the best-by-validation truth.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import matrices  # noqa: E402
import predictor  # noqa: E402
import zoo_matrix  # noqa: E402

import dsim  # noqa: E402
from dsim.evaluation.evaluate import evaluate_loto, meta_dataset, paired_bootstrap  # noqa: E402

OUT = HERE / "results" / "own_evidence.md"
REGISTRY: dict = {}
CPU_SETUPS: dict[str, set] = {}


#: the shipped derived table of the CPU matrices (``--ship`` writes it from the matrix CSVs)
SHIPPED = HERE.parent / "plugins" / "dsim_plugins" / "own_matrices_data" / "cpu_transfer_matrices.csv"
#: the matrix that pretrained its sources anew per repeat: its setups say so (the others share
#: one fixed pretraining, and a linear probe at n200 exists in both)
PER_REPEAT = "transfer_matrix_results.csv"


def ship_cpu() -> int:
    """Write the CPU matrices (predictor.MATRICES) as one derived CSV inside the plugin: one row
    per (setup, source, target, fold, repeat), the scratch baseline once per setup."""
    rows = set()
    for files in predictor.MATRICES.values():
        for f in files:
            for r in matrices.load_matrix(HERE / f):
                setup = r.setup + (":per-repeat-pretraining" if f == PER_REPEAT else "")
                rows.add((setup, r.source, r.target, r.fold, r.repeat, f"{r.auc:.6g}"))
    with SHIPPED.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["setup", "source", "target", "fold", "repeat", "auc"])
        w.writerows(sorted(rows))
    return len(rows)


def matrix_of(setup: str) -> str:
    """Which of predictor.MATRICES a shipped setup belongs to."""
    if setup.endswith(":per-repeat-pretraining"):
        return "cpu n200 (ft+lp)"
    return "cpu lp w32" if setup.startswith("dsim:smallcnn:") else "cpu lp w16"


def cpu(name):
    """A CPU matrix as shipped (origin ``dsim:cpu-matrix``) and the expert distance of its pairs."""
    rs = [r for r in dsim.known_results() if r.origin == "dsim:cpu-matrix" and r.setup in CPU_SETUPS[name]]
    pairs = sorted({(r.source, r.target) for r in rs if r.source != r.target})
    vals = [
        dataclasses.replace(v, origin="dsim:cpu-matrix") for v in matrices.computed_values(["expert"], pairs)
    ]
    return rs, vals


def zoo():
    """The checkpoint zoo (all setups), its model scores and its checkpoints' source cards."""
    from dsim.networks.checkpoints import as_source_card

    rs = zoo_matrix.load_results([HERE / "zoo_matrix_results_lp.csv", HERE / "zoo_matrix_results_ft.csv"])
    every = dsim.list_measures()
    vals = [
        v
        for v in zoo_matrix.load_values(HERE / "zoo_matrix_results_values.csv")
        if not every[v.measure].opt_in
    ]
    cfg = zoo_matrix.config(argparse.Namespace(quick=False, first_repeat=0, targets=""))
    cards = zoo_matrix.load_cards(cfg, Path("/nonexistent"))
    datasets = {c.name: c for c in dsim.get_registry()}
    return rs, vals, {c.name: as_source_card(c, datasets) for c in cards}


def loto(results, values, cards, kinds, name, setups, targets):
    rows = evaluate_loto(lambda: dsim.get_predictor(name), results, values, cards, kinds, targets=targets)
    return [r for r in rows if r["setup"] in setups]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"write {OUT.name} in benchmarks/results/")
    ap.add_argument(
        "--ship", action="store_true", help=f"(re)write {SHIPPED.name} from the matrix CSVs first"
    )
    ap.add_argument("--add", default="cpu,zoo", help="which own matrices join the evidence: cpu, zoo or both")
    args = ap.parse_args(argv)
    if args.ship:
        print(f"wrote {ship_cpu()} rows to {SHIPPED}", file=sys.stderr)
    for row in csv.DictReader(SHIPPED.read_text().splitlines()):
        CPU_SETUPS.setdefault(matrix_of(row["setup"]), set()).add(row["setup"])
    t0 = time.perf_counter()
    global REGISTRY
    REGISTRY = {c.name: c for c in dsim.get_registry()}
    metas = {}
    jd, _ = predictor.juodelyte("juodelyte2024:resnet18:224px", "juodelyte-datasets")
    ja, _ = predictor.juodelyte("juodelyte2024:architectures:224px", "juodelyte-architectures")
    jc, _ = predictor.clean_truth(jd, "juodelyte2024:resnet18:224px")
    cats, _ = predictor.cats_scans()
    for m in (jd, ja, cats):
        metas[m.name] = (list(m.results), list(m.values), {})
    add = set(args.add.split(","))
    for name in predictor.MATRICES if "cpu" in add else ():
        rs, vs = cpu(name)
        metas[name] = (rs, vs, {})
    if "zoo" in add:
        metas["zoo (3 setups pooled)"] = zoo()
    judged = list(metas) + [jc.name]
    lines = [
        "## dsim's own matrices as evidence for the default (leave-one-target-out, weighted tau)",
        "",
        f"`python benchmarks/own_evidence.py --add {args.add}` on {time.strftime('%Y-%m-%d')}. (a) the default fitted on the "
        "meta-dataset alone; (b) fitted on every meta-dataset (published tables, the CPU matrices with the "
        "expert distance, the zoo with its model scores); the held-out target's family is left out of all of "
        "them. Paired 95 % bootstrap intervals over the held-out tasks.",
        "",
        "| meta-dataset | tasks | track record | (a) default, own table | (b) default, all evidence | (b) - track | (b) - (a) |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name in judged:
        if name == jc.name:
            own_r, own_v, own_c = list(jc.results), list(jc.values), {}
            clean = {(r.setup, r.source, r.target, r.fold, r.repeat): r for r in jc.results}
        else:
            own_r, own_v, own_c = metas[name]
            clean = None
        setups = {r.setup for r in own_r}
        targets = sorted({r.target for r in own_r if r.source != r.target})
        cards = {**REGISTRY, **own_c}
        own = meta_dataset(name, own_r, own_v, cards=cards)
        # everything: the other meta-datasets plus this one (the clean truth replaces the published)
        all_r, all_v, all_c = [], [], {}
        for other, (r, v, c) in metas.items():
            if clean is not None and other == jd.name:
                r = list(jc.results)
            all_r += r
            all_v += v
            all_c.update(c)
        everything = meta_dataset("all", all_r, all_v, cards={**REGISTRY, **all_c})
        track = loto(own.results, own.values, own.cards, own.kinds, "track-record", setups, targets)
        a = loto(own.results, own.values, own.cards, own.kinds, "prior-evidence", setups, targets)
        b = loto(
            everything.results,
            everything.values,
            everything.cards,
            everything.kinds,
            "prior-evidence",
            setups,
            targets,
        )
        x = lambda rows: float(np.mean([r["weighted_tau"] for r in rows]))  # noqa: E731
        bt, ba = paired_bootstrap(b, track), paired_bootstrap(b, a)
        ci = lambda r: f"{r['mean']:+.2f} ({r['low']:+.2f}..{r['high']:+.2f})"  # noqa: E731
        lines.append(
            f"| {name} | {len(b)} | {x(track):.2f} | {x(a):.2f} | {x(b):.2f} | {ci(bt)} | {ci(ba)} |"
        )
        print(f"done {name} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    lines += ["", f"({time.perf_counter() - t0:.0f} s)"]
    text = "\n".join(lines)
    print(text)
    if args.write:
        with OUT.open("a" if args.add != "cpu,zoo" else "w") as f:
            f.write(text + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""dsim's own measures on real medical images, judged against the Juodelyte et al. 2024 table.

    DSIM_DATA_DIR=../shared/data DSIM_WEIGHTS_DIR=../shared/weights python benchmarks/own_measures_medical.py

The shared data hold small versions of five of the study's MedMNIST sets (pneumoniamnist,
breastmnist and retinamnist themselves; blood-pbc-28 for bloodmnist, the same PBC images;
ham10000-8x8 for dermamnist, the same HAM10000 images at 8x8 grey). For every target among them
and the other four as its sources, the script computes expert, OTDD (on pixels, and on the
features of the ImageNet MobileNetV1 x0.25 of ../shared/weights and of a random-init copy) and
Task2Vec (that MobileNet as probe, ImageNet weights vs random init) between the local stand-ins,
and scores each measure's ranking of the four sources against the study's fine-tuned AUCs for the
same pairs (weighted Kendall tau, predicted order first, and Spearman), beside the track record.
Four sources per target: each number is an anecdote; the mean over five targets is the figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

#: local stand-in -> the study's name for the same images
STAND_INS = {
    "pneumoniamnist": "pneumoniamnist",
    "breastmnist": "breastmnist",
    "retinamnist": "retinamnist",
    "blood-pbc-28": "bloodmnist",
    "ham10000-8x8": "dermamnist",
}
PROBE = "mobilenetv1-x0.25"
#: label -> (measure, parameters)
MEASURES = {
    "expert": ("expert", {}),
    "otdd pixels": ("otdd", {}),
    "otdd mobilenet imagenet": (
        "otdd",
        {"otdd_features": PROBE, "probe_weights": "imagenet", "image_size": 64},
    ),
    "otdd mobilenet random": ("otdd", {"otdd_features": PROBE, "probe_weights": "random", "image_size": 64}),
    "task2vec mobilenet imagenet": (
        "task2vec",
        {
            "probe": PROBE,
            "probe_weights": "imagenet",
            "image_size": 64,
            "task2vec_skip_layers": 0,
            "task2vec_bn": "eval",
            "task2vec_threads": 1,
        },
    ),
    "task2vec mobilenet random": (
        "task2vec",
        {
            "probe": PROBE,
            "probe_weights": "random",
            "image_size": 64,
            "task2vec_skip_layers": 0,
            "task2vec_threads": 1,
        },
    ),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-samples", type=int, default=500, help="images per dataset the measures look at")
    ap.add_argument("--only", default="", help="comma-separated measure labels")
    args = ap.parse_args(argv)
    import numpy as np
    from scipy.stats import spearmanr, weightedtau

    import dsim

    auc = defaultdict(dict)
    for r in dsim.known_results():
        if r.origin == "published:juodelyte2024" and r.setup == "juodelyte2024:resnet18:224px":
            auc[r.target][r.source] = r.auc
    study = set(STAND_INS.values())
    labels = [m for m in MEASURES if not args.only or m in args.only.split(",")]
    kinds = {lab: dsim.list_measures()[MEASURES[lab][0]].kind for lab in labels}
    rows = defaultdict(dict)  # label -> target -> (tau, rho)
    t0 = time.perf_counter()
    for target, t_study in STAND_INS.items():
        sources = [s for s in STAND_INS if s != target]
        y = np.array([auc[t_study][STAND_INS[s]] for s in sources])
        # the track record: each source's z-scored AUC on the study's other targets (not this one)
        zs = defaultdict(list)
        for u, d in auc.items():
            if u == t_study:
                continue
            a = np.array(list(d.values()))
            for s, x in d.items():
                zs[s].append((x - a.mean()) / (a.std() or 1.0))
        tr = np.array([sum(zs[STAND_INS[s]]) / (len(zs[STAND_INS[s]]) + 1) for s in sources])
        rows["track record (study)"][target] = (weightedtau(tr, y).statistic, spearmanr(tr, y).statistic)
        for lab in labels:
            name, params = MEASURES[lab]
            v = []
            for s in sources:
                try:
                    v.append(
                        dsim.measure(s, target, name, options=params, max_samples=args.max_samples)["value"]
                    )
                except dsim.DsimError as exc:
                    print(f"{lab} {s}->{target}: {exc}", file=sys.stderr)
                    v.append(np.nan)
            p = np.array(v, float)
            p = -p if kinds[lab] == "distance" else p
            ok = np.isfinite(p)
            if ok.sum() >= 3 and np.ptp(p[ok]) > 0:
                rows[lab][target] = (weightedtau(p[ok], y[ok]).statistic, spearmanr(p[ok], y[ok]).statistic)
            print(
                f"{lab} -> {target}: {np.round(p, 4).tolist()} ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
            )
    targets = list(STAND_INS)
    lines = [
        "| measure (4 local stand-in sources per target) | "
        + " | ".join(f"{t} ({STAND_INS[t]})" for t in targets)
        + " | mean weighted tau | mean rho |",
        "|" + "---|" * (len(targets) + 3),
    ]
    for lab, d in rows.items():
        cells = [f"{d[t][0]:+.2f}" if t in d else "n/a" for t in targets]
        taus = [d[t][0] for t in targets if t in d]
        rhos = [d[t][1] for t in targets if t in d]
        lines.append(
            f"| {lab} | " + " | ".join(cells) + f" | **{np.mean(taus):+.2f}** | {np.mean(rhos):+.2f} |"
        )
    print("\n".join(lines))
    print(f"\n(study sets in the table: {', '.join(sorted(study))}; {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

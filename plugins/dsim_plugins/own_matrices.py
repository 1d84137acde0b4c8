"""Prior knowledge measured by dsim itself: the CPU transfer matrices of
``benchmarks/transfer_matrix.py`` (small CNNs pretrained on the shared sets, fine-tuned or
linearly probed on small draws of each target, 28 px), as known results (``dsim_known_results``,
origin ``dsim:cpu-matrix``). The derived CSV ships inside this plugin (``own_matrices_data/``,
with a README giving each setup's protocol and provenance); the expert distance of their pairs
comes from the cards, like every card-only measure. The default predictor learns from them: with
them its held-out weighted tau rises on the CPU matrices and stays level on the published tables
(benchmarks/results/own_evidence.md). The checkpoint zoo's matrices are not shipped: they lowered
the default on the architecture table.
"""

from __future__ import annotations

import csv
from importlib import resources

import dsim

ORIGIN = "dsim:cpu-matrix"


@dsim.hookimpl
def dsim_known_results():
    text = (resources.files("dsim_plugins") / "own_matrices_data" / "cpu_transfer_matrices.csv").read_text()
    return [
        dsim.TransferResult(
            source=r["source"],
            target=r["target"],
            fold=int(r["fold"]),
            repeat=int(r["repeat"]),
            auc=float(r["auc"]),
            origin=ORIGIN,
            setup=r["setup"],
        )
        for r in csv.DictReader(text.splitlines())
    ]

"""Prior knowledge: the results released with "Cats, not CAT scans" (van den Brandt et al.).

Provides the measured transfer AUCs (``dsim_known_results``), the paper's per-fold Task2Vec
distances (``dsim_known_measure_values``, measure ``task2vec``) and the paper's expert-feature
Hamming distances (measure ``expert``; the majority vote of five observers, which can differ from
a distance recomputed from dsim's cards). The CSVs ship inside this plugin
(``published_data/``, with a README citing the paper and the released commit). It also registers
the reproduction ``cats-scans`` (``dsim reproduce cats-scans``, :mod:`dsim_plugins.cats_scans_analysis`).
"""

from __future__ import annotations

import csv
from importlib import resources

import dsim

ORIGIN = "published:cats-scans"


def _rows(name: str):
    text = (resources.files("dsim_plugins") / "published_data" / name).read_text()
    return list(csv.DictReader(text.splitlines()))


@dsim.hookimpl
def dsim_register_reproductions():
    from .cats_scans_analysis import CatsScans

    return [CatsScans()]


@dsim.hookimpl
def dsim_known_results():
    return [
        dsim.TransferResult(
            source=r["source"],
            target=r["target"],
            fold=int(r["fold"]),
            auc=float(r["auc"]),
            origin=ORIGIN,
            setup="cats-scans:resnet50",
        )
        for r in _rows("cats_scans_transfer_auc.csv")
    ]


@dsim.hookimpl
def dsim_known_measure_values():
    return [
        dsim.MeasureValue(
            measure="task2vec",
            source=r["source"],
            target=r["target"],
            value=float(r["task2vec_distance"]),
            fold=int(r["fold"]),
            origin=ORIGIN,
        )
        for r in _rows("cats_scans_task2vec_distance.csv")
    ] + [
        dsim.MeasureValue(
            measure="expert",
            source=r["source"],
            target=r["target"],
            value=float(r["expert_hamming_distance"]),
            fold=None,
            origin=ORIGIN,
        )
        for r in _rows("cats_scans_expert_distance.csv")
        if r["source"] != r["target"]
    ]

"""The tables released with Juodelyte et al. 2024 as dsim reads them: which files, which setups,
and their source x target (or target x metric) values. Read by :mod:`dsim_plugins.published_juodelyte`
(the results and scores) and :mod:`dsim_plugins.juodelyte_analysis` (the reproduction)."""

from __future__ import annotations

import csv
from functools import cache
from importlib import resources

ORIGIN = "published:juodelyte2024"
SETUP_DATASETS = "juodelyte2024:resnet18:224px"
SETUP_ARCHITECTURES = "juodelyte2024:architectures:224px"
#: the eight metrics of the study, under dsim's measure names
METRICS = ("logme", "leep", "nleep", "ncti", "parc", "sfda", "lp", "fu")
#: table -> (AUC file, suffix of the metric files, setup, factor that turns the AUC into [0, 1])
TABLES = {
    "dataset": ("AUCs_dataset.csv", "dataset", SETUP_DATASETS, 1.0),
    "architectures": ("AUCs_model.csv", "model", SETUP_ARCHITECTURES, 0.01),
}


def read_text(name: str) -> str:
    return (resources.files("dsim_plugins") / "published_data" / "juodelyte2024" / name).read_text()


@cache
def wide_table(name: str) -> dict[str, dict[str, float]]:
    """A released source x target table (first column an index, then ``source``): source ->
    target -> value, empty cells left out. Rows keep the file's order."""
    out: dict[str, dict[str, float]] = {}
    for row in csv.DictReader(read_text(name).splitlines()):
        source = row.pop("source")
        row.pop("", None)
        out[source] = {t: float(v) for t, v in row.items() if v not in ("", None)}
    return out


@cache
def rank_table(name: str) -> dict[str, dict[str, int]]:
    """``ktau_*_rank.csv`` (``;``-separated): target -> metric -> the paper's rank (1 = best)."""
    out: dict[str, dict[str, int]] = {}
    for row in csv.DictReader(read_text(name).splitlines(), delimiter=";"):
        target = row.pop("target")
        row.pop("", None)
        out[target] = {m: int(v) for m, v in row.items()}
    return out

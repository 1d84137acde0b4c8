"""Prior knowledge: the results released with Juodelyte et al. 2024, "On dataset transferability in
medical image classification" (arXiv:2412.20172; github.com/DovileDo/transferability-in-medical-imaging,
commit 7e308c4, MIT licence).

Provides, all with origin ``published:juodelyte2024``:

* ``dsim_known_results`` — the fine-tuned test AUCs of two tables, fold 0 and repeat 0 (one
  training draw, one seeded run per configuration; the AUC is the lowest-validation-loss
  configuration's): 15 sources (``imagenet``, ``radimagenet``, ``medmnist`` — the leave-target-out
  aggregate — and the 12 MedMNIST sets) x 12 MedMNIST targets under setup
  ``juodelyte2024:resnet18:224px``, and 9 ImageNet architectures (``densenet``, ``efficientnet``,
  ``googlenet``, ``mnasnet``, ``mobilenet``, ``vgg``, ``convnext``, ``shufflenet``, ``resnet``) x 11
  targets under setup ``juodelyte2024:architectures:224px``. Test accuracy comes with each AUC
  (from the same run, ``noise_summary.csv``). There is no target-only baseline: no run of the
  study trains from scratch, so these targets are ranked on AUC, not on transferability T.
* ``dsim_known_measure_values`` — the eight metrics' scores for the same pairs, as measures
  ``logme``, ``leep``, ``nleep``, ``ncti``, ``parc``, ``sfda``, ``lp`` and ``fu`` (the names of
  dsim's own scores), as released (higher = better as each metric is defined), the target itself
  dropped as the paper does.
* the reproduction ``juodelyte`` (``dsim reproduce juodelyte``, :mod:`dsim_plugins.juodelyte_analysis`).

The tables ship in ``published_data/juodelyte2024/`` with the licence and a README saying what
each file is and how ``noise_summary.csv`` was derived (``benchmarks/juodelyte_noise_summary.py``).
"""

from __future__ import annotations

import csv
from functools import lru_cache

import dsim

from .juodelyte_tables import (
    METRICS,
    ORIGIN,
    SETUP_ARCHITECTURES,
    SETUP_DATASETS,
    TABLES,
    rank_table,
    read_text,
    wide_table,
)

__all__ = ["METRICS", "ORIGIN", "SETUP_ARCHITECTURES", "SETUP_DATASETS", "TABLES", "rank_table", "wide_table"]


@lru_cache(maxsize=1)
def noise_summary() -> dict[tuple[str, str, str], dict[str, str]]:
    """(table, source, target) -> the row of ``noise_summary.csv`` (strings as written)."""
    return {
        (r["table"], r["source"], r["target"]): r
        for r in csv.DictReader(read_text("noise_summary.csv").splitlines())
    }


def _accuracy(table: str, source: str, target: str, auc: float) -> float | None:
    row = noise_summary().get((table, source, target))
    if not row or not row.get("acc_val_loss") or abs(float(row["auc_val_loss"]) - auc) > 1e-6:
        return None  # only when the summary's run is the one the table reports
    return float(row["acc_val_loss"])


@dsim.hookimpl
def dsim_known_results():
    out = []
    for table, (fname, _suffix, setup, scale) in TABLES.items():
        for source, row in wide_table(fname).items():
            for target, value in row.items():
                if source == target:
                    continue
                auc = value * scale
                out.append(
                    dsim.TransferResult(
                        source=source,
                        target=target,
                        fold=0,
                        auc=auc,
                        origin=ORIGIN,
                        setup=setup,
                        accuracy=_accuracy(table, source, target, auc),
                        repeat=0,
                    )
                )
    return out


@dsim.hookimpl
def dsim_known_measure_values():
    out = []
    for _table, (_fname, suffix, _setup, _scale) in TABLES.items():
        for metric in METRICS:
            for source, row in wide_table(f"{metric}_{suffix}.csv").items():
                for target, value in row.items():
                    if source != target:  # the target's own network: dropped, as the paper does
                        out.append(
                            dsim.MeasureValue(
                                measure=metric,
                                source=source,
                                target=target,
                                value=value,
                                fold=0,
                                origin=ORIGIN,
                                kind="score",
                            )
                        )
    return out


@dsim.hookimpl
def dsim_register_reproductions():
    from .juodelyte_analysis import Juodelyte

    return [Juodelyte()]

"""dsim's Python API. The CLI only calls these functions.

>>> import dsim
>>> ranking = dsim.rank("chest")          # offline, from the published results shipped with dsim
>>> ranking.sources[0]
'imagenet'
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from dsim.data.loading import load_dataset
from dsim.kernel.cache import Cache
from dsim.kernel.catalog import (
    configure_measures,
    create_backbone,
    create_measure,
    get_predictor,
    known_measure_values,
    known_results,
    list_checkpoints,
    list_measures,
)
from dsim.kernel.errors import DsimError, one_line
from dsim.kernel.interfaces import Context
from dsim.kernel.plugins import named
from dsim.kernel.records import DatasetCard, ImageSet
from dsim.kernel.registry import get_registry
from dsim.networks.checks import check_measure
from dsim.ranking.rank import (
    DEFAULT_MAX_SAMPLES,
    RankConfig,
    _applicable,
    _contributions,
    _report_estimate,
    candidate_sources,
    rank,
)

__all__ = [
    "rank",
    "RankConfig",
    "measure",
    "list_measures",
    "create_measure",
    "create_backbone",
    "list_checkpoints",
    "known_results",
    "known_measure_values",
    "get_predictor",
    "candidate_sources",
    "DEFAULT_MAX_SAMPLES",
]


def measure(
    source: str | DatasetCard,
    target: str | DatasetCard,
    measure: str,
    *,
    seed: int = 0,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
    device: str = "auto",
    options: Mapping[str, Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    cache: Cache | None = None,
) -> dict[str, Any]:
    """One measure for one (source, target) pair: value, config, origin and timings."""
    check_measure(source, target, measure, max_samples=max_samples, seed=seed)
    reg = get_registry()
    s = source if isinstance(source, DatasetCard) else reg.resolve(source)
    t = target if isinstance(target, DatasetCard) else reg.resolve(target)
    m = configure_measures({measure: named("dsim_register_measures", "measure", measure)}, options)[measure]
    why = m.unavailable()
    if why:
        raise DsimError(f"measure {m.name!r}: {why}")
    ctx = Context(
        seed=seed,
        device=device,
        cache=cache if cache is not None else Cache(),
        progress=progress or (lambda *a: None),
        max_samples=max_samples,
    )
    for card in (s, t):
        why = _applicable(m, card)
        if why:
            raise DsimError(f"measure {m.name!r} cannot describe {card.name!r}: {why}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if m.needs == "card":
        s_obj, t_obj = s, t
    else:
        s_obj = load_dataset(s, max_samples=max_samples, seed=seed) if m.needs == "images" else s
        t_obj = load_dataset(t, max_samples=max_samples, seed=seed)
    timings["load_s"] = time.perf_counter() - t0
    notes: list[str] = []
    if m.needs == "images":
        _report_estimate(m, ctx, [s], lambda card: s_obj, t_obj, notes)
    t1 = time.perf_counter()
    try:
        value = m.pair(s_obj, t_obj, ctx)
    except DsimError:
        raise
    except Exception as exc:  # a plugin that raises: one line naming the measure and the pair
        raise DsimError(one_line(exc, f"measure {m.name!r} raised on {s.name} -> {t.name}")) from None
    timings["measure_s"] = time.perf_counter() - t1
    return {
        "source": s.name,
        "target": t.name,
        "measure": m.name,
        "kind": m.kind,
        "value": float(value),
        "config": m.config(ctx),
        "timings": timings,
        "contributions": _contributions(m, s_obj, t_obj, ctx, notes) if m.needs == "card" else {},
        "notes": notes,
        "samples": {
            "source": len(s_obj) if isinstance(s_obj, ImageSet) else None,
            "target": len(t_obj) if isinstance(t_obj, ImageSet) else None,
        },
    }

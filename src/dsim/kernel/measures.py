"""Core helpers for measures: data fingerprints and the cached representation of a dataset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dsim.kernel.records import DatasetCard, ImageSet, Representation, stable_hash

if TYPE_CHECKING:  # the measure base class calls these helpers: no runtime import back
    from dsim.kernel.interfaces import Context, Measure

__all__ = ["data_fingerprint", "representation_of", "representation_key", "measure_kinds"]


def data_fingerprint(data: ImageSet | DatasetCard) -> str:
    """Content fingerprint: pixels+labels of an ImageSet, the facts of a card."""
    if isinstance(data, ImageSet):
        return data.fingerprint()
    if isinstance(data, DatasetCard):
        return stable_hash(
            {
                "card": data.name,
                "expert": dict(data.expert),
                "classes": data.num_classes,
                "origin": data.origin,
            }
        )
    raise TypeError(f"cannot fingerprint {type(data).__name__}")


def representation_of(measure: Measure, data: Any, ctx: Context) -> Representation:
    """``measure.represent(data)`` through the cache: computed once per content + config."""
    key = representation_key(measure, data, ctx)
    if ctx.cache is not None:
        hit = ctx.cache.get(measure.name, key)
        if hit is not None:
            return hit
    rep = measure.represent(data, ctx)
    if rep.key != key:
        raise RuntimeError(
            f"measure {measure.name!r} built a representation whose key does not match its config "
            "and fingerprints; build it with Measure.representation()"
        )
    if ctx.cache is not None:
        ctx.cache.put(rep)
    return rep


def representation_key(measure: Measure, data: Any, ctx: Context) -> str:
    fps = {"data": data_fingerprint(data), **measure.fingerprints(ctx)}
    return Representation.make_key(measure.name, measure.config(ctx), fps)


def measure_kinds() -> dict[str, str]:
    from dsim.kernel.plugins import named

    return {n: m.kind for n, m in named("dsim_register_measures", "measure").items()}

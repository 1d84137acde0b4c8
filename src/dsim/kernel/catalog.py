"""What the plugins provide, by name: measures (configured with their parameters), predictors,
strategies, backbones, and the results and measure values they bring as prior knowledge.

Every lookup goes through :mod:`dsim.kernel.plugins` (``pm.hook``), so an unknown name is one
:class:`dsim.UnknownNameError` with the closest matches, and an unknown parameter one
:class:`dsim.UnknownOptionError` naming the nearest valid ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dsim.kernel.errors import (
    DsimError,
    PluginError,
    UnknownNameError,
    UnknownOptionError,
    WeightsMissingError,
    one_line,
)
from dsim.kernel.interfaces import Measure, Predictor, Strategy, timm_like_spec
from dsim.kernel.plugins import collect, named, on_reset, record_failure
from dsim.kernel.records import BackboneSpec, CheckpointCard, MeasureValue, TransferResult
from dsim.kernel.registry import get_registry

__all__ = [
    "list_measures",
    "create_measure",
    "configure_measures",
    "list_predictors",
    "get_predictor",
    "list_strategies",
    "get_strategy",
    "create_backbone",
    "backbone_spec",
    "list_checkpoints",
    "known_results",
    "known_measure_values",
    "measure_kinds",
]


def list_measures() -> dict[str, Measure]:
    """Every registered measure by name, with its default parameters."""
    return named("dsim_register_measures", "measure")


def create_measure(name: str, **params: Any) -> Measure:
    """The measure ``name`` with ``params`` set (``dsim.create_measure("otdd", otdd_max_samples=500)``);
    an unknown parameter is refused with the nearest valid ones."""
    return named("dsim_register_measures", "measure", name).with_params(**params)


def configure_measures(
    measures: Mapping[str, Measure], options: Mapping[str, Any] | None
) -> dict[str, Measure]:
    """``measures`` with ``options`` applied: ``name=value`` sets that parameter on every measure
    that takes it, ``measure.name=value`` on that measure only. An option no measure of the
    selection takes is an :class:`UnknownOptionError` naming it and the nearest valid names."""
    out = dict(measures)
    pending: dict[str, dict[str, Any]] = {}
    for key, value in dict(options or {}).items():
        owner, _, param = key.rpartition(".")
        if owner:
            if owner not in out:
                raise UnknownNameError("measure", owner, out)
            if param not in out[owner].param_names():
                raise UnknownOptionError(param, f"measure {owner!r}", out[owner].param_names())
            pending.setdefault(owner, {})[param] = value
            continue
        takers = [n for n, m in out.items() if key in m.param_names()]
        if not takers:
            everywhere = {p: n for n, m in list_measures().items() for p in m.param_names()}
            if key in everywhere:
                raise DsimError(
                    f"option {key!r} is a parameter of measure {everywhere[key]!r}, which is not among "
                    f"the measures selected ({', '.join(out) or 'none'})"
                )
            valid = sorted({p for m in out.values() for p in m.param_names()} | set(everywhere))
            raise UnknownOptionError(key, "the measures", valid)
        for n in takers:
            pending.setdefault(n, {})[key] = value
    for n, params in pending.items():
        out[n] = out[n].with_params(**params)
    return out


def measure_kinds(measures: Mapping[str, Measure] | None = None) -> dict[str, str]:
    """measure name -> ``"distance"`` or ``"score"``."""
    return {n: m.kind for n, m in (measures if measures is not None else list_measures()).items()}


def value_kinds(values: Iterable[MeasureValue]) -> dict[str, str]:
    """:func:`measure_kinds` of the registered measures, plus the kind known values declare for
    measures dsim cannot compute (a paper's own metric; ``"score"`` when they say nothing)."""
    kinds = measure_kinds()
    for v in values:
        if v.measure not in kinds:
            kinds[v.measure] = v.kind or "score"
    return kinds


def list_predictors() -> dict[str, type[Predictor]]:
    return named("dsim_register_predictors", "predictor")


def get_predictor(name: str, **params: Any) -> Predictor:
    """Create a predictor by name (``dsim plugins`` lists them); unknown parameters are refused."""
    cls = named("dsim_register_predictors", "predictor", name)
    return cls(**cls.check_params(params))


def list_strategies() -> dict[str, Strategy]:
    return named("dsim_register_strategies", "strategy")


def get_strategy(name: str, **params: Any) -> Strategy:
    return named("dsim_register_strategies", "strategy", name).with_params(**params)


def create_backbone(
    model_name: str, *, weights: str = "imagenet", num_classes: int = 0, in_chans: int = 3, seed: int = 0
):
    """A network by name from the first backbone plugin that handles it (timm by default).

    ``weights``: ``"imagenet"`` (local cache; never a silent download), ``"random"`` (seeded random
    init, explicit) or a checkpoint file path. ``num_classes=0`` gives a feature extractor. The
    module carries ``dsim_weights_id``, the content id of its weights (see
    :class:`dsim.BackboneFactory`), which every cache built on it is keyed by.
    """
    factories = _backbone_factories()
    for plugin, f in factories:
        if getattr(f, "catch_all", False) and weights not in ("random", None):
            # the broad factory last: weights that cannot be here fail before its costly handles()
            # (timm's imports torch; a measure's cache key asks for its probe network)
            try:
                reason = f.missing(model_name, str(weights))
            except Exception as exc:
                record_failure(plugin, f"raised in missing({model_name!r}): {type(exc).__name__}: {exc}")
                reason = None
            if reason is not None:
                raise WeightsMissingError(reason)
        try:
            ok = f.handles(model_name)
        except Exception as exc:  # a broken factory must not hide the others: recorded, skipped
            record_failure(plugin, one_line(exc, f"raised in handles({model_name!r})"))
            ok = False
        if ok:
            model = f.create(
                model_name, weights=weights, num_classes=num_classes, in_chans=in_chans, seed=seed
            )
            if not getattr(model, "dsim_weights_id", None):
                raise PluginError(
                    f"backbone factory {f.name!r} (plugin {plugin!r}) built {model_name!r} without "
                    "dsim_weights_id, the content id of its weights that caches are keyed by"
                )
            spec = f.spec(model_name, model)
            if not isinstance(spec, BackboneSpec):
                raise PluginError(
                    f"backbone factory {f.name!r} (plugin {plugin!r}) declared {model_name!r} with "
                    f"a {type(spec).__name__}, not a dsim.BackboneSpec"
                )
            model.dsim_spec = spec
            return model
    known: list[str] = []
    for plugin, f in factories:
        try:
            known += f.list_models("*")
        except Exception as exc:
            record_failure(plugin, one_line(exc, "raised in list_models"))
    raise UnknownNameError("backbone", model_name, known)


def backbone_spec(model: Any) -> BackboneSpec:
    """What a built network declares about itself (native input size, mean/std, feature
    dimension): the :class:`dsim.BackboneSpec` its factory gave ``dsim.create_backbone``, else what
    a timm-like network's ``default_cfg`` says."""
    spec = getattr(model, "dsim_spec", None)
    return spec if isinstance(spec, BackboneSpec) else timm_like_spec(model)


def _backbone_factories() -> list:
    """``(plugin, factory)`` in the order a name is offered to them: plugin priority, catch-all
    factories (:attr:`dsim.BackboneFactory.catch_all`, e.g. timm) last."""
    return sorted(collect("dsim_register_backbones"), key=lambda pf: bool(getattr(pf[1], "catch_all", False)))


def backbone_missing(model_name: str, weights: str) -> str | None:
    """Why the weights ``weights`` of backbone ``model_name`` are not usable here, or None."""
    for plugin, f in _backbone_factories():
        try:
            if getattr(f, "catch_all", False):
                # the last, broad factory: no weights could be here -> say so without its costly
                # handles() (timm's imports torch)
                reason = f.missing(model_name, weights)
                if reason is not None:
                    return reason
            if f.handles(model_name):
                return f.missing(model_name, weights)
        except Exception as exc:
            record_failure(plugin, one_line(exc, f"raised in missing({model_name!r})"))
    return f"no backbone plugin builds {model_name!r} (`dsim plugins` lists the backbones)"


def list_checkpoints() -> dict[str, CheckpointCard]:
    """Every checkpoint card the plugins register, by name."""
    return named("dsim_register_checkpoints", "checkpoint")


def canonical_names() -> Callable[[str], str]:
    """name -> the registry's name for it: a dataset card's or a checkpoint card's name when
    ``name`` is one of its aliases (a published table's ``densenet`` is the card
    ``densenet121.tv_in1k``), else the name itself."""

    reg = get_registry()
    memo: dict[str, str] = {}

    def canon(name: str) -> str:
        if name not in memo:
            if name in reg.cards or name in reg.checkpoints:
                memo[name] = name
            elif name in reg:
                memo[name] = reg.get(name).name
            else:
                ck = reg.checkpoint(name)
                memo[name] = ck.name if ck is not None else name
        return memo[name]

    return canon


def _canonical(items, fields: tuple[str, ...] = ("source", "target")) -> list:
    canon = canonical_names()
    out = []
    for x in items:
        renamed = {f: canon(getattr(x, f)) for f in fields}
        out.append(
            x if all(renamed[f] == getattr(x, f) for f in fields) else dataclasses.replace(x, **renamed)
        )
    return out


#: hook -> (the plugins' ``dsim_known_state`` tokens when it was read, its items)
_KNOWN: dict[str, tuple[tuple, list]] = {}


def _known(hook: str) -> list:
    """The items of a ``known_*`` hook, kept in memory until a plugin's ``dsim_known_state``
    changes (a result written to the store since): then the hook is called again."""
    state = tuple(collect("dsim_known_state", fresh=True))
    kept = _KNOWN.get(hook)
    if kept is None or kept[0] != state:
        kept = _KNOWN[hook] = (state, _canonical([x for _p, x in collect(hook, fresh=kept is not None)]))
    return list(kept[1])


def known_results() -> list[TransferResult]:
    """Every measured result the plugins bring (the published tables, the results store of
    ``dsim validate``, imported tables ...), under the registry's names."""
    return _known("dsim_known_results")


def known_measure_values() -> list[MeasureValue]:
    """Every measure value the plugins know without computing it, under the registry's names."""
    return _known("dsim_known_measure_values")


on_reset(_KNOWN.clear)

"""dsim's Python API. The CLI only calls these functions.

>>> import dsim
>>> ranking = dsim.rank("chest")          # offline, from the published results shipped with dsim
>>> ranking.sources[0]
'imagenet'
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from .cache import Cache
from .data import data_missing, load_dataset
from .errors import DsimError, UnknownNameError
from .interfaces import Candidate, Context, Measure, Predictor
from .plugins import collect, named, notify
from .records import DatasetCard, ImageSet, MeasureValue, Ranking, TransferResult
from .registry import get_registry

__all__ = [
    "rank",
    "measure",
    "list_measures",
    "create_backbone",
    "known_results",
    "known_measure_values",
    "get_predictor",
    "candidate_sources",
]

#: images per dataset that image-based measures look at unless told otherwise
DEFAULT_MAX_SAMPLES = 1000


def list_measures() -> dict[str, Measure]:
    return named("dsim_register_measures", "measure")


def known_results() -> list[TransferResult]:
    """Every measured result the plugins bring (the published cats-scans table, the results
    store of ``dsim validate`` ...)."""
    return [r for _p, r in collect("dsim_known_results")]


def known_measure_values() -> list[MeasureValue]:
    return [v for _p, v in collect("dsim_known_measure_values")]


def get_predictor(name: str = "rank-aggregation", **params: Any) -> Predictor:
    """Create a predictor by name (``dsim plugins`` lists them)."""
    cls = named("dsim_register_predictors", "predictor", name)
    return cls(**params)


def create_backbone(
    model_name: str, *, weights: str = "imagenet", num_classes: int = 0, in_chans: int = 3, seed: int = 0
):
    """A network by name from the first backbone plugin that handles it (timm by default).

    ``weights``: ``"imagenet"`` (local cache; never a silent download), ``"random"`` (seeded random
    init, explicit) or a checkpoint file path. ``num_classes=0`` gives a feature extractor.
    """
    from .plugins import record_failure

    factories = collect("dsim_register_backbones")
    for plugin, f in factories:
        try:
            ok = f.handles(model_name)
        except Exception as exc:  # a broken factory must not hide the others: recorded, skipped
            record_failure(plugin, f"raised in handles({model_name!r}): {type(exc).__name__}: {exc}")
            ok = False
        if ok:
            return f.create(
                model_name, weights=weights, num_classes=num_classes, in_chans=in_chans, seed=seed
            )
    known: list[str] = []
    for plugin, f in factories:
        try:
            known += f.list_models("*")
        except Exception as exc:
            record_failure(plugin, f"raised in list_models: {type(exc).__name__}: {exc}")
    raise UnknownNameError("backbone", model_name, known)


def candidate_sources(
    target: DatasetCard,
    history: Sequence[TransferResult],
    values: Sequence[MeasureValue],
    target_has_data: bool,
) -> tuple[list[DatasetCard], list[dict[str, str]]]:
    """The default candidate sources of a target, and what was left out and why.

    A card is a candidate when it has measured results or known measure values for the target,
    when both its data and the target's are available locally, or when it is a source of some
    published study and both cards carry expert features.
    """
    reg = get_registry()
    family = reg.family(target)
    with_results = {r.source for r in history if r.target in family}
    with_values = {v.source for v in values if v.target in family}
    study_sources = {r.source for r in history}
    target_expert = bool(target.expert) or any(reg.get(n).expert for n in family if n in reg)
    chosen, skipped = [], []
    for card in reg:
        if card.name in family:
            continue
        why = None
        if card.name in with_results or card.name in with_values:
            pass
        elif target_has_data and data_missing(card) is None:
            pass
        elif card.name in study_sources and card.expert and target_expert:
            pass
        else:
            why = "no data here, no results or known values for this target"
        if why is None:
            chosen.append(card)
    # sources known only from results (e.g. a user's dataset validated earlier): a bare card
    for name in sorted((with_results | with_values) - {c.name for c in reg} - family):
        chosen.append(DatasetCard(name=name, title="known from results only", provider="results"))
    return chosen, skipped


@dataclass
class _Values:
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # source -> measure -> value
    origins: dict[str, dict[str, str]] = field(default_factory=dict)
    contributions: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def put(self, source: str, measure: str, value: float, origin: str, contrib=None) -> None:
        self.values.setdefault(source, {})[measure] = float(value)
        self.origins.setdefault(source, {})[measure] = origin
        if contrib:
            self.contributions.setdefault(source, {})[measure] = dict(contrib)


def _resolve_names(names: Iterable[str] | str | None) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = names.split(",")
    out = [n.strip() for n in names if n and n.strip()]
    return out or None


def rank(
    target: str | DatasetCard,
    sources: Sequence[str] | str | None = None,
    measures: Sequence[str] | str | None = None,
    *,
    predictor: str | Predictor | None = None,
    top: int | None = None,
    seed: int = 0,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
    device: str = "auto",
    options: Mapping[str, Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    cache: Cache | None = None,
) -> Ranking:
    """Rank candidate sources for ``target`` (a registered name or a path to the user's data).

    ``sources`` and ``measures`` restrict the candidates and measures (default: every candidate
    with data, results or known values, and every measure that can run). Image measures look at a
    seeded stratified subsample of ``max_samples`` images per dataset. ``options`` reach the
    measure plugins (e.g. ``probe="resnet18"``, ``probe_weights="random"``). Numbers from real
    fine-tuning are marked *measured*, the rest *predicted*.
    """
    reg = get_registry()
    tcard = target if isinstance(target, DatasetCard) else reg.resolve(target)
    ctx = Context(
        seed=seed,
        device=device,
        cache=cache if cache is not None else Cache(),
        progress=progress or (lambda *a: None),
        options={"max_samples": max_samples, **dict(options or {})},
    )
    history = known_results()
    known_vals = known_measure_values()
    all_measures = list_measures()
    wanted = _resolve_names(measures)
    if wanted is not None:
        for m in wanted:
            if m not in all_measures:
                raise UnknownNameError("measure", m, all_measures)
    skipped: list[dict[str, str]] = []

    target_missing = data_missing(tcard)
    target_data: ImageSet | None = None
    loaded: dict[str, ImageSet] = {}

    def images_of(card: DatasetCard) -> ImageSet:
        if card.name not in loaded:
            loaded[card.name] = load_dataset(card, max_samples=max_samples, seed=seed)
        return loaded[card.name]

    if target_missing is None:  # read the target first: bad input fails before any work
        target_data = images_of(tcard)
        if target_data.num_classes < 2 or len(set(target_data.labels.tolist())) < 2:
            raise DsimError(
                f"target {tcard.name!r} ({target_data.source}): needs at least two classes, found one"
            )
    if sources is not None:
        cands = [reg.resolve(s) for s in _resolve_names(sources) or []]
        family = reg.family(tcard)
        for c in [c for c in cands if c.name in family]:
            skipped.append({"source": c.name, "reason": "same data as the target"})
        cands = [c for c in cands if c.name not in family]
    else:
        cands, more = candidate_sources(tcard, history, known_vals, target_missing is None)
        skipped += more
    if not cands:
        raise DsimError(
            f"no candidate sources for target {tcard.name!r}: none has data here, published results "
            "or known measure values (name some with --sources, or set DSIM_DATA_DIR to where "
            "source datasets live)"
        )

    use = [all_measures[m] for m in (wanted or all_measures)]
    vals = _Values()
    # known values (published) first, averaged over folds; only for this very target (a derived
    # dataset such as pneumoniamnist does not inherit the values measured on its parent)
    acc: dict[tuple[str, str], list[float]] = {}
    for v in known_vals:
        if v.target == tcard.name and v.measure in {m.name for m in use}:
            acc.setdefault((v.source, v.measure), []).append(v.value)
    for (s, m), xs in acc.items():
        vals.put(s, m, sum(xs) / len(xs), "published")

    for m in use:
        todo = [c for c in cands if m.name not in vals.values.get(c.name, {})]
        if not todo:
            continue
        if m.needs == "source-model" and not ctx.option("source_checkpoints"):
            if wanted:
                skipped.append(
                    {
                        "measure": m.name,
                        "reason": "needs source-pretrained checkpoints (run `dsim pretrain` or pass source_checkpoints)",
                    }
                )
            continue
        if m.needs in ("images", "source-model"):
            if target_missing is not None:
                skipped.append(
                    {
                        "measure": m.name,
                        "reason": f"target {tcard.name!r} images not available: {target_missing}",
                    }
                )
                continue
        why_t = _applicable(m, tcard)
        if why_t:
            skipped.append({"measure": m.name, "reason": f"target {tcard.name!r}: {why_t}"})
            continue
        measure_failed = None
        if m.needs == "images":
            _report_estimate(
                m,
                ctx,
                [c for c in todo if _applicable(m, c) is None and data_missing(c) is None],
                images_of,
                target_data,
            )
        for i, c in enumerate(todo):
            ctx.progress(f"{m.name}: {c.name}", i, len(todo))
            why = _applicable(m, c)
            if why is None and m.needs == "images":
                why = data_missing(c)
            if why:
                skipped.append({"source": c.name, "measure": m.name, "reason": why})
                continue
            t0 = time.perf_counter()
            try:
                if m.needs == "card":
                    s_obj, t_obj = c, tcard
                elif m.needs == "source-model":
                    s_obj, t_obj = c, target_data
                else:
                    s_obj, t_obj = images_of(c), target_data
                value = m.pair(s_obj, t_obj, ctx)
                contrib = _contributions(m, s_obj, t_obj, ctx) if m.needs == "card" else {}
            except DsimError as exc:
                reason = str(exc)
                # an error that is about the measure itself (e.g. missing probe weights) stops it
                if _is_measure_wide(exc):
                    measure_failed = reason
                    break
                skipped.append({"source": c.name, "measure": m.name, "reason": reason})
                continue
            except Exception as exc:  # a plugin that raises: name it, keep the rest
                skipped.append(
                    {
                        "source": c.name,
                        "measure": m.name,
                        "reason": f"measure plugin raised {type(exc).__name__}: {exc}",
                    }
                )
                continue
            vals.put(c.name, m.name, value, "computed", contrib)
            _ = time.perf_counter() - t0
        ctx.progress(f"{m.name}", len(todo), len(todo))
        if measure_failed:
            skipped.append({"measure": m.name, "reason": measure_failed})

    candidates = [
        Candidate(
            source=c,
            values=vals.values.get(c.name, {}),
            origins=vals.origins.get(c.name, {}),
            contributions=vals.contributions.get(c.name, {}),
        )
        for c in cands
    ]
    pred, pred_note = _predictor(predictor)
    kinds = {m.name: m.kind for m in all_measures.values()}
    ranking = pred.rank(tcard, candidates, history, kinds)
    ranked = set(ranking.sources)
    for c in cands:
        if c.name not in ranked and not any(
            s.get("source") == c.name and "measure" not in s for s in skipped
        ):
            skipped.append(
                {"source": c.name, "reason": "no measure could describe it and no measured result"}
            )
    notes = list(ranking.notes)
    if pred_note:
        notes.append(pred_note)
    import dataclasses

    ranking = dataclasses.replace(ranking, skipped=tuple(skipped), notes=tuple(notes))
    if top:
        ranking = ranking.top(top)
    notify("dsim_ranking_done", ranking=ranking)
    return ranking


def _is_measure_wide(exc: DsimError) -> bool:
    from .errors import WeightsMissingError

    return isinstance(exc, WeightsMissingError) or getattr(exc, "measure_wide", False)


def _applicable(m: Measure, card: DatasetCard) -> str | None:
    try:
        return m.applicable(card)
    except Exception as exc:
        return f"measure plugin raised {type(exc).__name__}: {exc}"


def _contributions(m: Measure, s_obj, t_obj, ctx: Context) -> dict[str, float]:
    from .measures import representation_of

    try:
        return dict(m.contributions(representation_of(m, s_obj, ctx), representation_of(m, t_obj, ctx), ctx))
    except Exception:
        return {}


def _predictor(predictor: str | Predictor | None) -> tuple[Predictor, str | None]:
    """The predictor to rank with, and a note saying which one and why. With none named, the
    fitted predictor saved by ``dsim predictor fit`` is used when there is one; otherwise (or when
    it cannot be loaded) rank aggregation, and the note says so."""
    if isinstance(predictor, Predictor):
        return predictor, None
    if predictor:
        return get_predictor(predictor), None
    from .predictors import fitted_info, load_fitted

    try:
        fitted = load_fitted()
    except DsimError as exc:
        return get_predictor(
            "rank-aggregation"
        ), f"predictor: rank-aggregation (fitted predictor not usable: {exc})"
    if fitted is None:
        return get_predictor("rank-aggregation"), (
            "predictor: rank-aggregation (no fitted predictor; `dsim predictor fit` learns one from the results store)"
        )
    doc = getattr(fitted, "fitted_from", None) or fitted_info() or {}
    info = doc.get("trained_on", {})
    note = (
        f"predictor: fitted {fitted.name} ({doc.get('path', '?')}), trained on {info.get('n_results', '?')} "
        f"results for targets {', '.join(info.get('targets', [])) or '?'}"
    )
    from .predictors import results_fingerprint

    if info.get("results") and info["results"] != results_fingerprint(known_results()):
        note += "; the results store has changed since (run `dsim predictor fit` to refresh)"
    return fitted, note


def _report_estimate(m, ctx: Context, cards, images_of, target_data) -> None:
    """Ask an image measure how long its sources will take (``Measure.estimate_seconds``) and hand
    the answer to ``ctx.progress.estimate(measure, seconds, n_sources)`` when the progress
    callback has that method (the CLI's does). Sources (and a target) whose representation is
    already cached are left out. Never fails the work."""
    report = getattr(ctx.progress, "estimate", None)
    est = getattr(m, "estimate_seconds", None)
    if report is None or est is None or not cards or target_data is None:
        return
    from .measures import representation_key

    def cached(data) -> bool:  # already represented: costs nothing
        if ctx.cache is None:
            return False
        try:
            return ctx.cache.get(m.name, representation_key(m, data, ctx)) is not None
        except Exception:
            return False

    try:
        sizes = []
        for c in cards:
            try:
                data = images_of(c)
            except Exception:  # unreadable: reported when its turn comes
                continue
            if not cached(data):
                sizes.append(len(data))
        if not sizes:
            return
        seconds = est(sizes, 0 if cached(target_data) else len(target_data), ctx)
    except Exception:
        return
    if seconds is not None:
        report(m.name, float(seconds), len(sizes))


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
    reg = get_registry()
    s = source if isinstance(source, DatasetCard) else reg.resolve(source)
    t = target if isinstance(target, DatasetCard) else reg.resolve(target)
    m = named("dsim_register_measures", "measure", measure)
    ctx = Context(
        seed=seed,
        device=device,
        cache=cache if cache is not None else Cache(),
        progress=progress or (lambda *a: None),
        options={"max_samples": max_samples, **dict(options or {})},
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
    if m.needs == "images":
        _report_estimate(m, ctx, [s], lambda card: s_obj, t_obj)
    t1 = time.perf_counter()
    try:
        value = m.pair(s_obj, t_obj, ctx)
    except DsimError:
        raise
    except Exception as exc:  # a plugin that raises: one line naming the measure and the pair
        raise DsimError(
            f"measure {m.name!r} raised on {s.name} -> {t.name}: {type(exc).__name__}: "
            f"{' '.join(str(exc).split())}"
        ) from None
    timings["measure_s"] = time.perf_counter() - t1
    return {
        "source": s.name,
        "target": t.name,
        "measure": m.name,
        "kind": m.kind,
        "value": float(value),
        "config": m.config(ctx),
        "timings": timings,
        "contributions": _contributions(m, s_obj, t_obj, ctx) if m.needs == "card" else {},
        "samples": {
            "source": len(s_obj) if isinstance(s_obj, ImageSet) else None,
            "target": len(t_obj) if isinstance(t_obj, ImageSet) else None,
        },
    }

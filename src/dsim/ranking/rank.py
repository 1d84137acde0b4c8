"""``dsim.rank``: the candidate sources of a target, every measure value dsim can get for them
(published, cached or computed now), and the chosen predictor's ranking.

The flow is a pure function of its arguments plus the plugins: which predictor ranks is an
argument (:func:`dsim.ranking.predictors.choose_predictor`), never a file found on disk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dsim.data.evidence import evidence_notes, select_evidence
from dsim.data.loading import data_missing, load_dataset
from dsim.data.overlap import exclude_overlaps
from dsim.data.targets import ResolvedTarget, derived_expert, resolve_target
from dsim.kernel.cache import Cache
from dsim.kernel.catalog import (
    configure_measures,
    known_measure_values,
    known_results,
    list_measures,
    value_kinds,
)
from dsim.kernel.defaults import DEFAULT_MAX_SAMPLES
from dsim.kernel.errors import CheckpointError, DsimError, UnknownNameError, one_line
from dsim.kernel.interfaces import (
    Candidate,
    Context,
    Measure,
    Predictor,
    representation_key,
    representation_of,
)
from dsim.kernel.plugins import notify
from dsim.kernel.records import CheckpointCard, DatasetCard, ImageSet, MeasureValue, Ranking, TransferResult
from dsim.kernel.registry import get_registry
from dsim.networks.checkpoints import (
    as_source_card,
    checkpoint_from_spec,
    checkpoint_missing,
    known_checkpoints,
    load_zoo,
)
from dsim.networks.checks import check_rank, checkpoint_problem
from dsim.ranking.memo import remembered_rank
from dsim.ranking.predictors import choose_predictor

__all__ = ["RankConfig", "rank", "candidate_sources", "DEFAULT_MAX_SAMPLES"]


def _names(names: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = names.split(",")
    out = tuple(n.strip() for n in names if n and n.strip())
    return out or None


@dataclass(frozen=True)
class RankConfig:
    """Every knob of a ranking, with its default; ``dsim.rank`` and ``dsim rank`` share it.

    ``sources``/``measures`` restrict the candidates and measures (None: every candidate with
    data, results or known values, and every measure that can run); ``predictor`` is a predictor
    name, ``"fitted"`` (the one ``dsim predictor fit`` saved), a saved predictor's path, or None
    (the default); ``top`` keeps the K best; image measures look at a seeded stratified subsample of
    ``max_samples`` images per dataset; ``options`` set measure parameters (``name=value`` on
    every measure that takes it, ``measure.name=value`` on one); ``strict``: an unreadable image
    file fails the ranking instead of being left out (and named in the notes). A ``sources`` entry
    may name a checkpoint: a checkpoint card (``dsim zoo``), ``timm:<model>`` or a ``.pth/.pt``
    file whose architecture ``arch`` names; ``zoo`` adds the checkpoint cards of YAML files (and,
    without ``sources``, ranks those); ``evidence`` chooses the measured results used (terms of
    :func:`dsim.data.evidence.select_evidence`: a setup, an origin, ``published`` or ``store``; a
    leading ``-`` leaves it out). ``with_checkpoints``: a ranking without ``sources`` or
    ``zoo`` also ranks the registered checkpoints whose weights files are here (each costs a
    forward pass of its network over the target; left out by default, and named in a note).
    ``holdout_target``: rank as if this target's own measured results were unknown (every
    result about it, or about the same images at another size, is held out of the evidence and
    of the predictor's fit): the prediction ``dsim validate`` compares its measurements with,
    which must not read them back."""

    sources: tuple[str, ...] | None = None
    measures: tuple[str, ...] | None = None
    predictor: str | None = None
    top: int | None = None
    seed: int = 0
    max_samples: int | None = DEFAULT_MAX_SAMPLES
    device: str = "auto"
    options: Mapping[str, Any] = field(default_factory=dict)
    strict: bool = False
    arch: str | None = None
    zoo: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    with_checkpoints: bool = False
    holdout_target: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "zoo", tuple([self.zoo] if isinstance(self.zoo, str) else self.zoo or ()))
        ev = [self.evidence] if isinstance(self.evidence, str) else list(self.evidence or ())
        object.__setattr__(self, "evidence", tuple(str(e) for e in ev))
        object.__setattr__(self, "sources", _names(self.sources))
        object.__setattr__(self, "measures", _names(self.measures))
        if self.top is not None and (not isinstance(self.top, int) or self.top < 1):
            raise DsimError(f"top must be a whole number of at least 1, got {self.top!r} (--top)")
        if self.max_samples is not None and (not isinstance(self.max_samples, int) or self.max_samples < 2):
            raise DsimError(
                f"max_samples must be a whole number of at least 2, got {self.max_samples!r} (--max-samples)"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise DsimError(f"seed must be a whole number of at least 0, got {self.seed!r} (--seed)")


def candidate_sources(
    target: DatasetCard,
    history: Sequence[TransferResult],
    values: Sequence[MeasureValue],
    target_has_data: bool,
) -> tuple[list[DatasetCard], list[dict[str, str]]]:
    """The default candidate sources of a target, and every registry card left out with why.

    A card is a candidate when it has measured results or known measure values for the target
    (or a dataset of its family), when both its data and the target's are available locally, or
    when it is a source of some published study and both cards carry expert features.
    """
    reg = get_registry()
    family = reg.family(target)
    with_results = {r.source for r in history if r.target in family}
    with_values = {v.source for v in values if v.target in family}
    study_sources = {r.source for r in history}
    target_expert = bool(target.expert) or any(reg.get(n).expert for n in family if n in reg)
    chosen, skipped = [], []
    for card in reg:
        if card.name == target.name:
            continue
        if card.name in family:
            skipped.append({"source": card.name, "reason": "same data as the target"})
        elif card.name in with_results or card.name in with_values:
            chosen.append(card)
        elif target_has_data and data_missing(card) is None:
            chosen.append(card)
        elif card.name in study_sources and (card.expert and target_expert or not target.expert):
            chosen.append(card)  # measured elsewhere: its track record and facts rank it
        elif not target_has_data and data_missing(card) is None:
            skipped.append({"source": card.name, "reason": "the target has no images here to compare with"})
        else:
            skipped.append(
                {"source": card.name, "reason": "no images here, no results or known values for this target"}
            )
    # sources known only from results (e.g. a user's dataset validated earlier): a bare card;
    # checkpoints measured elsewhere are candidates when named (--sources, --zoo) or when here
    for name in sorted((with_results | with_values) - {c.name for c in reg} - family - set(reg.checkpoints)):
        chosen.append(DatasetCard(name=name, title="known from results only", provider="results"))
    return chosen, skipped


@dataclass
class _Values:
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # source -> measure -> value
    origins: dict[str, dict[str, str]] = field(default_factory=dict)
    contributions: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # candidate -> why it cannot be evaluated

    def put(self, source: str, measure: str, value: float, origin: str, contrib=None) -> None:
        self.values.setdefault(source, {})[measure] = float(value)
        self.origins.setdefault(source, {})[measure] = origin
        if contrib:
            self.contributions.setdefault(source, {})[measure] = dict(contrib)

    def has(self, source: str, measure: str) -> bool:
        return measure in self.values.get(source, {})


class _Images:
    """The images of each dataset of one ranking, read once: all of them (:meth:`full`, what
    the overlap check compares) and the seeded subsample the measures look at."""

    def __init__(self, max_samples: int | None, seed: int, strict: bool = False):
        self.max_samples, self.seed, self.strict = max_samples, seed, strict
        self.loaded: dict[str, ImageSet] = {}
        self._full: dict[str, ImageSet] = {}

    def full(self, card: DatasetCard) -> ImageSet:
        if card.name not in self._full:
            self._full[card.name] = load_dataset(card, strict=self.strict)
        return self._full[card.name]

    def __call__(self, card: DatasetCard) -> ImageSet:
        if card.name not in self.loaded:
            self.loaded[card.name] = self.full(card).subsample(self.max_samples, seed=self.seed)
        return self.loaded[card.name]

    def notes(self) -> list[str]:
        return [n for d in self.loaded.values() if (n := d.skipped_note())]


def rank(
    target: Any,
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
    strict: bool = False,
    arch: str | None = None,
    zoo: Sequence[str] | str = (),
    labels: Any = None,
    facts: Mapping[str, Any] | Sequence[str] | None = None,
    card: str | None = None,
    evidence: Sequence[str] | str = (),
    with_checkpoints: bool = False,
    holdout_target: bool = False,
) -> Ranking:
    """Rank candidate sources for ``target``: a registered name, a path to the user's data
    (folder, .csv, .npz), a :class:`dsim.ImageSet`, arrays of images with their ``labels``
    (``dsim.rank(images, labels)``), a torch Dataset of ``(image, label)``, or a
    :class:`dsim.ResolvedTarget` (:func:`dsim.resolve_target`).

    ``facts`` (``{"origin": "medical", "subject": "brain", ...}`` or ``["key=value", ...]``) and
    ``card`` (a YAML card file) state what the target is; the other arguments are those of
    :class:`RankConfig` (a predictor object may be passed as well). Numbers from real
    fine-tuning are marked *measured*, the rest *predicted*; what was left out is listed, with
    why, in ``Ranking.skipped``; a candidate that cannot be evaluated (an
    unreadable checkpoint, an unknown architecture, missing weights) in ``Ranking.failed``, never
    ranked; when every candidate failed, a :class:`dsim.DsimError` naming each.
    """
    if labels is None and _looks_like_labels(target, sources):
        labels, sources = sources, None  # dsim.rank(images, labels)
    check_rank(
        target,
        sources=sources,
        measures=measures,
        top=top,
        max_samples=max_samples,
        seed=seed,
        arch=arch,
        zoo=zoo,
        predictor=predictor,
    )
    rt = resolve_target(target, labels, facts=facts, card=card)
    cfg = RankConfig(
        sources=sources,
        measures=measures,
        predictor=None if isinstance(predictor, Predictor) else predictor,
        top=top,
        seed=seed,
        max_samples=max_samples,
        device=device,
        options=dict(options or {}),
        strict=strict,
        arch=arch,
        zoo=zoo,
        evidence=evidence,
        with_checkpoints=with_checkpoints,
        holdout_target=holdout_target,
    )
    ctx = Context(
        seed=cfg.seed,
        device=cfg.device,
        cache=cache if cache is not None else Cache(),
        progress=progress or (lambda *a: None),
        max_samples=cfg.max_samples,
    )
    return _rank_resolved(rt, cfg, ctx, predictor)


@dataclass
class _Run:
    """What one :func:`rank` call gathers on its way: its stages read and fill it in order."""

    rt: ResolvedTarget
    cfg: RankConfig
    ctx: Context
    tcard: DatasetCard
    history: list[TransferResult]
    chosen_note: str | None
    held_note: str | None
    known_vals: Any
    use: dict[str, Measure]
    images: _Images
    skipped: list[dict[str, str]] = field(default_factory=list)
    target_missing: Any = None
    target_data: ImageSet | None = None
    failed: dict[str, str] = field(default_factory=dict)
    ckpt_notes: list[str] = field(default_factory=list)
    overlap_notes: list[str] = field(default_factory=list)
    cands: list[DatasetCard] = field(default_factory=list)
    ckpt_of: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def begin(cls, rt: ResolvedTarget, cfg: RankConfig, ctx: Context) -> _Run:
        """The known results (``cfg.evidence``, less the target's own when held out), the known
        measure values and the measures to use: what every later stage reads."""
        history, chosen_note = select_evidence(known_results(), cfg.evidence)
        history, held_note = _held_out(history, rt.card, cfg.holdout_target)
        known, use = known_measure_values(), _measures(cfg)
        images = _Images(cfg.max_samples, cfg.seed, cfg.strict)
        return cls(rt, cfg, ctx, rt.card, history, chosen_note, held_note, known, use, images)


def _rank_resolved(rt: ResolvedTarget, cfg: RankConfig, ctx: Context, predictor) -> Ranking:
    """:func:`rank`'s stages, in order: the target, the candidates, the predictor, the measures,
    the ranking with its notes."""
    run = _Run.begin(rt, cfg, ctx)
    _read_target(run)
    _choose_candidates(run)
    pred, pred_note = _choose_predictor(run, predictor)
    vals = _compute_measures(run, pred)
    candidates = [
        Candidate(
            source=c,
            values=vals.values.get(c.name, {}),
            origins=vals.origins.get(c.name, {}),
            contributions=vals.contributions.get(c.name, {}),
            checkpoint=run.ckpt_of.get(c.name),
        )
        for c in run.cands
    ]
    kinds = value_kinds(run.known_vals)
    memo = None if isinstance(predictor, Predictor) else ctx.cache  # an object's state is its own
    ranking = remembered_rank(pred, run.tcard, candidates, run.history, kinds, memo)
    ranking = _assemble(run, ranking, vals, pred_note)
    if cfg.top:
        ranking = ranking.top(cfg.top)
    notify("dsim_ranking_done", ranking=ranking)
    return ranking


def _read_target(run: _Run) -> None:
    """Read the target first, so that bad input fails before any work; check its labels."""
    run.target_missing = run.rt.missing()
    if run.target_missing is not None:
        return
    cfg = run.cfg
    target_data = run.images.loaded[run.tcard.name] = run.rt.load(cfg.max_samples, cfg.seed, cfg.strict)
    run.target_data = target_data
    run.tcard = tcard = derived_expert(_with_data_facts(run.tcard, target_data), target_data)
    if target_data.multilabel:
        counts = target_data.class_counts()
        if not ((counts > 0) & (counts < len(target_data))).any():
            raise DsimError(
                f"target {tcard.name!r} ({target_data.source}): no label has both positive and "
                "negative images"
            )
    elif target_data.num_classes < 2 or len(set(target_data.labels.tolist())) < 2:
        raise DsimError(
            f"target {tcard.name!r} ({target_data.source}): needs at least two classes, found one"
        )


def _choose_candidates(run: _Run) -> None:
    """The candidates (datasets and checkpoints), less those that share the target's images."""
    has_data = run.target_missing is None
    run.cands, run.ckpt_of = _candidates(
        run.cfg, run.tcard, run.history, run.known_vals, has_data, run.skipped, run.ckpt_notes, run.failed
    )
    if has_data:  # the target's own images are never a candidate for it
        run.cands = exclude_overlaps(
            run.rt, run.cands, run.ckpt_of, run.skipped, run.overlap_notes, run.ctx, load=run.images.full
        )


def _choose_predictor(run: _Run, predictor) -> tuple[Predictor, str | None]:
    """The predictor, and the measures it gives no weight (not computed unless asked for)."""
    pred, pred_note = choose_predictor(
        predictor if isinstance(predictor, Predictor) else run.cfg.predictor,
        results=run.history if run.chosen_note or run.held_note else None,
    )
    if run.held_note and run.tcard.name in _trained_on(pred):
        run.held_note += (
            f"; but the chosen predictor was fitted on results about {run.tcard.name} too, so this "
            "prediction is not blind to them (leave out --predictor for one fitted without them)"
        )
    if run.cfg.measures is None:  # by default, measures the predictor gives no weight are not computed
        for m, reason in pred.unused_measures(run.use).items():
            run.use.pop(m, None)
            run.skipped.append({"measure": m, "reason": reason})
    return pred, pred_note


def _compute_measures(run: _Run, pred: Predictor) -> _Values:
    """Every measure's value per candidate (known ones reused); the failed candidates dropped."""
    vals = _known_values(run.tcard, run.known_vals, run.use, run.cfg.measures)
    vals.failed = run.failed
    for m in run.use.values():
        _compute(
            m,
            run.cands,
            run.ckpt_of,
            run.tcard,
            run.target_data,
            run.target_missing,
            vals,
            run.images,
            run.ctx,
            run.skipped,
            run.cfg.measures,
        )
    run.cands = _without_failed(run.cands, run.ckpt_of, run.failed)
    return vals


def _assemble(run: _Run, ranking: Ranking, vals: _Values, pred_note: str | None) -> Ranking:
    """``ranking`` with what was left out (and why), the failed candidates and every note."""
    skipped, cands = run.skipped, run.cands
    ranked = set(ranking.sources)
    for c in cands:
        if c.name not in ranked and not any(
            s.get("source") == c.name and "measure" not in s for s in skipped
        ):
            skipped.append(
                {"source": c.name, "reason": "no measure could describe it and no measured result"}
            )
    notes = (
        list(ranking.notes)
        + ([pred_note] if pred_note else [])
        + run.overlap_notes
        + vals.notes
        + run.images.notes()
        + _facts_note(run.rt, run.tcard)
        + run.ckpt_notes
        + tie_note(ranking, cands, skipped, run.use, target_has_data=run.target_data is not None)
    )
    notes += ([run.chosen_note] if run.chosen_note else []) + ([run.held_note] if run.held_note else [])
    notes += evidence_notes(run.history, run.tcard.name)
    return dataclasses.replace(
        ranking,
        skipped=tuple(skipped),
        notes=tuple(notes),
        failed=tuple(_failed_rows(run.failed, run.ckpt_of)),
    )


def _held_out(
    history: Sequence[TransferResult], tcard: DatasetCard, hold: bool
) -> tuple[list[TransferResult], str | None]:
    """``history`` without the results about ``tcard`` (or its family: the same images at another
    size) when ``hold``, and a note saying how many were held out (None when none were)."""
    if not hold:
        return list(history), None
    family = get_registry().family(tcard)
    kept = [r for r in history if r.target not in family]
    n = len(history) - len(kept)
    if not n:
        return kept, None
    return kept, (
        f"predicted without this target's own {n} result{'s' * (n != 1)} (held out, as if "
        f"{tcard.name} had never been measured: what a validation compares its measurements with)"
    )


def _trained_on(pred: Predictor) -> set[str]:
    """The targets a saved predictor (``dsim predictor fit``, a ``.json``) was fitted on."""
    doc = getattr(pred, "fitted_from", None) or {}
    return set(doc.get("trained_on", {}).get("targets", ()))


def tie_note(
    ranking: Ranking,
    cands: Sequence[DatasetCard],
    skipped: Sequence[Mapping[str, str]],
    measures: Mapping[str, Measure],
    *,
    target_has_data: bool,
) -> list[str]:
    """One note on the largest group of predicted rows with the very same score (the best placed
    of equal groups): nothing the predictor used tells them apart, so their order (by name) says
    nothing; with why (no track record, no evidence with held-out gain) where the rows say so, and
    how to compare the target's images with theirs (``--sources`` those tied sources whose images
    are here, ``--measures`` an image measure: where no candidate has a track record the
    evidence ranks alone)."""
    groups: dict[float, list] = {}
    for r in ranking.rows:
        if r.status == "predicted":
            groups.setdefault(round(float(r.score), 9), []).append(r)
    tied = [g for g in groups.values() if len(g) >= 2]
    if not tied:
        return []
    rows = max(tied, key=lambda g: (len(g), g[0].score))
    names = [r.source for r in rows]
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    places = f"#{rows[0].rank}" + (f"-{rows[-1].rank}" if rows[-1].rank != rows[0].rank else "")
    why = []
    if all(dict(r.contributions.get("prior:track_record", {})).get("n", 1) == 0 for r in rows):
        why.append("no track record")
    if all(not any(k.startswith("evidence:") for k in r.contributions) for r in rows):
        why.append("no evidence with held-out gain" if why else "no evidence for this target")
    because = f"they have {' and '.join(why)}, so " if why else ""
    note = (
        f"{len(rows)} sources tie at {rows[0].score:.2f} ({places}: {shown}): {because}nothing the "
        "predictor uses tells them apart and tied rows are listed by name"
    )
    by_name = {c.name: c for c in cands}
    here = [n for n in names if n in by_name and data_missing(by_name[n]) is None]
    if target_has_data and len(here) >= 2:
        every = list_measures()
        not_computed = {
            s["measure"]
            for s in skipped
            if "source" not in s and "measure" in s and str(s.get("reason", "")).startswith("not computed")
        }
        image = [
            m for m in sorted(not_computed | set(measures)) if getattr(every.get(m), "needs", "") == "images"
        ]
        pick = "otdd" if "otdd" in image else (image[0] if image else None)
        if pick:
            note += (
                f"; to compare your images with theirs: --sources {','.join(here)} --measures {pick} "
                "(among sources without a track record the image evidence ranks alone)"
            )
    return [note]


def _looks_like_labels(target: Any, sources: Any) -> bool:
    """``dsim.rank(images, labels)``: an array target with an array (not names) second."""
    if sources is None or isinstance(sources, str) or not hasattr(target, "shape"):
        return False
    if hasattr(sources, "shape"):
        return True
    return isinstance(sources, (list, tuple)) and bool(sources) and not isinstance(sources[0], str)


def _facts_note(rt, tcard: DatasetCard) -> list[str]:
    if not rt.facts:
        return []
    shown = ", ".join(f"{k}={v}" for k, v in sorted({**dict(tcard.expert), **dict(rt.facts)}.items()))
    return [f"target {tcard.name!r} facts: {shown}"]


def _without_failed(cands, ckpt_of, failed: Mapping[str, str]) -> list[DatasetCard]:
    """The candidates that can be evaluated; when none can, one error naming each failure."""
    left = [c for c in cands if c.name not in failed]
    if failed and not left:
        raise DsimError(
            f"no candidate could be evaluated ({len(failed)} failed): "
            + "; ".join(f"{n}: {why}" for n, why in failed.items())
        )
    return left


def _failed_rows(failed: Mapping[str, str], ckpt_of) -> list[dict[str, str]]:
    rows = []
    for name, why in failed.items():
        ck = ckpt_of.get(name)
        row = {"source": name, "status": "failed", "reason": why, "kind": "checkpoint" if ck else "dataset"}
        if ck is not None:
            row["architecture"] = ck.architecture
        rows.append(row)
    return rows


def _with_data_facts(card: DatasetCard, data: ImageSet) -> DatasetCard:
    """A user's target card (a folder, a csv) knows nothing but its path: fill in what its images
    say (channels, classes, images, size), so that card facts (grey or colour, ...) count."""
    facts = {}
    if card.channels is None:
        facts["channels"] = data.channels
    if card.num_classes is None:
        facts["num_classes"] = data.num_classes
    if card.size is None and not data.skipped:
        facts["size"] = len(data)
    if not card.image_size:
        facts["image_size"] = "x".join(str(n) for n in data.image_shape)
    if not card.task and data.multilabel:
        facts["task"] = "multi-label"
    return dataclasses.replace(card, **facts) if facts else card


def _measures(cfg: RankConfig) -> dict[str, Measure]:
    """The measures of this ranking, with the options applied (unknown ones refused)."""
    every = list_measures()
    if cfg.measures is not None:
        for m in cfg.measures:
            if m not in every:
                raise UnknownNameError("measure", m, every)
    names = cfg.measures or [n for n, m in every.items() if not m.opt_in]
    chosen = {n: every[n] for n in names}
    return configure_measures(chosen, cfg.options)


def _candidates(
    cfg, tcard, history, known_vals, target_has_data, skipped, notes, failed
) -> tuple[list[DatasetCard], dict]:
    """The candidate sources (dataset cards; a checkpoint as its pretraining set's card under its
    own name) and, by candidate name, the checkpoint card of each checkpoint candidate. A dataset
    ranking leaves the checkpoints whose weights are here out unless ``cfg.with_checkpoints``,
    and says which in ``notes``. A checkpoint the user named (``sources``, ``zoo``) that cannot be
    evaluated goes to ``failed`` (unknown architecture, missing or unreadable weights:
    :func:`dsim.networks.checks.checkpoint_problem`); one found by default whose weights are missing is
    skipped."""
    reg = get_registry()
    zoo_cards = [c for path in cfg.zoo for c in load_zoo(path)]  # each --zoo file read once
    known = known_checkpoints(cards=zoo_cards)
    ckpts: list[CheckpointCard] = []
    if cfg.sources is not None:
        cands = []
        for s in cfg.sources:
            ck = checkpoint_from_spec(s, arch=cfg.arch, known=known)
            if ck is None:
                cands.append(reg.resolve(s))
            else:
                ckpts.append(ck)
        family = reg.family(tcard)
        for c in [c for c in cands if c.name in family]:
            skipped.append({"source": c.name, "reason": "same data as the target"})
        cands = [c for c in cands if c.name not in family]
    elif cfg.zoo:
        cands = []
        ckpts = zoo_cards
    else:
        cands, more = candidate_sources(tcard, history, known_vals, target_has_data)
        skipped += more
        if target_has_data:  # registered checkpoints whose weights files are here
            here = [
                c
                for c in reg.checkpoints.values()
                if c.weights.startswith("file:") and not checkpoint_missing(c)
            ]
            if cfg.with_checkpoints:
                ckpts = here
            elif here:
                names = ", ".join(c.name for c in here)
                notes.append(
                    f"left out {len(here)} checkpoint{'s' * (len(here) > 1)} whose weights are here "
                    f"({names}): each costs a forward pass of its network over the target; rank them "
                    "with --with-checkpoints, or name some with --sources"
                )
    datasets = {c.name: c for c in reg}
    ckpt_of = {}
    family = reg.family(tcard)
    named = cfg.sources is not None or bool(cfg.zoo)
    for ck in ckpts:
        if ck.pretrained_on and ck.pretrained_on in family:
            skipped.append(
                {
                    "source": ck.name,
                    "reason": f"pretrained on {ck.pretrained_on}, the same data as the target",
                }
            )
            continue
        why = checkpoint_problem(ck) if named else checkpoint_missing(ck)
        if why and named:
            failed[ck.name] = why
            ckpt_of[ck.name] = ck
            continue
        if why:
            skipped.append({"source": ck.name, "reason": why})
            continue
        cands.append(as_source_card(ck, datasets))
        ckpt_of[ck.name] = ck
    if not cands and failed:
        _without_failed([], ckpt_of, failed)
    if not cands:
        raise DsimError(
            f"no candidate sources for target {tcard.name!r}: none has data here, published results "
            "or known measure values (name some with --sources, or set DSIM_DATA_DIR to where "
            "source datasets live)"
        )
    return cands, ckpt_of


def _known_values(tcard: DatasetCard, known_vals, use: Mapping[str, Measure], wanted) -> _Values:
    """Known (published) values first, averaged over folds; only for this very target (a derived
    dataset such as pneumoniamnist does not inherit the values measured on its parent). Values
    of measures dsim cannot compute (a paper's own metric) come too, unless --measures says
    which measures to use."""
    registered = list_measures()
    acc: dict[tuple[str, str], list[float]] = {}
    for v in known_vals:
        keep = v.measure in use or (wanted is None and v.measure not in registered)
        if v.target == tcard.name and keep:
            acc.setdefault((v.source, v.measure), []).append(v.value)
    vals = _Values()
    for (s, m), xs in acc.items():
        vals.put(s, m, sum(xs) / len(xs), "published")
    return vals


def _compute(
    m, cands, ckpt_of, tcard, target_data, target_missing, vals, images, ctx, skipped, wanted
) -> None:
    """Every value of measure ``m`` not known yet, computed (through the cache)."""
    todo = [c for c in cands if not vals.has(c.name, m.name) and c.name not in vals.failed]
    if not todo:
        return
    why_m = m.unavailable()
    if why_m:
        if wanted:
            skipped.append({"measure": m.name, "reason": why_m})
        return
    networks = {}  # a network-based measure scores the candidates that are (or map to) a checkpoint
    if m.needs in ("source-model", "checkpoint"):
        networks = _networks(m, todo, ckpt_of, skipped, wanted)
        if not networks:
            return
        todo = [c for c in todo if c.name in networks]
    if m.needs in ("images", "source-model") and target_missing is not None:
        skipped.append(
            {"measure": m.name, "reason": f"target {tcard.name!r} images not available: {target_missing}"}
        )
        return
    why_t = None if m.needs == "checkpoint" else _applicable(m, tcard)
    if why_t:
        skipped.append({"measure": m.name, "reason": f"target {tcard.name!r}: {why_t}"})
        return
    if m.needs == "images":
        ready = [c for c in todo if _applicable(m, c) is None and data_missing(c) is None]
        _report_estimate(m, ctx, ready, images, target_data, vals.notes)
    for i, c in enumerate(todo):
        ctx.progress(f"{m.name}: {c.name}", i, len(todo))
        why = None if c.name in networks else _applicable(m, c)
        if why is None and m.needs == "images":
            why = data_missing(c)
        if why:
            skipped.append({"source": c.name, "measure": m.name, "reason": why})
            continue
        try:
            s_obj, t_obj = _pair_of(m, c, tcard, target_data, networks, images)
            value = m.pair(s_obj, t_obj, ctx)
            contrib = _contributions(m, s_obj, t_obj, ctx, vals.notes) if m.needs == "card" else {}
        except CheckpointError as exc:  # the network cannot be built: failed, never ranked
            if c.name in ckpt_of:
                vals.failed[c.name] = str(exc)
                continue
            skipped.append({"source": c.name, "measure": m.name, "reason": str(exc)})
            continue
        except DsimError as exc:
            if exc.measure_wide:  # about the measure itself (e.g. missing probe weights): stop it
                skipped.append({"measure": m.name, "reason": str(exc)})
                break
            skipped.append({"source": c.name, "measure": m.name, "reason": str(exc)})
            continue
        except Exception as exc:  # a plugin that raises: name it, keep the rest
            skipped.append(
                {
                    "source": c.name,
                    "measure": m.name,
                    "reason": f"measure plugin raised {one_line(exc)}",
                }
            )
            continue
        vals.put(c.name, m.name, value, "computed", contrib)
    ctx.progress(f"{m.name}", len(todo), len(todo))


def _networks(m, todo, ckpt_of, skipped: list[dict[str, str]], wanted) -> dict[str, Any]:
    """The networks a network-based measure ``m`` scores, by candidate: its checkpoint, or the
    network the measure maps a dataset to; a candidate without one is skipped, with why."""
    networks = {c.name: ckpt_of.get(c.name) or m.source_model(c) for c in todo}
    networks = {n: ck for n, ck in networks.items() if ck is not None}
    if not networks:
        if wanted:
            skipped.append(
                {
                    "measure": m.name,
                    "reason": "scores pretrained networks: no candidate is a "
                    "checkpoint (name some with --sources or --zoo)",
                }
            )
        return networks
    lacking = [c for c in todo if c.name not in networks]
    for c in lacking:
        skipped.append(
            {
                "source": c.name,
                "measure": m.name,
                "reason": "a dataset, not a checkpoint (`dsim pretrain` makes one from it)",
            }
        )
    return networks


def _pair_of(m, c: DatasetCard, tcard: DatasetCard, target_data, networks: Mapping[str, Any], images):
    """What ``m.pair`` compares for candidate ``c``: cards, a network and the target's images, a
    network alone, or the two sets of images, as ``m.needs`` says."""
    if m.needs == "card":
        return c, tcard
    if m.needs == "source-model":
        return networks[c.name], target_data
    if m.needs == "checkpoint":
        return networks[c.name], None
    return images(c), target_data


def _applicable(m: Measure, card: DatasetCard) -> str | None:
    try:
        return m.applicable(card)
    except Exception as exc:
        return f"measure plugin raised {one_line(exc)}"


def _contributions(m: Measure, s_obj, t_obj, ctx: Context, notes: list[str]) -> dict[str, float]:
    try:
        return dict(m.contributions(representation_of(m, s_obj, ctx), representation_of(m, t_obj, ctx), ctx))
    except Exception as exc:  # the value stands; only its break-down is missing, and that is said
        notes.append(
            f"{m.name}: no break-down of the value for {getattr(s_obj, 'name', '?')}: {one_line(exc)}"
        )
        return {}


def _report_estimate(m, ctx: Context, cards, images, target_data, notes: list[str]) -> None:
    """Ask an image measure how long its sources will take (``Measure.estimate_seconds``) and hand
    the answer to ``ctx.progress.estimate(measure, seconds, n_sources)`` when the progress
    callback has that method (the CLI's does). Sources (and a target) whose representation is
    already cached are left out. An estimate never stops the work; a failing one is reported."""
    report = getattr(ctx.progress, "estimate", None)
    if report is None or not cards or target_data is None:
        return

    def cached(data) -> bool:  # already represented: costs nothing
        return ctx.cache is not None and ctx.cache.get(m.name, representation_key(m, data, ctx)) is not None

    try:
        sizes = []
        for c in cards:
            try:
                data = images(c)
            except DsimError:  # unreadable: reported when its turn comes
                continue
            if not cached(data):
                sizes.append(len(data))
        if not sizes:
            return
        seconds = m.estimate_seconds(sizes, 0 if cached(target_data) else len(target_data), ctx)
    except DsimError:  # e.g. missing probe weights: the measure's own skip line says so
        return
    except Exception as exc:
        notes.append(f"{m.name}: no run-time estimate ({one_line(exc)})")
        return
    if seconds is not None:
        report(m.name, float(seconds), len(sizes))

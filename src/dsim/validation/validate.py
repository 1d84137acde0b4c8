"""``dsim.validate``: check a ranking with real transfer runs (the orchestration).

Rank the target's sources (or take the given ones), plan the runs and their pretraining jobs
(:mod:`dsim.validation.runs`), skip what the results store has, hand the rest to an executor
(:mod:`dsim.validation.executors`), store each result as it arrives, report (:mod:`dsim.validation.report`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from dsim.data.loading import (
    data_missing,
    is_checkpoint_path,
    load_checked,
    resolve_card,
    resolve_name,
    source_names,
)
from dsim.data.targets import ResolvedTarget, resolve_target
from dsim.kernel.catalog import create_backbone, list_measures
from dsim.kernel.defaults import DEFAULT_BACKBONE
from dsim.kernel.errors import DsimError, UnknownNameError, WeightsMissingError
from dsim.kernel.interfaces import ProgressFn
from dsim.kernel.plugins import notify
from dsim.kernel.records import CheckpointCard, ImageSet, RunResult, RunSpec, file_digest, stable_hash
from dsim.kernel.tracking import checkpoint_meta, tracked_validate
from dsim.networks.checkpoints import (
    checkpoint_from_spec,
    checkpoint_input_size,
    known_checkpoints,
    network_name,
)
from dsim.networks.checks import check_validate, checkpoint_problem, file_problem
from dsim.networks.pretraining import _learnable, checkpoint_dir, pretrain
from dsim.ranking.pair import rank
from dsim.validation.config import DEFAULT_PRETRAIN, DEFAULT_TRAIN, ValidateConfig
from dsim.validation.executors import Callbacks, get_executor
from dsim.validation.report import (
    SourceRow,
    ValidationReport,
    plot_report,
    rank_check,
    separability,
    spearman,
    summarise,
)
from dsim.validation.runs import Work, execute_run, plan_runs, plan_work, strategies
from dsim.validation.store import ResultsStore, setup_of

__all__ = [
    "validate",
    "pretrain",
    "plan_runs",
    "execute_run",
    "ValidateConfig",
    "ValidationReport",
    "SourceRow",
    "DEFAULT_BACKBONE",
    "DEFAULT_TRAIN",
    "DEFAULT_PRETRAIN",
    "checkpoint_dir",
    "plot_report",
]


def _noop(*_a) -> None:
    return None


def _checkpoint_cards(
    sources: Sequence[str], inline: Mapping[str, ImageSet], zoo: Sequence[str] = ()
) -> dict[str, CheckpointCard]:
    """The sources that name a checkpoint card (a registered checkpoint, one of the ``zoo``
    files' cards or ``timm:<name>``), by the name given. A name of an in-memory dataset stays a
    dataset; a file path stays a file, trained with ``--backbone``."""

    known = known_checkpoints(zoo)
    out = {}
    for s in sources:
        if s in inline or s == "imagenet" or is_checkpoint_path(s):
            continue
        card = checkpoint_from_spec(s, known=known)
        if card is not None:
            out[s] = card
    return out


def _choose_sources(rt: ResolvedTarget, sources, cfg: ValidateConfig, notes: list[str], progress=None):
    """The ranking of the very target that is validated (unless ``predict`` is off) and the
    sources to validate: the given ones, or the ``top`` best-ranked that have images here. A
    source the ranking found holding the target's own images is never validated."""
    ranking, failed = None, "prediction is off"
    if isinstance(sources, str):
        sources = [s.strip() for s in sources.split(",") if s.strip()]
    if cfg.predict:
        try:
            ranking = rank(
                rt,
                sources=[s for s in sources if not is_checkpoint_path(s) and s != rt.name]
                if sources
                else None,
                seed=cfg.seed,
                progress=progress,
                holdout_target=True,  # blind to what was measured on it: else it predicts its own T
                **rank_options(cfg),
            )
            notes.extend(n for n in ranking.notes if n.startswith("predicted without this target's own"))
        except DsimError as exc:
            failed = str(exc)
            notes.append(f"no prediction to compare with: ranking failed: {exc}")
    if sources is None:
        if ranking is None:
            raise DsimError(
                f"validate {rt.name!r}: no sources given and the ranking failed ({failed}); pass --sources"
            )
        sources, passed = [], {}
        for r in ranking.rows:
            # a checkpoint needs no source images: its weights were checked by the ranking
            why = (
                _imagenet_missing(cfg.backbone)
                if r.source == "imagenet"
                else None
                if r.kind == "checkpoint"
                else data_missing(resolve_card(r.source))
            )
            if why:
                passed[r.source] = why
                continue
            sources.append(r.source)
            if len(sources) >= cfg.top:
                break
        notes.extend(_passed_note(passed) + _tie_choice_note(ranking, sources))
    elif ranking is not None:
        held = {
            s["source"]: s["reason"]
            for s in ranking.skipped
            if "measure" not in s and str(s.get("reason", "")).startswith("holds the target's images")
        }

        def card_name(s: str) -> str:
            try:
                return s if is_checkpoint_path(s) else resolve_card(s).name
            except DsimError:  # an in-memory source, or one the runs will report
                return s

        dropped = [s for s in sources if card_name(s) in held]
        for s in dropped:
            notes.append(f"source {s!r} not validated: {held[card_name(s)]}")
        sources = [s for s in sources if s not in dropped]
        if dropped and not sources:  # nothing left to validate: refused before any run
            raise DsimError(
                "no source left to validate: "
                + "; ".join(f"{s}: {held[card_name(s)].split(' (')[0]}" for s in dropped)
            )
    return ranking, list(sources)


def _passed_note(passed: Mapping[str, str]) -> list[str]:
    """One note on the better-ranked sources ``--top`` passed over (they cannot be trained
    here), those with the same reason (its source's name and checksum aside) grouped."""
    groups: dict[str, list[str]] = {}
    for name, why in passed.items():
        key = re.sub(r" \(md5 [0-9a-f]+\)", "", why.replace(name, "<source>"))
        groups.setdefault(key, []).append(name)
    if not groups:
        return []
    parts = [
        f"{', '.join(names)}: {key if len(names) > 1 else passed[names[0]]}" for key, names in groups.items()
    ]
    n = len(passed)
    return [
        f"{n} better-ranked source{'s' * (n != 1)} cannot be trained here, passed over: " + " | ".join(parts)
    ]


def _tie_choice_note(ranking, chosen: Sequence[str]) -> list[str]:
    """A note when the sources ``--top`` chose tie (the very same predicted score) with ranked
    sources left out: the choice among them is the ranking's order (by name), skipping those
    without images here, not a prediction."""
    score = {r.source: round(float(r.score), 9) for r in ranking.rows if r.status == "predicted"}
    out = []
    for value in sorted({score[s] for s in chosen if s in score}, reverse=True):
        tied = [r.source for r in ranking.rows if score.get(r.source) == value]
        picked = [s for s in tied if s in chosen]
        left = [s for s in tied if s not in chosen]
        if len(tied) < 2 or not left or not picked:
            continue
        more = f" and {len(left) - 5} more" if len(left) > 5 else ""
        out.append(
            f"{', '.join(picked)} chosen among {len(tied)} sources the ranking ties at {value:.2f} "
            f"(also {', '.join(left[:5])}{more}): nothing it knows tells them apart, so the choice "
            "is not a prediction; tied sources with images here are taken first, by name (--sources "
            "to choose others)"
        )
    return out


def _imagenet_missing(backbone: str) -> str | None:
    """Why ``backbone`` cannot start from ImageNet weights here (one line), or None."""
    try:
        create_backbone(backbone, weights="imagenet")
    except (WeightsMissingError, UnknownNameError) as exc:
        return str(exc)
    return None


def _target_of(target, inline: dict[str, ImageSet], target_opts: Mapping[str, Any]) -> ResolvedTarget:
    """The target resolved once; a user's own data (a path, arrays, an ImageSet) is put into
    ``inline`` under the target's name, to travel with the jobs."""
    if isinstance(target, str) and target in inline:
        target = inline[target]
    rt = resolve_target(target, **target_opts)
    if not rt.registered:
        inline[rt.name] = rt.load()
    return rt


def rank_options(cfg: ValidateConfig) -> dict[str, Any]:
    """The options of the ranking a validation compares with: ``cfg.rank_options`` and its zoo,
    and, when the fine-tuning size is given (``image_size``), that size for every measure that
    scores a checkpoint's network on the target, so that a checkpoint is ranked at the size it is
    fine-tuned at (else both use its native size)."""
    opts: dict[str, Any] = {"zoo": cfg.zoo, **dict(cfg.rank_options)}
    size = cfg.hyperparameters.get("image_size")
    if not size:
        return opts
    every = list_measures()
    chosen = opts.get("measures") or [n for n, m in every.items() if not m.opt_in]
    if isinstance(chosen, str):
        chosen = [m.strip() for m in chosen.split(",") if m.strip()]
    options = dict(opts.get("options") or {})
    for name in chosen:
        m = every.get(name)
        if m is not None and {"image_size", "source_checkpoints"} <= set(m.param_names()):
            options.setdefault(f"{name}.image_size", int(size))
    if options:
        opts["options"] = options
    return opts


def checkpoint_sizes(
    cards: Mapping[str, CheckpointCard],
    cfg: ValidateConfig,
    notes: list[str],
    say: Callable[[str, str], None],
) -> dict[str, int]:
    """The input size each checkpoint is fine-tuned (and ranked) at: its native size
    (:func:`dsim.checkpoint_input_size`) unless ``image_size`` is given; a size below the native
    one is warned about once per checkpoint (its T then mixes pretraining with lost resolution)."""
    given = cfg.hyperparameters.get("image_size")
    out: dict[str, int] = {}
    for name, card in cards.items():
        try:
            native = int(checkpoint_input_size(card))
        except DsimError as exc:
            notes.append(f"checkpoint {name!r}: native input size unknown ({exc}); using {given or 224} px")
            native = None
        size = int(given or native or 224)
        out[name] = size
        if native and size < native:
            msg = (
                f"checkpoint {name!r} is ranked and fine-tuned at {size} px, below the {native} px its "
                f"network was trained at: its T mixes what the pretraining learnt with the lost resolution "
                f"(leave out --image-size to use {native} px)"
            )
            notes.append(msg)
            say("warning", msg)
    return out


class _Estimate:
    """One line of expected remaining time, once the first run (and the first pretraining job,
    when there are any) has been timed on this cluster."""

    def __init__(self, work: Work, slots: int, say: Callable[[str, str], None]):
        self.runs_left, self.jobs_left = len(work.runs) - len(work.failed), len(work.jobs)
        self.slots, self.say = max(1, slots), say
        self.run_s: float | None = None
        self.job_s: float | None = None
        self.done = False

    def run_finished(self, result: RunResult) -> None:
        self.runs_left -= 1
        if self.run_s is None:
            t = result.timings
            self.run_s = float(t.get("total_s", 0)) - float(t.get("checkpoint_s", 0))
        self._maybe()

    def job_finished(self, path: Path | None) -> None:
        self.jobs_left -= 1
        if self.job_s is None and path is not None:
            meta = path.with_suffix(".json")
            if meta.exists():
                self.job_s = float(json.loads(meta.read_text()).get("seconds", 0))
        self._maybe()

    def _maybe(self) -> None:
        if self.done or self.run_s is None or (self.jobs_left > 0 and self.job_s is None):
            return
        self.done = True
        total = (self.runs_left * self.run_s + self.jobs_left * (self.job_s or 0)) / self.slots
        calib = f"first run {self.run_s:.1f} s" + (
            f", first pretraining {self.job_s:.1f} s" if self.job_s else ""
        )
        self.say(
            "info",
            f"estimate: about {_duration(total)} left for {_count(self.runs_left, 'run')} and "
            f"{_count(self.jobs_left, 'pretraining job')}, {self.slots} at a time ({calib})",
        )


def _trainable(data: ImageSet) -> ImageSet:
    """``data`` when a network can be pretrained on it (two classes or more); else a one-line
    error naming it, before any work starts."""
    if not _learnable(data):
        raise DsimError(
            f"source {data.name!r} has a single class ({data.source or data.name}): pretraining needs two or more"
        )
    return data


def same_failure(error: str) -> str:
    """A run's failure with its fold left out: the runs of one source that fail for one reason
    in every fold give one key (reported once)."""
    return re.sub(r",? fold \d+\]", "]", error)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h")


def validate(
    target: str | ImageSet,
    config: ValidateConfig | None = None,
    *,
    sources: Sequence[str] | str | None = None,
    store: Any = None,
    inline: Mapping[str, ImageSet] | None = None,
    progress: ProgressFn | None = None,
    run_progress: ProgressFn | None = None,
    on_event: Callable[[str, str], None] | None = None,
    labels: Any = None,
    facts: Mapping[str, Any] | Sequence[str] | None = None,
    card: str | None = None,
    **knobs: Any,
) -> ValidationReport:
    """Validate the ranking of ``target``'s sources with real transfer runs.

    ``target`` is anything ``dsim.rank`` takes (a name, a path, an ImageSet, arrays with their
    ``labels``, a torch Dataset; ``facts`` and ``card`` as there): it is resolved once, and that
    same target is ranked and validated. ``config`` (a :class:`ValidateConfig`) and/or its fields as keywords (``top``, ``strategy``,
    ``backbone``, ``folds``, ``train_sizes``, ``seed``, ``hyperparameters``, ``executor``,
    ``cpus_per_run`` ...; keywords win) say what to run and where; the flags of ``dsim validate``
    are keywords too (``epochs``, ``image_size``, ``pretrain_epochs``, ``measures``, ``hp``). ``sources``: explicit sources
    (names, ``a+b`` unions, ``imagenet`` or checkpoint files); default: the ``top`` best-ranked
    that can be trained here. ``store``: a :class:`ResultsStore` or a path. ``inline``: in-memory
    datasets by name. ``progress(what, done, total)`` with ``what`` "runs" or "pretraining";
    ``on_event(kind, message)`` with kind "plan", "info", "warning", "error" or "done".
    ``track``: experiment trackers to log the runs to, e.g. ``"mlflow"`` (:mod:`dsim.kernel.tracking`).
    """
    track = knobs.pop("track", None)
    if track:
        kw = dict(sources=sources, store=store, inline=inline, progress=progress, run_progress=run_progress)
        return tracked_validate(validate, track, target, config, on_event=on_event, **kw, **knobs)
    cfg = ValidateConfig.build(config, **knobs)
    check_validate(target, cfg, sources=sources)
    t0 = time.perf_counter()
    say = on_event or _noop
    target_opts = {"labels": labels, "facts": facts, "card": card}
    plan = _resolve(target, cfg, sources, dict(inline or {}), target_opts, run_progress, say)
    specs = _plan(plan, cfg)
    st = store if isinstance(store, ResultsStore) else ResultsStore(store)
    st.check_writable()  # before any run: a result that cannot be stored is lost work
    results, todo = _stored(specs, st, say)
    work = _run(plan, cfg, specs, todo, st, results, progress, run_progress, say)
    return _report(plan, cfg, specs, todo, results, work, st, time.perf_counter() - t0)


@dataclass
class _Plan:
    """What :func:`validate` resolved before planning: the target, its ranking and the sources
    (with their checkpoint cards, input sizes, and why some cannot run)."""

    rt: ResolvedTarget
    tdata: ImageSet
    inline: dict[str, ImageSet]
    ranking: Any
    sources: list[str]
    cards: dict[str, CheckpointCard]
    sizes: dict[str, int]
    unusable: dict[str, str]  # source -> why it cannot run at all
    explicit: bool
    notes: list[str] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    pretrained: int = 0


def _resolve(target, cfg: ValidateConfig, sources, inline, target_opts, run_progress, say) -> _Plan:
    """Resolve stage: the target (once), its data, its ranking and the sources to validate, each
    named as the runs will name it; a source that cannot run is noted with why."""
    rt = _target_of(target, inline, target_opts)
    tname = rt.name
    known = strategies()
    for s in cfg.strategies + ((cfg.baseline,) if cfg.baseline else ()):
        if s not in known:
            raise UnknownNameError("strategy", s, known)

    # the target's data (its fingerprint enters every run key)
    tdata = load_checked(tname, max_samples=cfg.target_max, seed=cfg.seed, inline=inline)
    notes: list[str] = []
    explicit = sources is not None
    ranking, sources = _choose_sources(rt, sources, cfg, notes, progress=run_progress)
    cards = _checkpoint_cards(sources, inline, cfg.zoo)
    sources = [
        cards[s].name
        if s in cards
        else "+".join(resolve_name(n, inline) for n in source_names(s))
        if not is_checkpoint_path(s) and s != "imagenet"
        else s
        for s in sources
    ]
    cards = {c.name: c for c in cards.values()}
    sources = [s for s in sources if s != tname]
    sizes = checkpoint_sizes({n: c for n, c in cards.items() if n in sources}, cfg, notes, say)
    unusable: dict[str, str] = {}
    for s in sources:
        why = checkpoint_problem(cards[s]) if s in cards else None
        if why is None and is_checkpoint_path(s):
            p = Path(s).expanduser()
            why = f"checkpoint file {s!r} not found" if not p.is_file() else file_problem(p)
        if why:
            unusable[s] = why
    return _Plan(rt, tdata, inline, ranking, sources, cards, sizes, unusable, explicit, notes)


def _plan(plan: _Plan, cfg: ValidateConfig) -> list[RunSpec]:
    """Plan stage: every run, keyed by the content of its source and target (a source that turns
    out unusable while its fingerprint is taken is noted); named sources that cannot run are
    refused here, before any work."""
    tname, cards, inline, known = plan.rt.name, plan.cards, plan.inline, strategies()
    fps = {tname: plan.tdata.fingerprint()}

    def fingerprint_of(strat: str, s: str) -> str:
        if s == "imagenet":
            return "imagenet"
        if s in cards:  # the network's content: its file's digest, else everything its card says
            return cards[s].sha256 or stable_hash(cards[s].to_dict())
        if is_checkpoint_path(s):
            p = Path(s).expanduser()
            return file_digest(p) if p.is_file() else "missing:" + s
        key = s
        try:
            key = known[strat].pretrain_sources(s, tname)
            if key not in fps:
                fps[key] = "+".join(
                    _trainable(
                        load_checked(n, max_samples=cfg.source_max, seed=cfg.seed, inline=inline)
                    ).fingerprint()
                    for n in source_names(key)
                )
        except DsimError as exc:
            fps[key] = "unavailable"
            plan.unusable.setdefault(s, str(exc))
            plan.notes.append(f"source {s!r} ({strat}): {exc}")
        return fps[key]

    specs = plan_runs(
        tname,
        plan.sources,
        cfg,
        fingerprints=fps,
        fingerprint_of=fingerprint_of,
        backbones={n: network_name(c) for n, c in cards.items()},
        image_sizes=plan.sizes,
    )
    if plan.unusable and plan.explicit:  # refused before any work: each named with why
        raise DsimError(
            f"validate {tname!r}: {len(plan.unusable)} of the sources cannot run: "
            + "; ".join(f"{s}: {why}" for s, why in plan.unusable.items())
        )
    return specs


def _stored(specs: list[RunSpec], st: ResultsStore, say) -> tuple[dict[str, RunResult], list[RunSpec]]:
    """The results ``st`` has already (by run key), and the runs still to do."""
    finished = st.keys()
    results: dict[str, RunResult] = {}
    todo: list[RunSpec] = []
    for s in specs:
        r = st.get(s.key) if s.key in finished else None
        if r is not None:
            results[s.key] = r
        else:
            todo.append(s)
    skipped = len(specs) - len(todo)
    if skipped:
        say("info", f"{skipped} of {len(specs)} runs already in the results store ({st.path}); skipped")
    return results, todo


def _run(plan: _Plan, cfg, specs, todo, st, results, progress, run_progress, say) -> Work:
    """Pretrain and run stages: the pretraining jobs and runs of ``todo`` handed to the executor;
    each result is stored on the driver as it arrives (into ``results``), each failure noted in
    ``plan.failures``."""
    work = plan_work(todo, config=cfg, inline=plan.inline, cards=plan.cards)
    ex = get_executor(cfg.executor, address=cfg.address)
    slots = ex.slots(work) if hasattr(ex, "slots") else 1
    say(
        "plan",
        f"plan: {work.describe()} (of {_count(len(specs), 'run')}, {len(specs) - len(todo)} in the store); "
        f"executor {getattr(ex, 'name', type(ex).__name__)}, {slots} at a time",
    )
    pr = progress or _noop
    counts = {"runs": 0, "pretraining": 0}
    estimate = _Estimate(work, slots, say)
    said: set[str] = set()
    pr("pretraining", 0, len(work.jobs))
    pr("runs", 0, len(todo))

    def on_result(spec: RunSpec, result: RunResult | None, error: str | None) -> None:
        counts["runs"] += 1
        if result is not None:
            st.put(result)  # on the driver, as soon as the fold is back
            results[spec.key] = result
            for n in result.notes:
                say("warning", n)
            notify("dsim_run_finished", result=result)
            say("done", f"{spec.label}: AUC {result.metrics.get('auc', float('nan')):.3f}")
            estimate.run_finished(result)
        else:
            st.put_failure(spec, error or "failed")
            plan.failures.append({"run": spec.label, "error": error or "failed"})
            notify("dsim_run_failed", spec=spec, error=error)
            reason = same_failure(error or spec.label)
            if reason not in said:  # the same failure in every fold: said once
                said.add(reason)
                say("error", error or spec.label)
        pr("runs", counts["runs"], len(todo))

    def on_pretrained(job, path: Path | None, error: str | None) -> None:
        counts["pretraining"] += 1
        if path is not None:
            plan.pretrained += 1
            say("done", f"pretrained {job.describe()}")
            notify("dsim_pretrain_finished", checkpoint=Path(path), meta=checkpoint_meta(path))
        estimate.job_finished(path)
        pr("pretraining", counts["pretraining"], len(work.jobs))

    for s in todo:
        notify("dsim_run_started", spec=s)
    ex.run(work, Callbacks(on_result, on_pretrained, say, run_progress))
    return work


def _report(plan: _Plan, cfg, specs, todo, results, work: Work, st, seconds: float) -> ValidationReport:
    """Report stage: the measured order against the predicted one, and what can be decided."""
    tname, notes, ranking = plan.rt.name, plan.notes, plan.ranking
    rows, base_auc = summarise(specs, results, ranking, cfg.baseline, cfg.backbone)
    rows, regret = rank_check(rows, tname)
    rho, n_rho = spearman([r for r in rows if r.source != tname])
    if ranking is not None and n_rho < 2:
        notes.append(f"Spearman needs 2 or more sources with a prediction and a measurement; have {n_rho}")
    elif n_rho == 2 and rho is not None:
        notes.append("Spearman over 2 sources is +1 or -1: it only says whether their order was predicted")
    if rho is None and n_rho >= 2:
        notes.append(
            "Spearman undefined: the ranking gave the validated sources the same predicted score "
            "(nothing it knows tells them apart); the measured order above is the new evidence"
        )
    hp = cfg.train_hp()
    decidable, warnings = separability(
        rows,
        tname,
        folds=cfg.folds,
        epochs=hp.get("epochs"),
        default_epochs=DEFAULT_TRAIN.get("epochs"),
        target_max=cfg.target_max,
    )
    return ValidationReport(
        target=tname,
        backbone=cfg.backbone,
        setup=setup_of(specs[0]) if specs else "",
        rows=tuple(rows),
        baseline_auc=base_auc,
        spearman=rho,
        spearman_n=n_rho,
        regret_auc=regret,
        runs_total=len(specs),
        runs_done=len(todo) - len(plan.failures),
        runs_skipped=len(specs) - len(todo),
        failures=tuple(plan.failures),
        notes=tuple(notes),
        store=str(st.path),
        seconds=seconds,
        pretraining_jobs=len(work.jobs) + len(work.cached_jobs),
        pretrained=plan.pretrained,
        decidable=decidable,
        warnings=tuple(warnings),
    )

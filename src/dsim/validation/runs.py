"""The runs of a validation: planning them, the work an executor gets, and executing one run.

:func:`plan_runs` makes one :class:`RunSpec` per (source, strategy, train size, fold), baseline
first; :func:`plan_work` adds the pretraining jobs they depend on (each distinct job once) and the
data they read; :func:`execute_run` runs one fold, in the driver or in a worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dsim.data.loading import is_checkpoint_path, load_checked
from dsim.kernel.errors import DsimError, one_line
from dsim.kernel.interfaces import Context, FoldData, ProgressFn
from dsim.kernel.plugins import named
from dsim.kernel.records import CheckpointCard, ImageSet, RunResult, RunSpec, stable_hash
from dsim.networks.checkpoints import checkpoint_missing, network_name, network_spec
from dsim.networks.pretraining import Checkpoint, PretrainJob, build, checkpoint_dir, plan_job
from dsim.validation.config import ValidateConfig

__all__ = [
    "plan_runs",
    "plan_work",
    "Work",
    "execute_run",
    "run_inputs",
    "strategy",
    "strategies",
    "checkpoint_for",
]


def _noop(*_a) -> None:
    return None


def strategies() -> dict[str, Any]:
    """Every registered strategy by name."""

    return named("dsim_register_strategies", "strategy")


def strategy(name: str):
    return named("dsim_register_strategies", "strategy", name)


# ------------------------------------------------------------------------------ planning
def plan_runs(
    target: str,
    sources: Sequence[str],
    config: ValidateConfig,
    *,
    fingerprints: Mapping[str, str] | None = None,
    fingerprint_of: Callable[[str, str], str] | None = None,
    backbones: Mapping[str, str] | None = None,
    image_sizes: Mapping[str, int] | None = None,
) -> list[RunSpec]:
    """One :class:`RunSpec` per (source, strategy, train size, fold), baselines first.

    ``fingerprints`` maps dataset names to content fingerprints; ``fingerprint_of(strategy,
    source)`` overrides it for sources a strategy resolves itself (aggregated domains).
    ``backbones`` gives the network of a source that brings its own (a checkpoint card) and
    ``image_sizes`` the input size it is fine-tuned at; the others train ``config.backbone``.
    The baseline is trained once per network and size: ``config.backbone``'s for the dataset
    sources (not planned when every source brings its own network), and one from-scratch run of
    each checkpoint's architecture, shared by that architecture's checkpoints, so that T of a
    checkpoint compares the same network with and without its pretraining."""
    hp = config.train_hp()
    backbones = dict(backbones or {})
    image_sizes = dict(image_sizes or {})
    own = [s for s in sources if s in backbones]
    # (backbone, size) of every from-scratch baseline: --backbone's, then each architecture's
    only_own = own and len(own) == len(sources) and all(strategy(x).uses_source for x in config.strategies)
    scratch = [] if only_own else [(config.backbone, None)]
    for s in own:
        key = (backbones[s], image_sizes.get(s))
        if key not in scratch and key != (config.backbone, hp.get("image_size")):
            scratch.append(key)
    php = config.pretrain_hp()
    fps = dict(fingerprints or {})
    specs: list[RunSpec] = []

    def spec(
        source: str, strat: str, fold: int, run_hp: dict, fp: dict, backbone: str | None = None
    ) -> RunSpec:
        return RunSpec(
            source=source,
            target=target,
            backbone=backbone
            or (backbones.get(source, config.backbone) if source != target else config.backbone),
            strategy=strat,
            fold=fold,
            seed=config.seed,
            folds=config.folds,
            hyperparameters=run_hp,
            fingerprints=fp,
        )

    for n in config.train_sizes:
        base_hp = {**hp, "train_size": n, "target_max": config.target_max}
        if config.baseline:
            for bb, size in scratch:
                s_hp = {**base_hp, "image_size": size} if size else base_hp
                for f in range(config.folds):
                    specs.append(spec(target, config.baseline, f, s_hp, {"target": fps.get(target, "")}, bb))
        for strat in config.strategies:
            uses_source = strategy(strat).uses_source
            for s in sources if uses_source else [target]:
                run_hp = dict(base_hp)
                if uses_source and image_sizes.get(s):
                    run_hp["image_size"] = int(image_sizes[s])
                fp = {"target": fps.get(target, "")}
                if uses_source:
                    run_hp.update({"pretrain": php, "source_max": config.source_max})
                    fp["source"] = fingerprint_of(strat, s) if fingerprint_of else fps.get(s, "")
                for f in range(config.folds):
                    specs.append(spec(s, strat, f, run_hp, fp))
    return list({s.key: s for s in specs}.values())


def _checkpoint_of_file(src: str) -> Checkpoint:
    p = Path(src).expanduser()
    if not p.is_file():
        raise DsimError(f"source checkpoint {src!r} not found")
    # a checkpoint of dsim's cache is named by its content key already
    return Checkpoint.of_file(p, id=p.stem if p.parent.parent == checkpoint_dir() else None)


def _checkpoint_of_card(card: CheckpointCard) -> Checkpoint:
    """What a run transfers from when its source is the checkpoint ``card``: the checked weights
    file, or the weights name its backbone plugin resolves (``random``, timm's ``imagenet``). A
    card whose weights are not here is a one-line error saying how to supply them."""

    why = checkpoint_missing(card)
    if why:
        raise DsimError(f"checkpoint {card.name!r}: {why}")
    _, weights = network_spec(card)
    if card.weights.startswith("file:"):
        return Checkpoint.of_file(weights, id=card.sha256 or None)
    return Checkpoint(id=f"{network_name(card)}:{weights}", weights=weights)


def checkpoint_for(
    spec: RunSpec,
    strat,
    *,
    inline: Mapping[str, ImageSet] | None = None,
    memo: dict | None = None,
    cards: Mapping[str, CheckpointCard] | None = None,
) -> Checkpoint | tuple[PretrainJob, ImageSet]:
    """What a run transfers from: ImageNet weights, a checkpoint file or a checkpoint card
    (``cards``, by source name) given as its source (a :class:`Checkpoint`), or the pretraining
    job of its source and that job's data."""
    src = spec.source
    if src == "imagenet":
        return Checkpoint(id="imagenet")
    if cards and src in cards:
        return _checkpoint_of_card(cards[src])
    if is_checkpoint_path(src):
        return _checkpoint_of_file(src)
    hp = dict(spec.hyperparameters)
    pre_src = strat.pretrain_sources(src, spec.target)
    # a "seed" among the pretraining hyper-parameters pins the source checkpoint across run seeds
    pseed = int((hp.get("pretrain") or {}).get("seed", spec.seed))
    args = dict(
        init=strat.pretrain_init,
        hyperparameters=hp.get("pretrain"),
        max_samples=hp.get("source_max"),
        seed=pseed,
        exclude=(spec.target,),
    )
    mkey = stable_hash({"source": pre_src, "backbone": spec.backbone, **args})
    if memo is not None and mkey in memo:
        return memo[mkey]
    out = plan_job(pre_src, spec.backbone, inline=inline, **args)
    if memo is not None:
        memo[mkey] = out
    return out


@dataclass
class Work:
    """What an executor runs: fine-tuning runs, the pretraining jobs they wait for, and the data.

    ``checkpoint_of`` maps a run's key to the id of the checkpoint it transfers from: a key of
    ``jobs`` (trained first, once) or of ``checkpoints`` (available now). ``failed`` holds the
    runs that cannot run (why, one line naming the run). ``data`` is every dataset the runs and
    jobs read, loaded on the driver; ``shared`` the keys of those a worker may read itself
    (registered datasets under ``data_placement="shared"``)."""

    runs: list[RunSpec]
    jobs: dict[str, PretrainJob] = field(default_factory=dict)
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    checkpoint_of: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    data: dict[tuple, ImageSet] = field(default_factory=dict)
    shared: set[tuple] = field(default_factory=set)
    cached_jobs: set[str] = field(default_factory=set)  # jobs whose checkpoint was cached already
    device: str = "auto"
    cpus_per_run: float | None = None
    gpus_per_run: float | None = None

    @staticmethod
    def target_key(spec: RunSpec) -> tuple:
        return ("target", spec.target, spec.hyperparameters.get("target_max"), spec.seed)

    @staticmethod
    def job_key(job: PretrainJob) -> tuple:
        return ("job", *job.data_key)

    def dependents(self, job_key: str) -> list[RunSpec]:
        return [s for s in self.runs if self.checkpoint_of.get(s.key) == job_key]

    def describe(self) -> str:
        parts = [_count(len(self.runs), "run"), _count(len(self.jobs), "pretraining job")]
        if self.cached_jobs:
            parts.append(_count(len(self.cached_jobs), "pretrained checkpoint") + " cached")
        if self.failed:
            parts.append(_count(len(self.failed), "run") + " that cannot start")
        return ", ".join(parts)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def plan_work(
    specs: Sequence[RunSpec],
    *,
    config: ValidateConfig,
    inline: Mapping[str, ImageSet] | None = None,
    cards: Mapping[str, CheckpointCard] | None = None,
) -> Work:
    """The runs ``specs`` with their pretraining jobs (each distinct job once; cached ones become
    ready checkpoints) and the datasets they read, resolved on the driver. ``cards``: the
    checkpoint cards of the sources that are checkpoints, by source name."""
    inline = dict(inline or {})
    work = Work(
        runs=list(specs),
        device=config.device,
        cpus_per_run=config.cpus_per_run,
        gpus_per_run=config.gpus_per_run,
    )
    shared = config.data_placement == "shared"
    memo: dict = {}
    for spec in specs:
        try:
            tkey = Work.target_key(spec)
            if tkey not in work.data:
                work.data[tkey] = load_checked(
                    spec.target, max_samples=tkey[2], seed=spec.seed, inline=inline
                )
                if shared and spec.target not in inline:
                    work.shared.add(tkey)
            strat = strategy(spec.strategy)
            if not strat.uses_source or spec.source == spec.target:
                continue
            ck = checkpoint_for(spec, strat, inline=inline, memo=memo, cards=cards)
        except DsimError as exc:
            msg = str(exc)
            work.failed[spec.key] = msg if msg.startswith(spec.label) else f"{spec.label}: {msg}"
            continue
        if isinstance(ck, Checkpoint):
            work.checkpoints.setdefault(ck.id, ck)
            work.checkpoint_of[spec.key] = ck.id
            continue
        job, data = ck
        if job.path.exists():  # in this machine's cache already
            work.checkpoints.setdefault(job.key, Checkpoint(id=job.key, path=str(job.path)))
            work.cached_jobs.add(job.key)
        else:
            work.jobs.setdefault(job.key, job)
            dkey = Work.job_key(job)
            work.data.setdefault(dkey, data)
            if shared and not any(n in inline for n in job.sources):
                work.shared.add(dkey)
        work.checkpoint_of[spec.key] = job.key
    return work


# ------------------------------------------------------------------------------ one run
def _check_multilabel_target(spec: RunSpec, target: ImageSet) -> None:
    counts = target.class_counts()
    if not ((counts > 0) & (counts < len(target))).any():
        raise DsimError(
            f"target {spec.target!r}: no label has both positive and negative images; nothing to classify"
        )


def _check_multilabel_fold(spec: RunSpec, target: ImageSet, train: ImageSet, test: ImageSet) -> list[str]:
    """A multi-label fold is refused when no label can be scored on its test split or learnt from
    its training split; labels with positives in the target but none in the training split are
    named in a note (they are trained as all-negative and scored as the rest)."""
    t = test.class_counts()
    if not ((t > 0) & (t < len(test))).any():
        raise DsimError(
            f"fold {spec.fold}: the test split has no label with both positive and negative images; "
            "use fewer folds or more images"
        )
    present = target.class_counts() > 0
    lacking = [target.class_names[j] for j in np.flatnonzero(present & (train.class_counts() == 0))]
    if len(lacking) == int(present.sum()):
        raise DsimError(
            f"fold {spec.fold}: the training split has no positive image of any label; "
            "use a larger --train-sizes value"
        )
    if lacking:
        return [
            f"fold {spec.fold}: the training split has no positive image of label(s) "
            f"{', '.join(lacking)}; they cannot be learnt here (use a larger --train-sizes value)"
        ]
    return []


def _failure(label: str, exc: BaseException) -> DsimError:
    """A run's failure as one line that starts with the run's label."""
    if isinstance(exc, DsimError):
        msg = str(exc)
        return DsimError(msg if msg.startswith(label) else f"{label}: {msg}")
    return DsimError(one_line(exc, label))


def run_inputs(
    spec: RunSpec,
    *,
    target: ImageSet | None = None,
    checkpoint: Checkpoint | None = None,
    inline: Mapping[str, ImageSet] | None = None,
    device: str = "auto",
) -> tuple[ImageSet, Checkpoint | None]:
    """What :func:`execute_run` needs, made ready where the run executes: the target's data as
    planned (capped at ``target_max``; loaded here when not given) and the checkpoint the run
    transfers from (when its strategy uses one and none is given: resolved here, and its source
    pretrained into this machine's cache if needed). Raises :class:`DsimError` naming the run."""
    try:
        if target is None:
            hp = spec.hyperparameters
            target = load_checked(
                spec.target, max_samples=hp.get("target_max"), seed=spec.seed, inline=inline
            )
        strat = strategy(spec.strategy)
        if checkpoint is None and strat.uses_source and spec.source != spec.target:
            found = checkpoint_for(spec, strat, inline=inline)
            if not isinstance(found, Checkpoint):
                job, data = found
                found = Checkpoint(id=job.key, path=str(build(job, data, device=device)))
            checkpoint = found
    except Exception as exc:
        raise _failure(spec.label, exc) from None
    return target, checkpoint


def _fold(spec: RunSpec, target: ImageSet) -> tuple[ImageSet, ImageSet, ImageSet, list[str]]:
    """The run's (train, val, test) split of ``target`` and the notes on it; a split a run cannot
    learn from or score is refused naming the class(es) it lacks."""
    hp = spec.hyperparameters
    classes = np.unique(target.labels)
    if target.multilabel:
        _check_multilabel_target(spec, target)
    elif len(classes) < 2:
        raise DsimError(
            f"target {spec.target!r} has one class ({target.class_names[classes[0]] if len(classes) else 'none'}); nothing to classify"
        )
    folds = list(target.kfold(k=spec.folds, seed=spec.seed))
    if spec.fold >= len(folds):
        raise DsimError(f"fold {spec.fold} does not exist (folds={spec.folds})")
    tr_i, va_i, te_i = folds[spec.fold]
    train, val, test = target.take(tr_i), target.take(va_i), target.take(te_i)
    if hp.get("train_size"):
        train = train.subsample(int(hp["train_size"]), seed=spec.seed * 1000 + spec.fold)
    fold_notes = _check_multilabel_fold(spec, target, train, test) if target.multilabel else []
    for part, ds in () if target.multilabel else (("test", test), ("training", train)):
        missing = [target.class_names[c] for c in classes if c not in set(ds.labels.tolist())]
        if part == "test" and len(missing) >= len(classes) - 1:
            raise DsimError(
                f"fold {spec.fold}: the test split has no example of class(es) {', '.join(missing)}; use fewer folds or more images"
            )
        if part == "training" and missing:
            raise DsimError(
                f"fold {spec.fold}: the training split has no example of class(es) {', '.join(missing)}; use a larger --train-sizes value"
            )
    return train, val, test, fold_notes


def execute_run(
    spec: RunSpec,
    *,
    target: ImageSet,
    checkpoint: Checkpoint | None = None,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> RunResult:
    """Run one fold of one (source, strategy) on ``target``, the target's data as planned, from
    ``checkpoint`` (what the run transfers from; :func:`run_inputs` makes both ready); raises
    :class:`DsimError` naming the run on any failure. Used by every executor (in the driver, or
    in a Ray worker)."""
    t0 = time.perf_counter()
    label = spec.label
    try:
        strat = strategy(spec.strategy)
        train, val, test, fold_notes = _fold(spec, target)
        t_load = time.perf_counter() - t0
        ckpt_path, ckpt_id, t_pre = None, None, 0.0
        if strat.uses_source and spec.source != spec.target:
            if checkpoint is None:
                raise DsimError(f"no checkpoint of {spec.source!r} to transfer from")
            t1 = time.perf_counter()
            ckpt_path = checkpoint.local_path()
            ckpt_id = None if checkpoint.id == "imagenet" else checkpoint.id
            t_pre = time.perf_counter() - t1
        ctx = Context(seed=spec.seed, device=device, progress=progress or _noop, options={"label": label})
        t2 = time.perf_counter()
        metrics = dict(
            strat.run(spec, FoldData(train=train, val=val, test=test, source_checkpoint=ckpt_path), ctx)
        )
        t_train = time.perf_counter() - t2
    except Exception as exc:
        raise _failure(label, exc) from None
    notes = tuple(metrics.pop("notes", ()) or ()) if isinstance(metrics.get("notes"), (list, tuple)) else ()
    history = metrics.pop("history", None)
    notes = tuple(fold_notes) + notes
    metrics = {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating, np.integer))
    }
    metrics.update({"n_train": len(train), "n_val": len(val), "n_test": len(test)})
    return RunResult(
        spec=spec,
        metrics=metrics,
        checkpoint=ckpt_id,
        notes=notes,
        history=tuple(dict(h) for h in history) if isinstance(history, (list, tuple)) else (),
        timings={
            "load_s": t_load,
            "checkpoint_s": t_pre,
            "train_s": t_train,
            "total_s": time.perf_counter() - t0,
        },
    )

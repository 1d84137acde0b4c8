"""``dsim validate`` and ``dsim pretrain``: check a ranking with real transfer runs.

>>> report = dsim.validate("pneumoniamnist", top=3, folds=3)            # doctest: +SKIP
>>> report.rows[0].source, report.rows[0].transferability                 # doctest: +SKIP

The flow: rank the target's candidate sources (or take ``sources``), plan one run per
(source, strategy, train size, fold) plus the from-scratch baseline (stored with
``source == target``, the cats-scans convention), skip every run whose key is already in the
results store, execute the rest through an executor (local, or Ray), write each finished fold to
the store *on the driver* as soon as it arrives, and report measured AUC/accuracy/kappa and
transferability T = (AUC(S->T) - AUC(T)) / AUC(T) x 100 against the baseline, next to the
prediction, with the Spearman correlation between predicted and measured.

Source checkpoints come from :func:`pretrain`, cached by content (source fingerprint + backbone +
init + hyper-parameters): a second validation that needs the same source reuses the file.

Every failing run (bad data, NaN loss, missing checkpoint...) is reported with a one-line message
naming the run; the other runs go on and nothing already finished is lost.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import DsimError
from .records import DatasetCard, ImageSet, RunResult, RunSpec, _Record, file_digest, stable_hash
from .training import TrainConfig

__all__ = [
    "validate",
    "pretrain",
    "plan_runs",
    "execute_run",
    "ValidationReport",
    "SourceRow",
    "DEFAULT_BACKBONE",
    "DEFAULT_TRAIN",
    "DEFAULT_PRETRAIN",
    "checkpoint_dir",
    "plot_report",
]

DEFAULT_BACKBONE = "smallcnn"
#: fine-tuning defaults (cats-scans: Adam, class weights, early stopping; here at 28 px)
DEFAULT_TRAIN: dict[str, Any] = {"epochs": 30, "batch_size": 64, "lr": 1e-3, "patience": 6, "image_size": 28}
#: source pretraining defaults: longer, to reach (near) convergence as cats-scans did
DEFAULT_PRETRAIN: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 128,
    "lr": 2e-3,
    "patience": 5,
    "image_size": 28,
}
CHECKPOINT_FORMAT = 1
ProgressFn = Callable[[str, int, int], None]


def _noop(*_a) -> None:
    return None


# ------------------------------------------------------------------------------ data helpers
def _card(name_or_card) -> DatasetCard:
    if isinstance(name_or_card, DatasetCard):
        return name_or_card
    from .registry import get_registry

    return get_registry().resolve(str(name_or_card))


_DATA: dict[tuple, ImageSet] = {}


def _load(
    name: str, max_samples: int | None = None, seed: int = 0, inline: Mapping[str, ImageSet] | None = None
) -> ImageSet:
    """A dataset by name (or an in-memory one shipped with the job), checked against its card."""
    if inline and name in inline:
        data = inline[name]
        return data.subsample(max_samples, seed=seed) if max_samples else data
    key = (name, max_samples, seed)
    if key not in _DATA:
        from .data import load_dataset

        card = _card(name)
        data = load_dataset(card, max_samples=max_samples, seed=seed)
        _check_card(card, data)
        if len(_DATA) > 16:
            _DATA.clear()
        _DATA[key] = data
    return _DATA[key]


def _check_card(card: DatasetCard, data: ImageSet) -> None:
    found = len(np.unique(data.labels))
    if card.num_classes and (data.num_classes != card.num_classes or found > card.num_classes):
        raise DsimError(
            f"dataset {card.name!r}: its card says {card.num_classes} classes but the data "
            f"({data.source or 'loaded images'}) has {max(data.num_classes, found)}; fix the card's "
            "num_classes/class_names or the labels"
        )


def _source_names(source: str | Sequence[str]) -> list[str]:
    if isinstance(source, str):
        return [s for s in source.split("+") if s]
    return list(source)


def _is_checkpoint_path(name: str) -> bool:
    return Path(name).suffix.lower() in (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def _union(sets: Sequence[ImageSet], name: str) -> ImageSet:
    """The union of several sources as one dataset: class sets are concatenated (Jindal & Singh's
    aggregated source: 15 + 2 + 5 = 22 labels), images kept as they are (resized at training)."""
    if len(sets) == 1:
        return sets[0]
    from .tensors import to_tensor

    imgs, labels, names, off = [], [], [], 0
    for s in sets:
        x = to_tensor(s.images, size=28, channels=3, normalize=False)  # common shape for stacking
        imgs.append((x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
        labels.append(s.labels + off)
        names += [f"{s.name}:{c}" for c in s.class_names]
        off += s.num_classes
    return ImageSet(
        name=name, images=np.concatenate(imgs), labels=np.concatenate(labels), class_names=tuple(names)
    )


def _name_of(x: str, inline: dict) -> str:
    """A dataset's name; the user's own data at a path is loaded once here and shipped with the
    jobs under its card name (the file's stem), so that results are stored under that name."""
    if x in inline or x == "imagenet" or _is_checkpoint_path(x):
        return x
    from .registry import get_registry

    if x in get_registry():
        return get_registry().get(x).name
    if Path(x).expanduser().exists():
        from .data import load_dataset

        card = _card(x)
        if card.name not in inline:
            inline[card.name] = load_dataset(card)
        return card.name
    return x


# ------------------------------------------------------------------------------ pretraining
def checkpoint_dir() -> Path:
    from .cache import default_cache_dir

    return default_cache_dir() / "checkpoints"


def pretrain(
    source: str | Sequence[str] | ImageSet,
    backbone: str = DEFAULT_BACKBONE,
    *,
    init: str = "random",
    hyperparameters: Mapping[str, Any] | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: ProgressFn | None = None,
    exclude: Sequence[str] = (),
    force: bool = False,
) -> Path:
    """Train ``backbone`` on ``source`` (a name, ``a+b+c`` or a list for the union of several, or
    an :class:`ImageSet`) and return the checkpoint path (body weights, no classifier).

    The file is cached by content: the source fingerprint(s), backbone, ``init`` ("random" or
    "imagenet"), hyper-parameters, ``max_samples`` and seed. A second call returns it at once.
    """
    import torch

    from .training import build_classifier, fit

    cfg = TrainConfig.from_mapping({**DEFAULT_PRETRAIN, **dict(hyperparameters or {})})
    if isinstance(source, ImageSet):
        data, label = source, source.name
    else:
        names = [n for n in _source_names(source) if n not in set(exclude)]
        if not names:
            raise DsimError(f"pretrain: no source left in {source!r} after excluding {list(exclude)}")
        sets = [_load(n, max_samples=max_samples, seed=seed) for n in names]
        label = "+".join(s.name for s in sets)
        data = _union(sets, label)
    if len(np.unique(data.labels)) < 2:
        raise DsimError(f"pretrain on {label!r}: the source has one class; nothing to learn from")
    init_id = "random" if init == "random" else init
    if init == "imagenet":
        probe = build_classifier(
            backbone, weights="imagenet", num_classes=data.num_classes, in_chans=cfg.channels, seed=seed
        )
        init_id = str(getattr(probe, "dsim_weights_id", "imagenet"))
    key = stable_hash(
        {
            "kind": "pretrain",
            "format": CHECKPOINT_FORMAT,
            "source": data.fingerprint(),
            "backbone": backbone,
            "init": init_id,
            "train": cfg.to_dict(),
            "seed": seed,
        }
    )
    out = checkpoint_dir() / key[:2] / f"{key}.pt"
    if out.exists() and not force:
        return out
    pr = progress or _noop
    t0 = time.perf_counter()
    model = build_classifier(
        backbone, weights=init, num_classes=data.num_classes, in_chans=cfg.channels, seed=seed
    )
    tr, va = _holdout(data, seed)
    res = fit(
        model, tr, va, cfg, seed=seed, device=device, label=f"pretrain {backbone} on {label}", progress=pr
    )
    from .training import classification_metrics, predict_proba

    val_metrics = (
        classification_metrics(va.labels, predict_proba(model, va, cfg, device=device))
        if len(np.unique(va.labels)) > 1
        else {}
    )
    meta = {
        "source": label,
        "backbone": backbone,
        "init": init,
        "fingerprint": data.fingerprint(),
        "train": cfg.to_dict(),
        "seed": seed,
        "epochs_run": res.epochs_run,
        "best_epoch": res.best_epoch,
        "val": val_metrics,
        "seconds": time.perf_counter() - t0,
        "num_classes": data.num_classes,
        "images": len(data),
        "notes": res.notes,
    }
    state = {k: v.detach().cpu() for k, v in model.body.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"state_dict": state, "meta": meta}, tmp)
        os.replace(tmp, out)  # atomic: a killed pretraining never leaves half a checkpoint
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    import json

    out.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str))
    return out


def _holdout(data: ImageSet, seed: int, frac: float = 0.1) -> tuple[ImageSet, ImageSet]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(data))
    counts = np.bincount(data.labels)
    strat = data.labels if counts[counts > 0].min() >= 2 else None
    n_val = max(int(round(frac * len(data))), data.num_classes)
    tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=strat)
    return data.take(np.sort(tr)), data.take(np.sort(va))


def _file_hash(path: Path) -> str:
    return file_digest(path)


# ------------------------------------------------------------------------------ planning
def _strategies() -> dict[str, Any]:
    from .plugins import named

    return named("dsim_register_strategies", "strategy")


def _strategy(name: str):
    from .plugins import named

    return named("dsim_register_strategies", "strategy", name)


def plan_runs(
    target: str,
    sources: Sequence[str],
    *,
    strategies: Sequence[str] = ("finetune",),
    baseline: str | None = "scratch",
    backbone: str = DEFAULT_BACKBONE,
    folds: int = 5,
    seed: int = 0,
    train_sizes: Sequence[int | None] = (None,),
    hyperparameters: Mapping[str, Any] | None = None,
    pretrain_hyperparameters: Mapping[str, Any] | None = None,
    target_max: int | None = None,
    source_max: int | None = None,
    fingerprints: Mapping[str, str] | None = None,
    fingerprint_of: Callable[[str, str], str] | None = None,
) -> list[RunSpec]:
    """One :class:`RunSpec` per (source, strategy, train size, fold), baseline first.

    ``fingerprints`` maps dataset names to content fingerprints; ``fingerprint_of(strategy,
    source)`` overrides it for sources a strategy resolves itself (aggregated domains)."""
    hp = {**DEFAULT_TRAIN, **dict(hyperparameters or {})}
    php = {**DEFAULT_PRETRAIN, **dict(pretrain_hyperparameters or {})}
    fps = dict(fingerprints or {})
    specs: list[RunSpec] = []
    for n in train_sizes:
        base_hp = {**hp, "train_size": n, "target_max": target_max}
        if baseline:
            for f in range(folds):
                specs.append(
                    RunSpec(
                        source=target,
                        target=target,
                        backbone=backbone,
                        strategy=baseline,
                        fold=f,
                        seed=seed,
                        folds=folds,
                        hyperparameters=base_hp,
                        fingerprints={"target": fps.get(target, "")},
                    )
                )
        for strat in strategies:
            uses_source = getattr(_strategy(strat), "uses_source", True)
            for s in sources if uses_source else [target]:
                run_hp = dict(base_hp)
                if uses_source:
                    run_hp.update({"pretrain": php, "source_max": source_max})
                for f in range(folds):
                    specs.append(
                        RunSpec(
                            source=s,
                            target=target,
                            backbone=backbone,
                            strategy=strat,
                            fold=f,
                            seed=seed,
                            folds=folds,
                            hyperparameters=run_hp,
                            fingerprints={
                                "target": fps.get(target, ""),
                                **(
                                    {"source": fingerprint_of(strat, s) if fingerprint_of else fps.get(s, "")}
                                    if uses_source
                                    else {}
                                ),
                            },
                        )
                    )
    return list({s.key: s for s in specs}.values())


# ------------------------------------------------------------------------------ one run
def execute_run(
    spec: RunSpec,
    *,
    device: str = "auto",
    inline: Mapping[str, ImageSet] | None = None,
    progress: ProgressFn | None = None,
) -> RunResult:
    """Run one fold of one (source, strategy) on the target; raises :class:`DsimError` naming the
    run on any failure. Used by every executor (in the driver, or in a Ray worker)."""
    from .interfaces import Context, FoldData

    t0 = time.perf_counter()
    label = spec.label
    try:
        strategy = _strategy(spec.strategy)
        hp = dict(spec.hyperparameters)
        target = _load(spec.target, max_samples=hp.get("target_max"), seed=spec.seed, inline=inline)
        classes = np.unique(target.labels)
        if len(classes) < 2:
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
        for part, ds in (("test", test), ("training", train)):
            missing = [target.class_names[c] for c in classes if c not in set(ds.labels.tolist())]
            if part == "test" and len(missing) >= len(classes) - 1:
                raise DsimError(
                    f"fold {spec.fold}: the test split has no example of class(es) {', '.join(missing)}; use fewer folds or more images"
                )
            if part == "training" and missing:
                raise DsimError(
                    f"fold {spec.fold}: the training split has no example of class(es) {', '.join(missing)}; use a larger --train-sizes value"
                )
        t_load = time.perf_counter() - t0
        ckpt, ckpt_hash, t_pre = None, None, 0.0
        if getattr(strategy, "uses_source", True) and spec.source != spec.target:
            t1 = time.perf_counter()
            ckpt = _source_checkpoint(strategy, spec, device=device, inline=inline)
            t_pre = time.perf_counter() - t1
            if ckpt not in (None, "imagenet", "random"):
                ckpt_hash = (
                    Path(ckpt).stem
                    if Path(ckpt).parent.parent == checkpoint_dir()
                    else _file_hash(Path(ckpt))
                )
        ctx = Context(seed=spec.seed, device=device, progress=progress or _noop, options={"label": label})
        t2 = time.perf_counter()
        metrics = dict(
            strategy.run(spec, FoldData(train=train, val=val, test=test, source_checkpoint=ckpt), ctx)
        )
        t_train = time.perf_counter() - t2
    except DsimError as exc:
        msg = str(exc)
        raise DsimError(msg if msg.startswith(label) else f"{label}: {msg}") from None
    except Exception as exc:
        raise DsimError(f"{label}: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
    notes = tuple(metrics.pop("notes", ()) or ()) if isinstance(metrics.get("notes"), (list, tuple)) else ()
    metrics = {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating, np.integer))
    }
    metrics.update({"n_train": len(train), "n_val": len(val), "n_test": len(test)})
    return RunResult(
        spec=spec,
        metrics=metrics,
        checkpoint=ckpt_hash,
        notes=notes,
        timings={
            "load_s": t_load,
            "pretrain_s": t_pre,
            "train_s": t_train,
            "total_s": time.perf_counter() - t0,
        },
    )


def _source_checkpoint(strategy, spec: RunSpec, *, device, inline) -> str:
    """The checkpoint a run transfers from: ``imagenet``, a checkpoint file given as the source,
    or a cached :func:`pretrain` of the source (built now if needed)."""
    hp = dict(spec.hyperparameters)
    src = spec.source
    if src == "imagenet":
        return "imagenet"
    if _is_checkpoint_path(src):
        if not Path(src).expanduser().is_file():
            raise DsimError(f"source checkpoint {src!r} not found")
        return str(Path(src).expanduser())
    init = getattr(strategy, "pretrain_init", "random")
    if hasattr(strategy, "pretrain_sources"):
        src = strategy.pretrain_sources(src, spec.target)
    names = _source_names(src)
    data: Any = names
    # a "seed" among the pretraining hyper-parameters pins the source checkpoint across run seeds
    pseed = int((hp.get("pretrain") or {}).get("seed", spec.seed))
    if inline and all(n in inline for n in names):
        sets = [inline[n].subsample(hp.get("source_max"), seed=pseed) for n in names]
        data = _union(sets, "+".join(names)) if len(sets) > 1 else sets[0]
    return str(
        pretrain(
            data,
            spec.backbone,
            init=init,
            hyperparameters=hp.get("pretrain"),
            max_samples=hp.get("source_max"),
            seed=pseed,
            device=device,
            exclude=(spec.target,),
        )
    )


# ------------------------------------------------------------------------------ report
@dataclass(frozen=True)
class SourceRow(_Record):
    """Measured (and predicted) transfer of one source under one strategy and train size."""

    source: str
    strategy: str
    train_size: int | None
    folds: int
    auc: float | None
    auc_std: float | None
    accuracy: float | None
    kappa: float | None
    transferability: float | None  # T vs the scratch baseline, mean over folds (%)
    transferability_std: float | None
    predicted: float | None = None  # the ranking's score for this source
    predicted_status: str | None = None
    predicted_rank: int | None = None
    failed: int = 0


@dataclass(frozen=True)
class ValidationReport(_Record):
    target: str
    backbone: str
    setup: str
    rows: tuple[SourceRow, ...]
    baseline_auc: float | None
    spearman: float | None  # predicted vs measured transferability over sources
    spearman_n: int
    runs_total: int
    runs_done: int
    runs_skipped: int  # already in the store
    failures: tuple[Mapping[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    store: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["rows"] = [r.to_dict() for r in self.rows]
        return d


def _summarise(
    target: str,
    specs: Sequence[RunSpec],
    results: Mapping[str, RunResult],
    failures: Sequence[Mapping[str, str]],
    ranking,
    baseline: str | None,
) -> tuple[list[SourceRow], float | None]:
    from .metrics import transferability

    groups: dict[tuple, list[RunSpec]] = {}
    for s in specs:
        groups.setdefault((s.source, s.strategy, s.hyperparameters.get("train_size")), []).append(s)
    base: dict[tuple, float] = {}  # (train_size, fold) -> scratch AUC
    for s in specs:
        if s.strategy == baseline and s.key in results:
            base[(s.hyperparameters.get("train_size"), s.fold)] = results[s.key].metrics["auc"]
    pred = {r.source: r for r in ranking.rows} if ranking is not None else {}
    rows = []
    base_aucs = [v for (n, _f), v in base.items()]
    for (src, strat, n), ss in groups.items():
        done = [results[s.key] for s in ss if s.key in results]
        aucs = [r.metrics["auc"] for r in done]
        ts = [
            transferability(r.metrics["auc"], base[(n, r.spec.fold)])
            for r in done
            if base.get((n, r.spec.fold))
        ]
        p = pred.get(src)

        def mean(xs):
            return float(np.mean(xs)) if xs else None

        def std(xs):
            return float(np.std(xs, ddof=1)) if len(xs) > 1 else (0.0 if xs else None)

        rows.append(
            SourceRow(
                source=src,
                strategy=strat,
                train_size=n,
                folds=len(done),
                auc=mean(aucs),
                auc_std=std(aucs),
                accuracy=mean(
                    [r.metrics.get("accuracy") for r in done if r.metrics.get("accuracy") is not None]
                ),
                kappa=mean([r.metrics.get("kappa") for r in done if r.metrics.get("kappa") is not None]),
                transferability=mean(ts),
                transferability_std=std(ts),
                predicted=None if p is None else float(p.score),
                predicted_status=None if p is None else p.status,
                predicted_rank=None if p is None else int(p.rank),
                failed=len(ss) - len(done),
            )
        )
    rows.sort(key=lambda r: (r.train_size or 0, -(r.auc if r.auc is not None else -1)))
    return rows, (float(np.mean(base_aucs)) if base_aucs else None)


def _spearman(rows: Sequence[SourceRow]) -> tuple[float | None, int]:
    pts = [
        (r.predicted, r.transferability)
        for r in rows
        if r.predicted is not None and r.transferability is not None
    ]
    if len(pts) < 3:
        return None, len(pts)
    from scipy.stats import spearmanr

    rho = spearmanr([a for a, _ in pts], [b for _, b in pts]).statistic
    return (None if rho is None or np.isnan(rho) else float(rho)), len(pts)


def plot_report(report: ValidationReport, path: str | Path) -> Path:
    """A PNG of the measured AUC per source (mean ± std over folds), baseline dashed."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = [r for r in report.rows if r.auc is not None]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 2), 3.6), dpi=120)
    labels = [f"{r.source}\n{r.strategy}" + (f"\nn={r.train_size}" if r.train_size else "") for r in rows]
    colors = ["#999999" if r.source == report.target else "#3b75af" for r in rows]
    ax.bar(
        range(len(rows)), [r.auc for r in rows], yerr=[r.auc_std or 0 for r in rows], color=colors, capsize=4
    )
    if report.baseline_auc is not None:
        ax.axhline(report.baseline_auc, ls="--", color="#555555", lw=1, label="from scratch")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=7)
    lo = min([r.auc - (r.auc_std or 0) for r in rows] + [0.5])
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_ylabel("test AUC (mean ± std over folds)")
    title = f"dsim validate: target {report.target} ({report.backbone})"
    if report.spearman is not None:
        title += f"\nSpearman(predicted, measured T) = {report.spearman:.2f} over {report.spearman_n} sources"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ the API
def validate(
    target: str | ImageSet,
    top: int = 3,
    sources: Sequence[str] | str | None = None,
    strategy: str | Sequence[str] = "finetune",
    backbone: str = DEFAULT_BACKBONE,
    folds: int = 5,
    train_sizes: Sequence[int] | str | None = None,
    executor: str | Any = "local",
    *,
    address: str | None = None,
    seed: int = 0,
    hyperparameters: Mapping[str, Any] | None = None,
    pretrain_hyperparameters: Mapping[str, Any] | None = None,
    target_max: int | None = None,
    source_max: int | None = None,
    baseline: str | None = "scratch",
    store: Any = None,
    device: str = "auto",
    rank_options: Mapping[str, Any] | None = None,
    predict: bool = True,
    inline: Mapping[str, ImageSet] | None = None,
    progress: ProgressFn | None = None,
    run_progress: ProgressFn | None = None,
    on_event: Callable[[str, str], None] | None = None,
) -> ValidationReport:
    """Validate the ranking of ``target``'s sources with real transfer runs; see module docs.

    ``sources``: explicit sources (names, ``a+b`` unions, ``imagenet`` or checkpoint files);
    default: the ``top`` best-ranked sources that can be trained here. ``train_sizes``: data-size
    curve (Romero et al.), training images per run. ``target_max``/``source_max``: seeded
    stratified caps on the images used. ``store``: a :class:`ResultsStore` or a path.
    ``inline``: in-memory datasets by name (tests, notebooks). ``predict=False`` skips the
    ranking (no predicted column, no Spearman).
    """
    from .executors import get_executor
    from .plugins import notify
    from .store import ResultsStore, setup_of

    t0 = time.perf_counter()
    say = on_event or _noop
    inline = dict(inline or {})
    if isinstance(target, ImageSet):
        inline[target.name] = target
        tname = target.name
    else:
        tname = _name_of(str(target), inline)
    strategies = [strategy] if isinstance(strategy, str) else list(strategy)
    strategies = [s for x in strategies for s in x.split(",") if s]
    known = _strategies()
    for s in strategies + ([baseline] if baseline else []):
        if s not in known:
            from .errors import UnknownNameError

            raise UnknownNameError("strategy", s, known)
    if isinstance(train_sizes, str):
        train_sizes = [int(x) for x in train_sizes.split(",") if x.strip()]
    sizes: list[int | None] = list(train_sizes) if train_sizes else [None]
    if folds < 2:
        raise DsimError(f"validate {tname!r}: folds must be at least 2, got {folds}")

    # the target's data (its fingerprint enters every run key)
    tdata = _load(tname, max_samples=target_max, seed=seed, inline=inline)
    notes: list[str] = []
    ranking = None
    if isinstance(sources, str):
        sources = [s.strip() for s in sources.split(",") if s.strip()]
    if predict and (not isinstance(target, ImageSet) or sources is None):
        try:
            from .api import rank

            ro = dict(rank_options or {})
            ranking = rank(
                tname if not isinstance(target, ImageSet) else target.name,
                sources=[s for s in sources if not _is_checkpoint_path(s)] if sources else None,
                seed=seed,
                **ro,
            )
        except DsimError as exc:
            notes.append(f"no prediction to compare with: ranking failed: {exc}")
    if sources is None:
        if ranking is None:
            raise DsimError(f"validate {tname!r}: no sources given and the ranking failed; pass --sources")
        from .data import data_missing

        sources = []
        for r in ranking.rows:
            card = _card(r.source)
            why = None if r.source == "imagenet" else data_missing(card)
            if why:
                notes.append(f"ranked source {r.source!r} skipped: {why}")
                continue
            sources.append(r.source)
            if len(sources) >= top:
                break
    sources = [
        "+".join(_name_of(n, inline) for n in _source_names(s))
        if not _is_checkpoint_path(s) and s != "imagenet"
        else s
        for s in sources
    ]
    sources = [s for s in sources if s != tname]
    fps = {tname: tdata.fingerprint()}
    failures: list[dict[str, str]] = []

    def fingerprint_of(strat: str, s: str) -> str:
        st_obj = known[strat]
        if s == "imagenet":
            return "imagenet"
        if _is_checkpoint_path(s):
            p = Path(s).expanduser()
            return _file_hash(p) if p.is_file() else "missing:" + s
        key = s
        try:
            if hasattr(st_obj, "pretrain_sources"):
                key = st_obj.pretrain_sources(s, tname)
            if key not in fps:
                fps[key] = "+".join(
                    _load(n, max_samples=source_max, seed=seed, inline=inline).fingerprint()
                    for n in _source_names(key)
                )
        except DsimError as exc:
            fps[key] = "unavailable"
            notes.append(f"source {s!r} ({strat}): {exc}")
        return fps[key]

    specs = plan_runs(
        tname,
        sources,
        strategies=strategies,
        baseline=baseline,
        backbone=backbone,
        folds=folds,
        seed=seed,
        train_sizes=sizes,
        hyperparameters=hyperparameters,
        pretrain_hyperparameters=pretrain_hyperparameters,
        target_max=target_max,
        source_max=source_max,
        fingerprints=fps,
        fingerprint_of=fingerprint_of,
    )
    st = store if isinstance(store, ResultsStore) else ResultsStore(store)
    finished = st.keys()
    results: dict[str, RunResult] = {}
    todo = []
    for s in specs:
        if s.key in finished:
            r = st.get(s.key)
            if r is not None:
                results[s.key] = r
                continue
        todo.append(s)
    skipped = len(specs) - len(todo)
    if skipped:
        say("info", f"{skipped} of {len(specs)} runs already in the results store ({st.path}); skipped")
    pr = progress or _noop
    done_count = [0]
    pr("runs", 0, len(todo))

    def on_result(spec: RunSpec, result: RunResult | None, error: str | None) -> None:
        done_count[0] += 1
        if result is not None:
            st.put(result)  # on the driver, as soon as the fold is back
            results[spec.key] = result
            for n in result.notes:
                say("warning", n)
            notify("dsim_run_finished", result=result)
            say("done", f"{spec.label}: AUC {result.metrics.get('auc', float('nan')):.3f}")
        else:
            st.put_failure(spec, error or "failed")
            failures.append({"run": spec.label, "error": error or "failed"})
            notify("dsim_run_failed", spec=spec, error=error)
            say("error", error or spec.label)
        pr("runs", done_count[0], len(todo))

    ex = get_executor(executor, address=address)
    for s in todo:
        notify("dsim_run_started", spec=s)
    ex.run(todo, on_result, device=device, inline=inline, run_progress=run_progress)
    rows, base_auc = _summarise(tname, specs, results, failures, ranking, baseline)
    rho, n_rho = _spearman([r for r in rows if r.source != tname])
    if ranking is not None and n_rho < 3:
        notes.append(f"Spearman needs 3 or more sources with a prediction and a measurement; have {n_rho}")
    return ValidationReport(
        target=tname,
        backbone=backbone,
        setup=setup_of(specs[0]) if specs else "",
        rows=tuple(rows),
        baseline_auc=base_auc,
        spearman=rho,
        spearman_n=n_rho,
        runs_total=len(specs),
        runs_done=len(todo) - len(failures),
        runs_skipped=skipped,
        failures=tuple(failures),
        notes=tuple(notes),
        store=str(st.path),
        seconds=time.perf_counter() - t0,
    )

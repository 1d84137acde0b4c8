"""Source pretraining: one :class:`PretrainJob` per distinct checkpoint, and its content-keyed cache.

A job's key hashes the training data's fingerprint, backbone, init, hyper-parameters and seed;
its checkpoint lives at ``$DSIM_CACHE_DIR/checkpoints/<key>.pt``, a lock file beside it makes
processes sharing the cache train it once, and :class:`Checkpoint` carries it to a worker.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dsim.data.loading import load_checked, source_names, union
from dsim.kernel.cache import default_cache_dir
from dsim.kernel.defaults import DEFAULT_BACKBONE, DEFAULT_PRETRAIN
from dsim.kernel.errors import DsimError
from dsim.kernel.files import atomic_write
from dsim.kernel.multilabel import iterative_split
from dsim.kernel.records import ImageSet, _Record, file_digest, stable_hash
from dsim.kernel.tracking import tracked_pretrain
from dsim.networks.checks import check_pretrain
from dsim.networks.training import TrainConfig, build_classifier, classification_metrics, fit, predict_proba

__all__ = [
    "CHECKPOINT_FORMAT",
    "PretrainJob",
    "Checkpoint",
    "CheckpointLock",
    "checkpoint_dir",
    "plan_job",
    "job_data",
    "train_checkpoint",
    "save_checkpoint",
    "build",
    "pretrain",
]

CHECKPOINT_FORMAT = 1
ProgressFn = Callable[[str, int, int], None]


def checkpoint_dir() -> Path:
    """Where checkpoints are cached on this machine: ``<cache dir>/checkpoints``."""

    return default_cache_dir() / "checkpoints"


@dataclass(frozen=True)
class PretrainJob(_Record):
    """One source pretraining: everything its checkpoint depends on, plus how to rebuild its data.

    ``fingerprint`` (of the training data, a union for several sources), ``backbone``, ``init_id``
    (the starting weights' id), ``train`` (every hyper-parameter) and ``seed`` make the key; the
    other fields say where the data comes from (``sources`` capped at ``max_samples``)."""

    sources: tuple[str, ...]
    backbone: str
    init: str
    init_id: str
    train: Mapping[str, Any]
    seed: int
    fingerprint: str
    max_samples: int | None = None
    label: str = ""

    @property
    def key(self) -> str:
        return stable_hash(
            {
                "kind": "pretrain",
                "format": CHECKPOINT_FORMAT,
                "source": self.fingerprint,
                "backbone": self.backbone,
                "init": self.init_id,
                "train": dict(self.train),
                "seed": self.seed,
            }
        )

    @property
    def path(self) -> Path:
        """The checkpoint's place in this machine's cache."""
        key = self.key
        return checkpoint_dir() / key[:2] / f"{key}.pt"

    @property
    def data_key(self) -> tuple:
        """Jobs with equal data keys train on the same images (shipped to workers once)."""
        return (tuple(self.sources), self.max_samples, self.seed)

    def describe(self) -> str:
        return f"{self.label or '+'.join(self.sources)} on {self.backbone} from {self.init} init"


@dataclass(frozen=True)
class Checkpoint:
    """The weights a run transfers from: a content ``id`` and a local ``path``, or the file's
    bytes (``blob``) to travel to a machine that does not have it (a Ray worker)."""

    id: str  # the pretraining key, a user file's sha256, or "imagenet"
    path: str | None = None
    blob: bytes | None = field(default=None, repr=False)
    suffix: str = ".pt"
    #: a weights name the backbone plugin resolves where the run runs ("imagenet", "random"):
    #: a checkpoint card's network without a file
    weights: str | None = None

    @classmethod
    def of_file(cls, path: str | Path, id: str | None = None) -> Checkpoint:
        p = Path(path).expanduser()
        return cls(id=id or file_digest(p), path=str(p), suffix=p.suffix or ".pt")

    def shippable(self) -> Checkpoint:
        """This checkpoint with its bytes (read from ``path``), ready for the object store."""
        if self.blob is not None or self.path is None or self.id == "imagenet":
            return self
        return Checkpoint(id=self.id, path=None, blob=Path(self.path).read_bytes(), suffix=self.suffix)

    def local_path(self) -> str:
        """A path to the weights on this machine; bytes that travelled are written once into the
        local cache under their content id."""
        if self.id == "imagenet":
            return "imagenet"
        if self.weights is not None:
            return self.weights
        if self.path is not None and Path(self.path).is_file():
            return self.path
        if self.blob is None:
            raise DsimError(f"checkpoint {self.id[:12]} is not on this machine ({self.path})")
        out = checkpoint_dir() / self.id[:2] / f"{self.id}{self.suffix}"
        if not out.exists():
            atomic_write(out, self.blob)
        return str(out)


# ------------------------------------------------------------------------------ planning a job
def plan_job(
    source: str | Sequence[str] | ImageSet,
    backbone: str = DEFAULT_BACKBONE,
    *,
    init: str = "random",
    hyperparameters: Mapping[str, Any] | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    exclude: Sequence[str] = (),
    inline: Mapping[str, ImageSet] | None = None,
) -> tuple[PretrainJob, ImageSet]:
    """The job that pretrains ``backbone`` on ``source`` (``a+b`` or a list: the union), and its
    training data. Raises :class:`DsimError` when no data is left or the source has one class."""

    cfg = TrainConfig.from_mapping({**DEFAULT_PRETRAIN, **dict(hyperparameters or {})})
    if isinstance(source, ImageSet):
        data, label, names = source, source.name, (source.name,)
    else:
        names = tuple(n for n in source_names(source) if n not in set(exclude))
        if not names:
            raise DsimError(f"pretrain: no source left in {source!r} after excluding {list(exclude)}")
        sets = [load_checked(n, max_samples=max_samples, seed=seed, inline=inline) for n in names]
        label = "+".join(s.name for s in sets)
        data = union(sets, label)
    if not _learnable(data):
        raise DsimError(f"pretrain on {label!r}: the source has one class; nothing to learn from")
    init_id = "random" if init == "random" else init
    if init == "imagenet":
        probe = build_classifier(
            backbone, weights="imagenet", num_classes=data.num_classes, in_chans=cfg.channels, seed=seed
        )
        init_id = str(getattr(probe, "dsim_weights_id", "imagenet"))
    job = PretrainJob(
        sources=tuple(names),
        backbone=backbone,
        init=init,
        init_id=init_id,
        train=cfg.to_dict(),
        seed=seed,
        fingerprint=data.fingerprint(),
        max_samples=max_samples,
        label=label,
    )
    return job, data


def job_data(job: PretrainJob, inline: Mapping[str, ImageSet] | None = None) -> ImageSet:
    """Rebuild a job's training data from its source names (a worker reading shared storage)."""
    sets = [load_checked(n, max_samples=job.max_samples, seed=job.seed, inline=inline) for n in job.sources]
    data = union(sets, job.label or "+".join(job.sources))
    if data.fingerprint() != job.fingerprint:
        raise DsimError(
            f"pretrain on {job.label!r}: the data read here differs from the driver's "
            "(another copy of the dataset?); ship the data instead (--data-placement ship)"
        )
    return data


# ------------------------------------------------------------------------------ training
def train_checkpoint(
    job: PretrainJob, data: ImageSet, *, device: str = "auto", progress: ProgressFn | None = None
) -> tuple[bytes, dict[str, Any]]:
    """Train the job's backbone on ``data``; returns the checkpoint file's bytes (body weights and
    metadata, no classifier) and the metadata. No file is written."""
    import torch

    cfg = TrainConfig.from_mapping(job.train)
    t0 = time.perf_counter()
    model = build_classifier(
        job.backbone, weights=job.init, num_classes=data.num_classes, in_chans=cfg.channels, seed=job.seed
    )
    tr, va = _holdout(data, job.seed)
    res = fit(
        model,
        tr,
        va,
        cfg,
        seed=job.seed,
        device=device,
        label=f"pretrain {job.backbone} on {job.label}",
        progress=progress,
    )
    val_metrics = (
        classification_metrics(va.labels, predict_proba(model, va, cfg, device=device))
        if _learnable(va)
        else {}
    )
    meta = {
        "source": job.label,
        "backbone": job.backbone,
        "init": job.init,
        "fingerprint": job.fingerprint,
        "train": dict(job.train),
        "seed": job.seed,
        "epochs_run": res.epochs_run,
        "best_epoch": res.best_epoch,
        "history": [dict(h) for h in res.history],
        "val": val_metrics,
        "seconds": time.perf_counter() - t0,
        "num_classes": data.num_classes,
        "images": len(data),
        "notes": res.notes,
        "host": socket.gethostname(),
    }
    state = {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"state_dict": state, "meta": meta}, buf)
    return buf.getvalue(), meta


def save_checkpoint(job: PretrainJob, blob: bytes, meta: Mapping[str, Any]) -> Path:
    """Write a trained checkpoint into this machine's cache (atomically) with its JSON metadata."""
    out = job.path
    atomic_write(out, blob)
    out.with_suffix(".json").write_text(json.dumps(dict(meta), indent=2, default=str))
    return out


def _learnable(data: ImageSet) -> bool:
    """Two classes present; for a multi-label set, a label with positive and negative images."""
    if data.multilabel:
        counts = data.class_counts()
        return bool(((counts > 0) & (counts < len(data))).any())
    return len(np.unique(data.labels)) >= 2


def _holdout(data: ImageSet, seed: int, frac: float = 0.1) -> tuple[ImageSet, ImageSet]:
    """A stratified hold-out for early stopping (10 % of the source; iterative stratification
    for a multi-label source)."""
    from sklearn.model_selection import train_test_split

    if data.multilabel:
        n_val = min(max(int(round(frac * len(data))), 1), len(data) - 1)
        part = iterative_split(data.labels, [n_val, len(data) - n_val], seed)
        return data.take(np.flatnonzero(part == 1)), data.take(np.flatnonzero(part == 0))
    idx = np.arange(len(data))
    counts = np.bincount(data.labels)
    strat = data.labels if counts[counts > 0].min() >= 2 else None
    n_val = max(int(round(frac * len(data))), data.num_classes)
    tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=strat)
    return data.take(np.sort(tr)), data.take(np.sort(va))


# ------------------------------------------------------------------------------ one trainer per key
#: a lock whose heartbeat is older than this is taken over (its holder died on another host)
STALE_AFTER_S = 120.0


class CheckpointLock:
    """An atomic claim on training one checkpoint, for processes that share a cache directory.

    The claim is a lock file created with ``O_EXCL`` beside the checkpoint, holding the owner's
    host and pid; a heartbeat thread refreshes its time while the owner trains. A lock whose owner
    is dead (same host) or whose heartbeat is older than ``stale_after`` seconds is stale and
    taken over, one taker at a time (a second ``O_EXCL`` file guards the take-over).
    """

    def __init__(self, checkpoint: Path, *, stale_after: float = STALE_AFTER_S):
        self.path = Path(checkpoint).with_suffix(".lock")
        self.stale_after = float(stale_after)
        self.token = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}"
        self._stop: threading.Event | None = None

    def acquire(self) -> bool:
        """Claim it now; False when a live owner holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._take_over_if_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.token)
            self._start_heartbeat()
            return True
        return False

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        if self._read() == self.token:
            self.path.unlink(missing_ok=True)

    def holder(self) -> str:
        """``host pid`` of the current owner (for messages), or "" when free."""
        return " ".join(self._read().split()[:2])

    def _read(self) -> str:
        try:
            return self.path.read_text()
        except (FileNotFoundError, OSError):
            return ""

    def is_stale(self) -> bool:
        text = self._read()
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        parts = text.split()
        if len(parts) >= 2 and parts[0] == socket.gethostname() and parts[1].isdigit():
            if not _pid_alive(int(parts[1])):
                return True
        return age > self.stale_after

    def _take_over_if_stale(self) -> bool:
        guard = self.path.with_suffix(".lock-takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:  # a taker that died within the few lines below
                if time.time() - guard.stat().st_mtime > 30:
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return False
        os.close(fd)
        try:
            if not self.is_stale():
                return False
            self.path.unlink(missing_ok=True)
            return True
        finally:
            guard.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        stop = threading.Event()
        self._stop = stop
        every = max(0.05, self.stale_after / 4)

        def beat() -> None:
            while not stop.wait(every):
                if self._read() != self.token:
                    return
                try:
                    os.utime(self.path)
                except FileNotFoundError:
                    return

        threading.Thread(target=beat, name="dsim-lock-heartbeat", daemon=True).start()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(
    job: PretrainJob,
    *,
    force: bool = False,
    wait: bool = True,
    poll_s: float = 0.25,
    on_wait: Callable[[str], None] | None = None,
) -> CheckpointLock | None:
    """The lock on training ``job`` here, or None when its checkpoint is (now) in the cache.

    A live owner elsewhere is waited for (``wait``) until it finishes or its lock goes stale;
    with ``wait=False`` a held lock returns None at once and :meth:`CheckpointLock.holder` says
    who holds it (the caller checks again later)."""
    out = job.path
    lock = CheckpointLock(out)
    said = False
    while True:
        if out.exists() and not force:
            return None
        if lock.acquire():
            if out.exists() and not force:  # finished by the owner we waited for
                lock.release()
                return None
            return lock
        if not wait:
            return None
        if on_wait is not None and not said:
            on_wait(
                f"waiting for {lock.holder() or 'another process'} to finish pretraining {job.describe()}"
            )
            said = True
        time.sleep(poll_s)
        if force and not lock.path.exists():
            force = False  # the other owner just trained it: use theirs


def build(
    job: PretrainJob,
    data: ImageSet,
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
    force: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> Path:
    """The job's checkpoint in this machine's cache, trained here unless cached or being trained
    by another process (then waited for)."""
    lock = claim(job, force=force, on_wait=on_wait)
    if lock is None:
        return job.path
    try:
        blob, meta = train_checkpoint(job, data, device=device, progress=progress)
        return save_checkpoint(job, blob, meta)
    finally:
        lock.release()


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
    inline: Mapping[str, ImageSet] | None = None,
    track: str | Sequence[str] | None = None,
) -> Path:
    """Train ``backbone`` on ``source`` (a name, ``a+b+c`` or a list for the union of several, or
    an :class:`ImageSet`) and return the checkpoint path (body weights, no classifier).

    The file is cached by content: the source fingerprint(s), backbone, ``init`` ("random" or
    "imagenet"), hyper-parameters, ``max_samples`` and seed. A second call returns it at once;
    a call while another process trains the same checkpoint waits for it. ``track``: experiment
    trackers to log the checkpoint to, e.g. ``"mlflow"`` (:mod:`dsim.kernel.tracking`).
    """
    check_pretrain(
        source if not isinstance(source, ImageSet) else source.name,
        backbone,
        init=init,
        hyperparameters=hyperparameters,
        max_samples=max_samples,
        seed=seed,
    )
    if track:
        args = dict(init=init, hyperparameters=hyperparameters, max_samples=max_samples, seed=seed)
        args.update(device=device, progress=progress, exclude=exclude, force=force, inline=inline)
        return tracked_pretrain(pretrain, track, source, backbone, **args)
    job, data = plan_job(
        source,
        backbone,
        init=init,
        hyperparameters=hyperparameters,
        max_samples=max_samples,
        seed=seed,
        exclude=exclude,
        inline=inline,
    )
    return build(job, data, device=device, progress=progress, force=force)

"""dsim's training and evaluation engine: the one train loop every deep strategy uses.

:class:`TrainConfig` (hyper-parameters, all in the run key), :func:`build_classifier` (a backbone
plugin's network plus a linear head), :func:`fit` (early stopping, class weights, AMP on CUDA,
OOM back-off), :func:`predict_proba` and :func:`classification_metrics`. docs/validate.md.

A multi-label target (labels an ``(N, L)`` 0/1 matrix) trains the same network with one sigmoid
output per label: binary cross-entropy with logits, per-label ``pos_weight`` (negatives /
positives) as its class weights; probabilities are per-label sigmoids, and the metrics the mean
per-label AUC (:func:`classification_metrics`).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dsim.data.tensors import to_tensor
from dsim.kernel.catalog import backbone_spec, create_backbone
from dsim.kernel.errors import DsimError
from dsim.kernel.metrics import auc_weighted_ovr, label_aucs
from dsim.kernel.plugins import notify
from dsim.kernel.records import ImageSet, is_ordinal

__all__ = [
    "TrainConfig",
    "TrainingError",
    "FitResult",
    "build_classifier",
    "layer_groups",
    "fit",
    "predict_proba",
    "classification_metrics",
    "is_ordinal",
    "fold_metrics",
    "prepare",
    "train_and_evaluate",
]


class TrainingError(DsimError):
    """A run that cannot train: NaN loss, out of memory even at batch size 1, bad fold."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training (pretraining or fine-tuning). All enter the run key."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "plateau"  # "constant" | "plateau" (x0.5 on a val-loss plateau) | "one-cycle"
    patience: int = 6  # early stopping: epochs without a better val loss
    min_epochs: int = 3
    class_weights: bool = True
    augment: bool = True
    image_size: int = 28
    channels: int = 3
    label_smoothing: float = 0.0

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any] | None) -> TrainConfig:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in dict(d or {}).items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    epochs_run: int = 0
    batch_size: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def classification_metrics(
    labels, probs, *, ordinal: bool = False, class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """AUC (weighted one-vs-rest), accuracy and Cohen's kappa (quadratic when ``ordinal``).

    Multi-label ``labels`` (an ``(N, L)`` 0/1 matrix, ``probs`` the per-label probabilities):
    ``auc`` is the mean per-label ROC AUC over the labels with positive and negative images
    (macro, as Romero et al. and MedMNIST report it), each label's AUC is ``auc:<name>``
    (``class_names``, else its column number), ``labels_scored`` says how many were scored;
    ``accuracy`` is the mean per-label accuracy at the threshold 0.5; kappa is not defined (absent).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if labels.ndim == 2:
        return _multilabel_metrics(labels, probs, class_names)
    from sklearn.metrics import accuracy_score, cohen_kappa_score

    pred = probs.argmax(axis=1)
    return {
        "auc": auc_weighted_ovr(labels, probs),
        "accuracy": float(accuracy_score(labels, pred)),
        "kappa": float(cohen_kappa_score(labels, pred, weights="quadratic" if ordinal else None)),
    }


def _multilabel_metrics(labels, probs, class_names) -> dict[str, float]:
    if probs.shape != labels.shape:
        raise TrainingError(f"multi-label metrics: probabilities {probs.shape} for labels {labels.shape}")
    aucs = label_aucs(labels, probs)
    scored = np.isfinite(aucs)
    if not scored.any():
        raise TrainingError("multi-label metrics: no label has both positive and negative test images")
    names = list(class_names) if class_names else [str(i) for i in range(labels.shape[1])]
    out = {"auc": float(aucs[scored].mean()), "accuracy": float(((probs >= 0.5) == (labels > 0)).mean())}
    out.update({f"auc:{n}": float(a) for n, a, ok in zip(names, aucs, scored) if ok})
    out["labels_scored"] = float(scored.sum())
    return out


def fold_metrics(spec, data, probs) -> dict[str, float]:
    """:func:`classification_metrics` of a run's test fold from ``(N, k)`` class probabilities
    (per-label probabilities for a multi-label target); kappa is quadratic when the spec's
    ``ordinal`` hyper-parameter says so, else when the target's task is ordinal (its card says
    so, or its class names look graded: :func:`is_ordinal`). Every strategy scores its fold
    through this."""
    if data.train.multilabel:
        return classification_metrics(data.test.labels, probs, class_names=data.train.class_names)
    ordinal = bool(spec.hyperparameters.get("ordinal", data.train.task == "ordinal"))
    return classification_metrics(data.test.labels, probs, ordinal=ordinal)


# ------------------------------------------------------------------------------------ models
def _classifier_cls():
    import torch.nn as nn

    class Classifier(nn.Module):
        """A backbone (feature extractor, ``num_classes=0``) with a linear head; see
        :func:`build_classifier` for its public structure."""

        def __init__(self, body, num_features: int, num_classes: int):
            super().__init__()
            self.body = body
            self.head = nn.Linear(num_features, num_classes)

        @property
        def backbone(self):
            """The feature extractor from the backbone plugin (what a checkpoint holds)."""
            return self.body

        def forward(self, x):
            return self.head(self.body(x))

    return Classifier


def build_classifier(backbone: str, *, weights: str, num_classes: int, in_chans: int = 3, seed: int = 0):
    """``backbone`` from the backbone plugins with ``weights`` ("random", "imagenet" or a
    checkpoint path) and a seeded linear head of ``num_classes`` outputs.

    The returned ``torch.nn.Module`` is public API: ``model.backbone`` is the feature extractor
    (timm's interface; its feature dimension from :func:`dsim.backbone_spec`; its ``state_dict`` is what a source checkpoint holds and
    is registered as the sub-module ``body``), ``model.head`` the ``torch.nn.Linear`` on top, and
    ``model(x)`` the logits. Strategies change weights through ``train_and_evaluate``'s
    ``transform_model``, which receives this model."""
    import torch

    body = create_backbone(backbone, weights=weights, num_classes=0, in_chans=in_chans, seed=seed)
    nf = int(backbone_spec(body).num_features)  # declared by its factory (timm's num_features)
    if not nf:
        with torch.no_grad():
            nf = int(body.eval()(torch.zeros(1, in_chans, 32, 32)).shape[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 7919)
        model = _classifier_cls()(body, nf, num_classes)
    model.dsim_weights_id = getattr(body, "dsim_weights_id", None)
    return model


def layer_groups(model, n: int = 3) -> list[list]:
    """Split the body's parameters into ``n`` consecutive groups (input side first); the head
    joins the last group. For discriminative learning rates and gradual unfreezing."""
    body = list(model.backbone.parameters())
    head = list(model.head.parameters())
    chunks = np.array_split(np.arange(len(body)), n) if body else [np.arange(0)]
    groups = [[body[i] for i in c] for c in chunks]
    groups[-1] = groups[-1] + head
    return [g for g in groups if g]


# ------------------------------------------------------------------------------------ data
def prepare(data: ImageSet, cfg: TrainConfig):
    """ImageSet -> (float tensor N,C,S,S, long tensor N), preprocessed once; the labels of a
    multi-label set are a float tensor (N, L) of 0/1."""
    import torch

    x = to_tensor(data.images, size=cfg.image_size, channels=cfg.channels)
    if data.multilabel:
        return x, torch.from_numpy(np.asarray(data.labels, dtype=np.float32))
    y = torch.from_numpy(np.asarray(data.labels, dtype=np.int64))
    return x, y


def _augment(x, gen):
    """Random horizontal flips and shifts of up to 1/8 of the side (zero padding), batched."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    pad = max(1, h // 8)
    xp = F.pad(x, (pad, pad, pad, pad))
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return xp[:, :, dy : dy + h, dx : dx + w]


def _forward(model, xb):
    """One forward pass (a seam for tests that simulate an out-of-memory batch)."""
    return model(xb)


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def _device(device) -> Any:
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pos_weight(y):
    """Per-label ``pos_weight`` of the BCE loss, negatives / positives (1 for a label without
    positives): a multi-label target's class weights."""
    import torch

    pos = y.double().sum(0)
    w = torch.ones(y.shape[1], dtype=torch.float64)
    w[pos > 0] = (len(y) - pos[pos > 0]) / pos[pos > 0]
    return w.float()


def _loss(out, y, weight, label_smoothing: float = 0.0, reduction: str = "mean"):
    """Cross-entropy for class indices; for a multi-label target (``y`` float (N, L)) binary
    cross-entropy with logits, ``weight`` its per-label ``pos_weight``; ``"sum"`` sums the BCE
    over images and averages it over labels."""
    import torch.nn.functional as F

    if y.ndim == 2:
        t = y * (1 - label_smoothing) + 0.5 * label_smoothing if label_smoothing else y
        bce = F.binary_cross_entropy_with_logits(out, t, pos_weight=weight, reduction=reduction)
        return bce / y.shape[1] if reduction == "sum" else bce
    return F.cross_entropy(out, y, weight=weight, label_smoothing=label_smoothing, reduction=reduction)


def _class_weights(y, num_classes: int):
    import torch

    counts = torch.bincount(y, minlength=num_classes).double()
    present = counts > 0
    w = torch.ones(num_classes, dtype=torch.float64)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w.float()


# ------------------------------------------------------------------------------------ training
def fit(
    model,
    train: ImageSet,
    val: ImageSet,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    device=None,
    label: str = "run",
    groups: Sequence[Sequence] | None = None,
    lr_mults: Sequence[float] | None = None,
    unfreeze_at: Sequence[float | None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    tensors: tuple | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``model`` (a classifier with ``num_classes`` outputs) in place and keep the weights
    of the epoch with the lowest validation loss.

    ``groups``/``lr_mults``: parameter groups and their learning-rate multipliers (discriminative
    LRs). ``unfreeze_at``: per group, the fraction of all iterations after which it becomes
    trainable (0 = from the start, None = never: frozen feature extractor).
    ``tensors``: pre-made ``(xtr, ytr, xva, yva)`` (benchmarks; skips preprocessing).
    ``on_epoch(record)``: called after each epoch with its history record, which then also
    holds ``val_auc`` (the validation split's AUC; computed only when ``on_epoch`` is given).
    """
    result = FitResult()
    batch = int(cfg.batch_size)
    init_state = copy.deepcopy(model.state_dict())
    while True:
        try:
            return _fit_once(
                model,
                train,
                val,
                cfg,
                batch,
                seed=seed,
                device=device,
                label=label,
                groups=groups,
                lr_mults=lr_mults,
                unfreeze_at=unfreeze_at,
                progress=progress,
                tensors=tensors,
                result=result,
                on_epoch=on_epoch,
            )
        except Exception as exc:
            if not _is_oom(exc):
                raise
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if batch <= 1:
                raise TrainingError(f"{label}: out of memory even with batch size 1") from None
            note = f"{label}: batch of {batch} ran out of memory; retrying with batch size {batch // 2}"

            print(f"warning: {note}", file=sys.stderr)
            result.notes.append(note)
            batch //= 2
            model.load_state_dict(init_state)
            result.history.clear()


def _fit_tensors(model, train, val, cfg, tensors, label: str, cuda: bool):
    """The training and validation tensors (prepared here unless ``tensors`` are given; pinned
    on a GPU) and the number of outputs the network is trained for."""
    num_classes = int(model.head.out_features) if hasattr(model, "head") else None
    if tensors is None:
        xtr, ytr = prepare(train, cfg)
        xva, yva = prepare(val, cfg)
    else:
        xtr, ytr, xva, yva = tensors
    multilabel = ytr.ndim == 2
    if num_classes is None:
        num_classes = int(ytr.shape[1]) if multilabel else int(max(ytr.max(), yva.max())) + 1
    if len(ytr) == 0:
        raise TrainingError(f"{label}: empty training set")
    if cuda:
        xtr, ytr, xva, yva = (t.pin_memory() for t in (xtr, ytr, xva, yva))
    return xtr, ytr, xva, yva, num_classes


def _optimizer(cfg, groups, lr_mults, total_steps: int):
    """AdamW over the parameter groups (each at its learning-rate multiple) and the schedule
    ``cfg.schedule`` names (None for a constant rate)."""
    import torch

    mults = list(lr_mults or [1.0] * len(groups))
    param_groups = [{"params": list(g), "lr": cfg.lr * m} for g, m in zip(groups, mults)]
    opt = torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = None
    if cfg.schedule == "one-cycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=[pg["lr"] for pg in param_groups],
            total_steps=total_steps,
            pct_start=0.3,
            div_factor=25.0,
            final_div_factor=1000.0,
            anneal_strategy="cos",
        )
    elif cfg.schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=0.5, patience=max(1, cfg.patience // 2)
        )
    return opt, sched


def _unfreezer(groups, unfreeze_at, total_steps: int) -> Callable[[int], None]:
    """``set_trainable(step)``: each parameter group trains from the fraction of the steps
    ``unfreeze_at`` gives it (None: frozen throughout)."""
    unfreeze = list(unfreeze_at if unfreeze_at is not None else [0.0] * len(groups))
    state: list = [None]

    def set_trainable(step: int) -> None:
        frac = step / max(1, total_steps)
        flags = tuple(u is not None and frac >= u for u in unfreeze)
        if flags == state[0]:
            return  # only touch the parameters when a group freezes or thaws
        state[0] = flags
        for g, on in zip(groups, flags):
            for p in g:
                p.requires_grad_(on)

    return set_trainable


@dataclass
class _Loop:
    """What one training epoch steps with (:func:`_train_epoch`)."""

    model: Any
    opt: Any
    sched: Any
    scaler: Any
    gen: Any
    dev: Any
    memfmt: Any
    amp_dtype: Any
    weight: Any
    cfg: Any
    label: str
    total_steps: int
    set_trainable: Callable[[int], None]


def _train_epoch(loop: _Loop, xtr, ytr, batch: int, epoch: int, step: int):
    """One pass over the training set in a seeded order; (summed loss, images seen, next step)."""
    import torch

    cfg, dev, memfmt, amp_dtype, opt = loop.cfg, loop.dev, loop.memfmt, loop.amp_dtype, loop.opt
    loop.model.train()
    perm = torch.randperm(len(ytr), generator=loop.gen)
    tot, n_seen = 0.0, 0
    for i in range(0, len(ytr), batch):
        idx = perm[i : i + batch]
        if len(idx) < 2 and len(ytr) > 2:  # batch norm cannot train on one image
            continue
        loop.set_trainable(step)
        xb = xtr[idx]
        if cfg.augment:
            xb = _augment(xb, loop.gen)
        xb = xb.to(dev, non_blocking=True, memory_format=memfmt)
        yb = ytr[idx].to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = _forward(loop.model, xb)
            loss = _loss(out.float(), yb, loop.weight, cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"{loop.label}: loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                f"(learning rate {opt.param_groups[-1]['lr']:.2g}); lower the learning rate"
            )
        opt.zero_grad(set_to_none=True)
        if loop.scaler is not None:
            loop.scaler.scale(loss).backward()
            loop.scaler.step(opt)
            loop.scaler.update()
        else:
            loss.backward()
            opt.step()
        if cfg.schedule == "one-cycle" and step < loop.total_steps - 1:
            loop.sched.step()
        step += 1
        tot += loss.detach() * len(idx)  # summed on device: no host sync per step
        n_seen += len(idx)
    return tot, n_seen, step


def _fit_once(
    model,
    train,
    val,
    cfg,
    batch,
    *,
    seed,
    device,
    label,
    groups,
    lr_mults,
    unfreeze_at,
    progress,
    tensors,
    result: FitResult,
    on_epoch=None,
) -> FitResult:
    import torch

    t0 = time.perf_counter()
    dev = _device(device)
    cuda = dev.type == "cuda"
    xtr, ytr, xva, yva, num_classes = _fit_tensors(model, train, val, cfg, tensors, label, cuda)
    multilabel = ytr.ndim == 2
    memfmt = torch.channels_last if cuda else torch.contiguous_format
    model.to(dev, memory_format=memfmt)
    amp_dtype = None
    if cuda:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    weight = None
    if cfg.class_weights:
        weight = (_pos_weight(ytr) if multilabel else _class_weights(ytr, num_classes)).to(dev)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    if groups is None:
        groups = [[p for p in model.parameters()]]
    total_steps = max(1, math.ceil(len(ytr) / batch)) * cfg.epochs
    opt, sched = _optimizer(cfg, groups, lr_mults, total_steps)
    set_trainable = _unfreezer(groups, unfreeze_at, total_steps)
    loop = _Loop(
        model, opt, sched, scaler, gen, dev, memfmt, amp_dtype, weight, cfg, label, total_steps, set_trainable
    )
    best_state, best_loss, bad = None, float("inf"), 0
    step = 0
    result.history.clear()
    result.batch_size = batch
    for epoch in range(cfg.epochs):
        tot, n_seen, step = _train_epoch(loop, xtr, ytr, batch, epoch, step)
        outs: list | None = [] if on_epoch is not None else None
        val_loss = _val_loss(model, xva, yva, dev, memfmt, amp_dtype, weight, batch, keep=outs)
        record = {"epoch": epoch + 1, "train_loss": float(tot) / max(1, n_seen), "val_loss": val_loss}
        result.history.append(record)
        if on_epoch is not None:
            record["val_auc"] = _val_auc(yva, outs, multilabel)
            on_epoch(dict(record))
        if cfg.schedule == "plateau":
            sched.step(val_loss)
        if progress is not None:
            progress(f"{label} epoch {epoch + 1}", epoch + 1, cfg.epochs)
        if val_loss < best_loss - 1e-4:
            best_loss, bad, result.best_epoch = val_loss, 0, epoch + 1
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience and epoch + 1 >= cfg.min_epochs:
                break
    for p in model.parameters():
        p.requires_grad_(True)
    if best_state is not None:
        model.load_state_dict(best_state)
    result.best_val_loss = best_loss
    result.epochs_run = len(result.history)
    result.seconds = time.perf_counter() - t0
    return result


def _ovr_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Weighted one-vs-rest ROC AUC from average ranks (Mann-Whitney), equal to scikit-learn's
    ``roc_auc_score(average="weighted", multi_class="ovr")`` when every class is present, at a
    fraction of its cost (it runs after every epoch); classes absent from ``y`` are left out."""
    if probs.shape[1] == 2:
        probs = probs[:, 1:]
        classes = [1]
    else:
        classes = list(range(probs.shape[1]))
    total, weight = 0.0, 0
    for j, c in enumerate(classes):
        pos = y == c
        n_pos = int(pos.sum())
        if n_pos == 0 or n_pos == len(y):
            continue
        _, inverse, counts = np.unique(probs[:, j], return_inverse=True, return_counts=True)
        ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, ties averaged
        auc = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * (len(y) - n_pos))
        w = 1 if len(classes) == 1 else n_pos
        total, weight = total + w * auc, weight + w
    return total / weight if weight else float("nan")


def _val_auc(y, outs, multilabel: bool) -> float:
    """AUC of the validation split from the logits ``outs`` (NaN when it cannot be scored):
    weighted one-vs-rest, or the mean over the labels of a multi-label target."""
    import torch

    if not outs:
        return float("nan")
    z = torch.cat(outs)
    y = y.numpy()
    if not multilabel:
        return float(_ovr_auc(y, torch.softmax(z, dim=1).numpy()))
    p = torch.sigmoid(z).numpy()
    aucs = [_ovr_auc(y[:, j].astype(int), np.stack([1 - p[:, j], p[:, j]], 1)) for j in range(y.shape[1])]
    aucs = [a for a in aucs if np.isfinite(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _val_loss(model, x, y, dev, memfmt, amp_dtype, weight, batch, keep: list | None = None) -> float:
    """Mean validation loss; ``keep``: a list the logits are appended to (on the CPU)."""
    import torch

    if len(y) == 0:
        return float("nan")
    model.eval()
    tot = 0.0
    with torch.inference_mode():
        for i in range(0, len(y), max(batch, 256)):
            xb = x[i : i + max(batch, 256)].to(dev, non_blocking=True, memory_format=memfmt)
            yb = y[i : i + max(batch, 256)].to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(xb)
            tot += float(_loss(out.float(), yb, weight, reduction="sum"))
            if keep is not None:
                keep.append(out.float().cpu())
    v = tot / len(y)
    return v if math.isfinite(v) else float("inf")


def predict_proba(
    model,
    data: ImageSet | Any,
    cfg: TrainConfig,
    *,
    device=None,
    batch_size: int = 256,
    multilabel: bool | None = None,
) -> np.ndarray:
    """Softmax probabilities ``(N, num_classes)`` under ``torch.inference_mode``; per-label
    sigmoids ``(N, L)`` when ``multilabel`` (None: when ``data`` is a multi-label ImageSet)."""
    import torch

    if multilabel is None:
        multilabel = isinstance(data, ImageSet) and data.multilabel
    squash = torch.sigmoid if multilabel else (lambda z: torch.softmax(z, dim=1))
    dev = _device(device)
    cuda = dev.type == "cuda"
    x = prepare(data, cfg)[0] if isinstance(data, ImageSet) else data
    memfmt = torch.channels_last if cuda else torch.contiguous_format
    model.to(dev, memory_format=memfmt).eval()
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(dev, non_blocking=True, memory_format=memfmt)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(xb)
            out.append(squash(logits.float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def train_and_evaluate(
    spec,
    data,
    ctx,
    *,
    weights: str,
    mode: str = "all",
    schedule: str | None = None,
    transform_model: Callable | None = None,
) -> dict[str, Any]:
    """The deep strategies' common body: build ``spec.backbone`` with ``weights``, train on
    ``data.train`` with early stopping on ``data.val``, return test metrics.

    ``mode``: ``"all"`` (every layer trains), ``"frozen"`` (feature extractor: only the head
    trains), ``"gradual"`` (three layer groups, discriminative learning rates lr/9, lr/3, lr;
    the middle group unfrozen after 10 % of the iterations, the input-side group after 20 %;
    Romero et al.). ``transform_model(model)`` may change the weights before training (e.g.
    moment-preserving re-initialisation); it receives the :func:`build_classifier` model, whose
    ``backbone`` and ``head`` are public.
    """
    hp = dict(spec.hyperparameters)
    if schedule:
        hp["schedule"] = schedule
    cfg = TrainConfig.from_mapping(hp)
    k = data.train.num_classes
    model = build_classifier(
        spec.backbone, weights=weights, num_classes=k, in_chans=cfg.channels, seed=spec.seed * 100 + spec.fold
    )
    if transform_model is not None:
        transform_model(model)
    groups = lr_mults = unfreeze = None
    if mode == "frozen":
        groups = [list(model.backbone.parameters()), list(model.head.parameters())]
        lr_mults, unfreeze = [1.0, 1.0], [None, 0.0]
    elif mode == "gradual":
        groups = layer_groups(model, 3)
        lr_mults = [1 / 9, 1 / 3, 1.0][-len(groups) :]
        unfreeze = [0.2, 0.1, 0.0][-len(groups) :]
    elif mode != "all":
        raise ValueError(f"unknown training mode {mode!r}")
    label = ctx.option("label", spec.label) if hasattr(ctx, "option") else spec.label
    res = fit(
        model,
        data.train,
        data.val,
        cfg,
        seed=spec.seed * 100 + spec.fold,
        device=ctx.torch_device(),
        label=label,
        groups=groups,
        lr_mults=lr_mults,
        unfreeze_at=unfreeze,
        progress=ctx.progress,
        on_epoch=lambda record: notify("dsim_run_epoch", spec=spec, epoch=record),
    )
    probs = predict_proba(model, data.test, cfg, device=ctx.torch_device())
    out: dict[str, Any] = fold_metrics(spec, data, probs)
    out.update(
        {
            "epochs": res.epochs_run,
            "best_epoch": res.best_epoch,
            "batch_size": res.batch_size,
            "fit_s": res.seconds,
            "history": [dict(h) for h in res.history],
        }
    )
    if res.notes:
        out["notes"] = list(res.notes)
    return out

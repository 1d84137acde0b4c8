"""The records that cross dsim's boundaries: small, typed, serialisable dataclasses.

Every record converts to and from plain JSON-able dicts (``to_dict`` / ``from_dict``) so that it
can be cached, stored in the results store, printed with ``--json`` or shipped to a Ray worker.
Only :class:`ImageSet` carries arrays; it is never serialised as JSON, but it has a content
fingerprint that every cache key is built from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from dsim.kernel.lazy import lazy_module
from dsim.kernel.multilabel import TASKS, iterative_split, multi_hot, one_hot, subsample_indices

np = lazy_module("numpy")  # imported on first use: the listings need no numpy

__all__ = [
    "EXPERT_FEATURES",
    "DatasetCard",
    "CheckpointCard",
    "BackboneSpec",
    "ImageSet",
    "Representation",
    "RankingRow",
    "Ranking",
    "TransferResult",
    "MeasureValue",
    "RunSpec",
    "RunResult",
    "stable_hash",
    "file_digest",
    "is_ordinal",
]

#: The six expert properties of "Cats, not CAT scans" (van den Brandt et al.), in the paper's order.
EXPERT_FEATURES: tuple[str, ...] = (
    "origin",  # natural / medical
    "colour",  # grey / colour
    "content",  # objects / textures
    "subject",  # type of object or texture
    "diversity",  # low / high
    "classes",  # few / many
)


def is_ordinal(class_names: Sequence[str]) -> bool:
    """Graded targets (diabetic retinopathy levels, grades): quadratic kappa applies."""
    words = " ".join(class_names).lower()
    return len(class_names) > 2 and any(w in words for w in ("grade", "level", "npdr", "stage", "no dr"))


def stable_hash(obj: Any) -> str:
    """SHA-256 of a JSON-able object, independent of dict order. Used for every cache key."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's content, read in 1 MiB blocks (checkpoint ids, download checks)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


class _Record:
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=_json_default))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _card_fields(cls, d: Mapping[str, Any], what: str, tuples: Sequence[str]) -> dict[str, Any]:
    """A card's fields from a mapping: ``tuples`` as tuples (a scalar as a 1-tuple); a field the
    card does not have is a one-line error naming the card."""
    d = dict(d)
    for key in tuples:
        if key in d and d[key] is not None:
            v = d[key]
            d[key] = tuple(v) if isinstance(v, (list, tuple)) else (v,)
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"{what} card {d.get('name', '?')!r}: unknown field(s) {', '.join(unknown)}")
    return d


@dataclass(frozen=True)
class DatasetCard(_Record):
    """Facts about one dataset, as printed in the papers or declared by a plugin.

    ``loader`` names a dataset loader plugin and ``loader_args`` are passed to it; a card without a
    loader (e.g. ImageNet) can still be ranked by card-only measures (expert features) and by
    published results. ``expert`` maps each of :data:`EXPERT_FEATURES` to a categorical value.
    ``task`` says what kind of classification its labels are: ``"multi-class"``, ``"ordinal"``
    (graded classes: quadratic kappa) or ``"multi-label"`` (several findings per image, labels an
    ``(N, L)`` 0/1 matrix); ``""`` (the default) decides from the data.
    ``derived_from`` names the dataset whose images this one holds (a family: never each other's
    candidate source); ``aggregate_of`` lists the datasets a source was pretrained on together,
    the target always left out, so that it is no member of any of their families.
    """

    name: str
    title: str = ""
    aliases: tuple[str, ...] = ()
    origin: str = ""  # "medical" | "natural"
    modality: str = ""
    channels: int | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] = ()
    task: str = ""  # "" (from the data) | "multi-class" | "ordinal" | "multi-label"
    size: int | None = None  # number of images
    image_size: str = ""  # as printed, e.g. "96x96" or "72x72 to 2916x2583"
    expert: Mapping[str, str] = field(default_factory=dict)
    loader: str | None = None
    loader_args: Mapping[str, Any] = field(default_factory=dict)
    licence: str = ""
    checksum: str | None = None  # sha256 of the canonical local file, when there is one
    derived_from: str | None = None  # e.g. pneumoniamnist derives from chest
    #: pretrained on the union of these datasets, the target always left out (e.g. the
    #: leave-target-out MedMNIST of Juodelyte et al. 2024); an aggregate is never in a target's family
    aggregate_of: tuple[str, ...] = ()
    #: for a card that stands for a pretrained checkpoint (a checkpoint candidate is ranked as its
    #: pretraining set's card under its own name): the network's facts, e.g. ``architecture``,
    #: ``family``, ``parameters``, ``weights`` (empty for a dataset)
    network: Mapping[str, Any] = field(default_factory=dict)
    papers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    provider: str = "registry.yaml"  # which plugin contributed the card

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DatasetCard:
        d = _card_fields(cls, d, "dataset", ("aliases", "class_names", "papers", "notes", "aggregate_of"))
        for key in ("expert", "loader_args", "network"):
            if d.get(key) is None:
                d[key] = {}

        if d.get("task") is None:
            d["task"] = ""
        if d["task"] not in ("", *TASKS):
            raise ValueError(
                f"dataset card {d.get('name', '?')!r}: task {d['task']!r} is none of {', '.join(TASKS)}"
            )
        return cls(**d)

    @property
    def all_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class BackboneSpec(_Record):
    """What a built backbone network declares about itself (:meth:`dsim.BackboneFactory.spec`):
    the image size it runs at natively (``input_size`` px, square), the normalisation it was
    trained with (per-channel ``mean``/``std`` of images in [0, 1]) and the dimension of its pooled
    features (``num_features``; 0 when unknown)."""

    input_size: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    num_features: int = 0


@dataclass(frozen=True)
class CheckpointCard(_Record):
    """A pretrained network that can be ranked as a candidate source, like a dataset.

    ``architecture`` names a backbone a backbone plugin builds (``dsim.create_backbone``);
    ``weights`` says where the trained weights are: ``file:<name>`` (a file name looked up in
    ``$DSIM_WEIGHTS_DIR``, or an absolute path), ``timm:<tag>`` (timm's pretrained weights, from
    the local cache or with ``DSIM_ALLOW_DOWNLOAD=1``), ``torchvision:<arch>.<WEIGHTS>``
    (torchvision's weights, from torch hub's cache) or ``random`` (seeded random init); the
    backbone plugins take it as is: ``dsim.create_backbone(card.architecture, weights=card.weights)``.
    ``sha256`` is checked when a weights file is read. ``pretrained_on`` names the dataset card it
    was trained on, so that what is known about that dataset as a source applies to it.
    """

    name: str
    architecture: str
    weights: str
    title: str = ""
    aliases: tuple[str, ...] = ()
    sha256: str | None = None
    pretrained_on: str | None = None
    family: str = ""  # architecture family (resnet, mobilenet, densenet ...), a card feature
    parameters: int | None = None
    num_classes: int | None = None  # outputs of its classifier, when it has one (LEEP, NCE)
    input_size: int | None = None  # the image size it was trained at
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    licence: str = ""
    papers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    provider: str = "registry.yaml"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckpointCard:
        d = _card_fields(cls, d, "checkpoint", ("aliases", "papers", "notes", "mean", "std"))
        missing = [k for k in ("name", "architecture", "weights") if not d.get(k)]
        if missing:
            raise ValueError(f"checkpoint card {d.get('name', '?')!r}: missing {', '.join(missing)}")
        return cls(**d)

    @property
    def all_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass
class ImageSet:
    """Images and labels of one dataset, in memory.

    ``images`` is ``(N, H, W, C)`` (uint8 0..255 or float). ``labels`` is ``(N,)`` of ints in
    ``0..num_classes-1`` (one class per image), or, for a multi-label target, an ``(N, L)``
    matrix of 0/1 (``class_names`` are then the L label names; a row of zeros is an image
    without any finding). ``task`` is ``"multi-class"``, ``"ordinal"`` or ``"multi-label"``;
    left empty it is decided from the data (multi-label for a label matrix, ordinal for graded
    class names, :func:`is_ordinal`). ``split`` optionally holds the original split of each image
    ("train"/"val"/"test"). Subsampling and splitting are seeded and stratified (iterative
    stratification for multi-label targets, :mod:`dsim.kernel.multilabel`).
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...] = ()
    split: np.ndarray | None = None
    source: str = ""  # file or folder the images came from (for error messages)
    #: files the loader could not read and left out, as (file or csv line, reason)
    skipped: tuple[tuple[str, str], ...] = ()
    task: str = ""
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        imgs, labels = self.images, np.asarray(self.labels)
        where = f"{self.name}" + (f" ({self.source})" if self.source else "")
        if imgs.ndim == 3:
            imgs = imgs[..., None]
        if imgs.ndim != 4:
            raise ValueError(f"{where}: images must be (N,H,W,C) or (N,H,W), got shape {imgs.shape}")
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim == 2:
            if len(labels) != len(imgs):
                raise ValueError(f"{where}: {len(imgs)} images but {len(labels)} label rows")
            if self.task not in ("", "multi-label"):
                raise ValueError(
                    f"{where}: task {self.task!r} but the labels are a multi-label (N, L) matrix"
                )
            self.images, self.labels, self.task = (
                imgs,
                multi_hot(labels, where, self.class_names),
                "multi-label",
            )
            if not self.class_names:
                self.class_names = tuple(str(i) for i in range(labels.shape[1]))
            elif len(self.class_names) != labels.shape[1]:
                raise ValueError(
                    f"{where}: {len(self.class_names)} label names for {labels.shape[1]} label columns"
                )
            self.class_names = tuple(self.class_names)
            return
        if labels.ndim != 1:
            raise ValueError(
                f"{where}: labels must be (N,), (N,1) or (N,L) multi-label, got shape {labels.shape}"
            )
        if len(labels) != len(imgs):
            raise ValueError(f"{where}: {len(imgs)} images but {len(labels)} labels")
        if len(labels) and (not np.issubdtype(labels.dtype, np.integer)):
            if np.all(np.mod(labels, 1) == 0):
                labels = labels.astype(np.int64)
            else:
                raise ValueError(f"{where}: labels must be integers, got dtype {labels.dtype}")
        if len(labels) and labels.min() < 0:
            raise ValueError(f"{where}: labels must be >= 0, found {labels.min()}")
        self.images, self.labels = imgs, labels.astype(np.int64)
        if not self.class_names:
            k = int(labels.max()) + 1 if len(labels) else 0
            self.class_names = tuple(str(i) for i in range(k))
        else:
            self.class_names = tuple(self.class_names)
        if self.task == "multi-label":
            raise ValueError(f"{where}: task 'multi-label' needs an (N, L) 0/1 label matrix, got labels (N,)")
        if self.task not in ("", "multi-class", "ordinal"):
            raise ValueError(f"{where}: unknown task {self.task!r} (multi-class, ordinal or multi-label)")
        self.task = self.task or self._data_task()

    def _data_task(self) -> str:
        """The task the labels alone say (what an empty ``task`` becomes)."""
        if self.labels.ndim == 2:
            return "multi-label"
        return "ordinal" if is_ordinal(self.class_names) else "multi-class"

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def multilabel(self) -> bool:
        """Whether the labels are an ``(N, L)`` multi-label matrix."""
        return self.task == "multi-label"

    def skipped_note(self, shown: int = 3) -> str | None:
        """One line on the files the loader left out (count and the first few), or None."""
        if not self.skipped:
            return None
        first = "; ".join(f"{w} ({why})" for w, why in self.skipped[:shown])
        more = f"; and {len(self.skipped) - shown} more" if len(self.skipped) > shown else ""
        return (
            f"{self.name}: skipped {len(self.skipped)} unreadable file(s) of "
            f"{len(self.skipped) + len(self)}: {first}{more} (--strict fails instead)"
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    @property
    def image_shape(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def class_counts(self) -> np.ndarray:
        """Images of each class, or positive images of each label (multi-label), ``(num_classes,)``."""
        if self.multilabel:
            return self.labels.sum(0).astype(np.int64)
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def fingerprint(self) -> str:
        """Content hash of the pixels, labels and class names (not of any file name); of the label
        matrix's shape for a multi-label set, and of the task when it is not the data's own."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(str((self.images.shape, str(self.images.dtype))).encode())
            h.update(np.ascontiguousarray(self.images).tobytes())
            h.update(np.ascontiguousarray(self.labels).tobytes())
            h.update("\x00".join(self.class_names).encode())
            if self.multilabel:
                h.update(f"\x00multi-label{self.labels.shape}".encode())
            elif self.task != self._data_task():
                h.update(f"\x00task:{self.task}".encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def take(self, index: Sequence[int] | np.ndarray, name: str | None = None) -> ImageSet:
        idx = np.asarray(index, dtype=np.int64)
        return ImageSet(
            name=name or self.name,
            images=self.images[idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            split=None if self.split is None else self.split[idx],
            source=self.source,
            skipped=self.skipped,
            task=self.task,
        )

    def with_task(self, task: str) -> ImageSet:
        """The same images under another task: ``"multi-label"`` turns class indices into one-hot
        rows (lossless); ``"multi-class"``/``"ordinal"`` re-read single-label classes."""
        if task in ("", self.task):
            return self
        labels = self.labels
        if task == "multi-label" and not self.multilabel:
            labels = one_hot(self.labels, self.num_classes)
        return ImageSet(
            name=self.name,
            images=self.images,
            labels=labels,
            class_names=self.class_names,
            split=self.split,
            source=self.source,
            skipped=self.skipped,
            task=task,
        )

    def subsample(self, n: int | None, seed: int = 0) -> ImageSet:
        """A stratified, seeded subsample of at most ``n`` images (class proportions kept; label
        frequencies by iterative stratification for a multi-label set, every label kept)."""
        if n is None or n >= len(self):
            return self
        return self.take(self.subsample_index(n, seed), name=self.name)

    def subsample_index(self, n: int, seed: int = 0) -> np.ndarray:
        """The positions :meth:`subsample` keeps (all of them when ``n >= len(self)``): to take
        the same images from arrays computed on the whole set (features, logits)."""
        if n >= len(self):
            return np.arange(len(self))
        if self.multilabel:
            return np.asarray(subsample_indices(self.labels, n, seed))
        return np.asarray(stratified_indices(self.labels, n, seed))

    def per_class(self, n_per_class: int, seed: int = 0) -> ImageSet:
        """At most ``n_per_class`` images of each class, seeded. Multi-label: labels rarest first,
        images of a label added until it has ``n_per_class`` positives in the selection, and at
        most ``n_per_class`` images without any label."""
        rng = np.random.default_rng(seed)
        if self.multilabel:
            y = self.labels.astype(bool)
            chosen = np.zeros(len(self), dtype=bool)
            for lab in np.argsort(y.sum(0), kind="stable"):
                need = n_per_class - int((y[:, lab] & chosen).sum())
                free = np.flatnonzero(y[:, lab] & ~chosen)
                if need > 0 and len(free):
                    chosen[rng.choice(free, min(need, len(free)), replace=False)] = True
            none = np.flatnonzero(~y.any(1))
            if len(none):
                chosen[rng.choice(none, min(n_per_class, len(none)), replace=False)] = True
            return self.take(np.flatnonzero(chosen), name=self.name)
        keep = []
        for c in np.unique(self.labels):
            members = np.flatnonzero(self.labels == c)
            if len(members) > n_per_class:
                members = rng.choice(members, n_per_class, replace=False)
            keep.append(np.sort(members))
        return self.take(np.sort(np.concatenate(keep)) if keep else [], name=self.name)

    def kfold(self, k: int = 5, seed: int = 0, val_fraction: float = 0.1):
        """Yield ``(train, val, test)`` index arrays of stratified k-fold CV (cats-scans: 80/10/10).

        The test fold is 1/k of the data; ``val_fraction`` of the whole set is carved,
        stratified, from the remaining training part. A multi-label set is split by seeded
        iterative stratification (:func:`dsim.kernel.multilabel.iterative_split`): a label with at
        least k positives has positives in every test fold.
        """
        if self.multilabel:
            yield from self._multilabel_kfold(k, seed, val_fraction)
            return
        from sklearn.model_selection import StratifiedKFold, train_test_split

        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        for fold, (rest, test) in enumerate(skf.split(np.zeros(len(self)), self.labels)):
            n_val = max(int(round(val_fraction * len(self))), self.num_classes)
            counts = np.bincount(self.labels[rest])
            strat = self.labels[rest] if counts[counts > 0].min() >= 2 else None
            train, val = train_test_split(rest, test_size=n_val, random_state=seed + fold, stratify=strat)
            yield np.sort(train), np.sort(val), np.sort(test)

    def _multilabel_kfold(self, k: int, seed: int, val_fraction: float):
        n = len(self)
        if not 2 <= k <= n:
            raise ValueError(f"{self.name}: cannot make {k} folds of {n} images")
        sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
        fold_of = iterative_split(self.labels, sizes, seed)
        for fold in range(k):
            test, rest = np.flatnonzero(fold_of == fold), np.flatnonzero(fold_of != fold)
            n_val = min(max(int(round(val_fraction * n)), 1), len(rest) - 1)
            part = iterative_split(self.labels[rest], [n_val, len(rest) - n_val], seed + fold)
            yield np.sort(rest[part == 1]), np.sort(rest[part == 0]), test


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Seeded stratified choice of ``n`` indices: every class keeps its share (at least one)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = counts / counts.sum() * n
    take = np.maximum(1, np.floor(share)).astype(int)
    take = np.minimum(take, counts)
    # hand out what rounding left over, largest remainders first
    left = n - take.sum()
    order = np.argsort(-(share - np.floor(share)))
    for i in order:
        if left <= 0:
            break
        if take[i] < counts[i]:
            take[i] += 1
            left -= 1
    chosen = [rng.choice(np.flatnonzero(labels == c), t, replace=False) for c, t in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class Representation(_Record):
    """What a measure computed for one dataset (or one source/target pair).

    ``key`` is the content hash of everything it depends on: the measure's name and config and the
    fingerprints of the data (and probe weights) it was computed from. ``arrays`` holds the
    numbers (kept out of JSON; saved as .npz by the cache), ``meta`` small JSON-able facts.
    """

    measure: str
    dataset: str
    key: str
    config: Mapping[str, Any] = field(default_factory=dict)
    fingerprints: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "arrays"}
        d["arrays"] = {k: list(np.shape(v)) for k, v in self.arrays.items()}
        return json.loads(json.dumps(d, default=_json_default))

    @staticmethod
    def make_key(measure: str, config: Mapping[str, Any], fingerprints: Mapping[str, str]) -> str:
        return stable_hash({"measure": measure, "config": config, "fingerprints": fingerprints})


@dataclass(frozen=True)
class RankingRow(_Record):
    """One candidate source in a :class:`Ranking`.

    ``score`` is the (measured or predicted) transferability of the source to the target, in
    percent, T = (AUC(S->T) - AUC(T)) / AUC(T) x 100, when the predictor can put it on that scale,
    else a unitless score where higher is better. ``status`` is ``"measured"`` when the score comes
    from real fine-tuning results (published or run by ``dsim validate``), ``"predicted"``
    otherwise. ``contributions`` holds, per measure or feature, the raw value and its share in the
    prediction. ``prior``/``evidence``/``evidence_parts``/``tied_with_first`` are filled by
    predictors that split their score that way (``prior-evidence``).
    """

    source: str
    score: float
    status: str  # "measured" | "predicted"
    uncertainty: float | None = None
    rank: int = 0
    measured_auc: float | None = None
    n_measured: int = 0
    contributions: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    kind: str = "dataset"  # "dataset" | "checkpoint"
    architecture: str | None = None  # of a checkpoint candidate
    setup: str | None = None  # of a measured row: the setup(s) its score comes from, ", "-joined
    #: a prior-plus-evidence predictor's split of ``score`` (same scale): what the source's track
    #: record and card facts say (``prior``) and the shift the target's own evidence adds
    #: (``evidence``), with each evidence part's value, weight and contribution; None otherwise
    prior: float | None = None
    evidence: float | None = None
    evidence_parts: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: the first row is not better than this one beyond the uncertainty of the two
    tied_with_first: bool = False


@dataclass(frozen=True)
class Ranking(_Record):
    """Sources ranked for one target, best first, with what was skipped and why."""

    target: str
    rows: tuple[RankingRow, ...]
    predictor: str
    measures: tuple[str, ...] = ()
    score_unit: str = "transferability %"
    skipped: tuple[Mapping[str, str], ...] = ()  # {"source"|"measure": name, "reason": ...}
    notes: tuple[str, ...] = ()
    target_auc: float | None = None  # AUC(T) of the target-only baseline, when known
    target_auc_setup: str | None = None  # the one setup ``target_auc`` comes from
    #: candidates that could not be evaluated, never ranked: {"source", "status": "failed",
    #: "reason", "kind", "architecture"}
    failed: tuple[Mapping[str, str], ...] = ()

    @property
    def sources(self) -> list[str]:
        return [r.source for r in self.rows]

    def top(self, k: int) -> Ranking:
        return dataclasses.replace(self, rows=self.rows[:k])

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["rows"] = [r.to_dict() for r in self.rows]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Ranking:
        d = dict(d)
        d["rows"] = tuple(RankingRow.from_dict(r) for r in d.get("rows", ()))
        d["measures"] = tuple(d.get("measures", ()))
        d["skipped"] = tuple(d.get("skipped", ()))
        d["notes"] = tuple(d.get("notes", ()))
        d["failed"] = tuple(d.get("failed", ()))
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


@dataclass(frozen=True)
class TransferResult(_Record):
    """One measured fine-tuning result: AUC of ``source`` -> ``target`` on one test fold.

    ``source == target`` is the target-only (from-scratch) baseline AUC(T). ``origin`` says where
    the number comes from ("published:cats-scans" or "dsim validate"). ``repeat`` numbers
    independent repetitions of the same protocol (another seed, another draw of the training
    images); ``fold`` numbers the test folds within one repetition.
    """

    source: str
    target: str
    fold: int
    auc: float
    origin: str = ""
    setup: str = "default"  # groups results measured under one protocol (backbone, size, ...)
    accuracy: float | None = None
    kappa: float | None = None
    repeat: int = 0


@dataclass(frozen=True)
class MeasureValue(_Record):
    """A measure's value for one (source, target) pair that is known without computing it, e.g.
    the Task2Vec distances released with "Cats, not CAT scans" (one row per fold). ``kind`` says
    how to read a measure dsim cannot compute itself (``"score"``: higher = expected to transfer
    better; ``"distance"``: lower); for a registered measure the measure's own kind applies."""

    measure: str
    source: str
    target: str
    value: float
    fold: int | None = None
    origin: str = ""
    kind: str | None = None


@dataclass(frozen=True)
class RunSpec(_Record):
    """One fine-tuning run: everything its result depends on."""

    source: str
    target: str
    backbone: str
    strategy: str
    fold: int
    seed: int = 0
    folds: int = 5
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    fingerprints: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return stable_hash(self.to_dict())

    @property
    def label(self) -> str:
        return f"{self.source}->{self.target} [{self.strategy}, {self.backbone}, fold {self.fold}]"


@dataclass(frozen=True)
class RunResult(_Record):
    """What a finished run measured."""

    spec: RunSpec
    metrics: Mapping[str, float]
    timings: Mapping[str, float] = field(default_factory=dict)
    checkpoint: str | None = None  # content hash of the source checkpoint used
    notes: tuple[str, ...] = ()
    #: the training curve, one dict per epoch (``epoch``, ``train_loss``, ``val_loss``,
    #: ``val_auc``); empty for strategies without epochs and for results read from the store
    history: tuple[Mapping[str, float], ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunResult:
        d = dict(d)
        d["spec"] = RunSpec.from_dict(d["spec"])
        d["notes"] = tuple(d.get("notes", ()))
        d["history"] = tuple(d.get("history", ()))
        return cls(**d)

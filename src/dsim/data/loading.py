"""Loading a dataset by name or path through the loader plugins.

Also what validation needs on top: a card check, an in-process cache of loaded (capped) datasets,
``a+b`` source unions, and telling checkpoint files from dataset names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import platformdirs

from dsim.data.tensors import to_tensor
from dsim.kernel.errors import DataMissingError, DatasetError, DsimError, one_line
from dsim.kernel.lazy import lazy_module
from dsim.kernel.multilabel import one_hot
from dsim.kernel.plugins import named
from dsim.kernel.records import DatasetCard, ImageSet, stable_hash
from dsim.kernel.registry import get_registry

np = lazy_module("numpy")  # imported on first use: `dsim datasets` needs no numpy

__all__ = [
    "data_dirs",
    "find_data_file",
    "load_dataset",
    "data_missing",
    "resolve_card",
    "check_card",
    "load_checked",
    "source_names",
    "is_checkpoint_path",
    "union",
    "resolve_name",
]


def data_dirs() -> list[Path]:
    """Where dataset files are looked for: ``$DSIM_DATA_DIR`` (``os.pathsep``-separated), then the
    user data dir (``platformdirs``), where downloads are stored."""
    dirs = [Path(p).expanduser() for p in os.environ.get("DSIM_DATA_DIR", "").split(os.pathsep) if p]

    dirs.append(Path(platformdirs.user_data_dir("dsim")))
    return dirs


def find_data_file(*names: str) -> Path | None:
    """The first of ``names`` found in :func:`data_dirs` (an absolute path is taken as is)."""
    for n in names:
        p = Path(n).expanduser()
        if p.is_absolute():
            if p.exists():
                return p
            continue
        for d in data_dirs():
            if (d / n).exists():
                return d / n
    return None


def _loader_for(card: DatasetCard):
    if not card.loader:
        raise DataMissingError(
            f"dataset {card.name!r} has no loader: dsim knows its facts (card) but not where its "
            "images are; register them with a card whose `loader` points at your copy"
        )
    return named("dsim_register_loaders", "dataset loader", card.loader)


def data_missing(card: DatasetCard) -> str | None:
    """Why the images of ``card`` cannot be loaded here (one line), or None when they can."""
    if not card.loader:
        return "no images known to dsim (card facts only)"
    try:
        loader = _loader_for(card)
        return loader.missing(card.loader_args, card.name)
    except DsimError as exc:
        return str(exc)


def load_dataset(
    name_or_card: str | DatasetCard, *, max_samples: int | None = None, seed: int = 0, strict: bool = False
) -> ImageSet:
    """Load a registered dataset or a user path as an :class:`ImageSet`.

    ``max_samples`` keeps a seeded, stratified subsample. Files a loader cannot read are left
    out and listed in ``ImageSet.skipped``; ``strict`` makes the first such file an error.
    """
    if isinstance(name_or_card, DatasetCard):
        card = name_or_card
    else:
        card = get_registry().resolve(name_or_card)
    loader = _loader_for(card)
    try:
        data = loader.load({**card.loader_args, "strict": True} if strict else card.loader_args, card.name)
    except DsimError:
        raise
    except (ValueError, OSError, KeyError) as exc:
        raise DatasetError(f"dataset {card.name!r}: {exc}") from None
    except Exception as exc:
        raise DatasetError(f"dataset {card.name!r}: loader {loader.name!r} raised {one_line(exc)}") from None
    if len(data) == 0:
        raise DatasetError(f"dataset {card.name!r} ({data.source}): no images")
    data = _with_card_task(card, data)
    if card.num_classes and data.num_classes > card.num_classes:
        raise DatasetError(
            f"dataset {card.name!r} ({data.source}): labels have {data.num_classes} classes but "
            f"its card says {card.num_classes}"
        )
    return data.subsample(max_samples, seed=seed)


def _with_card_task(card: DatasetCard, data: ImageSet) -> ImageSet:
    """The data under its card's ``task``: a multi-label card keeps a file whose rows happen to be
    one-hot multi-label; single-label classes under a multi-label card become one-hot rows; an
    ordinal or multi-class card sets how single-label classes are scored. A multi-label matrix
    under a single-label card is refused."""
    if not card.task or card.task == data.task:
        return data
    if data.multilabel:
        raise DatasetError(
            f"dataset {card.name!r} ({data.source}): its card says task {card.task!r} but the labels "
            f"are a multi-label (N, {data.num_classes}) matrix; fix the card's task or the labels"
        )
    return data.with_task(card.task)


# ------------------------------------------------------------------------------ validation data
def resolve_card(name_or_card: str | DatasetCard) -> DatasetCard:
    """The card of a registered name, or of a user path (its loader claims it)."""
    if isinstance(name_or_card, DatasetCard):
        return name_or_card

    return get_registry().resolve(str(name_or_card))


def check_card(card: DatasetCard, data: ImageSet) -> None:
    """Refuse data whose classes do not match its card (a wrong card would mislabel every run)."""

    found = data.num_classes if data.multilabel else len(np.unique(data.labels))
    if card.num_classes and (data.num_classes != card.num_classes or found > card.num_classes):
        raise DsimError(
            f"dataset {card.name!r}: its card says {card.num_classes} classes but the data "
            f"({data.source or 'loaded images'}) has {max(data.num_classes, found)}; fix the card's "
            "num_classes/class_names or the labels"
        )


#: datasets loaded in this process, keyed by card content, cap and seed (a changed card reloads)
_LOADED: dict[str, ImageSet] = {}
_LOADED_MAX = 16


def load_checked(
    name: str,
    *,
    max_samples: int | None = None,
    seed: int = 0,
    inline: Mapping[str, ImageSet] | None = None,
) -> ImageSet:
    """A dataset for training: an in-memory one from ``inline`` (subsampled), else the registered
    or user dataset ``name`` loaded once per process and checked against its card."""
    if inline and name in inline:
        data = inline[name]
        return data.subsample(max_samples, seed=seed) if max_samples else data

    card = resolve_card(name)
    key = stable_hash({"card": card.to_dict(), "max": max_samples, "seed": seed})
    if key not in _LOADED:
        data = load_dataset(card, max_samples=max_samples, seed=seed)
        check_card(card, data)
        if len(_LOADED) >= _LOADED_MAX:
            _LOADED.clear()
        _LOADED[key] = data
    return _LOADED[key]


def source_names(source: str | Sequence[str]) -> list[str]:
    """The datasets of a source: ``"a+b"`` (or a list) is the union of ``a`` and ``b``."""
    if isinstance(source, str):
        return [s for s in source.split("+") if s]
    return list(source)


def is_checkpoint_path(name: str) -> bool:
    """Whether a source names a checkpoint file rather than a dataset."""
    return Path(str(name)).suffix.lower() in CHECKPOINT_SUFFIXES


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def union(sets: Sequence[ImageSet], name: str) -> ImageSet:
    """Several sources as one dataset: class sets concatenated (Jindal & Singh's aggregated
    source: 15 + 2 + 5 = 22 labels), images resized to a common 28 px RGB for stacking. When one
    of them is multi-label, so is the union: each set fills its own block of label columns (a
    single-label set as one-hot rows), as Jindal & Singh's multi-label 22-label source."""
    if len(sets) == 1:
        return sets[0]

    multilabel = any(s.multilabel for s in sets)
    width = sum(s.num_classes for s in sets)
    imgs, labels, names, off = [], [], [], 0
    for s in sets:
        x = to_tensor(s.images, size=28, channels=3, normalize=False)
        imgs.append((x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
        if multilabel:
            block = np.zeros((len(s), width), dtype=np.int64)
            block[:, off : off + s.num_classes] = (
                s.labels if s.multilabel else one_hot(s.labels, s.num_classes)
            )
            labels.append(block)
        else:
            labels.append(s.labels + off)
        names += [f"{s.name}:{c}" for c in s.class_names]
        off += s.num_classes
    return ImageSet(
        name=name, images=np.concatenate(imgs), labels=np.concatenate(labels), class_names=tuple(names)
    )


def resolve_name(x: str, inline: dict[str, ImageSet]) -> str:
    """A dataset's name as results are stored under it. The user's own data at a path is loaded
    once here into ``inline`` under its card name (the file's stem), to travel with the jobs."""
    if x in inline or x == "imagenet" or is_checkpoint_path(x):
        return x

    if x in get_registry():
        return get_registry().get(x).name
    if Path(x).expanduser().exists():
        card = resolve_card(x)
        if card.name not in inline:
            inline[card.name] = load_dataset(card)
        return card.name
    return x

"""Loading a dataset by name or path through the loader plugins."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataMissingError, DatasetError, DsimError
from .plugins import named
from .records import DatasetCard, ImageSet

__all__ = ["data_dirs", "find_data_file", "load_dataset", "data_missing"]


def data_dirs() -> list[Path]:
    """Where dataset files are looked for: ``$DSIM_DATA_DIR`` (``os.pathsep``-separated), then the
    user data dir (``platformdirs``), where downloads are stored."""
    dirs = [Path(p).expanduser() for p in os.environ.get("DSIM_DATA_DIR", "").split(os.pathsep) if p]
    import platformdirs

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
        from .registry import get_registry

        card = get_registry().resolve(name_or_card)
    loader = _loader_for(card)
    try:
        data = loader.load({**card.loader_args, "strict": True} if strict else card.loader_args, card.name)
    except DsimError:
        raise
    except (ValueError, OSError, KeyError) as exc:
        raise DatasetError(f"dataset {card.name!r}: {exc}") from None
    except Exception as exc:
        raise DatasetError(
            f"dataset {card.name!r}: loader {loader.name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    if len(data) == 0:
        raise DatasetError(f"dataset {card.name!r} ({data.source}): no images")
    if card.num_classes and data.num_classes > card.num_classes:
        raise DatasetError(
            f"dataset {card.name!r} ({data.source}): labels have {data.num_classes} classes but "
            f"its card says {card.num_classes}"
        )
    return data.subsample(max_samples, seed=seed)

"""The target of a ranking or a validation, resolved once: a card plus its images.

A target may be a registered name (``chest``), a path to the user's data (a folder with one
sub-folder per class, a ``.csv``, an ``.npz``), an in-memory :class:`dsim.ImageSet`, arrays of
images and labels (``(N,H,W)``, ``(N,H,W,C)`` or ``(N,C,H,W)``) or a torch ``Dataset`` yielding
``(image, label)``. :func:`resolve_target` turns each into one :class:`ResolvedTarget`;
``dsim.rank`` and ``dsim.validate`` both take that object, so what is validated is exactly what
was ranked.

The user states facts about a target (``origin``, ``modality``, the cats-scans expert features
``colour``, ``content``, ``subject``, ``diversity``, ``classes``, ...) as ``facts={...}``
(``--fact key=value``), in a YAML card beside the data (``my_data.dsim.yaml`` next to
``my_data.npz``, ``dsim.yaml`` inside a folder) or in a card file (``--card FILE``); unknown keys
and values are one-line errors listing the allowed ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dsim.data.loading import data_missing, load_dataset
from dsim.kernel.errors import DsimError
from dsim.kernel.lazy import lazy_module
from dsim.kernel.records import EXPERT_FEATURES, DatasetCard, ImageSet
from dsim.kernel.registry import get_registry

np = lazy_module("numpy")  # imported on first use: a card-only ranking needs no numpy

__all__ = [
    "ResolvedTarget",
    "resolve_target",
    "TARGET_FACTS",
    "parse_facts",
    "card_file_beside",
    "images_from_arrays",
]

#: the facts a user may state about a target: allowed values, or None for a free word
TARGET_FACTS: Mapping[str, tuple[str, ...] | None] = {
    "origin": ("medical", "natural"),
    "modality": None,  # e.g. "chest X-ray", "breast ultrasound" (as the registry's cards write it)
    "colour": ("grey", "colour"),
    "content": ("objects", "textures", "both"),
    "subject": None,  # e.g. chest, skin, breast, retina, tissue, cells, blood, organs, brain
    "diversity": ("low", "high"),
    "classes": ("few", "many"),
    "title": None,
    "task": ("multi-class", "ordinal", "multi-label"),
}
_ALIASES = {"color": "colour", "gray": "grey", "greyscale": "grey", "grayscale": "grey", "color ": "colour"}


@dataclass
class ResolvedTarget:
    """One target: its card (facts, loader) and, for in-memory targets, its images.

    ``data`` is set for an ImageSet, arrays or a torch Dataset; a registered name or a path is
    read by its loader when :meth:`load` is first called (once: the full set is kept).
    ``registered``: a name of the registry (its results are stored under that name)."""

    card: DatasetCard
    data: ImageSet | None = None
    registered: bool = False
    facts: Mapping[str, str] = field(default_factory=dict)  # what the user stated, for notes
    _full: ImageSet | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def in_memory(self) -> bool:
        return self.data is not None

    def missing(self) -> str | None:
        """Why the target's images cannot be read here, or None."""
        return None if self.data is not None else data_missing(self.card)

    def load(self, max_samples: int | None = None, seed: int = 0, strict: bool = False) -> ImageSet:
        """The target's images (a seeded, stratified subsample of ``max_samples``)."""
        if self.data is not None:
            return self.data.subsample(max_samples, seed=seed)
        if strict:  # an unreadable file must fail: read again through the strict loader
            return load_dataset(self.card, max_samples=max_samples, seed=seed, strict=True)
        if self._full is None:
            self._full = load_dataset(self.card)
        return self._full.subsample(max_samples, seed=seed)


def resolve_target(
    target: Any,
    labels: Any = None,
    *,
    name: str | None = None,
    facts: Mapping[str, Any] | None = None,
    card: str | Path | None = None,
    class_names: tuple[str, ...] | None = None,
) -> ResolvedTarget:
    """The target as one object (see the module's doc). ``labels`` go with an array of images;
    ``name`` names an in-memory target (default: ``target-<8 hex of its content>``); ``facts``
    and ``card`` (a YAML card file) add what the user states about it, over the YAML card found
    beside a path's data."""
    if isinstance(target, ResolvedTarget):
        rt = target
    elif isinstance(target, DatasetCard):
        rt = ResolvedTarget(card=target, registered=target.name in get_registry())
    elif isinstance(target, ImageSet):
        rt = _in_memory(target, name)
    elif isinstance(target, (str, Path)):
        text = str(target)
        reg = get_registry()
        if text in reg and labels is None:
            rt = ResolvedTarget(card=reg.get(text), registered=True)
        else:
            rt = ResolvedTarget(card=reg.resolve(text))
            beside = card_file_beside(Path(text).expanduser())
            if beside is not None:
                rt = _with_facts(rt, read_card_file(beside), str(beside))
    elif _is_torch_dataset(target):
        rt = _in_memory(images_from_dataset(target, name or "target", class_names), name)
    elif hasattr(target, "shape") or isinstance(target, (list, tuple)):
        if labels is None:
            raise DsimError("target: an array of images needs its labels: dsim.rank(images, labels)")
        rt = _in_memory(images_from_arrays(target, labels, name or "target", class_names), name)
    else:
        raise DsimError(
            f"target: cannot use a {type(target).__name__} (a dataset name, a path, a dsim.ImageSet, "
            "arrays of images and labels, or a torch Dataset of (image, label))"
        )
    if card is not None:
        rt = _with_facts(rt, read_card_file(Path(card).expanduser()), str(card))
    if facts:
        rt = _with_facts(rt, parse_facts(facts), "facts")
    return rt


def _in_memory(data: ImageSet, name: str | None) -> ResolvedTarget:
    if data.multilabel:
        counts = data.class_counts()
        if not ((counts > 0) & (counts < len(data))).any():
            raise DsimError(f"target {data.name!r}: no label has both positive and negative images")
    nm = name or (data.name if data.name and data.name != "target" else f"target-{data.fingerprint()[:8]}")
    if nm != data.name:
        data = dataclasses.replace(data, name=nm)
    card = DatasetCard(
        name=nm,
        title="in-memory target",
        channels=data.channels,
        num_classes=data.num_classes,
        class_names=data.class_names,
        task=data.task if data.multilabel else "",
        size=len(data),
        image_size="x".join(str(n) for n in data.image_shape),
        provider="in memory",
    )
    return ResolvedTarget(card=card, data=data)


def _is_torch_dataset(x: Any) -> bool:
    return hasattr(x, "__getitem__") and hasattr(x, "__len__") and type(x).__module__.startswith("torch")


def images_from_arrays(images: Any, labels: Any, name: str = "target", class_names=None) -> ImageSet:
    """An :class:`ImageSet` of arrays: images ``(N,H,W)``, ``(N,H,W,C)`` or channel-first
    ``(N,C,H,W)`` (C = 1 or 3; a torch tensor too), labels ``(N,)`` or an ``(N, L)`` 0/1 matrix."""
    x = _numpy(images)
    y = _numpy(labels)
    if x.ndim == 4 and x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise DsimError(
            f"target: images of shape {x.shape}: expected (N,H,W), (N,H,W,C) or (N,C,H,W), C = 1 or 3"
        )
    if x.dtype.kind == "f" and x.size and float(np.nanmax(x)) <= 1.0 + 1e-6 and float(np.nanmin(x)) >= 0:
        x = np.round(x * 255).astype(np.uint8)  # [0, 1] floats (torchvision's ToTensor) as 8-bit
    try:
        return ImageSet(name=name, images=x, labels=y, class_names=tuple(class_names or ()))
    except ValueError as exc:
        raise DsimError(f"target: {exc}") from None


def images_from_dataset(ds: Any, name: str = "target", class_names=None) -> ImageSet:
    """An :class:`ImageSet` of a torch ``Dataset`` whose items are ``(image, label)``."""
    xs, ys = [], []
    for i in range(len(ds)):
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DsimError(f"target: item {i} of the {type(ds).__name__} is not an (image, label) pair")
        img = _numpy(item[0])
        if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
            img = img.transpose(1, 2, 0)  # a (C,H,W) tensor
        xs.append(img)
        ys.append(_numpy(item[1]))
    if not xs:
        raise DsimError(f"target: the {type(ds).__name__} is empty")
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
        raise DsimError(f"target: images of several shapes {sorted(shapes)[:3]}: resize them to one size")
    names = class_names or tuple(getattr(ds, "classes", ()) or ())
    return images_from_arrays(np.stack(xs), np.stack(ys), name, names)


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# ------------------------------------------------------------------------------ facts
def parse_facts(facts: Mapping[str, Any] | list[str] | tuple[str, ...]) -> dict[str, str]:
    """Checked facts: ``{key: value}`` or ``["key=value", ...]`` (``--fact``). An unknown key or
    value is a one-line error listing the allowed ones."""
    if isinstance(facts, (list, tuple)):
        pairs = {}
        for item in facts:
            if "=" not in str(item):
                raise DsimError(f"fact {item!r}: expected key=value (keys: {', '.join(TARGET_FACTS)})")
            k, v = str(item).split("=", 1)
            pairs[k.strip()] = v.strip()
        facts = pairs
    out = {}
    for k, v in dict(facts).items():
        key = _ALIASES.get(str(k).strip().lower(), str(k).strip().lower())
        if key not in TARGET_FACTS:
            raise DsimError(f"unknown fact {k!r}: the facts of a target are {', '.join(TARGET_FACTS)}")
        value = str(v).strip()
        allowed = TARGET_FACTS[key]
        if allowed is not None:
            value = _ALIASES.get(value.lower(), value.lower())
            if value not in allowed:
                raise DsimError(f"fact {key}={v!r}: {key} is one of {', '.join(allowed)}")
        elif not value:
            raise DsimError(f"fact {key}: empty value")
        out[key] = value
    return out


def card_file_beside(path: Path) -> Path | None:
    """The YAML card of a user's data: ``<stem>.dsim.yaml`` beside a file, ``dsim.yaml`` in a folder."""
    if path.is_dir():
        cands = [path / "dsim.yaml", path / "dsim.yml"]
    else:
        cands = [path.with_name(path.stem + ".dsim.yaml"), path.with_name(path.stem + ".dsim.yml")]
    return next((p for p in cands if p.is_file()), None)


def read_card_file(path: Path) -> dict[str, str]:
    """The facts of a YAML card file: a mapping of facts (``origin: medical``, ...), optionally
    with an ``expert:`` mapping as in registry.yaml."""
    import yaml  # only for a card file: a ranking without one needs no yaml

    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise DsimError(f"{path}: no such card file") from None
    except yaml.YAMLError as exc:
        raise DsimError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise DsimError(f"{path}: a card is a mapping of facts (keys: {', '.join(TARGET_FACTS)})")
    doc = {**{k: v for k, v in doc.items() if k != "expert"}, **dict(doc.get("expert") or {})}
    try:
        return parse_facts({k: v for k, v in doc.items() if v not in (None, "")})
    except DsimError as exc:
        raise DsimError(f"{path}: {exc}") from None


def _with_facts(rt: ResolvedTarget, facts: Mapping[str, str], where: str) -> ResolvedTarget:
    """The target with ``facts`` on its card: ``origin``/``modality``/``title``/``task`` as card
    fields, the six expert features in ``expert``; ``colour`` and ``classes`` follow from the
    data's channels and classes when the user gives other expert features but not these."""
    if not facts:
        return rt
    c = rt.card
    expert = dict(c.expert)
    expert.update({k: v for k, v in facts.items() if k in EXPERT_FEATURES})
    changes: dict[str, Any] = {"expert": expert}
    for k in ("origin", "modality", "title", "task"):
        if k in facts:
            changes[k] = facts[k]
    card = dataclasses.replace(c, **changes)
    if rt.data is not None and "task" in facts:
        rt = dataclasses.replace(rt, data=rt.data.with_task(facts["task"]))
    return dataclasses.replace(rt, card=card, facts={**rt.facts, **facts})


def derived_expert(card: DatasetCard, data: ImageSet | None) -> DatasetCard:
    """A user card with some expert features: ``colour`` (from the channels) and ``classes``
    (few below 10, many from 10) filled in from its images when not stated."""
    if not card.expert or data is None:
        return card
    expert = dict(card.expert)
    if "colour" not in expert:
        grey = data.channels == 1 or bool(
            np.all(data.images[..., :1] == data.images[..., 1:2])
            and np.all(data.images[..., :1] == data.images[..., 2:3])
        )
        expert["colour"] = "grey" if grey else "colour"
    expert.setdefault("classes", "few" if data.num_classes < 10 else "many")
    if "origin" not in expert and card.origin:
        expert["origin"] = card.origin
    return dataclasses.replace(card, expert=expert) if expert != dict(card.expert) else card

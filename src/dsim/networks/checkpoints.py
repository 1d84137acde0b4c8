"""Pretrained checkpoints as candidates: the cards (registry.yaml, plugins, a user's zoo file),
naming one on the command line (card name, ``timm:<name>``, a file with ``--arch``), building its
network, and its features on a target, extracted once and cached by content.

A checkpoint inherits the card of the dataset it was pretrained on, so what is known about that
dataset as a source (expert features, its size, results) applies to it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsim.data.loading import CHECKPOINT_SUFFIXES, is_checkpoint_path
from dsim.data.tensors import to_tensor
from dsim.kernel.catalog import backbone_missing, backbone_spec, create_backbone
from dsim.kernel.defaults import TIMM_WEIGHTS
from dsim.kernel.errors import DsimError
from dsim.kernel.records import CheckpointCard, DatasetCard, ImageSet, Representation
from dsim.kernel.registry import get_registry
from dsim.networks.weights import find_weights_file, locate_weights, weights_dirs

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "load_zoo",
    "checkpoint_from_spec",
    "checkpoint_missing",
    "weights_argument",
    "network_spec",
    "load_checkpoint",
    "checkpoint_input_size",
    "checkpoint_features",
    "as_source_card",
    "is_checkpoint_path",
    "source_cards",
]


def load_zoo(path: str | os.PathLike) -> list[CheckpointCard]:
    """Checkpoint cards from a user's YAML file: a list under ``checkpoints:`` (or a bare list),
    each with the fields of :class:`dsim.CheckpointCard`. Relative ``file:`` paths are relative to
    the YAML file's folder. One-line errors name the file and the entry."""
    import yaml

    p = Path(path).expanduser()
    try:
        doc = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise DsimError(f"{p}: zoo file not found") from None
    except yaml.YAMLError as exc:
        raise DsimError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    entries = doc.get("checkpoints", []) if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise DsimError(f"{p}: expected a list of checkpoint cards under 'checkpoints:'")
    cards = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DsimError(f"{p}: checkpoint entry #{i + 1} is not a mapping of card fields")
        entry = {**entry, "provider": f"zoo file {p.name}"}
        w = str(entry.get("weights", ""))
        if w.startswith("file:") and not Path(w[5:]).expanduser().is_absolute():
            local = p.parent / w[5:]
            if local.exists():
                entry["weights"] = f"file:{local.resolve()}"
        try:
            cards.append(CheckpointCard.from_dict(entry))
        except (TypeError, ValueError) as exc:
            raise DsimError(f"{p}: checkpoint entry #{i + 1} ({entry.get('name', '?')}): {exc}") from None
    return cards


def checkpoint_from_spec(
    spec: str, *, arch: str | None = None, known: Mapping[str, CheckpointCard]
) -> CheckpointCard | None:
    """The checkpoint a ``--sources`` entry names, or None when it names no checkpoint (a dataset):
    a card name or alias of ``known``, ``timm:<model name>`` (timm's ImageNet weights) or a path to
    a ``.pth/.pt`` file (its architecture from ``arch``)."""
    if spec in known:
        return known[spec]
    low = {n.lower(): c for n, c in known.items()}
    if spec.lower() in low:
        return low[spec.lower()]
    if spec.startswith(TIMM_WEIGHTS):
        name = spec[len(TIMM_WEIGHTS) :]
        if not name:
            raise DsimError(f"{TIMM_WEIGHTS} needs a model name, e.g. {TIMM_WEIGHTS}resnet50.a1_in1k")
        return CheckpointCard(
            name=spec,
            architecture=name,
            weights=f"{TIMM_WEIGHTS}{name}",
            pretrained_on="imagenet",
            family=name.split(".")[0].rstrip("0123456789_"),
            provider="command line",
        )
    if is_checkpoint_path(spec):
        p = Path(spec).expanduser()
        if not p.is_file():
            raise DsimError(f"checkpoint file {spec!r} not found")
        if not arch:
            raise DsimError(
                f"checkpoint file {spec!r}: say which architecture it is with --arch "
                "(a backbone name: `dsim plugins` lists the backbone plugins)"
            )
        return CheckpointCard(
            name=p.stem,
            architecture=arch,
            weights=f"file:{p.resolve()}",
            title=f"checkpoint file {p}",
            provider="command line",
        )
    return None


def network_spec(card: CheckpointCard) -> tuple[str, str]:
    """``(model name, weights)`` for ``dsim.create_backbone``: a ``timm:<tag>`` card builds the
    timm model of that very pretrained tag with weights ``"imagenet"``; a ``file:`` card its
    architecture with the path of the checked file; anything else (``random``, a backbone
    plugin's own names such as ``torchvision:...``) is handed to the backbone plugin as it is."""
    w = card.weights
    if w.startswith(TIMM_WEIGHTS):
        return w[len(TIMM_WEIGHTS) :] or card.architecture, "imagenet"
    if w.startswith("file:"):
        return card.architecture, str(
            locate_weights(w[5:], sha256=card.sha256, what=f"checkpoint {card.name!r}")
        )
    return card.architecture, w


def network_name(card: CheckpointCard) -> str:
    """The backbone name that builds ``card``'s network (a ``timm:<tag>`` card: that tag's model)."""
    w = card.weights
    return (w[len(TIMM_WEIGHTS) :] or card.architecture) if w.startswith(TIMM_WEIGHTS) else card.architecture


def known_checkpoints(
    zoo: Sequence[str | Path] = (), *, cards: Sequence[CheckpointCard] = ()
) -> dict[str, CheckpointCard]:
    """Every checkpoint card a ``--sources`` entry may name, by name and alias: the registry's
    (registry.yaml and plugins), then those of the ``zoo`` YAML files, then ``cards`` (zoo cards
    a caller has read already); a later card wins."""
    known = dict(get_registry().checkpoints)
    for card in [c for path in zoo for c in load_zoo(path)] + list(cards):
        known[card.name] = card
    for card in list(known.values()):
        for alias in card.aliases:
            known.setdefault(alias, card)
    return known


def weights_argument(card: CheckpointCard) -> str:
    """The ``weights`` argument of ``dsim.create_backbone`` for ``card`` (see :func:`network_spec`)."""
    return network_spec(card)[1]


def checkpoint_missing(card: CheckpointCard) -> str | None:
    """Why ``card``'s weights cannot be used here (one line saying how to supply them), or None.
    Nothing is built or downloaded to find out."""
    w = card.weights
    if w == "random":
        return None
    if w.startswith("file:"):
        if find_weights_file(w[5:]) is None:
            dirs = os.pathsep.join(str(d) for d in weights_dirs())
            return f"weights file {Path(w[5:]).name!r} not here: put it in DSIM_WEIGHTS_DIR (searched {dirs})"
        return None
    model, weights = (
        (w[len(TIMM_WEIGHTS) :] or card.architecture, "imagenet")
        if w.startswith(TIMM_WEIGHTS)
        else (card.architecture, w)
    )
    return backbone_missing(model, weights)


def load_checkpoint(card: CheckpointCard, *, num_classes: int = 0, in_chans: int = 3, seed: int = 0):
    """The network of ``card`` with its weights (a feature extractor with ``num_classes=0``)."""
    model_name, weights = network_spec(card)
    return create_backbone(model_name, weights=weights, num_classes=num_classes, in_chans=in_chans, seed=seed)


def as_source_card(card: CheckpointCard, datasets: Mapping[str, DatasetCard]) -> DatasetCard:
    """The dataset card a checkpoint candidate is ranked with: the card of the set it was pretrained
    on (its facts, expert features and images apply), under the checkpoint's name, with the
    network's facts in ``network``."""
    net = {
        "architecture": card.architecture,
        "family": card.family,
        "parameters": card.parameters,
        "weights": card.weights,
        "pretrained_on": card.pretrained_on,
    }
    base = datasets.get(card.pretrained_on or "")
    if base is None:
        return DatasetCard(
            name=card.name,
            aliases=card.aliases,
            title=card.title or f"checkpoint {card.name}",
            provider=card.provider,
            licence=card.licence,
            network=net,
        )
    return dataclasses.replace(
        base,
        name=card.name,
        aliases=card.aliases,
        title=card.title or f"{card.architecture} pretrained on {base.name}",
        derived_from=base.name,
        checksum=None,
        provider=card.provider,
        notes=(f"checkpoint: {card.architecture}, weights {card.weights}; dataset facts of {base.name}",),
        network=net,
    )


#: images per forward pass of a checkpoint's network: peak memory is one network and one batch of
#: its activations (a MobileNet at 224 px: about 0.2 GB at 64), whatever the number of networks
FEATURE_BATCH = 64


def _weights_identity(card: CheckpointCard, model) -> str:
    return str(model.dsim_weights_id)


def checkpoint_input_size(card: CheckpointCard, model=None) -> int:
    """The image size ``card``'s network runs at: the card's ``input_size``, else the size its
    backbone declares (:meth:`dsim.BackboneFactory.spec`: 32 for the CIFAR ResNets, 224 for
    ImageNet networks; the network is built to ask when ``model`` is not given)."""
    if card.input_size:
        return int(card.input_size)
    if model is None:
        model = load_checkpoint(card, num_classes=0)
    return int(backbone_spec(model).input_size)


def checkpoint_features(
    card: CheckpointCard,
    data: ImageSet,
    *,
    image_size: int | None = None,
    with_logits: bool = False,
    ctx=None,
) -> tuple[Any, Any]:
    """Penultimate features (and, with ``with_logits``, the stored classifier's logits) of
    ``card``'s network on ``data``: extracted once per (weights content, architecture,
    preprocessing, data fingerprint) and cached through ``ctx.cache``; every score reuses them.
    A card with a classifier (``num_classes``) gets its logits in the same pass, so feature
    scores and classifier scores (LEEP, NCE) share one extraction."""
    import numpy as np  # noqa: PLC0415 -- `dsim zoo` and the listings must not import numpy

    k = int(card.num_classes or 0)  # the classifier's outputs come along whenever there is one
    device = ctx.torch_device() if ctx is not None else None
    amp = device is not None and device.type == "cuda"  # fp16 autocast on a GPU, fp32 elsewhere
    if with_logits and not k:
        raise DsimError(
            f"checkpoint {card.name!r} has no classifier (its card gives no num_classes): "
            "LEEP and NCE need the source model's class outputs"
        )
    model = None
    digest = card.weights.startswith("file:") and card.sha256
    if not digest:  # no digest on the card: the loaded network's own weights id makes the key
        model = load_checkpoint(card, num_classes=k, seed=getattr(ctx, "seed", 0))
    size = int(image_size or checkpoint_input_size(card, model))  # (the network built once)
    ident = {
        "arch": card.architecture,
        "weights": card.weights,
        "sha256": card.sha256,
        "size": size,
        "mean": list(card.mean),
        "std": list(card.std),
        "k": k,
        "data": data.fingerprint(),
        "version": 1,
        **({"precision": "fp16-autocast"} if amp else {}),  # other numbers: another key
    }
    cache = getattr(ctx, "cache", None)
    if digest:
        key = Representation.make_key("features", ident, {})
    else:
        key = Representation.make_key("features", {**ident, "weights_id": _weights_identity(card, model)}, {})
    if cache is not None:
        hit = cache.get("features", key)
        if hit is not None:
            return hit.arrays["features"], hit.arrays.get("logits") if with_logits else None
    import torch

    if model is None:
        model = load_checkpoint(card, num_classes=k, seed=getattr(ctx, "seed", 0))
    device = device or torch.device("cpu")
    model = model.to(device).eval()
    mean = torch.tensor(card.mean).view(1, 3, 1, 1)
    std = torch.tensor(card.std).view(1, 3, 1, 1)
    feats, logits = [], []
    progress = getattr(ctx, "progress", None)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
        for s in range(0, len(data), FEATURE_BATCH):
            x = to_tensor(data.images[s : s + FEATURE_BATCH], size=size, channels=3, normalize=False)
            x = ((x - mean) / std).to(device)
            f = model.forward_head(model.forward_features(x), pre_logits=True)
            feats.append(f.float().cpu().numpy())
            if k:
                logits.append(model.get_classifier()(f).float().cpu().numpy())
            if progress is not None:
                progress(f"features of {card.name}", min(s + FEATURE_BATCH, len(data)), len(data))
    F = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
    L = np.concatenate(logits) if k and logits else None
    if cache is not None:
        arrays = {"features": F, **({"logits": L} if L is not None else {})}
        cache.put(Representation(measure="features", dataset=data.name, key=key, config=ident, arrays=arrays))
    return F, L if with_logits else None


def source_cards() -> dict[str, DatasetCard]:
    """Every card a candidate source can have: the registry's datasets, and each registered
    checkpoint as its pretraining set's card under the checkpoint's name (:func:`as_source_card`)."""
    reg = get_registry()
    cards = {c.name: c for c in reg}
    for ck in reg.checkpoints.values():
        cards.setdefault(ck.name, as_source_card(ck, cards))
    return cards

"""The dataset registry: cards from ``registry.yaml`` plus the cards plugins register.

Names resolve case-insensitively through aliases (``chest`` -> the Kermany chest X-ray set); an
unknown name raises :class:`dsim.UnknownNameError` with the closest matches. A path to a folder,
``.npz`` or ``.csv`` resolves to a card made for the user's own data, read by the loader plugin
that claims it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable

from dsim.kernel.cache import default_cache_dir
from dsim.kernel.errors import DatasetError, DsimError, UnknownNameError
from dsim.kernel.files import atomic_write
from dsim.kernel.plugins import collect, note_conflict, on_reset
from dsim.kernel.records import CheckpointCard, DatasetCard

__all__ = ["Registry", "get_registry", "registry_path", "family"]


def registry_path() -> Path:
    """The registry.yaml shipped inside the package (the repo's top-level registry.yaml links here)."""
    return Path(str(resources.files("dsim") / "registry.yaml"))


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", name.strip().lower())


def _read_yaml(path: Path) -> dict:
    """The registry file, parsed; the parse is cached as JSON under the sha256 of the file's text
    (the cache dir's ``registry/``), which reads ~10x faster than YAML."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DsimError(f"{path}: dataset registry not found") from None

    cached = default_cache_dir() / "registry" / f"{hashlib.sha256(text.encode()).hexdigest()}.json"
    try:
        return json.loads(cached.read_text())
    except (OSError, ValueError):
        pass  # not cached yet (or unreadable): parse the YAML
    import yaml  # only here: a cached parse needs no yaml import

    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present
        doc = yaml.load(text, Loader=loader) or {}
    except yaml.YAMLError as exc:
        raise DsimError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        atomic_write(cached, json.dumps(doc))
    except OSError:  # a read-only cache dir: parse again next time
        pass
    return doc


def load_registry_yaml(path: Path) -> list[DatasetCard]:
    """The dataset cards of a registry file (its ``datasets:`` list)."""
    return _cards(path, _read_yaml(path), "datasets", DatasetCard, "dataset")


def _cards(path: Path, doc: dict, key: str, cls, what: str) -> list:
    cards = []
    for i, entry in enumerate(doc.get(key) or []):
        try:
            cards.append(cls.from_dict(entry))
        except (TypeError, ValueError) as exc:
            raise DsimError(f"{path}: {what} entry #{i + 1} ({entry.get('name', '?')}): {exc}") from None
    return cards


class Registry:
    """All dataset cards by name, with alias resolution, and the checkpoint cards."""

    def __init__(self, cards: Iterable[DatasetCard], checkpoints: Iterable[CheckpointCard] = ()):
        self.cards: dict[str, DatasetCard] = {}
        self._alias: dict[str, str] = {}
        self.checkpoints: dict[str, CheckpointCard] = {}
        self._ckpt_alias: dict[str, str] = {}
        for card in cards:
            self.add(card)
        for card in checkpoints:
            self.add_checkpoint(card)

    def add_checkpoint(self, card: CheckpointCard) -> None:
        """Register a checkpoint card; the first card of a name wins (registry.yaml first)."""
        _add_card("checkpoint", card, self.checkpoints, self._ckpt_alias)

    def fingerprint(self) -> str:
        """A content hash of every card (dataset and checkpoint), for keys of what is learned from them."""

        h = hashlib.sha256()
        for card in (*self.cards.values(), *self.checkpoints.values()):
            h.update(repr(card).encode())
        return h.hexdigest()

    def checkpoint(self, name: str) -> CheckpointCard | None:
        """The checkpoint card of a name or alias, or None."""
        key = self._ckpt_alias.get(_norm(name))
        return self.checkpoints[key] if key else None

    def add(self, card: DatasetCard) -> None:
        """Register a dataset card; the first card of a name wins (registry.yaml first)."""
        _add_card("dataset card", card, self.cards, self._alias)

    def __contains__(self, name: str) -> bool:
        return _norm(name) in self._alias

    def __iter__(self):
        return iter(self.cards.values())

    def __len__(self) -> int:
        return len(self.cards)

    def names(self) -> list[str]:
        return [n for c in self.cards.values() for n in c.all_names]

    def get(self, name: str) -> DatasetCard:
        key = _norm(name)
        if key not in self._alias:
            raise UnknownNameError("dataset", name, self.names())
        return self.cards[self._alias[key]]

    def family(self, card: DatasetCard | str) -> set[str]:
        """The names that hold the same images as ``card``: itself, its parent (``derived_from``),
        its children and its siblings (the same parent), e.g. chest, pneumoniamnist and the 28 px
        subset; dermamnist and ham10000-8x8 (both isic). A family member is never a candidate
        source for another, and leave-one-target-out holds out the whole family. An aggregate
        whose pretraining leaves the target out (MedMNIST leave-target-out) is no member."""
        if isinstance(card, str):
            card = self.get(card) if card in self else DatasetCard(name=card)
        fam = {card.name}
        if card.derived_from:
            fam.add(card.derived_from)
            fam |= {c.name for c in self if c.derived_from == card.derived_from}
        fam |= {c.name for c in self if c.derived_from == card.name}
        return fam

    def resolve(self, name_or_path: str) -> DatasetCard:
        """A card for a registered name, or a card for the user's own data at a path."""
        if name_or_path in self:
            return self.get(name_or_path)
        p = Path(name_or_path).expanduser()
        looks_like_path = p.exists() or "/" in name_or_path or p.suffix.lower() in (".npz", ".csv")
        if not looks_like_path:
            raise UnknownNameError("dataset", name_or_path, self.names())
        if not p.exists():
            raise DatasetError(f"{name_or_path}: no such file or folder")
        return card_for_path(p)


def _add_card(what: str, card, cards: dict, aliases: dict[str, str]) -> None:
    """Add ``card`` under its name and aliases unless a card of that name is there already (the
    first wins: registry.yaml before plugins), warning when another provider gave that name."""
    if card.name in cards:
        if cards[card.name].provider != card.provider:
            note_conflict(what, card.name, cards[card.name].provider, card.provider)
        return
    cards[card.name] = card
    for n in card.all_names:
        aliases.setdefault(_norm(n), card.name)


def card_for_path(p: Path) -> DatasetCard:
    for plugin, loader in collect("dsim_register_loaders"):
        try:
            args = loader.claims(p)
        except Exception as exc:
            raise DsimError(f"loader {loader.name!r} (plugin {plugin!r}) raised on {p}: {exc}") from None
        if args is not None:
            name = p.stem if p.is_file() else p.name
            return DatasetCard(
                name=name or str(p),
                title=f"user data at {p}",
                origin="",
                loader=loader.name,
                loader_args=dict(args),
                provider="user path",
            )
    raise DatasetError(
        f"{p}: no dataset loader can read it (expected a folder with one sub-folder per class, "
        "a .csv of path,label or a .npz of images and labels)"
    )


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """registry.yaml's cards, then the cards plugins register (dataset and checkpoint cards)."""
    path = registry_path()
    doc = _read_yaml(path)
    reg = Registry(
        _cards(path, doc, "datasets", DatasetCard, "dataset"),
        _cards(path, doc, "checkpoints", CheckpointCard, "checkpoint"),
    )
    for plugin, card in collect("dsim_register_cards"):
        if isinstance(card, dict):
            card = DatasetCard.from_dict({**card, "provider": plugin})
        reg.add(card)
    for plugin, card in collect("dsim_register_checkpoints"):
        if isinstance(card, dict):
            card = CheckpointCard.from_dict({**card, "provider": plugin})
        elif card.provider == "registry.yaml":
            card = dataclasses.replace(card, provider=plugin)
        reg.add_checkpoint(card)
    return reg


def family(card: DatasetCard | str) -> set[str]:
    """:meth:`Registry.family` of the process-wide registry."""
    return get_registry().family(card)


on_reset(get_registry.cache_clear)

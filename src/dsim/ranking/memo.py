"""A ranking remembered by its content: what a predictor returned for one target, its candidates
and the evidence, kept in the cache so that the same ranking asked again costs a file read.

The key is everything :meth:`dsim.Predictor.rank` sees and is made of: the predictor (its class,
parameters and fitted state), the source code of dsim and of the predictor's package, the target's
card, every candidate (card, measure values, their origins), every known result (the published
evidence and the results store) and the measures' kinds. File names never enter it: a new result in
the store, a refitted predictor, a changed card or an edited line of code is another key. A warm
card-only ``dsim rank`` therefore skips the predictor's work (and numpy's import). Entries are
written atomically through :class:`dsim.kernel.cache.Cache`; an unreadable one is a miss.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsim.kernel.cache import Cache
from dsim.kernel.interfaces import Candidate, Predictor
from dsim.kernel.records import DatasetCard, Ranking, TransferResult, stable_hash

__all__ = ["remembered_rank", "ranking_key"]

#: bump when the stored form of a ranking changes
MEMO_VERSION = 1


@functools.cache
def _source_hash(root: str) -> str:
    """SHA-256 of every ``.py`` file under ``root`` (a package folder) or of ``root`` (a module)."""
    path = Path(root)
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _code_of(cls: type) -> str:
    """The content of dsim's source and of the package (or module) that ``cls`` comes from."""
    dsim_root = Path(sys.modules["dsim"].__file__).parent
    mod = sys.modules.get(cls.__module__)
    path = Path(getattr(mod, "__file__", "") or "")
    top = sys.modules.get(cls.__module__.split(".")[0])
    top_file = getattr(top, "__file__", None)
    root = Path(top_file).parent if top_file and Path(top_file).name == "__init__.py" else path
    return stable_hash([_source_hash(str(dsim_root)), _source_hash(str(root)) if str(root) else None])


def _plain(o: Any) -> Any:
    """JSON for what a key holds besides JSON's own types: a record as its field values, a set
    sorted, a mapping as a dict, a numpy value as its ``tolist()`` (without importing numpy)."""
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return [type(o).__name__, *(getattr(o, f.name) for f in dataclasses.fields(o))]
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=repr)
    if isinstance(o, Mapping):
        return dict(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not part of a ranking key: {type(o).__name__}")


def ranking_key(
    pred: Predictor,
    target: DatasetCard,
    candidates: Sequence[Candidate],
    history: Sequence[TransferResult],
    measure_kinds: Mapping[str, str],
) -> str | None:
    """The content key of ``pred.rank(target, candidates, history, measure_kinds)``; None when
    something in it has no plain form (then the ranking is computed, not remembered)."""
    cls = type(pred)
    doc = {
        "version": MEMO_VERSION,
        "predictor": [cls.__module__, cls.__qualname__, pred.name],
        "code": _code_of(cls),
        "params": pred.get_params(),
        "state": pred.get_state(),
        "target": target,
        "candidates": list(candidates),
        "history": list(history),
        "kinds": dict(measure_kinds),
    }
    try:
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=_plain)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def remembered_rank(
    pred: Predictor,
    target: DatasetCard,
    candidates: Sequence[Candidate],
    history: Sequence[TransferResult],
    measure_kinds: Mapping[str, str],
    cache: Cache | None,
) -> Ranking:
    """``pred.rank(...)``, read from ``cache`` when the same content was ranked before, else
    computed and stored (``cache`` None: computed). Exactly what the predictor returns: a stored
    ranking equal to it."""
    key = None if cache is None else ranking_key(pred, target, candidates, history, measure_kinds)
    if key is None:
        return pred.rank(target, candidates, history, measure_kinds)
    doc = cache.get_json("rankings", key)
    if doc is not None and doc.get("key") == key:
        try:
            return Ranking.from_dict(doc["ranking"])
        except (KeyError, TypeError, ValueError):
            cache.misses += 1  # an entry of another form: ranked again below and overwritten
    ranking = pred.rank(target, candidates, history, measure_kinds)
    doc = json.loads(json.dumps({"key": key, "ranking": ranking.to_dict()}))
    if Ranking.from_dict(doc["ranking"]) == ranking:  # stored only when it reads back the same
        cache.put_json("rankings", key, doc)
    return ranking

"""The on-disk representation cache, keyed by content.

A key is :meth:`dsim.Representation.make_key` of the measure name, its config and the
fingerprints of the data (and probe weights) it was computed from. File names never enter a key:
renaming a dataset file reuses its cache; changing one pixel does not.

Location: ``$DSIM_CACHE_DIR`` or the platform's user cache dir (``platformdirs``). Writes are
atomic (temp file + rename), so a killed process never leaves a half-written entry; an unreadable
entry is treated as a miss and recomputed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dsim.kernel.errors import one_line, warn
from dsim.kernel.files import atomic_write, user_path
from dsim.kernel.lazy import lazy_module
from dsim.kernel.records import Representation

np = lazy_module("numpy")  # imported on first use: the listings need no numpy

__all__ = ["Cache", "default_cache_dir"]


def default_cache_dir() -> Path:
    return user_path("DSIM_CACHE_DIR", cache=True)


class Cache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0
        #: False once a write failed: the work goes on uncached, said once
        self.writable = True

    def _write(self, path: Path, write) -> None:
        """Write one entry; a cache that cannot be written (read-only, full, a file where a folder
        should be) degrades to uncached work with one warning naming it."""
        if not self.writable:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, write)
        except OSError as exc:
            self.writable = False
            warn(
                f"cache {self.root} cannot be written ({one_line(exc)}); working uncached: set "
                "DSIM_CACHE_DIR to a writable folder to keep results between runs",
                key="cache-unwritable",
            )

    def _paths(self, measure: str, key: str) -> tuple[Path, Path]:
        d = self.root / "representations" / measure / key[:2]
        return d / f"{key}.json", d / f"{key}.npz"

    def get(self, measure: str, key: str) -> Representation | None:
        meta_path, arr_path = self._paths(measure, key)
        if not meta_path.exists():
            self.misses += 1
            return None
        try:
            d = json.loads(meta_path.read_text())
            arrays = {}
            if arr_path.exists():
                with np.load(arr_path, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
            d["arrays"] = arrays
            rep = Representation(**d)
            if rep.key != key:
                raise ValueError("key mismatch")
        except Exception:
            self.misses += 1
            return None
        self.hits += 1
        return rep

    def put(self, rep: Representation) -> None:
        meta_path, arr_path = self._paths(rep.measure, rep.key)
        if rep.arrays:
            self._write(arr_path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in rep.arrays.items()}))
        d = rep.to_dict()
        d.pop("arrays")
        self._write(meta_path, lambda f: f.write(json.dumps(d, indent=1).encode()))

    def get_value(self, key: str) -> float | None:
        """A cached scalar (pair values of measures that cannot be split per dataset)."""
        p = self.root / "values" / key[:2] / f"{key}.json"
        try:
            return float(json.loads(p.read_text())["value"])
        except Exception:
            return None

    def put_value(self, key: str, value: float, **meta) -> None:
        p = self.root / "values" / key[:2] / f"{key}.json"
        self._write(p, lambda f: f.write(json.dumps({"value": value, **meta}).encode()))

    def get_json(self, kind: str, key: str) -> dict | None:
        """A JSON document stored under ``kind``/``key`` (``put_json``), or None (a miss, or an
        unreadable entry)."""
        p = self.root / kind / key[:2] / f"{key}.json"
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            self.misses += 1
            return None
        if not isinstance(doc, dict):
            self.misses += 1
            return None
        self.hits += 1
        return doc

    def put_json(self, kind: str, key: str, doc: Mapping[str, Any]) -> None:
        """Store a JSON document under ``kind``/``key``, atomically, its keys in their order."""
        p = self.root / kind / key[:2] / f"{key}.json"
        self._write(p, lambda f: f.write(json.dumps(doc).encode()))  # order kept

"""The results store: every finished fold of every ``dsim validate`` run, in SQLite.

One row per finished fold, keyed by :attr:`dsim.RunSpec.key` (the content hash of source, target,
backbone, strategy, fold, seed, hyper-parameters and data fingerprints): re-running a validation
skips the folds already here, and a process killed mid-training loses only the fold in flight.
The database runs in WAL mode with one short transaction per row, so a reader (``dsim results``,
``dsim rank``) never blocks a writer and a SIGKILL never leaves half a row.

Location: ``$DSIM_RESULTS`` or ``<user data dir>/dsim/results.sqlite`` (``platformdirs``).

The published tables the plugins ship can be copied in (:meth:`ResultsStore.import_published`) so
that the store holds all measured transfer results in one place; rows keep their ``origin``. A
results table of one's own (``dsim results import FILE.csv --setup NAME``, :mod:`dsim.validation.results_table`)
is imported with :meth:`ResultsStore.import_table`, in one transaction.

``repeat`` numbers independent repetitions (for ``dsim validate`` runs: the seed); an older
database file without the ``repeat`` and ``hyperparameters`` columns gains them when opened
(``ALTER TABLE``; its ``dsim validate`` rows get their seed as repeat, the others 0, and no
hyper-parameters).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

import platformdirs

from dsim.kernel.defaults import BASELINE_STRATEGY, DEFAULT_STRATEGY
from dsim.kernel.errors import StorageError, one_line
from dsim.kernel.plugins import collect
from dsim.kernel.records import RunResult, RunSpec, TransferResult, stable_hash

__all__ = ["ResultsStore", "default_store_path", "setup_of"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    backbone TEXT NOT NULL,
    strategy TEXT NOT NULL,
    fold INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    setup TEXT NOT NULL,
    auc REAL,
    accuracy REAL,
    kappa REAL,
    metrics TEXT NOT NULL,
    timings TEXT NOT NULL,
    spec TEXT,
    checkpoint TEXT,
    notes TEXT NOT NULL DEFAULT '[]',
    origin TEXT NOT NULL,
    created REAL NOT NULL,
    repeat INTEGER NOT NULL DEFAULT 0,
    hyperparameters TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_target ON runs (target);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    error TEXT NOT NULL,
    created REAL NOT NULL
);
"""

ORIGIN = "dsim validate"
#: columns added after the first release, with their definition (see ``ResultsStore._migrate``)
_ADDED_COLUMNS = (
    ("repeat", "INTEGER NOT NULL DEFAULT 0"),
    ("hyperparameters", "TEXT NOT NULL DEFAULT '{}'"),
)
_COLUMNS = (
    "key",
    "source",
    "target",
    "backbone",
    "strategy",
    "fold",
    "seed",
    "setup",
    "auc",
    "accuracy",
    "kappa",
    "metrics",
    "timings",
    "spec",
    "checkpoint",
    "notes",
    "origin",
    "created",
    "repeat",
    "hyperparameters",
)
_INSERT = f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
#: key prefix of the rows of imported results tables (``import_table``); ``ext:`` marks the rows
#: copied from the plugins' published results (``import_published``)
TABLE_PREFIX = "table:"


def default_store_path() -> Path:
    env = os.environ.get("DSIM_RESULTS")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("dsim")) / "results.sqlite"


def setup_of(spec: RunSpec) -> str:
    """The protocol a result was measured under: results of one setup are comparable.

    The from-scratch baseline and full fine-tuning share a setup (the cats-scans protocol), so
    that transferability T can be computed between them; other strategies get their own."""
    hp = spec.hyperparameters or {}
    parts = ["dsim", spec.backbone, f"{hp.get('image_size', 28)}px"]
    if hp.get("train_size"):
        parts.append(f"n{hp['train_size']}")
    if spec.strategy not in (DEFAULT_STRATEGY, BASELINE_STRATEGY):
        parts.append(spec.strategy)
    return ":".join(str(p) for p in parts)


class ResultsStore:
    """SQLite results store (one row per finished fold). Safe to open from several processes."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=NORMAL")
            self._con.executescript(_SCHEMA)
            self._migrate()
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StorageError(
                f"results store {str(self.path)!r} cannot be opened ({one_line(exc)}): point --store or "
                "DSIM_RESULTS at a file in a writable folder"
            ) from None

    def check_writable(self) -> None:
        """A one-line :class:`dsim.StorageError` naming the store and what to do when it cannot
        be written (a read-only file or folder), before any work; nothing is written."""
        try:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                v = int(self._con.execute("PRAGMA user_version").fetchone()[0])
                self._con.execute(f"PRAGMA user_version={v}")  # a write that changes nothing
            finally:
                self._con.execute("ROLLBACK")
        except sqlite3.DatabaseError as exc:
            raise StorageError(
                f"results store {str(self.path)!r} cannot be written ({one_line(exc)}): make it and its "
                "folder writable, or point --store / DSIM_RESULTS at another file"
            ) from None

    def _columns(self) -> set[str]:
        return {r[1] for r in self._con.execute("PRAGMA table_info(runs)")}

    def _migrate(self) -> None:
        """Add the columns a database written by an older dsim lacks (one write transaction, so
        that two processes opening the same old file do not both alter it)."""
        if all(c in self._columns() for c, _ in _ADDED_COLUMNS):
            return
        self._con.execute("BEGIN IMMEDIATE")
        try:
            have = self._columns()
            for col, decl in _ADDED_COLUMNS:
                if col not in have:
                    self._con.execute(f"ALTER TABLE runs ADD COLUMN {col} {decl}")
            if "repeat" not in have:  # dsim validate's runs: the seed is the repetition
                self._con.execute("UPDATE runs SET repeat = seed WHERE origin = ?", (ORIGIN,))
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ writing
    def put(self, result: RunResult, *, origin: str = ORIGIN) -> None:
        """Store one finished fold (replaces a row with the same key). Atomic."""
        s = result.spec
        m = dict(result.metrics)
        row = (
            s.key,
            s.source,
            s.target,
            s.backbone,
            s.strategy,
            int(s.fold),
            int(s.seed),
            setup_of(s),
            _num(m.get("auc")),
            _num(m.get("accuracy")),
            _num(m.get("kappa")),
            json.dumps(m, sort_keys=True),
            json.dumps(dict(result.timings), sort_keys=True),
            json.dumps(s.to_dict(), sort_keys=True),
            result.checkpoint,
            json.dumps(list(result.notes)),
            origin,
            time.time(),
            int(s.seed),  # repeat: runs with another seed are an independent repetition
            json.dumps(dict(s.hyperparameters or {}), sort_keys=True, default=str),
        )
        self._con.execute(_INSERT, row)
        self._con.execute("DELETE FROM failures WHERE key = ?", (s.key,))

    def put_failure(self, spec: RunSpec, error: str) -> None:
        self._con.execute(
            "INSERT OR REPLACE INTO failures VALUES (?,?,?,?)", (spec.key, spec.label, error, time.time())
        )

    def import_results(self, results: Iterable[TransferResult]) -> int:
        """Import measured results from elsewhere (e.g. the published cats-scans table)."""
        n = 0
        self._con.execute("BEGIN")
        try:
            for r in results:
                key = "ext:" + stable_hash(r.to_dict())
                row = _imported_row(
                    key, r, _backbone_of(r.setup), None, r.origin or "imported", time.time(), "{}"
                )
                self._con.execute(_INSERT, row)
                n += 1
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        return n

    def import_table(
        self,
        results: Iterable[TransferResult],
        *,
        hyperparameters: Iterable[dict[str, Any]] | None = None,
        backbones: Iterable[str] | None = None,
        strategies: Iterable[str] | None = None,
        table_id: str,
    ) -> tuple[int, int]:
        """Import a results table in one transaction: all its rows or none. ``table_id`` names
        the import (e.g. its origin and setup); importing a table with the same id again
        replaces the rows of the earlier import. Returns (rows written, earlier rows replaced).
        ``hyperparameters``, ``backbones`` and ``strategies`` run parallel to ``results``."""
        results = list(results)
        hps = list(hyperparameters) if hyperparameters is not None else [{} for _ in results]
        bbs = list(backbones) if backbones is not None else ["" for _ in results]
        sts = list(strategies) if strategies is not None else [None for _ in results]
        if not (len(hps) == len(bbs) == len(sts) == len(results)):
            raise ValueError("import_table: hyperparameters, backbones and strategies must match the results")
        prefix = f"{TABLE_PREFIX}{stable_hash(table_id)[:16]}:"
        now = time.time()
        self._con.execute("BEGIN IMMEDIATE")
        try:
            (replaced,) = self._con.execute(
                "SELECT COUNT(*) FROM runs WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            ).fetchone()
            self._con.execute("DELETE FROM runs WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
            for r, hp, bb, st in zip(results, hps, bbs, sts):
                ident = {
                    "setup": r.setup,
                    "source": r.source,
                    "target": r.target,
                    "fold": r.fold,
                    "repeat": r.repeat,
                }
                hp_json = json.dumps(dict(hp), sort_keys=True, default=str)
                row = _imported_row(prefix + stable_hash(ident), r, bb or "", st, r.origin, now, hp_json)
                self._con.execute(_INSERT, row)
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        return len(results), int(replaced)

    def import_published(self) -> int:
        """Import every result the plugins bring as prior knowledge (``dsim_known_results``
        whose origin starts with ``published``)."""
        return self.import_results(
            r for plugin, r in collect("dsim_known_results") if str(r.origin).startswith("published")
        )

    # ------------------------------------------------------------------ reading
    def has(self, key: str) -> bool:
        return self._con.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone() is not None

    def keys(self) -> set[str]:
        return {k for (k,) in self._con.execute("SELECT key FROM runs")}

    def get(self, key: str) -> RunResult | None:
        row = self._con.execute(
            "SELECT spec, metrics, timings, checkpoint, notes FROM runs WHERE key = ?", (key,)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return RunResult(
            spec=RunSpec.from_dict(json.loads(row[0])),
            metrics=json.loads(row[1]),
            timings=json.loads(row[2]),
            checkpoint=row[3],
            notes=tuple(json.loads(row[4])),
        )

    def rows(
        self,
        *,
        target: str | None = None,
        source: str | None = None,
        strategy: str | None = None,
        origin: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored rows as dicts (newest last), optionally filtered."""
        where, args = [], []
        for col, val in (("target", target), ("source", source), ("strategy", strategy)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if origin is not None:
            where.append("origin LIKE ?")
            args.append(origin + "%")
        cols = [c for c in _COLUMNS if c != "spec"]
        sql = f"SELECT {', '.join(cols)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created, key"
        out = []
        for r in self._con.execute(sql, args):
            d = dict(zip(cols, r))
            for k in ("metrics", "timings", "notes", "hyperparameters"):
                d[k] = json.loads(d[k])
            out.append(d)
        return out

    def failures(self) -> list[dict[str, Any]]:
        return [
            dict(zip(("key", "label", "error", "created"), r))
            for r in self._con.execute("SELECT key, label, error, created FROM failures ORDER BY created")
        ]

    def transfer_results(
        self, *, include_published: bool = False, include_imported: bool | None = None
    ) -> list[TransferResult]:
        """Stored rows as :class:`dsim.TransferResult` (the scratch baseline as source == target):
        ``dsim validate``'s own runs and the imported results tables; with ``include_published``
        also the rows copied from the plugins' published results (:meth:`import_published`),
        which their plugins already provide. ``include_imported`` is the older name of
        ``include_published``."""
        if include_imported is not None:
            include_published = include_imported
        out = []
        for d in self.rows():
            own = d["origin"] == ORIGIN or d["key"].startswith(TABLE_PREFIX)
            if not own and not include_published:
                continue
            if d["auc"] is None:
                continue
            out.append(
                TransferResult(
                    source=d["source"],
                    target=d["target"],
                    fold=int(d["fold"]),
                    auc=float(d["auc"]),
                    origin=d["origin"],
                    setup=d["setup"],
                    accuracy=d["accuracy"],
                    kappa=d["kappa"],
                    repeat=int(d["repeat"]),
                )
            )
        return out

    def __len__(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def close(self) -> None:
        self._con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _imported_row(
    key: str,
    r: TransferResult,
    backbone: str,
    strategy: str | None,
    origin: str,
    created: float,
    hp_json: str,
) -> tuple:
    """The ``runs`` row (in ``_COLUMNS`` order) of a result measured elsewhere: its metrics are
    its AUC (accuracy, kappa when given); the strategy, when not given, full fine-tuning (the
    from-scratch baseline when source is target)."""
    m = {"auc": r.auc}
    if r.accuracy is not None:
        m["accuracy"] = r.accuracy
    if r.kappa is not None:
        m["kappa"] = r.kappa
    strategy = strategy or (BASELINE_STRATEGY if r.source == r.target else DEFAULT_STRATEGY)
    return (
        key,
        r.source,
        r.target,
        backbone,
        strategy,
        int(r.fold),
        0,
        r.setup,
        r.auc,
        r.accuracy,
        r.kappa,
        json.dumps(m),
        "{}",
        None,
        None,
        "[]",
        origin,
        created,
        int(r.repeat),
        hp_json,
    )


def _backbone_of(setup: str) -> str:
    """The network a published setup names: its second field (``cats-scans:resnet50`` ->
    ``resnet50``, ``juodelyte2024:resnet18:224px`` -> ``resnet18``), else ``?``."""
    parts = setup.split(":")
    return parts[1] if len(parts) > 1 and parts[1] else "?"


def _num(x) -> float | None:
    if x is None:
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None

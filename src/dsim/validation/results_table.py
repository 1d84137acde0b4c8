"""Reading a results table of one's own into dsim (``dsim results import FILE.csv --setup NAME``).

The table is long, one row per measured result (a CSV with a header)::

    source,target,auc,fold,repeat,accuracy,lr
    imagenet,my-xray,0.91,0,0,0.85,0.01
    my-xray,my-xray,0.83,0,0,0.80,0.01      # source == target: the target-only baseline AUC(T)

``source``, ``target`` and ``auc`` are required; ``fold`` and ``repeat`` (integers >= 0, default
0), ``accuracy``, ``kappa`` and ``origin`` are optional; ``backbone`` and ``strategy`` fill those
store columns; every other column is kept as a hyper-parameter of the row. ``--setup`` names the
protocol all rows were measured under (results of one setup are compared with each other, never
with another setup's). Names the registry knows (dataset cards and checkpoint cards, aliases
included) are stored under the card's name; any other name becomes a source or target of the
table's own, and the summary lists them.

Every row is checked before anything is stored: a missing column, a value that is not a number, an
AUC or accuracy outside [0, 1], a kappa outside [-1, 1], an empty name or a second row for the same
(source, target, fold, repeat) is a :class:`dsim.DsimError` whose one-line message names the file,
the line and the column; then nothing is imported. The import is one transaction
(:meth:`dsim.ResultsStore.import_table`); importing a table with the same origin and setup again
replaces the rows of the earlier import.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsim.kernel.errors import DsimError
from dsim.kernel.plugins import collect
from dsim.kernel.records import TransferResult
from dsim.kernel.registry import _norm, get_registry
from dsim.kernel.tracking import tracker as get_tracker
from dsim.validation.store import ResultsStore

__all__ = [
    "ResultsTableError",
    "ResultsTable",
    "read_results_table",
    "import_results_table",
    "import_tracker_runs",
]

REQUIRED = ("source", "target", "auc")
OPTIONAL = ("fold", "repeat", "accuracy", "kappa", "origin", "backbone", "strategy")
#: origins of this prefix are the results plugins ship; a table may not claim one (it would be
#: counted twice: once from the store, once from the plugin)
RESERVED_ORIGIN = "published:"


class ResultsTableError(DsimError):
    """A results table that cannot be imported (one line naming the file, line and column)."""


@dataclass
class ResultsTable:
    """A checked results table, ready to import."""

    path: Path
    setup: str
    origin: str
    results: list[TransferResult]
    hyperparameters: list[dict[str, Any]]
    backbones: list[str]
    strategies: list[str | None]
    renamed: dict[str, str] = field(default_factory=dict)  # name in the file -> card name

    @property
    def sources(self) -> list[str]:
        return sorted({r.source for r in self.results})

    @property
    def targets(self) -> list[str]:
        return sorted({r.target for r in self.results})

    def unknown(self, known: set[str]) -> list[str]:
        """Source and target names that no card knows: the table's own."""
        return sorted({n for r in self.results for n in (r.source, r.target)} - known)

    def baseline_targets(self) -> list[str]:
        return sorted({r.target for r in self.results if r.source == r.target})


def _at(lineno) -> str:
    return f"line {lineno}" if isinstance(lineno, int) else str(lineno)


def _number(text: str, where: str, column: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ResultsTableError(f"{where}, column {column!r}: {text!r} is not a number") from None
    if math.isnan(v) or math.isinf(v):
        raise ResultsTableError(f"{where}, column {column!r}: {text!r} is not a finite number")
    return v


def _index(text: str, where: str, column: str) -> int:
    v = _number(text, where, column)
    if v != int(v) or v < 0:
        raise ResultsTableError(f"{where}, column {column!r}: {text!r} is not an integer >= 0")
    return int(v)


def _hp_value(text: str) -> Any:
    try:
        v = float(text)
    except ValueError:
        return text
    if math.isnan(v) or math.isinf(v):
        return text
    return int(v) if v == int(v) and "." not in text and "e" not in text.lower() else v


def _canonical_names() -> dict[str, str]:
    """Normalised name or alias -> card name, of every dataset card and checkpoint card."""
    names: dict[str, str] = {}
    for _plugin, card in collect("dsim_register_checkpoints"):
        for n in getattr(card, "all_names", ()):
            names.setdefault(_norm(n), card.name)
    reg = get_registry()
    for card in reg:  # datasets win a name a checkpoint also uses
        for n in card.all_names:
            names[_norm(n)] = card.name
    return names


def read_results_table(path: str | Path, *, setup: str, origin: str | None = None) -> ResultsTable:
    """Read and check every row of the table at ``path``; raise :class:`ResultsTableError` at the
    first bad one. ``origin`` defaults to ``imported:<file name>``."""

    path = Path(path).expanduser()
    name = path.name
    origin = origin or f"imported:{name}"
    _check_setup_origin(setup, origin)
    if not path.is_file():
        raise ResultsTableError(f"{path}: no such file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ResultsTableError(f"{path}: not a text (UTF-8) CSV file") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        body = [(reader.line_num, r) for r in reader]
    except csv.Error as exc:
        raise ResultsTableError(f"{name}, line {reader.line_num}: not valid CSV ({exc})") from None
    return check_rows(name, path, header, body, setup=setup, origin=origin)


def _check_setup_origin(setup: str, origin: str) -> None:
    if not setup or not setup.strip():
        raise ResultsTableError(
            "--setup: give the name of the protocol the table's results were measured under"
        )
    if origin.strip().startswith(RESERVED_ORIGIN):
        raise ResultsTableError(
            f"origin {origin!r}: origins starting with {RESERVED_ORIGIN!r} are the results plugins ship "
            "(choose another, e.g. imported:<paper>)"
        )


def _columns(name: str, header: list[str] | None) -> list[str]:
    """The header's column names (stripped, lower case); a header without a name, with a name
    twice, without a required column or with a ``setup`` column is refused."""
    if not header or not any(h.strip() for h in header):
        raise ResultsTableError(f"{name}: empty file (expected a header with {', '.join(REQUIRED)})")
    cols = [h.strip().lower() for h in header]
    for i, c in enumerate(cols):
        if not c:
            raise ResultsTableError(f"{name}, line 1: column {i + 1} has no name")
        if c in cols[:i]:
            raise ResultsTableError(f"{name}, line 1: column {c!r} appears twice")
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise ResultsTableError(
            f"{name}, line 1: missing column {', '.join(repr(c) for c in missing)} "
            f"(the table needs {', '.join(REQUIRED)}; optional {', '.join(OPTIONAL)})"
        )
    if "setup" in cols:
        raise ResultsTableError(f"{name}, line 1: column 'setup': give the setup with --setup, one per table")
    return cols


def _row_numbers(row: dict[str, str], where: str) -> tuple[float, int, int, float | None, float | None]:
    """A row's (auc, fold, repeat, accuracy, kappa), each checked against its range."""
    if not row["auc"]:
        raise ResultsTableError(f"{where}, column 'auc': empty")
    auc = _number(row["auc"], where, "auc")
    if not 0.0 <= auc <= 1.0:
        hint = " (a table in percent? divide by 100)" if 1.0 < auc <= 100.0 else ""
        raise ResultsTableError(f"{where}, column 'auc': {row['auc']} is outside [0, 1]{hint}")
    fold = _index(row["fold"], where, "fold") if row.get("fold") else 0
    repeat = _index(row["repeat"], where, "repeat") if row.get("repeat") else 0
    acc = _number(row["accuracy"], where, "accuracy") if row.get("accuracy") else None
    if acc is not None and not 0.0 <= acc <= 1.0:
        raise ResultsTableError(f"{where}, column 'accuracy': {row['accuracy']} is outside [0, 1]")
    kappa = _number(row["kappa"], where, "kappa") if row.get("kappa") else None
    if kappa is not None and not -1.0 <= kappa <= 1.0:
        raise ResultsTableError(f"{where}, column 'kappa': {row['kappa']} is outside [-1, 1]")
    return auc, fold, repeat, acc, kappa


def check_rows(
    name: str, path: Path, header: list[str] | None, body: list, *, setup: str, origin: str
) -> ResultsTable:
    """Check a table's rows (``body``: ``(line number or label, values)`` each, in ``header``'s
    column order); ``name`` starts every message. Raises :class:`ResultsTableError` at the first
    bad row."""
    _check_setup_origin(setup, origin)
    setup, origin = setup.strip(), origin.strip()
    cols = _columns(name, header)
    extra = [c for c in cols if c not in REQUIRED and c not in OPTIONAL]
    canon = _canonical_names()
    renamed: dict[str, str] = {}
    seen: dict[tuple[str, str, int, int], int] = {}
    results, hps, bbs, sts = [], [], [], []
    for lineno, raw in body:
        if not any(v.strip() for v in raw):
            continue  # blank line
        where = f"{name}, line {lineno}" if isinstance(lineno, int) else f"{name}, {lineno}"
        if len(raw) != len(cols):
            raise ResultsTableError(f"{where}: {len(raw)} values for {len(cols)} columns")
        row = {c: v.strip() for c, v in zip(cols, raw)}
        names = {}
        for c in ("source", "target"):
            if not row[c]:
                raise ResultsTableError(f"{where}, column {c!r}: empty")
            card = canon.get(_norm(row[c]))
            names[c] = card or row[c]
            if card and card != row[c]:
                renamed[row[c]] = card
        auc, fold, repeat, acc, kappa = _row_numbers(row, where)
        row_origin = row.get("origin") or origin
        if row_origin.startswith(RESERVED_ORIGIN):
            raise ResultsTableError(
                f"{where}, column 'origin': {row_origin!r}: origins starting with {RESERVED_ORIGIN!r} "
                "are the results plugins ship"
            )
        ident = (names["source"], names["target"], fold, repeat)
        if ident in seen:
            raise ResultsTableError(
                f"{where}: duplicate of {_at(seen[ident])} (source {ident[0]!r}, target {ident[1]!r}, "
                f"fold {fold}, repeat {repeat})"
            )
        seen[ident] = lineno
        results.append(
            TransferResult(
                source=names["source"],
                target=names["target"],
                fold=fold,
                auc=auc,
                origin=row_origin,
                setup=setup,
                accuracy=acc,
                kappa=kappa,
                repeat=repeat,
            )
        )
        hps.append({c: _hp_value(row[c]) for c in extra if row[c]})
        bbs.append(row.get("backbone") or "")
        sts.append(row.get("strategy") or None)
    if not results:
        raise ResultsTableError(f"{name}: no rows after the header")
    return ResultsTable(path, setup, origin, results, hps, bbs, sts, renamed)


def import_results_table(
    path: str | Path, *, setup: str, origin: str | None = None, store: str | Path | None = None
) -> dict[str, Any]:
    """Check the table at ``path`` and import it into the results store in one transaction.

    Returns a JSON-able summary: rows imported (and replaced from an earlier import), its
    sources and targets, the names no card knows (the table's own), the names stored under a
    card's name, whether it has target-only baselines (source == target) and which targets lack
    one (ranked on AUC instead of transferability T), and ``lines`` saying so in words."""
    return _import(read_results_table(path, setup=setup, origin=origin), store)


def import_tracker_runs(
    tracker: str,
    experiment: str,
    *,
    location: str | None = None,
    fields: dict[str, str] | None = None,
    setup: str | None = None,
    origin: str | None = None,
    store: str | Path | None = None,
) -> dict[str, Any]:
    """Import the finished runs of an experiment tracker's ``experiment`` (at ``location``, e.g.
    an MLflow tracking URI) into the results store, checked as a results table is.

    ``fields`` maps the table's columns (``source``, ``target``, ``auc``, ``fold``,
    ``accuracy``, ``kappa``, ``backbone``, ``strategy``) to the names of the tracker's parameters
    or metrics that hold them (default: the same names, as ``--track`` logs them). ``setup`` and
    ``origin`` default to ``<tracker>:<experiment>``. Returns the summary of
    :func:`import_results_table`."""
    cols = {c: c for c in (*REQUIRED, *OPTIONAL) if c != "repeat" and c != "origin"}
    cols.update({k: v for k, v in (fields or {}).items() if v})
    rows = get_tracker(tracker).read_runs(location, experiment, cols)
    header = [c for c in cols if any(c in r for _, r in rows)]
    body = [(where, [r.get(c, "") for c in header]) for where, r in rows]
    label = f"{tracker} experiment {experiment!r}"
    where = f"{tracker}:{experiment}"
    table = check_rows(
        label, Path(location or where), header, body, setup=setup or where, origin=origin or where
    )
    return _import(table, store)


def _import(table: ResultsTable, store) -> dict[str, Any]:
    known = set(_canonical_names().values()) | {c.name for c in get_registry()}
    with ResultsStore(store) as st:
        st.check_writable()
        written, replaced = st.import_table(
            table.results,
            hyperparameters=table.hyperparameters,
            backbones=table.backbones,
            strategies=table.strategies,
            table_id=f"{table.origin}\x00{table.setup}",
        )
        where = str(st.path)
    unknown = table.unknown(known)
    baselines = table.baseline_targets()
    without = [t for t in table.targets if t not in baselines]
    lines = [
        f"imported {written} results of setup {table.setup!r} (origin {table.origin!r}) into {where}"
        + (f"; replaced {replaced} rows of an earlier import of this table" if replaced else ""),
        f"{len(table.sources)} sources, {len(table.targets)} targets",
    ]
    if table.renamed:
        lines.append(
            "stored under their card names: "
            + ", ".join(f"{a} -> {b}" for a, b in sorted(table.renamed.items()))
        )
    if unknown:
        lines.append("the table's own names (no dataset or checkpoint card): " + ", ".join(unknown))
    if not baselines:
        lines.append(
            "no target-only baselines (source == target): its targets are ranked on AUC, not on "
            "transferability T = (AUC(S->T) - AUC(T)) / AUC(T)"
        )
    elif without:
        lines.append(
            f"target-only baselines for {', '.join(baselines)}; {', '.join(without)} have none and are "
            "ranked on AUC, not on transferability T"
        )
    else:
        lines.append(
            "every target has a target-only baseline (source == target): transferability T can be computed"
        )
    hp_names = sorted({k for hp in table.hyperparameters for k in hp})
    if hp_names:
        lines.append("kept as hyper-parameters: " + ", ".join(hp_names))
    return {
        "file": str(table.path),
        "store": where,
        "setup": table.setup,
        "origin": table.origin,
        "imported": written,
        "replaced": replaced,
        "sources": table.sources,
        "targets": table.targets,
        "unknown_names": unknown,
        "renamed": table.renamed,
        "has_baselines": bool(baselines),
        "baseline_targets": baselines,
        "targets_without_baseline": without,
        "hyperparameters": hp_names,
        "lines": lines,
    }

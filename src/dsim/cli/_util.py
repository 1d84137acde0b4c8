"""Helpers shared by the CLI modules: JSON output, rich tables, a progress reporter that only
appears for work that takes more than a moment."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import typer


def print_json(obj: Any) -> None:
    from dsim.kernel.records import _json_default

    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=False)


class Progress:
    """``progress(description, done, total)`` callback drawing a rich progress bar on stderr,
    shown only once work has gone on for ``delay`` seconds (quick commands stay quiet). Without a
    terminal (nohup, CI, ``2> log``) it writes plain lines instead (:class:`dsim.kernel.progress.LineProgress`:
    one per stage, and one at least every 10 s with an estimate)."""

    def __init__(self, enabled: bool = True, delay: float = 1.0, min_seconds: float = 10.0):
        from dsim.kernel.progress import LineProgress, is_terminal

        self.enabled = enabled and is_terminal()
        self.enabled_estimates = enabled  # a plain line: also when stderr is not a terminal
        self.lines = LineProgress() if enabled and not self.enabled else None
        self.min_seconds = min_seconds
        self.delay = delay
        self.start = time.monotonic()
        self._progress = None
        self._task = None

    def stage(self, text: str) -> None:
        """A line saying a stage starts, when writing plain lines (a bar shows it otherwise)."""
        if self.lines is not None:
            self.lines.stage(text)

    def __call__(self, description: str, done: int, total: int) -> None:
        if self.lines is not None:
            self.lines(description, done, total)
            return
        if not self.enabled or time.monotonic() - self.start < self.delay:
            return
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(description, total=total)
        self._progress.update(self._task, description=description, completed=done, total=total)

    def estimate(self, measure: str, seconds: float, n_sources: int) -> None:
        """One line on stderr before long work: ``task2vec: about 3 min for 6 sources
        (estimate)``; nothing under ``min_seconds`` or when disabled (``--json``, ``--csv``)."""
        if not self.enabled_estimates or seconds < self.min_seconds:
            return
        sys.stderr.write(
            f"{measure}: about {format_duration(seconds)} for {n_sources} "
            f"source{'s' if n_sources != 1 else ''} (estimate)\n"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self.lines is not None:
            self.lines.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def format_duration(seconds: float) -> str:
    """``40 s``, ``3 min``, ``1.5 h``; at least ``1 s`` (an estimate is never nothing)."""
    from dsim.kernel.progress import format_duration as duration

    return duration(max(1.0, seconds))


def split_list(value: str | None, option: str = "list") -> list[str] | None:
    """A comma-separated option as a list; an empty element (``",,"``) is an error naming
    ``option``."""
    from dsim.networks.checks import check_list

    items = check_list(option, value)
    return None if items is None else list(items)


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``--option key=value`` pairs; values parsed as JSON when they can be (numbers, true)."""
    from dsim.kernel.errors import DsimError

    out: dict[str, Any] = {}
    for p in pairs or []:
        if "=" not in p:
            raise DsimError(f"--option {p!r}: expected key=value")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except ValueError:
            out[k.strip()] = v
    return out


def fit_columns(
    headers: list[str],
    rows: list[list[str]],
    width: int,
    *,
    drop: tuple[str, ...] = (),
    wrap: tuple[str, ...] = (),
    per_column: int = 3,
) -> list[int]:
    """The indices of the columns that fit a table into ``width`` characters: the columns named
    in ``drop`` are left out, least useful first, until the rest fit, where a column named in
    ``wrap`` needs only its longest word (rich wraps it) and every other one its widest cell (it
    is never cut: it holds names a user types). ``per_column``: the border and padding of one.
    ``rows`` hold the cells' plain text (no markup)."""
    import re as _re

    def need(i: int) -> int:
        cells = [headers[i], *(r[i] for r in rows)]
        if headers[i] in wrap:
            return max(len(w) for c in cells for w in (_re.split(r"[\s,]+", c) or [""]))
        return max(len(c) for c in cells)

    keep = list(range(len(headers)))
    widths = {i: need(i) for i in keep}
    for name in drop:
        if sum(widths[i] + per_column for i in keep) + 1 <= width:
            break
        keep = [i for i in keep if headers[i] != name]
    return keep


#: the help of ``--fact`` and ``--card``, which ``dsim rank`` and ``dsim validate`` share
FACT_HELP = (
    "A fact about your target, key=value (repeatable): origin (medical|natural), modality, colour "
    "(grey|colour), content (objects|textures|both), subject, diversity (low|high), classes "
    "(few|many), title, task. Gives it expert and card features; see also a YAML card beside the "
    "data (my_data.dsim.yaml, or dsim.yaml in a folder)."
)
CARD_HELP = "A YAML card file of facts about your target (the keys of --fact)."

#: the ``--fact`` and ``--card`` options themselves, declared once for both commands
FACT_OPTION = typer.Option(None, "--fact", help=FACT_HELP)
CARD_OPTION = typer.Option(None, "--card", help=CARD_HELP)

"""Helpers shared by the CLI modules: JSON output, rich tables, a progress reporter that only
appears for work that takes more than a moment."""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def print_json(obj: Any) -> None:
    from dsim.records import _json_default

    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=False)


class Progress:
    """``progress(description, done, total)`` callback drawing a rich progress bar on stderr,
    shown only once work has gone on for ``delay`` seconds (quick commands stay quiet)."""

    def __init__(self, enabled: bool = True, delay: float = 1.0, min_seconds: float = 10.0):
        self.enabled = enabled and sys.stderr.isatty()
        self.enabled_estimates = enabled  # a plain line: also when stderr is not a terminal
        self.min_seconds = min_seconds
        self.delay = delay
        self.start = time.monotonic()
        self._progress = None
        self._task = None

    def __call__(self, description: str, done: int, total: int) -> None:
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def format_duration(seconds: float) -> str:
    """``40 s``, ``3 min``, ``1.5 h``."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def split_list(value: str | None, option: str = "list") -> list[str] | None:
    """A comma-separated option as a list; an empty element (``",,"``) is an error naming
    ``option``."""
    from dsim.checks import check_list

    items = check_list(option, value)
    return None if items is None else list(items)


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``--option key=value`` pairs; values parsed as JSON when they can be (numbers, true)."""
    from dsim.errors import DsimError

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

"""Plain-line progress for a log: what a long command says when no terminal is watching.

Under ``nohup``, in CI or with ``2> log`` a progress bar cannot be drawn, and a command that draws
nothing else says nothing for minutes. :class:`LineProgress` is a ``progress(description, done,
total)`` callback (the one :func:`dsim.rank`, :func:`dsim.validate` and the training loops take)
that writes plain lines instead: one when a stage starts (the first time it is met), and then one at least every
``every`` seconds (a background heartbeat, also while no callback arrives) with the count, the
time spent and an estimate of the time left::

    [   0 s] otdd: started
    [  10 s] otdd: features 40/128, about 22 s left
    [  12 s] validate: runs started (0/8)

The CLI picks it when stderr is not a terminal (:func:`is_terminal`); light module, no rich.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from typing import Callable, TextIO

__all__ = ["LineProgress", "is_terminal", "format_duration"]


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is a terminal a progress bar can be drawn on."""
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def format_duration(seconds: float) -> str:
    """``40 s``, ``3 min``, ``1.5 h``."""
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _stage(description: str) -> str:
    """The stage a description belongs to: its text before the first ':' with numbers folded
    (``logme: cifar10`` and ``logme: usps`` are one stage; ``x [fold 0] epoch 3`` and ``x [fold 1]
    epoch 1`` too)."""
    return re.sub(r"\d+", "#", description.split(":")[0]).strip()


class LineProgress:
    """``progress(description, done, total)`` writing plain lines to ``stream`` (default stderr):
    one when a stage starts, then at most one per callback and at least one every ``every``
    seconds while the work goes on, with an estimate of the time left (from the rate of the
    description in flight). :meth:`stage` writes a line of its own; :meth:`close` stops the
    heartbeat."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: bool = True,
    ):
        self.stream = stream
        self.every = float(every)
        self.clock = clock
        self.start = clock()
        self._lock = threading.Lock()
        self._last_line = self.start
        self._stage: str | None = None
        self._seen: set[str] = set()
        self._desc: str | None = None
        self._done = 0
        self._total = 0
        self._since: dict[str, tuple[float, int]] = {}  # description -> (first seen, done then)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat = heartbeat

    # ---------------------------------------------------------------- writing
    def _write(self, text: str) -> None:
        out = self.stream if self.stream is not None else sys.stderr
        now = self.clock()
        out.write(f"[{format_duration(now - self.start):>6}] {text}\n")
        out.flush()
        self._last_line = now

    def _estimate(self) -> str:
        if self._desc is None:
            return ""
        count = f" {self._done}/{self._total}" if self._total else ""
        t0, d0 = self._since.get((self._stage, self._total), (self.clock(), self._done))
        spent, moved = self.clock() - t0, self._done - d0
        if self._total and moved > 0 and spent > 0 and self._done < self._total:
            left = (self._total - self._done) * spent / moved
            return f"{count}, about {format_duration(left)} left"
        return count

    # ---------------------------------------------------------------- the callback
    def __call__(self, description: str, done: int, total: int) -> None:
        with self._lock:
            self._ensure_heartbeat()
            stage = _stage(description)
            self._stage = stage
            # the rate of a stage is measured over the calls with the same total (its own loop)
            self._since.setdefault((stage, int(total or 0)), (self.clock(), int(done)))
            self._desc, self._done, self._total = description, int(done), int(total or 0)
            if stage not in self._seen:  # a stage starts (a stage met again later says nothing new)
                self._seen.add(stage)
                count = f" ({done}/{total})" if total else ""
                self._write(f"{description.split(':')[0].strip()}: started{count}")
            elif self.clock() - self._last_line >= self.every:
                self._write(f"{description}{self._estimate()}")

    def stage(self, text: str) -> None:
        """A line saying a stage starts (a command's own steps: "fitting meta-ranker on 395 results")."""
        with self._lock:
            self._ensure_heartbeat()
            self._stage, self._desc, self._done, self._total = _stage(text), text, 0, 0
            self._seen.add(self._stage)
            self._write(text)

    def line(self, text: str) -> None:
        """A plain line of its own (an event: a run finished, a warning)."""
        with self._lock:
            self._write(text)

    # ---------------------------------------------------------------- heartbeat
    def _ensure_heartbeat(self) -> None:
        if self._heartbeat and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="dsim-progress", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.every / 4)):
            with self._lock:
                if self._desc is not None and self.clock() - self._last_line >= self.every:
                    finished = self._total and self._done >= self._total
                    tail = " done; still working" if finished else " (still working)"
                    self._write(f"{self._desc}{self._estimate()}{tail}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

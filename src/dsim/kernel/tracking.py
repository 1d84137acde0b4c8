"""``--track NAME``: log validate and pretrain runs to experiment trackers (:class:`dsim.Tracker`).

:func:`tracking` resolves the named trackers (a plugin's ``dsim_register_trackers``), refuses a
tracker that cannot work here in one line before any work starts, and listens to the run-events
hooks (``dsim_run_finished``, ``dsim_run_failed``, and ``dsim_pretrain_finished`` for the
networks a validation pretrains itself) for the length of one command, on the driver.
Every call into a tracker is isolated: the first error is one warning, the tracker is left out
for the rest of the command, and the runs go on (they are in dsim's results store already).
Without ``--track`` this module is not imported, nor is any tracker's library.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsim.kernel.errors import DsimError
from dsim.kernel.hookspecs import hookimpl
from dsim.kernel.interfaces import Tracker
from dsim.kernel.plugins import get_plugin_manager, named

__all__ = [
    "tracker",
    "trackers",
    "tracking",
    "TrackingSession",
    "tracked_validate",
    "tracked_pretrain",
    "checkpoint_meta",
]

Say = Callable[[str, str], None]
_ids = itertools.count()


def trackers() -> dict[str, Tracker]:
    """Every registered tracker by name."""
    return named("dsim_register_trackers", "tracker")


def tracker(name: str) -> Tracker:
    """The tracker called ``name``; a one-line error naming the known ones otherwise."""
    return named("dsim_register_trackers", "tracker", name)


def _names(track: str | Sequence[str] | None) -> list[str]:
    if not track:
        return []
    items = track.split(",") if isinstance(track, str) else list(track)
    return list(dict.fromkeys(s.strip() for s in items if s and s.strip()))


def _print_say(kind: str, message: str) -> None:
    print(f"{kind}: {message}" if kind in ("warning", "error") else message, file=sys.stderr)


class TrackingSession:
    """The trackers of one command. It listens to the run-events hooks while open (registered
    with the plugin manager as an event-only plugin) and forwards each event to every tracker
    that has not failed yet."""

    def __init__(self, chosen: Sequence[Tracker], say: Say):
        self.trackers = list(chosen)
        self.say = say
        self.failed: set[str] = set()

    def _call(self, method: str, *args: Any) -> None:
        for t in self.trackers:
            if t.name in self.failed:
                continue
            try:
                getattr(t, method)(*args)
            except Exception as exc:  # a tracker never fails a run: one warning, then left out
                self.failed.add(t.name)
                self.say(
                    "warning",
                    f"tracker {t.name!r} failed in {method} ({type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:300]}); it logs nothing more in this command, "
                    "the runs go on and are in dsim's results store",
                )

    # the run-events hooks, heard on the driver
    @hookimpl
    def dsim_run_finished(self, result) -> None:
        self._call("run_finished", result)

    @hookimpl
    def dsim_run_failed(self, spec, error) -> None:
        self._call("run_failed", spec, error or "failed")

    @hookimpl
    def dsim_pretrain_finished(self, checkpoint, meta) -> None:
        self.pretrain_done(checkpoint, meta)

    def validation_done(self, report) -> None:
        self._call("validation_done", report)

    def pretrain_done(self, checkpoint: Path, meta) -> None:
        self._call("pretrain_done", Path(checkpoint), dict(meta))


def check_trackers(track: str | Sequence[str] | None) -> list[Tracker]:
    """The trackers named in ``track``, each checked before any work starts: a one-line
    :class:`DsimError` for an unknown tracker or one whose library is missing."""
    chosen = []
    for name in _names(track):
        t = tracker(name)
        why = t.unavailable()
        if why:
            hint = f" ({t.install})" if t.install and t.install not in why else ""
            raise DsimError(f"--track {name}: {why}{hint}")
        chosen.append(t)
    return chosen


@contextmanager
def tracking(track: str | Sequence[str] | None, *, say: Say | None = None) -> Iterator[TrackingSession]:
    """Open the trackers named in ``track`` (``"mlflow"``, ``"a,b"`` or a list) for one command.

    Raises :class:`DsimError` (one line, nothing started) for an unknown tracker or one that
    :meth:`~dsim.Tracker.unavailable` refuses, e.g. ``pip install "dsim[mlflow]"``."""
    say = say or _print_say
    session = TrackingSession(check_trackers(track), say)
    session._call("start", say)
    pm = get_plugin_manager()
    plugin_name = f"dsim-tracking-{next(_ids)}"
    pm.register(session, name=plugin_name)
    error: BaseException | None = None
    try:
        yield session
    except BaseException as exc:  # closed as interrupted (e.g. runs marked killed), then re-raised
        error = exc
        raise
    finally:
        if pm.has_plugin(plugin_name):
            pm.unregister(name=plugin_name)
        session._call("close", error)


def tracked_validate(validate: Callable[..., Any], track, target, config, **kwargs: Any):
    """``validate(target, config, **kwargs)`` with the ``track`` trackers listening; the report
    goes to them at the end."""
    with tracking(track, say=kwargs.get("on_event")) as session:
        report = validate(target, config, **kwargs)
        session.validation_done(report)
    return report


def checkpoint_meta(path: Path) -> dict[str, Any]:
    """The metadata saved beside a pretrained checkpoint (``<key>.json``); empty when there is
    none here (a checkpoint on a Ray worker) or it cannot be read."""
    meta_path = Path(path).with_suffix(".json")
    try:
        return dict(json.loads(meta_path.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def tracked_pretrain(pretrain: Callable[..., Path], track, *args: Any, **kwargs: Any) -> Path:
    """``pretrain(*args, **kwargs)`` with the checkpoint and its metadata logged to ``track``."""
    with tracking(track) as session:
        path = pretrain(*args, **kwargs)
        session.pretrain_done(path, checkpoint_meta(path))
    return path

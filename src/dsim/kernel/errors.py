"""dsim's exceptions. Each carries a one-line message that names the dataset, file, field or
plugin at fault; the CLI prints it as ``error: <message>`` and exits non-zero, without a
traceback (set ``DSIM_DEBUG=1`` to see one)."""

from __future__ import annotations

import difflib
import sys
from typing import Iterable

__all__ = [
    "DsimError",
    "UnknownNameError",
    "UnknownOptionError",
    "DatasetError",
    "DataMissingError",
    "PluginError",
    "WeightsMissingError",
    "WeightsChecksumError",
    "CheckpointError",
    "OptionValueError",
    "StorageError",
    "closest",
    "one_line",
    "message_text",
    "warn",
]

_WARNED: set[str] = set()


def warn(message: str, key: str | None = None) -> None:
    """``warning: <message>`` on stderr, once per message (or per ``key``) and process: what dsim
    says about a problem it works around (a data-dir entry that is not a folder, a cache that
    cannot be written)."""
    key = key or message
    if key in _WARNED:
        return
    _WARNED.add(key)
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


class DsimError(Exception):
    """Base class: an error the user can act on, with a one-line message."""

    exit_code = 2
    #: True when the error is about a measure itself (missing probe weights, an impossible
    #: parameter), not about one dataset: ``dsim rank`` then stops that measure for every source
    #: instead of skipping one source at a time
    measure_wide = False

    def __str__(self) -> str:  # keep it on one line
        return " ".join(str(self.args[0] if self.args else "").split())


class UnknownNameError(DsimError, KeyError):
    """An unknown dataset, measure, strategy, backbone or predictor name."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name = kind, name
        self.suggestions = closest(name, known)
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown {kind} {name!r}{hint} (list them with `dsim {_lister(kind)}`)")


class UnknownOptionError(DsimError, KeyError):
    """An option (parameter) that the measure, strategy or predictor it was given to does not take."""

    def __init__(self, option: str, owner: str, known: Iterable[str]):
        self.option, self.owner = option, owner
        known = list(known)
        self.suggestions = closest(option, known)
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        valid = f" (it takes {', '.join(known)})" if known and len(known) <= 12 else ""
        super().__init__(f"unknown option {option!r} for {owner}{hint}{valid}")


def _lister(kind: str) -> str:
    return {"dataset": "datasets", "reproduction": "reproduce"}.get(kind, "plugins")


class DatasetError(DsimError):
    """A dataset file or folder that cannot be read: corrupt, mis-shaped, empty."""


class DataMissingError(DatasetError):
    """The data of a known dataset is not available on this machine."""


class PluginError(DsimError):
    """A plugin failed to import or raised."""


class WeightsMissingError(DsimError):
    """Pretrained weights are neither cached nor reachable."""

    measure_wide = True


class WeightsChecksumError(WeightsMissingError):
    """A weights file whose content (sha256) is not the expected one: the right weights are not
    available here, as when they are missing."""


class CheckpointError(DsimError):
    """A checkpoint that cannot be evaluated: its file is unreadable, holds no tensors, or does
    not fit its architecture; its architecture is unknown. ``dsim rank`` lists such a candidate
    as ``failed`` apart from the ranking."""


class OptionValueError(DsimError):
    """An option or environment variable whose value is not allowed: the message names the option,
    the value and what is allowed (``--epochs: -1 is not allowed (a whole number >= 1)``)."""

    def __init__(self, option: str, value, allowed: str):
        self.option, self.value, self.allowed = option, value, allowed
        super().__init__(f"{option}: {value!r} is not allowed ({allowed})")


class StorageError(DsimError):
    """A file dsim must write (the results store, a cache) that cannot be written: the message
    names the path and what to do."""


def message_text(exc: BaseException) -> str:
    """The message of ``exc`` on one line (whitespace collapsed)."""
    return " ".join(str(exc).split())


def one_line(exc: BaseException, what: str = "") -> str:
    """The one-line form of an error, the only one dsim prints: a :class:`DsimError` is its own
    message; anything else ``Type: message`` (the type alone when there is no message). ``what``
    (the run, the file, the plugin) goes first: ``one_line(exc, "chest fold 0")`` gives
    ``chest fold 0: ValueError: bad shape``."""
    text = message_text(exc)
    if not isinstance(exc, DsimError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if what and not text.startswith(what):
        text = f"{what}: {text}"
    return text


def closest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    known = list(dict.fromkeys(known))
    lowered = {k.lower(): k for k in known}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    subs = [k for lk, k in lowered.items() if name.lower() in lk and lowered[lk] not in hits]
    return [lowered[h] for h in hits] + subs[: max(0, n - len(hits))]

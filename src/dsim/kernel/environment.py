"""The environment variables dsim reads, read one way.

A flag variable (:data:`FLAGS`: ``DSIM_ALLOW_DOWNLOAD``, ``DSIM_DEBUG`` ...) is on when it is
``1``, ``true`` or ``yes`` and off when it is unset, empty, ``0``, ``false`` or ``no`` (any case).
Any other value is a mistake the user must hear about: the commands that do work check every flag
before they start (:func:`check_flags`, a one-line :class:`dsim.OptionValueError` naming the
variable, the value and what is allowed); where a flag is read on its own (a plugin, the error
handler, the hook tracer) :func:`env_flag` warns once and reads it as off, since raising there
would turn a typo in a debugging switch into a failed command or a lost error message.
"""

from __future__ import annotations

import os

from dsim.kernel.errors import OptionValueError, warn

__all__ = ["FLAGS", "FLAG_VALUES", "env_flag", "check_flags"]

#: the flag variables dsim (core and built-in plugins) reads
FLAGS = (
    "DSIM_ALLOW_DOWNLOAD",
    "DSIM_OFFLINE",
    "DSIM_DEBUG",
    "DSIM_TRACE",
    "DSIM_QUIET_PLUGIN_ERRORS",
)
_ON = ("1", "true", "yes")
_OFF = ("", "0", "false", "no")
#: what a flag variable allows, as the error and the warning say it
FLAG_VALUES = "1, true, yes to turn it on; 0, false, no or empty to turn it off"


def _read(name: str) -> bool | None:
    """The flag's value, or None when it is not one of the allowed values."""
    value = os.environ.get(name, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    return None


def env_flag(name: str) -> bool:
    """Whether the flag variable ``name`` is on; a value that is not allowed is one warning
    naming the variable and the value, and the flag is off."""
    on = _read(name)
    if on is None:
        warn(f"{name}={os.environ.get(name)!r} is not a flag value ({FLAG_VALUES}); it is read as off")
        return False
    return on


def check_flags() -> None:
    """Every flag variable (:data:`FLAGS`) set to an allowed value, else a one-line
    :class:`dsim.OptionValueError` naming the first one that is not."""
    for name in FLAGS:
        if _read(name) is None:
            raise OptionValueError(name, os.environ.get(name), FLAG_VALUES)

"""Published analyses, recomputed from the results the plugins ship (``dsim reproduce NAME``).

The analyses themselves live with their data in plugins (``dsim_register_reproductions``, each a
:class:`dsim.Reproduction`); this module only finds them by name and runs one::

    from dsim.evaluation.reproduce import reproduce, reproductions
    sorted(reproductions())              # ['cats-scans', 'juodelyte', ...]
    report = reproduce("juodelyte", out="figures/")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dsim.kernel.errors import UnknownNameError
from dsim.kernel.interfaces import Reproduction
from dsim.kernel.plugins import named, require

__all__ = ["reproductions", "reproduce"]


def reproductions() -> dict[str, Reproduction]:
    """Every registered reproduction by name (the first plugin in priority order wins a name)."""

    return named("dsim_register_reproductions", "reproduction")


def reproduce(name: str, out: str | Path | None = None, *, figures: bool = True) -> dict[str, Any]:
    """Run the reproduction ``name`` and return its JSON-able report; figures go to ``out`` (a
    folder, created) when given. An unknown name is a :class:`dsim.UnknownNameError` listing the
    registered ones (or naming the plugin that failed to provide it)."""

    try:
        rep = require("dsim_register_reproductions", "reproduction", name)
    except UnknownNameError as exc:
        disabled = os.environ.get("DSIM_DISABLE_PLUGINS", "").strip()
        if not disabled:
            raise
        exc.args = (f"{exc.args[0]}; plugins disabled by DSIM_DISABLE_PLUGINS: {disabled}",)
        raise
    report = dict(rep.run(Path(out) if out is not None else None, figures=figures))
    report.setdefault("name", rep.name)
    report.setdefault("title", rep.title)
    report.setdefault("tables", [])
    report.setdefault("lines", [])
    report.setdefault("figures", [])
    return report

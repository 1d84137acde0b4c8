"""A module imported on first use: ``np = lazy_module("numpy")`` at the top of a module that the
listings (``dsim datasets``, ``zoo``, ``measures``, ``plugins``) import, so that they start
without numpy's import (about half their time); the first ``np.<name>`` imports it."""

from __future__ import annotations

import importlib
import types


class _LazyModule(types.ModuleType):
    def __getattr__(self, attr: str):
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)  # from now on plain attribute reads
        return getattr(module, attr)


def lazy_module(name: str) -> types.ModuleType:
    """``name`` (e.g. ``"numpy"``), imported when an attribute of it is first read."""
    return _LazyModule(name)

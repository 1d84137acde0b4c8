"""The plugin manager: loads every plugin of the ``dsim`` entry-point group and collects what
their hooks return, isolating failures.

A plugin that fails to import, or whose hook raises, is recorded in :func:`failures` and reported
once on stderr as one line naming it; every other plugin keeps working.

Environment variables:

* ``DSIM_DISABLE_PLUGINS=name1,name2`` skips those entry points;
* ``DSIM_TRACE=1`` prints every hook call and its result to stderr (as datasette's
  ``DATASETTE_TRACE_PLUGINS``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownNameError

__all__ = [
    "ENTRY_POINT_GROUP",
    "get_plugin_manager",
    "register",
    "unregister",
    "reset",
    "collect",
    "failures",
    "plugin_report",
    "named",
]

ENTRY_POINT_GROUP = "dsim"


@dataclass
class _State:
    pm: pluggy.PluginManager | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    reported: set[str] = field(default_factory=set)
    dists: dict[str, str] = field(default_factory=dict)  # plugin name -> distribution name
    extra: list[tuple[object, str]] = field(default_factory=list)  # registered in-process
    collected: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)


_state = _State()


def record_failure(plugin: str, what: str) -> None:
    """Record that ``plugin`` failed (one line, printed once on stderr); it is skipped."""
    msg = " ".join(what.split())
    _state.failures.append((plugin, msg))
    if (plugin, msg) not in _state.reported and not os.environ.get("DSIM_QUIET_PLUGIN_ERRORS"):
        _state.reported.add((plugin, msg))  # type: ignore[arg-type]
        print(f"warning: plugin {plugin!r} {msg} (it is skipped)", file=sys.stderr)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    if _state.pm is not None:
        return _state.pm
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    disabled = {s.strip() for s in os.environ.get("DSIM_DISABLE_PLUGINS", "").split(",") if s.strip()}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in disabled or pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken third-party plugin must not break dsim
            record_failure(ep.name, f"failed to load ({ep.value}): {type(exc).__name__}: {exc}")
            continue
        dist = getattr(ep, "dist", None)
        _state.dists[ep.name] = dist.name if dist is not None else "?"
    for plugin, name in _state.extra:
        if pm.get_plugin(name) is None:
            pm.register(plugin, name=name)
            _state.dists.setdefault(name, "(registered in-process)")
    if os.environ.get("DSIM_TRACE"):
        pm.trace.root.setwriter(lambda s: sys.stderr.write(s))
        pm.enable_tracing()
    _state.pm = pm
    return pm


def register(plugin: object, name: str) -> None:
    """Register a plugin object in this process (tests, notebooks). Survives :func:`reset`."""
    _state.extra.append((plugin, name))
    if _state.pm is not None and _state.pm.get_plugin(name) is None:
        _state.pm.register(plugin, name=name)
        _state.dists.setdefault(name, "(registered in-process)")
    _state.collected.clear()
    _invalidate()


def unregister(name: str) -> None:
    _state.extra = [(p, n) for p, n in _state.extra if n != name]
    if _state.pm is not None and _state.pm.get_plugin(name) is not None:
        _state.pm.unregister(name=name)
    _state.collected.clear()
    _invalidate()


def reset() -> None:
    """Forget loaded plugins and failures (the next call reloads entry points)."""
    _state.pm = None
    _state.failures.clear()
    _state.reported.clear()
    _state.collected.clear()
    _invalidate()


_invalidators: list[Callable[[], None]] = []


def on_reset(fn: Callable[[], None]) -> Callable[[], None]:
    """Register a function that drops caches derived from the plugins (e.g. the registry)."""
    _invalidators.append(fn)
    return fn


def _invalidate() -> None:
    for fn in _invalidators:
        fn()


def collect(hook_name: str) -> list[tuple[str, Any]]:
    """Call a ``register_*``/``known_*`` hook on every plugin, one at a time, and return
    ``(plugin name, item)`` pairs. A plugin whose hook raises is reported and skipped."""
    if hook_name in _state.collected:
        return _state.collected[hook_name]
    pm = get_plugin_manager()
    caller = getattr(pm.hook, hook_name)
    out: list[tuple[str, Any]] = []
    for impl in reversed(caller.get_hookimpls()):  # registration order
        try:
            items = impl.function()
        except Exception as exc:
            record_failure(impl.plugin_name, f"raised in {hook_name}: {type(exc).__name__}: {exc}")
            continue
        for item in items or ():
            out.append((impl.plugin_name, item))
    _state.collected[hook_name] = out
    return out


def notify(hook_name: str, **kwargs: Any) -> None:
    """Fire an event hook (``dsim_run_finished`` ...) on every plugin; a raising plugin is
    reported and the others still hear the event."""
    pm = get_plugin_manager()
    caller = getattr(pm.hook, hook_name)
    for impl in reversed(caller.get_hookimpls()):
        try:
            impl.function(**{k: kwargs[k] for k in impl.argnames})
        except Exception as exc:
            record_failure(impl.plugin_name, f"raised in {hook_name}: {type(exc).__name__}: {exc}")


def failures() -> list[tuple[str, str]]:
    get_plugin_manager()
    return list(_state.failures)


def named(hook_name: str, kind: str, name: str | None = None):
    """Items of a ``register_*`` hook by their ``name`` attribute (first plugin wins), or one item.

    Raises :class:`UnknownNameError` (with close matches) for an unknown name.
    """
    table: dict[str, Any] = {}
    for _plugin, item in collect(hook_name):
        table.setdefault(getattr(item, "name", None) or getattr(item, "__name__", "?"), item)
    if name is None:
        return table
    if name not in table:
        raise UnknownNameError(kind, name, table)
    return table[name]


def plugin_report() -> list[dict[str, Any]]:
    """Every plugin with what it provides (for ``dsim plugins``)."""
    pm = get_plugin_manager()
    kinds = {
        "dsim_register_cards": "cards",
        "dsim_register_loaders": "loaders",
        "dsim_register_backbones": "backbones",
        "dsim_register_measures": "measures",
        "dsim_register_strategies": "strategies",
        "dsim_register_predictors": "predictors",
        "dsim_known_results": "results",
        "dsim_known_measure_values": "measure values",
    }
    rows: dict[str, dict[str, Any]] = {}
    for name, plugin in pm.list_name_plugin():
        if plugin is hookspecs or name is None:
            continue
        rows[name] = {
            "plugin": name,
            "package": _state.dists.get(name, "?"),
            "module": getattr(plugin, "__name__", type(plugin).__name__),
            "provides": {},
            "events": sorted(h.name for h in pm.get_hookcallers(plugin) or () if h.name in _EVENT_HOOKS),
            "error": None,
        }
    for hook, label in kinds.items():
        for plugin_name, item in collect(hook):
            if plugin_name in rows:
                entry = getattr(item, "name", None) or getattr(item, "__name__", None)
                if label in ("results", "measure values"):
                    rows[plugin_name]["provides"][label] = rows[plugin_name]["provides"].get(label, 0) + 1
                else:
                    rows[plugin_name]["provides"].setdefault(label, []).append(entry)
    for name, err in _state.failures:
        rows.setdefault(
            name, {"plugin": name, "package": "?", "module": "?", "provides": {}, "events": [], "error": None}
        )["error"] = err
    return list(rows.values())


_EVENT_HOOKS = {"dsim_run_started", "dsim_run_finished", "dsim_run_failed", "dsim_ranking_done"}


def require(hook_name: str, kind: str, name: str):
    """Like :func:`named` but turns a plugin's missing/broken provider into a PluginError."""
    try:
        return named(hook_name, kind, name)
    except UnknownNameError:
        for plugin, err in _state.failures:
            if name in plugin:
                raise PluginError(f"{kind} {name!r} comes from plugin {plugin!r}, which {err}") from None
        raise

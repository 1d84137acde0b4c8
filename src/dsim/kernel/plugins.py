"""The plugin manager: registers the built-in plugins and every ``dsim`` entry point, and calls
their hooks through ``pm.hook`` with each plugin's failures isolated.

A plugin that fails to import, or whose hook raises, is recorded in :func:`failures`, reported
once on stderr as one line naming it, and skipped; every other plugin keeps working. Two
plugins providing an item of the same name: the first in priority order wins (built-ins in
:data:`dsim.kernel.defaults.DEFAULT_PLUGINS` order, then third-party entry points by name, then plugins
registered in-process), and the other is ignored with a warning naming both.
Environment: ``DSIM_DISABLE_PLUGINS=a,b`` skips plugins; ``DSIM_TRACE=1`` prints every hook call.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from dsim.kernel import hookspecs
from dsim.kernel.defaults import COMMAND_PLUGINS, DEFAULT_PLUGINS
from dsim.kernel.environment import env_flag
from dsim.kernel.errors import PluginError, UnknownNameError, closest, one_line, warn
from dsim.kernel.lazy import lazy_module

metadata = lazy_module("importlib.metadata")  # read on first use: `dsim --help` needs it not

__all__ = [
    "ENTRY_POINT_GROUP",
    "get_plugin_manager",
    "register",
    "unregister",
    "reset",
    "collect",
    "notify",
    "failures",
    "conflicts",
    "record_failure",
    "plugin_report",
    "named",
    "require",
    "is_builtin",
    "third_party_entry_points",
    "add_builtin_commands",
]

ENTRY_POINT_GROUP = "dsim"

#: hooks whose implementations return a list of items (collected, cached, deduplicated by name)
COLLECT_HOOKS = (
    "dsim_register_cards",
    "dsim_register_loaders",
    "dsim_register_overlap_checks",
    "dsim_register_backbones",
    "dsim_register_measures",
    "dsim_register_strategies",
    "dsim_register_predictors",
    "dsim_register_checkpoints",
    "dsim_register_reproductions",
    "dsim_register_trackers",
    "dsim_known_results",
    "dsim_known_measure_values",
    "dsim_known_state",
)
EVENT_HOOKS = (
    "dsim_run_started",
    "dsim_run_epoch",
    "dsim_run_finished",
    "dsim_run_failed",
    "dsim_pretrain_finished",
    "dsim_ranking_done",
    "dsim_register_commands",
)


class Contribution(list):
    """The items one plugin's ``register_*``/``known_*`` hook returned: a list that knows which
    plugin it came from (what ``pm.hook.<name>()`` returns is a list of these)."""

    def __init__(self, plugin: str, items):
        super().__init__(items or ())
        self.plugin = plugin


@dataclass
class _State:
    pm: pluggy.PluginManager | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    reported: set[tuple[str, str]] = field(default_factory=set)
    conflicts: list[dict[str, str]] = field(default_factory=list)
    dists: dict[str, str] = field(default_factory=dict)  # plugin name -> distribution name
    order: dict[str, int] = field(default_factory=dict)  # plugin name -> priority (lower first)
    builtin: set[str] = field(default_factory=set)
    extra: list[tuple[object, str]] = field(default_factory=list)  # registered in-process
    collected: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)


_state = _State()


def _say(text: str) -> None:
    if not env_flag("DSIM_QUIET_PLUGIN_ERRORS"):
        print(text, file=sys.stderr)


def record_failure(plugin: str, what: str) -> None:
    """Record that ``plugin`` failed (one line, printed once on stderr); it is skipped."""
    msg = " ".join(str(what).split())
    _state.failures.append((plugin, msg))
    if (plugin, msg) not in _state.reported:
        _state.reported.add((plugin, msg))
        _say(f"warning: plugin {plugin!r} {msg} (it is skipped)")


def _isolated(fn: Callable, plugin: str, hook: str) -> Callable:
    """The one wrapper every hook implementation runs in: a raising plugin is recorded and
    contributes nothing; a ``register_*``/``known_*`` result is tagged with its plugin."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:  # a broken plugin must not break dsim: recorded, skipped
            record_failure(plugin, one_line(exc, f"raised in {hook}"))
            return None
        if hook in COLLECT_HOOKS:
            try:
                return Contribution(plugin, out)
            except TypeError:
                record_failure(plugin, f"{hook} returned {type(out).__name__}, not a list")
                return None
        return out

    return call


def _register(pm: pluggy.PluginManager, plugin: object, name: str, dist: str, builtin: bool = False) -> None:
    pm.register(plugin, name=name)
    _state.dists[name] = dist
    _state.order[name] = len(_state.order)
    if builtin:
        _state.builtin.add(name)
    for caller in pm.get_hookcallers(plugin) or ():
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and not (impl.hookwrapper or impl.wrapper):
                impl.function = _isolated(impl.function, name, caller.name)
    specs = {n for n in dir(hookspecs) if n.startswith("dsim_")}
    for attr in dir(plugin):
        if (
            attr.startswith("dsim_")
            and attr not in specs
            and hasattr(getattr(plugin, attr, None), "dsim_impl")
        ):
            hint = closest(attr, specs, n=1)
            record_failure(
                name,
                f"implements unknown hook {attr!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
            )


def _trace(pm: pluggy.PluginManager) -> None:
    """``DSIM_TRACE=1``: one line before and one after every hook call, on stderr."""
    started: dict[int, float] = {}

    def before(hook_name, hook_impls, kwargs):
        started[id(kwargs)] = time.perf_counter()
        args = ", ".join(f"{k}={type(v).__name__}" for k, v in kwargs.items())
        sys.stderr.write(f"dsim trace: {hook_name}({args}) -> {len(hook_impls)} plugin(s)\n")

    def after(outcome, hook_name, hook_impls, kwargs):
        ms = (time.perf_counter() - started.pop(id(kwargs), time.perf_counter())) * 1000
        res = outcome.get_result() if outcome.exception is None else None
        if isinstance(res, list) and all(isinstance(r, Contribution) for r in res):
            parts = ", ".join(f"{r.plugin}: {len(r)}" for r in res if len(r))
            sys.stderr.write(f"dsim trace: {hook_name} -> {parts or 'nothing'} ({ms:.1f} ms)\n")
        else:
            sys.stderr.write(f"dsim trace: {hook_name} done ({ms:.1f} ms)\n")

    pm.add_hookcall_monitoring(before, after)


def disabled_plugins() -> set[str]:
    """The plugin names ``DSIM_DISABLE_PLUGINS`` lists (comma-separated)."""
    return {s.strip() for s in os.environ.get("DSIM_DISABLE_PLUGINS", "").split(",") if s.strip()}


def check_disabled(disabled: set[str], known: list[str]) -> None:
    """A name in ``DSIM_DISABLE_PLUGINS`` that is no plugin's (a typo disables nothing): one
    warning naming it and the plugins there are."""
    for name in sorted(disabled - set(known)):
        warn(
            f"DSIM_DISABLE_PLUGINS names {name!r}, which is no plugin; the plugins are: {', '.join(sorted(set(known)))}"
        )


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use: the built-in plugins (importable
    from a source checkout too), then every ``dsim`` entry point, then in-process plugins."""
    if _state.pm is not None:
        return _state.pm
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    _state.dists.clear()
    _state.order.clear()
    _state.builtin.clear()
    disabled = disabled_plugins()
    modules: dict[str, str] = {}  # module name -> plugin name, of the registered built-ins
    for name, module in DEFAULT_PLUGINS:
        if name in disabled:
            continue
        try:
            plugin = importlib.import_module(module)
        except Exception as exc:
            record_failure(name, one_line(exc, f"failed to load ({module})"))
            continue
        _register(pm, plugin, name, "dsim", builtin=True)
        modules[module] = name
    # every dsim entry point a built-in (registered above): importlib.metadata is not asked
    eps = () if third_party_entry_points() is False else metadata.entry_points(group=ENTRY_POINT_GROUP)
    for ep in sorted(eps, key=lambda e: e.name):
        if ep.name in disabled or ep.value in modules:
            continue  # a built-in, already registered above
        dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
        name = ep.name
        if pm.has_plugin(name):
            name = f"{dist}:{ep.name}"
            _say(
                f"warning: entry point {ep.name!r} of package {dist!r} has the name of another plugin; "
                f"registered as {name!r}"
            )
        try:
            plugin = ep.load()
            _register(pm, plugin, name, dist)
        except Exception as exc:  # a broken third-party plugin must not break dsim
            record_failure(name, one_line(exc, f"failed to load ({ep.value})"))
    for plugin, name in _state.extra:
        if not pm.has_plugin(name):
            _register(pm, plugin, name, "(registered in-process)")
    check_disabled(disabled, [n for n, _m in DEFAULT_PLUGINS] + [ep.name for ep in eps])
    if env_flag("DSIM_TRACE"):
        _trace(pm)
    _state.pm = pm
    return pm


def _entry_point_values(text: str, group: str) -> list[str]:
    """The values of ``group``'s entries in the text of an ``entry_points.txt`` (INI)."""
    out, inside = [], False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            inside = line == f"[{group}]"
        elif inside and "=" in line and not line.startswith(("#", ";")):
            out.append(line.split("=", 1)[1].strip())
    return out


def third_party_entry_points() -> bool | None:
    """Whether a distribution on ``sys.path`` declares a ``dsim`` entry point that is not a
    built-in plugin, read from the distributions' ``entry_points.txt`` files themselves (importing
    and scanning with :mod:`importlib.metadata` costs a listing or ``dsim --help`` a sixth of its
    time; this costs about 1 ms); None when it cannot tell (a zip file on the path: ask
    :mod:`importlib.metadata`). False: the built-ins are all there is to load."""
    builtin = {module for _n, module in DEFAULT_PLUGINS}
    for entry in sys.path:
        try:
            found = os.scandir(entry or ".")
        except NotADirectoryError:
            return None
        except OSError:  # a folder on the path that does not exist: nothing there
            continue
        with found:
            for d in found:
                if not d.name.endswith((".dist-info", ".egg-info")):
                    continue
                try:
                    with open(os.path.join(d.path, "entry_points.txt"), encoding="utf-8") as f:
                        text = f.read()
                except OSError:  # no entry points (or a PKG-INFO file named .egg-info)
                    continue
                if any(v not in builtin for v in _entry_point_values(text, ENTRY_POINT_GROUP)):
                    return True
    return False


def add_builtin_commands(app: Any) -> bool:
    """Let the built-in plugins that add commands (:data:`COMMAND_PLUGINS`) add them to ``app``
    without loading every plugin, when they are all there is: no plugin manager built yet, none
    registered in-process, no third-party entry point. Returns whether it did (else load them
    all: :func:`get_plugin_manager`); a plugin that fails is recorded, as a hook call would."""
    if _state.pm is not None or _state.extra or third_party_entry_points() is not False:
        return False
    disabled = disabled_plugins()
    check_disabled(disabled, [n for n, _m in DEFAULT_PLUGINS])
    for name, module in DEFAULT_PLUGINS:
        if name not in COMMAND_PLUGINS or name in disabled:
            continue
        try:
            hook = importlib.import_module(module).dsim_register_commands
        except Exception as exc:  # a broken plugin must not break the overview
            record_failure(name, one_line(exc, f"failed to load ({module})"))
            continue
        _isolated(hook, name, "dsim_register_commands")(app=app)
    return True


def register(plugin: object, name: str) -> None:
    """Register a plugin object in this process (tests, notebooks). Survives :func:`reset`."""
    _state.extra.append((plugin, name))
    if _state.pm is not None and not _state.pm.has_plugin(name):
        _register(_state.pm, plugin, name, "(registered in-process)")
    _state.collected.clear()
    _invalidate()


def unregister(name: str) -> None:
    _state.extra = [(p, n) for p, n in _state.extra if n != name]
    if _state.pm is not None and _state.pm.has_plugin(name):
        _state.pm.unregister(name=name)
    _state.collected.clear()
    _invalidate()


def reset() -> None:
    """Forget loaded plugins, failures and conflicts (the next call reloads them)."""
    _state.pm = None
    _state.failures.clear()
    _state.reported.clear()
    _state.conflicts.clear()
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


def collect(hook_name: str, *, fresh: bool = False) -> list[tuple[str, Any]]:
    """``(plugin name, item)`` for every item a ``register_*``/``known_*`` hook returns, called
    through ``pm.hook`` once per process and kept, in plugin priority order (``fresh``: called
    again, and the kept items replaced)."""
    if hook_name in _state.collected and not fresh:
        return _state.collected[hook_name]
    pm = get_plugin_manager()
    contributions = getattr(pm.hook, hook_name)()
    contributions = sorted(
        (c for c in contributions if isinstance(c, Contribution)),
        key=lambda c: _state.order.get(c.plugin, len(_state.order)),
    )
    out = [(c.plugin, item) for c in contributions for item in c]
    _state.collected[hook_name] = out
    return out


def notify(hook_name: str, **kwargs: Any) -> None:
    """Fire an event hook (``dsim_run_finished`` ...) through ``pm.hook``; a raising plugin is
    recorded and the others still hear the event."""
    getattr(get_plugin_manager().hook, hook_name)(**kwargs)


def failures() -> list[tuple[str, str]]:
    get_plugin_manager()
    return list(_state.failures)


def conflicts() -> list[dict[str, str]]:
    """Items two plugins provide under one name: ``{kind, name, kept, ignored}`` each."""
    return list(_state.conflicts)


def is_builtin(plugin_name: str) -> bool:
    get_plugin_manager()
    return plugin_name in _state.builtin


def _item_name(item: Any) -> str:
    return getattr(item, "name", None) or getattr(item, "__name__", None) or "?"


def note_conflict(kind: str, name: str, kept: str, ignored: str) -> None:
    """Record (and warn once about) two plugins providing ``kind`` ``name``."""
    entry = {"kind": kind, "name": name, "kept": kept, "ignored": ignored}
    if entry in _state.conflicts:
        return
    _state.conflicts.append(entry)
    _say(
        f"warning: {kind} {name!r} of plugin {ignored!r} is ignored: plugin {kept!r} provides one of that "
        "name first (built-in plugins come first, then third-party plugins by entry-point name)"
    )


def named(hook_name: str, kind: str, name: str | None = None):
    """Items of a ``register_*`` hook by their ``name`` attribute, or one item by name. The first
    plugin in priority order wins a name; a later one is ignored with a warning naming both.

    Raises :class:`UnknownNameError` (with close matches) for an unknown name.
    """
    table: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for plugin, item in collect(hook_name):
        n = _item_name(item)
        if n in table:
            if owner[n] != plugin:
                note_conflict(kind, n, owner[n], plugin)
            continue
        table[n], owner[n] = item, plugin
    if name is None:
        return table
    if name not in table:
        raise UnknownNameError(kind, name, table)
    return table[name]


def require(hook_name: str, kind: str, name: str):
    """Like :func:`named` but turns a plugin's missing/broken provider into a PluginError."""
    try:
        return named(hook_name, kind, name)
    except UnknownNameError:
        for plugin, err in _state.failures:
            if name in plugin:
                raise PluginError(f"{kind} {name!r} comes from plugin {plugin!r}, which {err}") from None
        raise


_KINDS = {
    "dsim_register_cards": "cards",
    "dsim_register_loaders": "loaders",
    "dsim_register_overlap_checks": "overlap checks",
    "dsim_register_backbones": "backbones",
    "dsim_register_measures": "measures",
    "dsim_register_strategies": "strategies",
    "dsim_register_predictors": "predictors",
    "dsim_register_checkpoints": "checkpoints",
    "dsim_register_reproductions": "reproductions",
    "dsim_register_trackers": "trackers",
    "dsim_known_results": "results",
    "dsim_known_measure_values": "measure values",
}
_COUNTED = ("results", "measure values")


def plugin_report() -> list[dict[str, Any]]:
    """Every plugin with what it provides (for ``dsim plugins``)."""
    pm = get_plugin_manager()
    rows: dict[str, dict[str, Any]] = {}
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda np_: _state.order.get(np_[0], 1 << 30)):
        if plugin is hookspecs or name is None:
            continue
        rows[name] = {
            "plugin": name,
            "package": _state.dists.get(name, "?"),
            "builtin": name in _state.builtin,
            "module": getattr(plugin, "__name__", type(plugin).__name__),
            "provides": {},
            "events": sorted(h.name for h in pm.get_hookcallers(plugin) or () if h.name in EVENT_HOOKS),
            "error": None,
        }
    for hook, label in _KINDS.items():
        for plugin_name, item in collect(hook):
            if plugin_name not in rows:
                continue
            provides = rows[plugin_name]["provides"]
            if label in _COUNTED:
                provides[label] = provides.get(label, 0) + 1
            else:
                provides.setdefault(label, []).append(_item_name(item))
    for name, err in _state.failures:
        rows.setdefault(
            name,
            {
                "plugin": name,
                "package": "?",
                "builtin": False,
                "module": "?",
                "provides": {},
                "events": [],
                "error": None,
            },
        )["error"] = err
    return list(rows.values())

"""The CLI's start-up: the overview (``dsim --help``) lists the plugins' commands without loading
every plugin when only the built-ins are installed, and says the same as with all of them loaded."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile

import dsim.kernel.plugins as plugins
from dsim.kernel.defaults import COMMAND_PLUGINS, DEFAULT_PLUGINS

CODE = (
    "import sys, dsim.cli as c\n"
    "if sys.argv[1] == 'all': c.add_plugin_commands()\n"
    "rc = c.main(sys.argv[2:])\n"
    "loaded = [m for m in sys.modules if m.startswith('dsim_plugins.') or m == 'dsim.kernel.records']\n"
    "print('LOADED', sorted(loaded), file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def _dsim(how: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CODE, how, *args], capture_output=True, text=True, timeout=120
    )


def test_the_overview_loads_only_the_plugins_that_add_commands_and_says_the_same():
    light, full = _dsim("light", "--help"), _dsim("all", "--help")
    assert light.returncode == full.returncode == 0, light.stderr + full.stderr
    assert light.stdout == full.stdout
    assert " filters " in light.stdout  # filter_figures' command
    loaded = light.stderr.split("LOADED", 1)[1]
    assert "dsim_plugins.filter_figures" in loaded and "dsim_plugins.expert" not in loaded
    assert "dsim.kernel.records" not in loaded  # no card or measure class is built to list them
    assert "dsim_plugins.expert" in full.stderr.split("LOADED", 1)[1]


def test_command_plugins_are_the_builtins_that_implement_the_hook():
    implementing = {
        name
        for name, module in DEFAULT_PLUGINS
        if hasattr(importlib.import_module(module), "dsim_register_commands")
    }
    assert set(COMMAND_PLUGINS) == implementing


def test_a_third_party_entry_point_or_a_zip_on_the_path_loads_every_plugin(tmp_path, monkeypatch):
    assert plugins.third_party_entry_points() is False  # this checkout: the built-ins only
    builtin = tmp_path / "builtin"
    (builtin / "mirror-1.0.dist-info").mkdir(parents=True)
    (builtin / "mirror-1.0.dist-info" / "entry_points.txt").write_text(
        "[console_scripts]\nx = other:main\n\n[dsim]\nexpert = dsim_plugins.expert\n"
    )
    monkeypatch.syspath_prepend(str(builtin))
    assert plugins.third_party_entry_points() is False
    third = tmp_path / "third"
    (third / "lab_plugin-0.1.dist-info").mkdir(parents=True)
    (third / "lab_plugin-0.1.dist-info" / "entry_points.txt").write_text("[dsim]\nlab = lab_plugin\n")
    monkeypatch.syspath_prepend(str(third))
    assert plugins.third_party_entry_points() is True
    assert plugins.add_builtin_commands(object()) is False  # the CLI loads them all instead
    monkeypatch.syspath_prepend(str(tmp_path / "missing"))  # a folder that is not there: skipped
    assert plugins.third_party_entry_points() is True
    with zipfile.ZipFile(tmp_path / "eggs.zip", "w") as z:
        z.writestr("x.py", "")
    monkeypatch.syspath_prepend(str(tmp_path / "eggs.zip"))
    assert plugins.third_party_entry_points() is None


def test_a_third_party_plugin_installed_beside_dsim_is_loaded(tmp_path, monkeypatch):
    """The quick scan says a third-party entry point is there; importlib.metadata then loads it."""
    site = tmp_path / "site"
    (site / "lab_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "lab_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: lab-plugin\nVersion: 0.1\n"
    )
    (site / "lab_plugin-0.1.dist-info" / "entry_points.txt").write_text("[dsim]\nlab = lab_plugin\n")
    (site / "lab_plugin.py").write_text(
        "import dsim\n\n\n@dsim.hookimpl\ndef dsim_register_cards():\n    return []\n"
    )
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    try:
        pm = plugins.get_plugin_manager()
        assert pm.has_plugin("lab") and plugins.is_builtin("expert") and not plugins.is_builtin("lab")
        assert not [f for f in plugins.failures() if f[0] == "lab"]
    finally:
        monkeypatch.undo()
        sys.modules.pop("lab_plugin", None)
        plugins.reset()

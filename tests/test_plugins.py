"""Plugin discovery through the dsim entry-point group, isolation of broken plugins, and the
example third-party plugin package."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dsim
import dsim.kernel.plugins

REPO = Path(__file__).resolve().parents[1]
BUILTIN = {
    "expert",
    "published",
    "npz_datasets",
    "medmnist_datasets",
    "folder_datasets",
    "timm_backbones",
    "rank_aggregation",
}


def run_dsim(*args, env_extra=None, cwd=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "dsim.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_builtin_plugins_come_through_entry_points():
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="dsim")}
    assert BUILTIN <= names
    pm = dsim.kernel.plugins.get_plugin_manager()
    registered = {name for name, _ in pm.list_name_plugin()}
    assert BUILTIN <= registered
    report = {r["plugin"]: r for r in dsim.kernel.plugins.plugin_report()}
    assert "expert" in report["expert"]["provides"]["measures"]
    assert report["published"]["provides"]["results"] > 100


def _fake_dist(root: Path, name: str, entry: str, module_code: str, module: str) -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(module_code))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[dsim]\n{entry} = {module}\n")


def test_plugin_that_fails_to_import_is_reported_by_name_and_skipped(tmp_path):
    _fake_dist(tmp_path, "broken-plugin", "broken", "raise RuntimeError('boom at import')\n", "broken_mod")
    r = run_dsim("plugins", "--json", env_extra={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    warn = [line for line in r.stderr.splitlines() if "broken" in line]
    assert len(warn) == 1 and "boom at import" in warn[0] and "Traceback" not in r.stderr
    import json

    report = {p["plugin"]: p for p in json.loads(r.stdout)}
    assert "boom at import" in report["broken"]["error"]
    assert report["expert"]["error"] is None  # the others keep working
    # ranking still works with a broken plugin around
    r2 = run_dsim("rank", "--target", "chest", "--json", env_extra={"PYTHONPATH": str(tmp_path)})
    assert r2.returncode == 0, r2.stderr
    assert json.loads(r2.stdout)["rows"][0]["source"] == "imagenet"


def test_plugin_whose_hook_raises_is_isolated(fresh_plugins):
    class Raising:
        @dsim.hookimpl
        def dsim_register_measures(self):
            raise ValueError("measure registry exploded")

    fresh_plugins.register(Raising(), "raising-plugin")
    try:
        measures = dsim.list_measures()
        assert "expert" in measures  # other plugins' measures are still there
        fails = dict(fresh_plugins.failures())
        assert "measure registry exploded" in fails["raising-plugin"]
    finally:
        fresh_plugins.unregister("raising-plugin")


def test_measure_that_raises_on_a_pair_is_skipped_with_its_name(fresh_plugins):
    class Exploding(dsim.Measure):
        name = "exploding"
        needs = "card"

        def represent(self, data, ctx):
            raise RuntimeError("kaboom")

    class P:
        @dsim.hookimpl
        def dsim_register_measures(self):
            return [Exploding()]

    fresh_plugins.register(P(), "exploding-plugin")
    try:
        ranking = dsim.rank("chest", measures=["expert", "exploding"])
        assert ranking.sources[0] == "imagenet"
        reasons = [s["reason"] for s in ranking.skipped if s.get("measure") == "exploding"]
        assert reasons and all("kaboom" in r for r in reasons)
        # dsim.measure (and `dsim measure`): one DsimError line naming the measure and the pair
        with pytest.raises(
            dsim.DsimError, match=r"measure 'exploding' raised on stl10 -> chest: RuntimeError: kaboom"
        ):
            dsim.measure("stl10", "chest", "exploding")
    finally:
        fresh_plugins.unregister("exploding-plugin")


@pytest.mark.skipif(
    not (REPO.parent / "shared" / "data" / "usps_16x16.npz").exists() and not os.environ.get("DSIM_DATA_DIR"),
    reason="needs the shared data",
)
def test_example_third_party_plugin_is_picked_up(tmp_path):
    """Install examples/dsim-example-plugin (into a private target dir) and see dsim use it."""
    target = tmp_path / "site"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO / "examples" / "dsim-example-plugin"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode != 0 and "hatchling" in (r.stderr + r.stdout):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(target),
                str(REPO / "examples" / "dsim-example-plugin"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert r.returncode == 0, r.stderr
    env = {"PYTHONPATH": str(target)}
    out = run_dsim("plugins", "--json", env_extra=env)
    import json

    report = {p["plugin"]: p for p in json.loads(out.stdout)}
    assert report["example"]["package"] == "dsim-example-plugin"
    assert report["example"]["provides"]["cards"] == ["usps-example"]
    assert report["example"]["provides"]["measures"] == ["intensity-histogram"]
    m = run_dsim(
        "measure",
        "--source",
        "usps-example",
        "--target",
        "pneumoniamnist",
        "--measure",
        "intensity-histogram",
        "--json",
        env_extra=env,
    )
    assert m.returncode == 0, m.stderr
    value = json.loads(m.stdout)["value"]
    assert 0.0 < value <= 1.0
    same = run_dsim(
        "measure",
        "--source",
        "usps-demo",
        "--target",
        "usps-example",
        "--measure",
        "intensity-histogram",
        "--json",
        env_extra=env,
    )
    assert json.loads(same.stdout)["value"] == pytest.approx(0.0, abs=1e-12)


def test_default_plugins_match_the_entry_points_in_pyproject():
    """Built-ins are listed once in dsim.kernel.defaults and declared as entry points (the public path);
    the two lists must stay the same."""
    import tomllib

    from dsim.kernel.defaults import DEFAULT_PLUGINS

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["dsim"]
    assert declared == dict(DEFAULT_PLUGINS)


def test_source_checkout_without_entry_points_still_has_every_builtin(fresh_plugins, monkeypatch):
    """PYTHONPATH=src:plugins on a machine where dsim is not installed: no entry points at all."""
    from importlib import metadata

    monkeypatch.setattr(metadata, "entry_points", lambda **kw: [])
    fresh_plugins.reset()
    ranking = dsim.rank("chest")
    assert ranking.rows[0].source == "imagenet"
    assert BUILTIN <= {name for name, _ in fresh_plugins.get_plugin_manager().list_name_plugin()}
    assert all(fresh_plugins.is_builtin(n) for n in BUILTIN)


def test_hooks_are_called_through_pluggy_and_traced():
    r = run_dsim("rank", "--target", "chest", "--json", env_extra={"DSIM_TRACE": "1"})
    assert r.returncode == 0, r.stderr
    trace = [line for line in r.stderr.splitlines() if line.startswith("dsim trace:")]
    known = [line for line in trace if line.startswith("dsim trace: dsim_known_results ->")]
    assert known and " published: 120" in known[0] and "published_juodelyte: " in known[0], r.stderr
    assert any(line.startswith("dsim trace: dsim_ranking_done(ranking=Ranking)") for line in trace)


def test_duplicate_name_warns_naming_both_and_the_builtin_wins(fresh_plugins, capsys):
    class Impostor(dsim.Measure):
        name = "expert"
        needs = "card"
        description = "a third-party measure that takes a built-in's name"

    class P:
        @dsim.hookimpl
        def dsim_register_measures(self):
            return [Impostor()]

    fresh_plugins.register(P(), "impostor")
    try:
        measures = dsim.list_measures()
        assert type(measures["expert"]).__name__ == "ExpertHamming"  # the built-in is kept
        assert {"kind": "measure", "name": "expert", "kept": "expert", "ignored": "impostor"} in (
            fresh_plugins.conflicts()
        )
        err = capsys.readouterr().err
        line = [x for x in err.splitlines() if "impostor" in x]
        assert len(line) == 1 and "'expert'" in line[0] and "ignored" in line[0]
    finally:
        fresh_plugins.unregister("impostor")


def test_plugin_with_a_misspelt_hook_is_told_so(fresh_plugins):
    class Typo:
        @dsim.hookimpl
        def dsim_register_measure(self):  # missing "s"
            return []

    fresh_plugins.register(Typo(), "typo-plugin")
    try:
        dsim.list_measures()
        fails = dict(fresh_plugins.failures())
        assert "unknown hook 'dsim_register_measure'" in fails["typo-plugin"]
        assert "dsim_register_measures" in fails["typo-plugin"]
    finally:
        fresh_plugins.unregister("typo-plugin")


def test_a_plugin_adds_a_cli_command(fresh_plugins, capsys):
    """``dsim_register_commands``: a plugin's command runs, and the overview lists it."""
    import types

    import typer

    from dsim.cli import main

    plugin = types.ModuleType("hello_plugin")

    @dsim.hookimpl
    def dsim_register_commands(app):
        @app.command("hello", help="Say hello.")
        def hello(name: str = typer.Option("world", "--name")):
            print(f"hello {name}")

    plugin.dsim_register_commands = dsim_register_commands
    fresh_plugins.register(plugin, name="hello-plugin")
    try:
        assert main(["hello", "--name", "dsim"]) == 0
        assert capsys.readouterr().out == "hello dsim\n"
        assert main(["--help"]) == 0
        out = capsys.readouterr().out
        assert "hello" in out and "filters" in out  # the filter-structure plugin's command too
    finally:
        fresh_plugins.unregister("hello-plugin")
    assert main(["hello"]) != 0  # gone with its plugin
    assert "No such command 'hello'" in capsys.readouterr().err

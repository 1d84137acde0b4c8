"""``--track mlflow``: validate and pretrain runs logged to a local MLflow store (runs, nested
fold runs, parameters, per-fold and per-epoch metrics, artifacts), nothing logged twice on a
resume, a failing tracker costs one warning, MLflow never imported without ``--track``, and an
MLflow experiment imported back into the results store as measured evidence."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from gen_data import BACKBONE, TINY, TINY_PRETRAIN, gratings, one_torch_thread  # noqa: F401 (autouse fixture)

import dsim
from dsim.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _data():
    return {
        "gen-t": gratings(100, k=2, seed=5, name="gen-t"),
        "gen-s": gratings(120, k=4, seed=6, name="gen-s", noise=0.5),
    }


def _validate(store, **kw):
    args = dict(
        sources=["gen-s"],
        strategy="finetune",
        backbone=BACKBONE,
        folds=2,
        hyperparameters=TINY,
        pretrain_hyperparameters=TINY_PRETRAIN,
        store=store,
        inline=_data(),
        predict=False,
        device="cpu",
        track="mlflow",
    )
    args.update(kw)
    return dsim.validate("gen-t", **args)


pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


@pytest.fixture(scope="module")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables made (once: creating them takes seconds)."""
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


def _new_db(template: Path, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch, empty_mlflow_db):
    """A local MLflow store in tmp_path (the tracker's default: beside dsim's results store)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("DSIM_RESULTS", str(tmp_path / "results.sqlite"))
    return _new_db(empty_mlflow_db, tmp_path / "mlflow" / "mlflow.db")


def _runs(uri: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name(experiment)
    return [] if exp is None else list(c.search_runs([exp.experiment_id]))


def test_validate_logs_source_runs_with_nested_fold_runs_and_no_duplicate_on_resume(mlflow_store, tmp_path):
    from mlflow.tracking import MlflowClient

    events = []
    store = tmp_path / "results.sqlite"
    report = _validate(store, on_event=lambda k, m: events.append((k, m)))
    assert report.runs_done == 4 and not report.failures
    # where the runs go is said in one line
    where = [m for k, m in events if k == "info" and m.startswith("mlflow:")]
    assert len(where) == 1 and str(tmp_path / "mlflow") in where[0]
    assert not [m for k, m in events if k == "warning"]

    runs = _runs(mlflow_store, "dsim-gen-t")
    parents = {r.data.params["source"]: r for r in runs if r.data.tags.get("dsim.kind") == "source"}
    folds = [r for r in runs if r.data.tags.get("dsim.kind") == "fold"]
    assert set(parents) == {"gen-s", "gen-t"}  # the source and the scratch baseline
    assert len(folds) == 4 and all(r.info.status == "FINISHED" for r in runs)
    for r in folds:  # nested under the run of their (source, strategy, setup)
        p = parents[r.data.params["source"]]
        assert r.data.tags["mlflow.parentRunId"] == p.info.run_id
        assert r.data.params["strategy"] == p.data.params["strategy"]
    src = parents["gen-s"].data.params
    assert src["target"] == "gen-t" and src["strategy"] == "finetune" and src["backbone"] == BACKBONE
    assert src["setup"] == f"dsim:{BACKBONE}:16px" and src["image_size"] == "16" and src["seed"] == "0"
    assert src["dsim_version"] == dsim.__version__ and src["hp.epochs"] == "3"
    assert src["hp.pretrain.epochs"] == "2"
    assert parents["gen-t"].data.params["strategy"] == "scratch"

    # per-fold metrics equal dsim's store; T against the baseline's same fold
    with dsim.ResultsStore(store) as st:
        stored = {(r["source"], r["fold"]): r["auc"] for r in st.rows()}
    for r in folds:
        key = (r.data.params["source"], int(r.data.params["fold"]))
        assert r.data.metrics["auc"] == pytest.approx(stored[key])
        assert {"accuracy", "kappa", "n_train", "n_test"} <= set(r.data.metrics)
        if key[0] == "gen-s":
            assert r.data.params["checkpoint"]  # the pretrained checkpoint's hash
            base = stored[("gen-t", key[1])]
            assert r.data.metrics["T"] == pytest.approx((stored[key] - base) / base * 100)
    # per-epoch curves, one point per epoch
    c = MlflowClient(tracking_uri=mlflow_store)
    one = folds[0]
    epochs = int(one.data.metrics["epochs"])
    for name in ("train_loss", "val_loss", "val_auc"):
        hist = c.get_metric_history(one.info.run_id, name)
        assert [m.step for m in sorted(hist, key=lambda m: m.step)] == list(range(1, epochs + 1))
    # summaries and artifacts on the source runs
    row = next(r for r in report.rows if r.source == "gen-s")
    m = parents["gen-s"].data.metrics
    assert m["auc_mean"] == pytest.approx(row.auc) and m["T_mean"] == pytest.approx(row.transferability)
    for p in parents.values():
        arts = {a.path for a in c.list_artifacts(p.info.run_id)}
        assert arts == {"validate_report.json", "validate_plot.png"}
    rep = json.loads(
        Path(c.download_artifacts(parents["gen-s"].info.run_id, "validate_report.json")).read_text()
    )
    assert rep["target"] == "gen-t" and rep["runs_done"] == 4

    # the same command again: every fold comes from dsim's store, nothing new is logged
    again = _validate(store)
    assert again.runs_skipped == 4 and again.runs_done == 0
    assert sorted(r.info.run_id for r in _runs(mlflow_store, "dsim-gen-t")) == sorted(
        r.info.run_id for r in runs
    )


def test_a_run_interrupted_while_logging_is_marked_failed_and_logged_again(mlflow_store, tmp_path):
    from mlflow.tracking import MlflowClient

    store = tmp_path / "results.sqlite"
    _validate(store, folds=2)
    c = MlflowClient(tracking_uri=mlflow_store)
    fold = next(
        r
        for r in _runs(mlflow_store, "dsim-gen-t")
        if r.data.tags.get("dsim.kind") == "fold" and r.data.params["source"] == "gen-s"
    )
    # a command killed after logging began and before its fold reached dsim's store
    c.update_run(fold.info.run_id, status="RUNNING")
    con = sqlite3.connect(store)
    con.execute("DELETE FROM runs WHERE key = ?", (fold.data.tags["dsim.run_key"],))
    con.commit()
    con.close()
    rep = _validate(store, folds=2)
    assert rep.runs_done == 1 and rep.runs_skipped == 3
    same = [
        r
        for r in _runs(mlflow_store, "dsim-gen-t")
        if r.data.tags.get("dsim.run_key") == fold.data.tags["dsim.run_key"]
    ]
    assert sorted(r.info.status for r in same) == ["FAILED", "FINISHED"]
    assert len(_runs(mlflow_store, "dsim-gen-t")) == 7  # 2 source runs, 4 folds, 1 logged again
    parents = [r for r in same if r.info.status == "FINISHED"][0].data.tags["mlflow.parentRunId"]
    assert parents == fold.data.tags["mlflow.parentRunId"]  # continues the source's run


class _Raising(dsim.Tracker):
    name = "raising"

    def __init__(self):
        self.calls = 0

    def run_finished(self, result):
        self.calls += 1
        raise RuntimeError("tracking server unreachable")


class _RaisingPlugin:
    def __init__(self):
        self.tracker = _Raising()

    @dsim.hookimpl
    def dsim_register_trackers(self):
        return [self.tracker]


def test_a_tracker_that_raises_is_one_warning_and_the_runs_go_on(tmp_path, fresh_plugins):
    plugin = _RaisingPlugin()
    fresh_plugins.register(plugin, "raising-tracker")
    events = []
    try:
        report = _validate(
            tmp_path / "r.sqlite", track="raising", on_event=lambda k, m: events.append((k, m))
        )
    finally:
        fresh_plugins.unregister("raising-tracker")
    warnings = [m for k, m in events if k == "warning"]
    assert len(warnings) == 1 and "tracker 'raising'" in warnings[0] and "unreachable" in warnings[0]
    assert plugin.tracker.calls == 1  # left out after its first error
    assert report.runs_done == 4 and not report.failures
    with dsim.ResultsStore(tmp_path / "r.sqlite") as st:
        assert len(st.rows()) == 4


def test_unknown_tracker_is_one_line_before_any_work(tmp_path, capsys):
    rc = main(
        [
            "validate",
            "--target",
            "x",
            "--sources",
            "y",
            "--store",
            str(tmp_path / "r.sqlite"),
            "--track",
            "wandb",
        ]
    )
    err = capsys.readouterr().err
    assert rc != 0 and "tracker" in err and "wandb" in err and "Traceback" not in err
    assert not (tmp_path / "r.sqlite").exists()


def _py(code: str, **env) -> subprocess.CompletedProcess:
    e = {**os.environ, "DSIM_QUIET_PLUGIN_ERRORS": "1", **env}
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), e.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=300)


def test_without_mlflow_installed_track_is_one_line_naming_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['mlflow'] = None\n"  # as if not installed
        "from dsim.cli import main\n"
        f"sys.exit(main(['validate', '--target', 'gen', '--sources', 'y', '--store', {str(tmp_path / 'r.sqlite')!r},"
        " '--track', 'mlflow']))\n"
    )
    out = _py(code)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and 'pip install "dsim[mlflow]"' in lines[0], out.stderr
    assert not (tmp_path / "r.sqlite").exists()  # refused before any work started


def test_mlflow_is_not_imported_without_track(tmp_path):
    code = (
        "import sys, dsim\n"
        "from gen_data import gratings, TINY, BACKBONE\n"
        "d = {'t': gratings(60, k=2, seed=1, name='t')}\n"
        f"r = dsim.validate('t', sources=[], backbone=BACKBONE, folds=2, hyperparameters=TINY, inline=d,"
        f" predict=False, device='cpu', store={str(tmp_path / 'r.sqlite')!r})\n"
        "from dsim.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('RUNS', r.runs_done, 'MLFLOW', any(m.split('.')[0] == 'mlflow' for m in sys.modules))\n"
    )
    out = _py(code)
    assert out.returncode == 0, out.stderr
    assert "RUNS 2 MLFLOW False" in out.stdout


def test_pretrain_is_logged_once_per_checkpoint(mlflow_store, tmp_path):
    src = gratings(80, k=3, seed=2, name="gen-p")
    path = dsim.pretrain(src, BACKBONE, hyperparameters=TINY_PRETRAIN, device="cpu", track="mlflow")
    runs = _runs(mlflow_store, "dsim-pretrain")
    assert len(runs) == 1 and runs[0].data.tags["dsim.checkpoint"] == path.stem
    r = runs[0].data
    assert r.params["source"] == "gen-p" and r.params["backbone"] == BACKBONE and r.params["hp.epochs"] == "2"
    assert "val_auc" in r.metrics and "train_loss" in r.metrics and "epochs_run" in r.metrics
    dsim.pretrain(src, BACKBONE, hyperparameters=TINY_PRETRAIN, device="cpu", track="mlflow")  # cached
    assert len(_runs(mlflow_store, "dsim-pretrain")) == 1


def test_validate_logs_the_pretraining_it_does_once(mlflow_store, tmp_path, monkeypatch):
    """A tracked validate that pretrains its source logs that pretraining job as its own run (in
    ``dsim-pretrain``, beside ``dsim pretrain --track``'s); the same validate again (its folds in
    the store), or with a new results store but the checkpoint in the cache, logs none."""
    monkeypatch.setenv("DSIM_CACHE_DIR", str(tmp_path / "cache"))  # this test's own checkpoints
    first = _validate(tmp_path / "results.sqlite")
    assert first.pretrained == 1 and not first.failures
    runs = _runs(mlflow_store, "dsim-pretrain")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    r = runs[0].data
    assert (
        r.tags["dsim.kind"] == "pretrain"
        and r.params["source"] == "gen-s"
        and r.params["backbone"] == BACKBONE
    )
    ckpt = r.tags["dsim.checkpoint"]
    saved = Path(r.tags["dsim.path"])
    assert saved.stem == ckpt and saved.is_file() and (tmp_path / "cache") in saved.parents
    assert r.params["hp.epochs"] == str(TINY_PRETRAIN["epochs"]) and "val_auc" in r.metrics
    # the fold runs name the checkpoint the pretraining run logged
    folds = [x for x in _runs(mlflow_store, "dsim-gen-t") if x.data.tags.get("dsim.kind") == "fold"]
    assert {x.data.params.get("checkpoint") for x in folds if x.data.params["source"] == "gen-s"} == {ckpt}

    again = _validate(tmp_path / "results.sqlite")  # every fold from the store: nothing trained
    assert again.pretrained == 0
    cached = _validate(tmp_path / "other-results.sqlite")  # folds run again, checkpoint from the cache
    assert cached.runs_done == 4 and cached.pretrained == 0
    assert len(_runs(mlflow_store, "dsim-pretrain")) == 1


def test_tracking_uri_and_experiment_name_from_the_environment(
    mlflow_store, empty_mlflow_db, tmp_path, monkeypatch
):
    uri = _new_db(empty_mlflow_db, tmp_path / "elsewhere" / "lab.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "my-study")
    monkeypatch.chdir(tmp_path)
    src = gratings(80, k=3, seed=3, name="gen-q")
    dsim.pretrain(src, BACKBONE, hyperparameters=TINY_PRETRAIN, device="cpu", track="mlflow")
    assert len(_runs(uri, "my-study")) == 1 and not _runs(uri, "dsim-pretrain")
    assert not _runs(mlflow_store, "my-study")  # not the default local store
    assert (tmp_path / "elsewhere" / "artifacts").is_dir() and not (tmp_path / "mlruns").exists()


def test_an_mlflow_experiment_of_a_lab_is_imported_and_ranked_as_measured(
    mlflow_store, empty_mlflow_db, tmp_path, monkeypatch, capsys, fresh_plugins
):
    """A lab's own runs (its own parameter and metric names, no folds) become evidence."""
    from mlflow.tracking import MlflowClient

    uri = _new_db(empty_mlflow_db, tmp_path / "lab.db")
    c = MlflowClient(tracking_uri=uri)
    exp = c.create_experiment("lab-study", artifact_location=(tmp_path / "lab-art").as_uri())
    for src, aucs in (
        ("usps", (0.80, 0.82, 0.78)),
        ("breastmnist", (0.70, 0.72, 0.71)),
        ("mnist-test", (0.6,)),
    ):
        for a in aucs:
            run = c.create_run(exp)
            c.log_param(run.info.run_id, "pretrain_data", src)
            c.log_param(run.info.run_id, "finetune_data", "breastmnist")
            c.log_metric(run.info.run_id, "test_auc", a)
            c.set_terminated(run.info.run_id, "FINISHED" if src != "mnist-test" else "FAILED")
    run = c.create_run(exp)  # a run without an AUC (e.g. a summary): not a result
    c.log_param(run.info.run_id, "pretrain_data", "usps")
    c.set_terminated(run.info.run_id)

    store = tmp_path / "imported.sqlite"
    argv = ["results", "import", "--mlflow-uri", uri, "--mlflow-experiment", "lab-study"]
    argv += ["--source-param", "pretrain_data", "--target-param", "finetune_data", "--auc-metric", "test_auc"]
    assert main([*argv, "--store", str(store), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["imported"] == 6 and s["setup"] == "mlflow:lab-study" and s["origin"] == "mlflow:lab-study"
    assert s["sources"] == ["breastmnist", "usps"] and s["has_baselines"]
    with dsim.ResultsStore(store) as st:
        rows = st.rows(target="breastmnist")
    assert sorted(r["fold"] for r in rows if r["source"] == "usps") == [0, 1, 2]
    assert sorted(r["auc"] for r in rows if r["source"] == "usps") == pytest.approx([0.78, 0.80, 0.82])

    monkeypatch.setenv("DSIM_RESULTS", str(store))
    # dsim's own CPU matrices also measured usps -> breastmnist (other setups): only the lab's runs here
    monkeypatch.setenv("DSIM_DISABLE_PLUGINS", "own_matrices")
    fresh_plugins.reset()
    ranking = dsim.rank("breastmnist", sources=["usps", "mnist-test"])
    by = {r.source: r for r in ranking.rows}
    assert by["usps"].status == "measured" and by["usps"].measured_auc == pytest.approx(0.80)
    assert by["mnist-test"].status == "predicted"  # its only run failed: not imported


def test_an_unknown_experiment_is_one_line(mlflow_store, tmp_path, capsys):
    rc = main(["results", "import", "--mlflow-uri", mlflow_store, "--mlflow-experiment", "nope"])
    err = capsys.readouterr().err
    assert rc != 0 and "'nope' not found" in err and "Traceback" not in err


@pytest.mark.slow
def test_ray_runs_are_logged_once_from_the_driver(mlflow_store, tmp_path):
    ray = pytest.importorskip("ray")
    try:
        _validate(tmp_path / "results.sqlite", executor="ray", cpus_per_run=1)
    finally:  # the Ray this test started is not left running for the cluster tests after it
        ray.shutdown()
    runs = _runs(mlflow_store, "dsim-gen-t")
    folds = [r for r in runs if r.data.tags.get("dsim.kind") == "fold"]
    assert len(folds) == 4 and len({r.data.tags["dsim.run_key"] for r in folds}) == 4
    assert all(r.data.metrics.get("val_loss") is not None for r in folds)  # curves come back with results


def test_per_epoch_val_auc_equals_scikit_learn():
    """The validation AUC logged per epoch (a rank-based AUC, cheap enough for every epoch) is
    scikit-learn's weighted one-vs-rest AUC, ties included; per-label mean for multi-label."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from dsim.kernel.metrics import mean_label_auc
    from dsim.networks.training import _val_auc

    rng = np.random.default_rng(0)
    for k in (2, 3, 10):
        y = rng.integers(0, k, 300)
        z = torch.randn(300, k)
        z[np.arange(300), y] += 1
        z = torch.round(z * 4) / 4  # ties
        p = torch.softmax(z, 1).numpy()
        ref = (
            roc_auc_score(y, p[:, 1])
            if k == 2
            else roc_auc_score(y, p, multi_class="ovr", average="weighted")
        )
        assert _val_auc(torch.tensor(y), [z[:100], z[100:]], False) == pytest.approx(ref, abs=1e-12)
    y = rng.integers(0, 2, (200, 5))
    z = torch.randn(200, 5) + torch.tensor(y)
    assert _val_auc(torch.tensor(y), [z], True) == pytest.approx(mean_label_auc(y, torch.sigmoid(z).numpy()))
    assert np.isnan(_val_auc(torch.zeros(10, dtype=torch.long), [torch.randn(10, 2)], False))

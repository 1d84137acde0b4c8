"""dsim validate end to end: planning, store, resume after SIGKILL, faults, metrics, report, CLI.
(Ray: tests/test_ray_cluster.py; the pretraining stage and its lock: tests/test_pretraining.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from gen_data import BACKBONE, TINY, TINY_PRETRAIN, gratings, one_torch_thread  # noqa: F401 (autouse fixture)

import dsim
from dsim.validation.store import ResultsStore

HERE = Path(__file__).resolve().parent


def _small_validate(store, **kw):
    data = {
        "gen-t": gratings(100, k=2, seed=5, name="gen-t"),
        "gen-s": gratings(120, k=4, seed=6, name="gen-s", noise=0.5),
        "gen-u": gratings(120, k=3, seed=7, name="gen-u", noise=0.5, freq=1.2),
    }
    args = dict(
        sources=["gen-s", "gen-u"],
        strategy="finetune",
        backbone=BACKBONE,
        folds=2,
        hyperparameters=TINY,
        pretrain_hyperparameters=TINY_PRETRAIN,
        store=store,
        inline=data,
        predict=False,
        device="cpu",
    )
    args.update(kw)
    return dsim.validate("gen-t", **args)


# ------------------------------------------------------------------ metrics
def test_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, cohen_kappa_score, roc_auc_score

    from dsim.networks.training import classification_metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    p = rng.dirichlet(np.ones(4), 300)
    p[np.arange(300), y] += 0.3
    p /= p.sum(1, keepdims=True)
    m = classification_metrics(y, p)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="weighted"))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p.argmax(1)))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, p.argmax(1)))
    q = classification_metrics(y, p, ordinal=True)
    assert q["kappa"] == pytest.approx(cohen_kappa_score(y, p.argmax(1), weights="quadratic"))
    assert q["kappa"] != pytest.approx(m["kappa"])
    yb = rng.integers(0, 2, 100)
    pb = rng.dirichlet(np.ones(2), 100)
    assert classification_metrics(yb, pb)["auc"] == pytest.approx(roc_auc_score(yb, pb[:, 1]))
    from dsim.networks.training import is_ordinal

    assert is_ordinal(("Grade_0", "Grade_1", "Grade_2")) and not is_ordinal(("normal", "pneumonia"))


def test_transferability_and_spearman_in_report():
    from dsim.validation.report import SourceRow, spearman

    rows = [
        SourceRow(
            source=s,
            strategy="finetune",
            train_size=None,
            folds=3,
            auc=a,
            auc_std=0,
            accuracy=None,
            kappa=None,
            transferability=t,
            transferability_std=0,
            predicted=p,
        )
        for s, a, t, p in [
            ("a", 0.9, 5.0, 3.0),
            ("b", 0.8, 1.0, 2.0),
            ("c", 0.7, -2.0, 1.0),
            ("d", 0.6, -4, 0.5),
        ]
    ]
    rho, n = spearman(rows)
    assert rho == pytest.approx(1.0) and n == 4
    assert dsim.transferability(0.9, 0.8) == pytest.approx(12.5)


# ------------------------------------------------------------------ end to end
def test_validate_end_to_end_then_skips_finished(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    events = []
    rep = _small_validate(store, on_event=lambda k, m: events.append((k, m)))
    assert rep.runs_total == 6 and rep.runs_done == 6 and not rep.failures, rep.failures
    assert len(store) == 6
    rows = {r.source: r for r in rep.rows}
    assert set(rows) == {"gen-t", "gen-s", "gen-u"}
    base = rows["gen-t"]
    assert base.strategy == "scratch" and base.transferability == pytest.approx(0.0)
    # T per fold against the baseline of the same fold, then mean over folds
    by = {(r["source"], r["fold"]): r["auc"] for r in store.rows()}
    t = np.mean([dsim.transferability(by[("gen-s", f)], by[("gen-t", f)]) for f in range(2)])
    assert rows["gen-s"].transferability == pytest.approx(t)
    assert rows["gen-s"].auc == pytest.approx(np.mean([by[("gen-s", f)] for f in range(2)]))
    assert 0 <= rows["gen-s"].accuracy <= 1 and rows["gen-s"].kappa is not None
    d = rep.to_dict()
    assert json.loads(json.dumps(d))["rows"][0]["source"]
    from dsim.validation.report import plot_report

    out = plot_report(rep, tmp_path / "auc.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second validation recomputes nothing
    rep2 = _small_validate(store)
    assert rep2.runs_skipped == 6 and rep2.runs_done == 0
    assert [r.auc for r in rep2.rows] == [r.auc for r in rep.rows]
    # another hyper-parameter is another run
    rep3 = _small_validate(store, hyperparameters={**TINY, "lr": 5e-4}, sources=["gen-s"])
    assert rep3.runs_skipped == 0 and rep3.runs_done == 4


def test_resume_after_sigkill_recomputes_nothing_finished(tmp_path):
    store_path = tmp_path / "r.sqlite"
    env = {**os.environ, "DSIM_RESULTS": str(store_path), "PYTHONPATH": str(HERE)}
    script = (
        "import sys, dsim, torch\n"
        "torch.set_num_threads(1)\n"
        "from gen_data import gratings, TINY, TINY_PRETRAIN, BACKBONE\n"
        "data = {'gen-t': gratings(90, k=2, seed=5, name='gen-t'), 'gen-s': gratings(100, k=4, seed=6, name='gen-s')}\n"
        "rep = dsim.validate('gen-t', sources=['gen-s'], strategy='finetune', backbone=BACKBONE, folds=3,\n"
        "    hyperparameters=TINY, pretrain_hyperparameters=TINY_PRETRAIN, inline=data, predict=False, device='cpu',\n"
        "    on_event=lambda k, m: print(k, m, flush=True))\n"
        "print('RESULT', rep.runs_done, rep.runs_skipped, rep.runs_total, flush=True)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 240
    before = []
    while time.time() < deadline:
        if store_path.exists():
            before = ResultsStore(store_path).rows()
            if len(before) >= 2:
                break
        time.sleep(0.2)
    assert len(before) >= 2, "no fold finished in time"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    st = ResultsStore(store_path)
    kept = {r["key"]: r["created"] for r in st.rows()}
    assert len(kept) >= 2 and len(kept) < 6, "killed after everything finished; test proves nothing"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    done, skipped, total = map(int, out.stdout.split("RESULT")[1].split())
    assert total == 6 and skipped == len(kept) and done == total - len(kept)
    after = {r["key"]: r["created"] for r in st.rows()}
    assert len(after) == 6
    assert all(after[k] == c for k, c in kept.items()), "a finished fold was recomputed"


# ------------------------------------------------------------------ bad input and faults
def test_faults_are_named_and_other_runs_go_on(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "r.sqlite")
    # a source that cannot run at all is refused before any run, named with why
    with pytest.raises(dsim.DsimError, match=r"1 of the sources cannot run: .*missing\.pt.*not found"):
        _small_validate(store, sources=["gen-s", str(tmp_path / "missing.pt")], folds=2)
    assert len(store) == 0 and not store.failures()  # nothing was run


def test_one_class_target_and_fold_without_positives(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    one = gratings(60, k=2, seed=1, name="one")
    one = dsim.ImageSet(name="one", images=one.images, labels=np.zeros(60, int), class_names=("a", "b"))
    rep = dsim.validate(
        one,
        sources=["gen-s"],
        backbone=BACKBONE,
        folds=2,
        hyperparameters=TINY,
        pretrain_hyperparameters=TINY_PRETRAIN,
        store=store,
        predict=False,
        device="cpu",
        inline={"gen-s": gratings(80, k=2, seed=2, name="gen-s")},
    )
    assert rep.runs_done == 0 and len(rep.failures) == 4
    assert all("target 'one' has one class" in f["error"] and "[" in f["error"] for f in rep.failures)
    # 3 positives, 5 folds: at least two test folds have no positive example
    rare = gratings(60, k=2, seed=1, name="rare")
    labels = np.zeros(60, int)
    labels[:3] = 1
    rare = dsim.ImageSet(name="rare", images=rare.images, labels=labels, class_names=("neg", "pos"))
    rep = dsim.validate(
        rare,
        sources=[],
        backbone=BACKBONE,
        folds=5,
        hyperparameters=TINY,
        store=store,
        predict=False,
        device="cpu",
    )
    errs = [f["error"] for f in rep.failures]
    assert len(errs) >= 2 and all("test split has no example of class(es) pos" in e for e in errs)
    assert rep.runs_done >= 1  # the folds that have positives went on


def test_card_with_wrong_number_of_classes(tmp_path, fresh_plugins, shared_data):
    class Cards:
        @dsim.hookimpl
        def dsim_register_cards(self):
            return [
                dsim.DatasetCard(
                    name="breast-wrong",
                    origin="medical",
                    num_classes=3,
                    loader="npz",
                    loader_args={"file": str(shared_data / "breastmnist.npz")},
                )
            ]

    fresh_plugins.register(Cards(), "test-cards")
    try:
        store = ResultsStore(tmp_path / "r.sqlite")
        # a source that cannot be read is refused before any run, named with why
        with pytest.raises(dsim.DsimError, match="breast-wrong: .*card says 3 classes but the data"):
            _small_validate(store, sources=["breast-wrong", "gen-s"])
    finally:
        fresh_plugins.unregister("test-cards")
    assert len(store) == 0 and not store.failures()


def test_nan_loss_run_fails_alone(tmp_path, monkeypatch):
    import dsim.networks.training as T

    real = T._forward
    monkeypatch.setattr(
        T, "_forward", lambda m, xb: real(m, xb) * (float("nan") if m.head.out_features == 2 else 1)
    )
    store = ResultsStore(tmp_path / "r.sqlite")
    rep = _small_validate(store, sources=["gen-s"], strategy=["finetune", "radiomics"], baseline=None)
    errs = [f["error"] for f in rep.failures]
    assert len(errs) == 2 and all("[finetune" in e and "loss became nan" in e for e in errs)
    assert rep.runs_done == 2 and {r.strategy for r in rep.rows if r.auc} == {"radiomics"}


# ------------------------------------------------------------------ CLI
def test_cli_validate_results_pretrain(tmp_path, monkeypatch, capsys, shared_data):
    from dsim.cli import main

    monkeypatch.setenv("DSIM_RESULTS", str(tmp_path / "r.sqlite"))
    breast = str(shared_data / "breastmnist.npz")
    usps = str(shared_data / "usps_16x16.npz")
    rc = main(
        [
            "pretrain",
            "--source",
            usps,
            "--backbone",
            BACKBONE,
            "--epochs",
            "1",
            "--max-samples",
            "300",
            "--image-size",
            "16",
            "--json",
        ]
    )
    assert rc == 0
    ck = json.loads(capsys.readouterr().out)
    assert Path(ck["checkpoint"]).exists() and ck["epochs_run"] == 1 and ck["images"] == 300
    rc = main(
        [
            "validate",
            "--target",
            breast,
            "--sources",
            f"{usps},{ck['checkpoint']}",
            "--backbone",
            BACKBONE,
            "--folds",
            "2",
            "--train-sizes",
            "60",
            "--epochs",
            "2",
            "--pretrain-epochs",
            "1",
            "--source-max",
            "300",
            "--target-max",
            "200",
            "--image-size",
            "16",
            "--cpus-per-run",
            "1",
            "--plot",
            str(tmp_path / "p.png"),
            "--json",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    rep = json.loads(out.out)
    assert rep["runs_total"] == 6 and rep["runs_done"] == 6, rep["failures"]
    # the plan goes to stderr before the runs; usps's checkpoint is the one `dsim pretrain` made
    # above (same data, epochs, cap and size), so nothing is pretrained
    assert "plan: 6 runs, 0 pretraining jobs, 1 pretrained checkpoint cached" in out.err
    assert rep["pretraining_jobs"] == 1 and rep["pretrained"] == 0
    assert {r["train_size"] for r in rep["rows"]} == {60}
    assert (tmp_path / "p.png").exists()
    assert main(["results", "--csv"]) == 0
    csv_out = capsys.readouterr().out.splitlines()
    assert csv_out[0].startswith("source,target,strategy") and len(csv_out) == 7
    assert main(["results", "--json", "--target", "breastmnist", "--strategy", "scratch"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert len(js) == 2 and all(r["source"] == r["target"] == "breastmnist" for r in js)
    assert main(["results"]) == 0 and "(6 rows)" in capsys.readouterr().out.replace("\n", "")


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom dsim.cli import main\n"
        "try:\n    main(['validate', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'heavy import'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--train-sizes" in out.stdout and "resumes" in out.stdout


def test_validate_config_holds_every_knob_once():
    from dsim.kernel.defaults import BASELINE_STRATEGY, DEFAULT_BACKBONE, DEFAULT_STRATEGY
    from dsim.validation.validate import ValidateConfig

    d = ValidateConfig()
    assert (d.backbone, d.strategies, d.baseline) == (
        DEFAULT_BACKBONE,
        (DEFAULT_STRATEGY,),
        BASELINE_STRATEGY,
    )
    c = ValidateConfig.build(d, strategy="finetune,linear-probe", train_sizes="50,100", folds=3)
    assert c.strategies == ("finetune", "linear-probe") and c.train_sizes == (50, 100) and c.folds == 3
    assert ValidateConfig.build(c, folds=4).strategies == c.strategies  # the rest kept
    with pytest.raises(dsim.UnknownOptionError, match="'fold'.*did you mean folds"):
        ValidateConfig.build(fold=3)
    with pytest.raises(dsim.DsimError, match="folds must be at least 2"):
        ValidateConfig(folds=1)
    with pytest.raises(dsim.DsimError, match="data placement 'nfs'"):
        ValidateConfig(data_placement="nfs")
    with pytest.raises(dsim.UnknownOptionError, match="'epoch' for dsim.validate.*did you mean epochs"):
        dsim.validate("gen-t", epoch=3)
    # the flags of `dsim validate` are keywords too
    c = ValidateConfig.build(epochs=3, image_size=32, pretrain_epochs=2, measures="otdd", hp={"lr": 0.01})
    assert c.hyperparameters == {"epochs": 3, "image_size": 32, "lr": 0.01}
    assert c.pretrain_hyperparameters == {"epochs": 2, "image_size": 32}
    assert c.rank_options == {"measures": ("otdd",)}


def test_an_executor_is_a_declared_dsim_executor():
    from dsim.validation.executors import LocalExecutor, get_executor

    assert isinstance(get_executor("local"), LocalExecutor)
    assert isinstance(get_executor("local"), dsim.Executor)
    mine = LocalExecutor()
    assert get_executor(mine) is mine
    with pytest.raises(dsim.DsimError, match="not a dsim.Executor"):
        get_executor(object())

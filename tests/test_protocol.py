"""One protocol for ranking and validating checkpoints, evidence that is visible and scoped, what
a validation can decide, and output a log or an 80-column terminal can hold (issue 20, items
4-7): a checkpoint's T against its own architecture from scratch, the validated checkpoint
measured in the next ranking under its setup, the header's baseline from one setup, --evidence,
the "cannot separate" warning, plain progress lines without a terminal, full names at 80 columns."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import dsim
from dsim.kernel.errors import DsimError
from dsim.kernel.metrics import measured_transferability, primary_setup, target_baseline, transferability
from dsim.kernel.progress import LineProgress
from dsim.kernel.records import TransferResult
from dsim.validation.report import SourceRow, separability

FAST = dict(folds=2, target_max=100, source_max=100)


def _zoo(tmp_path, *, input_size=32):
    import torch

    f = tmp_path / "lab.pth"
    torch.save(dsim.create_backbone("smallcnn-w16", weights="random", num_classes=0, seed=1).state_dict(), f)
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(
        "checkpoints:\n"
        f"  - {{name: lab-net, architecture: smallcnn-w16, weights: 'file:{f}', input_size: {input_size}}}\n"
    )
    return zoo


@pytest.fixture(scope="module")
def validated(tmp_path_factory, shared_data_dir):
    """breastmnist validated on a checkpoint of the user's zoo (smallcnn-w16, native 32 px) and a
    dataset (usps, on --backbone smallcnn at 28 px): the store holds the runs."""
    tmp = tmp_path_factory.mktemp("protocol")
    zoo = _zoo(tmp)
    store = tmp / "runs.sqlite"
    report = dsim.validate(
        "breastmnist",
        sources=["lab-net", "usps"],
        zoo=[str(zoo)],
        hyperparameters={"epochs": 1},
        pretrain_hyperparameters={"epochs": 1},
        store=store,
        predict=False,
        **FAST,
    )
    return report, store, zoo


@pytest.fixture(scope="module")
def shared_data_dir():
    if not os.environ.get("DSIM_DATA_DIR"):
        pytest.skip("../shared/data is not beside the repo")
    return os.environ["DSIM_DATA_DIR"]


def test_a_checkpoint_is_measured_against_its_own_architecture_from_scratch(validated):
    report, store, _zoo = validated
    assert not report.failures, report.failures
    runs = [r for r in (dsim.ResultsStore(store).get(row["key"]) for row in dsim.ResultsStore(store).rows())]
    scratch = [r for r in runs if r.spec.strategy == "scratch"]
    # one scratch run per architecture (and fold): --backbone's for the dataset, the card's for it
    assert sorted((r.spec.backbone, r.spec.hyperparameters["image_size"]) for r in scratch) == [
        ("smallcnn", 28),
        ("smallcnn", 28),
        ("smallcnn-w16", 32),
        ("smallcnn-w16", 32),
    ]
    lab = [r for r in runs if r.spec.source == "lab-net"]
    assert {r.spec.hyperparameters["image_size"] for r in lab} == {32}  # its native size, as ranked
    own = {r.spec.fold: r.metrics["auc"] for r in scratch if r.spec.backbone == "smallcnn-w16"}
    want = np.mean([transferability(r.metrics["auc"], own[r.spec.fold]) for r in lab])
    row = next(r for r in report.rows if r.source == "lab-net")
    assert row.transferability == pytest.approx(want)
    assert row.setup == "dsim:smallcnn-w16:32px" and row.baseline_auc == pytest.approx(
        np.mean(list(own.values()))
    )
    usps = next(r for r in report.rows if r.source == "usps")
    assert usps.setup == "dsim:smallcnn:28px"
    assert report.baseline_auc == pytest.approx(usps.baseline_auc)  # the header: --backbone's baseline


def test_the_validated_checkpoint_comes_back_measured_under_its_setup(validated, monkeypatch):
    report, store, zoo = validated
    monkeypatch.setenv("DSIM_RESULTS", str(store))
    # dsim's own CPU matrices measured usps -> breastmnist too (their setups): only the validated runs here
    monkeypatch.setenv("DSIM_DISABLE_PLUGINS", "own_matrices")
    dsim.kernel.plugins.reset()
    try:
        rk = dsim.rank("breastmnist", sources=["lab-net", "usps"], zoo=str(zoo), measures="expert")
        rows = {r.source: r for r in rk.rows}
        assert rows["lab-net"].status == "measured" and rows["lab-net"].setup == "dsim:smallcnn-w16:32px"
        assert rows["usps"].status == "measured" and rows["usps"].setup == "dsim:smallcnn:28px"
        lab = next(r for r in report.rows if r.source == "lab-net")
        assert rows["lab-net"].score == pytest.approx(lab.transferability)
        # the header's target-only AUC is that of one setup, not a mean over both
        base = {r.setup: r.baseline_auc for r in report.rows if r.source == "breastmnist"}
        assert rk.target_auc_setup in base and rk.target_auc == pytest.approx(base[rk.target_auc_setup])
        assert any(
            n.startswith("evidence about breastmnist") and "dsim:smallcnn-w16:32px 4" in n for n in rk.notes
        )

        # --evidence leaving the checkpoint's setup out: it is no longer measured, and the notes say so
        rk2 = dsim.rank(
            "breastmnist",
            sources=["lab-net", "usps"],
            zoo=str(zoo),
            measures="expert",
            evidence="-dsim:smallcnn-w16:32px",
        )
        rows2 = {r.source: r for r in rk2.rows}
        assert rows2["usps"].status == "measured"
        assert "lab-net" not in rows2 or rows2["lab-net"].status == "predicted"
        assert any(n.startswith("evidence chosen (-dsim:smallcnn-w16:32px)") for n in rk2.notes)
        assert rk2.target_auc_setup == "dsim:smallcnn:28px"
        with pytest.raises(DsimError, match="names no result"):
            dsim.rank("breastmnist", sources=["usps"], measures="expert", evidence="no-such-setup")
    finally:
        dsim.kernel.plugins.reset()


def test_a_size_below_the_native_one_is_warned_and_no_unused_baseline_runs(tmp_path, shared_data_dir):
    zoo = _zoo(tmp_path, input_size=32)
    events = []
    report = dsim.validate(
        "breastmnist",
        sources=["lab-net"],
        zoo=[str(zoo)],
        hyperparameters={"epochs": 1, "image_size": 16},
        store=tmp_path / "r.sqlite",
        predict=False,
        on_event=lambda k, m: events.append((k, m)),
        **FAST,
    )
    assert not report.failures, report.failures
    warn = [m for k, m in events if k == "warning" and "lab-net" in m]
    assert warn and "16 px, below the 32 px" in warn[0] and warn[0] in report.notes
    # every source brings its own network: only its architecture's scratch run is planned
    assert {r.setup for r in report.rows} == {"dsim:smallcnn-w16:16px"}
    assert report.runs_total == 4


def test_results_of_one_setup_never_give_another_its_baseline():
    def res(setup, source, fold, auc):
        return TransferResult(source=source, target="t", fold=fold, auc=auc, setup=setup)

    h = [
        res("a", "t", 0, 0.80),
        res("a", "t", 1, 0.82),
        res("a", "s1", 0, 0.88),
        res("a", "s1", 1, 0.90),
        res("a", "s2", 0, 0.70),
        res("b", "t", 0, 0.92),
        res("b", "s3", 0, 0.95),
        res("c", "s4", 0, 0.99),  # a setup without baseline: not measured against another's
    ]
    m = measured_transferability(h, "t")
    assert m["s3"][0] == pytest.approx(transferability(0.95, 0.92))
    assert m["s1"][0] == pytest.approx(np.mean([transferability(0.88, 0.80), transferability(0.90, 0.82)]))
    assert "s4" not in m
    assert primary_setup(h, "t") == "a"  # the most measured sources
    assert target_baseline(h, "t") == pytest.approx(0.81)  # setup a alone, not the mean of a and b
    assert target_baseline(h, "t", "b") == pytest.approx(0.92)


def _row(source, t, sd, auc=0.8):
    return SourceRow(source, "finetune", None, 2, auc, 0.01, None, None, t, sd)


def test_separability_names_the_scale_that_would_decide():
    ok, notes = separability(
        [_row("a", 3.0, 10.0), _row("b", 5.0, 12.0)], "t", folds=2, epochs=1, default_epochs=30
    )
    assert ok is False and "cannot separate" in notes[0] and "--epochs 30" in notes[0]
    ok, notes = separability([_row("a", 3.0, 1.0), _row("b", 9.0, 1.5)], "t", folds=5)
    assert ok is True and notes == []
    ok, notes = separability([_row("a", 3.0, 0.5, auc=0.52), _row("b", 9.0, 0.5, auc=0.55)], "t", folds=5)
    assert ok is False and "near chance" in notes[0]
    assert separability([_row("a", 3.0, 1.0)], "t", folds=5) == (None, [])
    # a baseline that learnt nothing: T against it cannot rank the pretraining
    base = dataclasses.replace(_row("t", 0.0, 0.0, auc=0.5), strategy="scratch", setup="dsim:big:32px")
    ok, notes = separability([_row("a", 3.0, 1.0), _row("b", 40.0, 1.5), base], "t", folds=5, epochs=2)
    assert ok is False and "dsim:big:32px is near chance" in notes[0]
    assert separability([_row("a", 3.0, 1.0), base], "t", folds=2)[0] is False  # one source too
    # neighbours closer than their spread are named even when the table separates
    ok, notes = separability([_row("a", 3.0, 1.0), _row("b", 30.0, 1.5), _row("c", 31.0, 4.0)], "t", folds=5)
    assert ok is True and notes == ["within the fold spread of T, so not told apart at this scale: c and b"]


def test_a_tiny_run_reports_whether_it_can_decide(validated):
    report = validated[0]
    src = [r for r in report.rows if r.source != "breastmnist"]
    gap = max(r.transferability for r in src) - min(r.transferability for r in src)
    spread = np.mean([r.transferability_std for r in src])
    assert report.decidable is not None
    assert (spread > gap) == any("cannot separate" in w for w in report.warnings)


def test_line_progress_writes_stage_lines_and_estimates():
    now = [0.0]
    out = io.StringIO()
    p = LineProgress(out, every=10, clock=lambda: now[0], heartbeat=False)
    p("logme: a", 0, 4)
    now[0] = 2
    p("logme: b", 1, 4)  # same stage, under 10 s: no line
    now[0] = 12
    p("logme: c", 2, 4)
    p.stage("fitting meta-ranker")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("logme: started (0/4)")
    assert lines[1].endswith("logme: c 2/4, about 12 s left")
    assert lines[2].endswith("fitting meta-ranker") and len(lines) == 3


def test_rank_without_a_terminal_writes_plain_progress_lines(tmp_path, shared_data_dir):
    env = {**os.environ, "DSIM_CACHE_DIR": str(tmp_path / "c"), "DSIM_RESULTS": str(tmp_path / "r.sqlite")}
    with open(tmp_path / "log", "w") as log:
        r = subprocess.run(
            [sys.executable, "-m", "dsim", "rank", "--target", "breastmnist", "-m", "expert", "--top", "3"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            timeout=300,
        )
    assert r.returncode == 0
    text = (tmp_path / "log").read_text()
    assert "expert: started" in text and "\x1b[" not in text  # plain lines, no terminal codes


def test_datasets_at_80_columns_shows_full_names():
    env = {**os.environ, "COLUMNS": "80"}
    r = subprocess.run(
        [sys.executable, "-m", "dsim", "datasets"], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    first = {line.split()[0] for line in lines[3:] if line[:1].strip()}
    names = {c.name for c in dsim.get_registry()}
    assert names <= first, sorted(names - first)[:5]  # every name in full, none cut with an ellipsis

"""Juodelyte et al. 2024 as prior knowledge: the shipped tables become known results and measure
values, and `dsim reproduce juodelyte` recomputes the paper's analysis. Every expected number
here is recomputed from the shipped CSV files by code written independently of the plugin."""

from __future__ import annotations

import csv
import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import weightedtau

import dsim
from dsim.evaluation.reproduce import reproduce

ORIGIN = "published:juodelyte2024"
METRICS = ("logme", "leep", "nleep", "ncti", "parc", "sfda", "lp", "fu")
SEVEN = ("logme", "sfda", "leep", "parc", "ncti", "nleep", "our")
REPO = Path(__file__).resolve().parents[1]
RUNS = REPO.parent / "shared" / "published" / "juodelyte2024" / "finetune_runs.csv"


def _text(name):
    return (resources.files("dsim_plugins") / "published_data" / "juodelyte2024" / name).read_text()


def _matrix(name):
    """(sources, targets, array with NaN for empty cells) of a released wide table."""
    rows = list(csv.reader(_text(name).splitlines()))
    head = rows[0]
    assert head[:2] == ["", "source"]
    targets = head[2:]
    sources = [r[1] for r in rows[1:]]
    m = np.array([[float(v) if v else np.nan for v in r[2:]] for r in rows[1:]])
    return sources, targets, m


def _column(name, target):
    sources, targets, m = _matrix(name)
    j = targets.index(target)
    return {s: m[i, j] for i, s in enumerate(sources) if not np.isnan(m[i, j])}


def _ranks_file(name):
    rows = list(csv.reader(_text(name).splitlines(), delimiter=";"))
    head = rows[0]
    return {r[1]: {m: int(v) for m, v in zip(head[2:], r[2:])} for r in rows[1:]}


def _tau(score, auc, target):
    keys = [s for s in score if s in auc and s != target]
    t = weightedtau(np.array([score[s] for s in keys]), np.array([auc[s] for s in keys]))[0]
    return None if math.isnan(t) else float(t)


def _scaled(col, reverse):
    v = np.array(list(col.values()))
    lo, hi = v.min(), v.max()
    return {s: ((x - hi) / (lo - hi)) if reverse else ((x - lo) / (hi - lo)) for s, x in col.items()}


def _independent(suffix, auc_file, scale, notebook):
    """Per target: tau of each of the seven, written directly on the CSV files."""
    _, targets, _ = _matrix(f"lp_{suffix}.csv")
    out = {}
    for t in targets:
        auc = {s: v * scale for s, v in _column(auc_file, t).items()}
        taus = {}
        for m in SEVEN[:-1]:
            col = _column(f"{m}_{suffix}.csv", t)
            if notebook and m in ("leep", "nleep", "parc", "ncti"):
                col = {s: 1 - v for s, v in col.items()}
            taus[m] = _tau(col, auc, t)
        lp, fu = (
            _scaled(_column(f"lp_{suffix}.csv", t), notebook),
            _scaled(_column(f"fu_{suffix}.csv", t), notebook),
        )
        taus["our"] = _tau({s: lp[s] * fu[s] for s in lp if s in fu}, auc, t)
        out[t] = taus
    return out


def _rank(taus):
    v = {m: (-np.inf if taus[m] is None else taus[m]) for m in SEVEN}
    return {m: 1 + sum(v[o] > v[m] for o in SEVEN) for m in SEVEN}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return reproduce("juodelyte", tmp_path_factory.mktemp("juodelyte-figures"))


# ------------------------------------------------------------------------------ prior knowledge
def test_known_results_are_the_two_auc_tables():
    """The study's names reach dsim under the registry's: an architecture (``densenet``) is the
    checkpoint card whose alias it is; the datasets keep theirs."""
    from dsim.kernel.catalog import canonical_names

    canon = canonical_names()
    mine = [r for r in dsim.known_results() if r.origin == ORIGIN]
    for setup, fname, scale in (
        ("juodelyte2024:resnet18:224px", "AUCs_dataset.csv", 1.0),
        ("juodelyte2024:architectures:224px", "AUCs_model.csv", 0.01),
    ):
        sources, targets, m = _matrix(fname)
        expected = {
            (canon(s), canon(t)): m[i, j] * scale
            for i, s in enumerate(sources)
            for j, t in enumerate(targets)
            if not np.isnan(m[i, j]) and s != t
        }
        got = {(r.source, r.target): r for r in mine if r.setup == setup}
        assert set(got) == set(expected)
        for k, r in got.items():
            assert r.auc == pytest.approx(expected[k], abs=1e-12) and 0.5 <= r.auc <= 1.0
            assert (r.fold, r.repeat) == (0, 0)
            assert r.accuracy is not None and 0.0 <= r.accuracy <= 1.0
    # no target-only baseline: the study has no from-scratch runs
    assert not [r for r in mine if r.source == r.target]
    assert {r.source for r in mine} >= {
        "imagenet",
        "radimagenet",
        "medmnist",
        canon("densenet"),
        canon("resnet"),
    }
    assert canon("densenet") == "densenet121.tv_in1k" and canon("googlenet") == "tv-googlenet"


def test_known_measure_values_drop_the_target_itself():
    vals = [v for v in dsim.known_measure_values() if v.origin == ORIGIN]
    assert {v.measure for v in vals} == set(METRICS)
    assert not [v for v in vals if v.source == v.target]
    for m in METRICS:
        n = 0
        for suffix in ("dataset", "model"):
            sources, targets, mat = _matrix(f"{m}_{suffix}.csv")
            n += sum(
                1
                for i, s in enumerate(sources)
                for j, t in enumerate(targets)
                if s != t and not np.isnan(mat[i, j])
            )
        assert sum(v.measure == m for v in vals) == n
    lp = {(v.source, v.target): v.value for v in vals if v.measure == "lp"}
    assert lp[("imagenet", "bloodmnist")] == _column("lp_dataset.csv", "bloodmnist")["imagenet"]


def test_noise_summary_selection_is_the_published_auc():
    rows = list(csv.DictReader(_text("noise_summary.csv").splitlines()))
    by = {(r["table"], r["source"], r["target"]): r for r in rows}
    for table, fname, scale in (
        ("dataset", "AUCs_dataset.csv", 1.0),
        ("architectures", "AUCs_model.csv", 0.01),
    ):
        sources, targets, m = _matrix(fname)
        for i, s in enumerate(sources):
            for j, t in enumerate(targets):
                if np.isnan(m[i, j]):
                    continue
                r = by[(table, s, t)]
                assert float(r["auc_val_loss"]) == pytest.approx(m[i, j] * scale, abs=1e-6)
                # the oracle is never below the selected run, nor the top-k band's ends
                assert float(r["auc_best_test"]) >= float(r["auc_val_loss"]) - 1e-9
                assert float(r["topk_min"]) <= float(r["topk_mean"]) <= float(r["topk_max"]) + 1e-9
                assert int(r["n_configs"]) <= int(r["n_finished"]) <= int(r["n_runs"])


def test_noise_summary_script_on_a_runs_table_it_has_never_seen(tmp_path):
    """The script's selection rules on a small runs table built here (two configurations run
    twice, an unfinished run): lowest validation loss, highest validation AUC, top-k."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("jns", REPO / "benchmarks" / "juodelyte_noise_summary.py")
    jns = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(jns)
    cols = "file,Name,source_flag,target_flag,model,lr,batch_size,momentum,wd,epochs,stopped_at,test_auc,val_auc,test_acc,val_acc,test_loss,val_loss"
    runs = [
        # config A twice (identical re-launch), config B, config C; one unfinished run of D
        "fined_x.csv,a1,src,tgt,ft,0.1,32,0.9,0.0,10,9,0.80,0.70,0.6,0.6,1,0.50",
        "fined_x.csv,a2,src,tgt,ft,0.1,32,0.9,0.0,10,9,0.80,0.70,0.6,0.6,1,0.50",
        "fined_x.csv,b,src,tgt,ft,0.01,32,0.9,0.0,10,9,0.90,0.60,0.7,0.6,1,0.40",
        "fined_x.csv,c,src,tgt,ft,0.001,32,0.9,0.0,10,9,0.70,0.95,0.5,0.6,1,0.90",
        "fined_x.csv,d,src,tgt,ft,1.0,32,0.9,0.0,10,,,,,,,",
    ]
    f = tmp_path / "runs.csv"
    f.write_text("\n".join([cols, *runs]) + "\n")
    out = tmp_path / "summary.csv"
    assert jns.main(["--runs", str(f), "--out", str(out), "--top-k", "2"]) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert (row["n_runs"], row["n_finished"], row["n_configs"], row["n_relaunched"]) == ("5", "4", "3", "1")
    assert float(row["relaunch_sd_max"]) == 0.0
    assert float(row["auc_val_loss"]) == 0.90 and float(row["lr"]) == 0.01  # lowest val loss: b
    assert float(row["auc_val_auc"]) == 0.70  # highest val AUC: c
    assert float(row["auc_best_test"]) == 0.90
    # top-2 by validation AUC: c (0.95) and A (0.70)
    assert float(row["topk_mean"]) == pytest.approx((0.70 + 0.80) / 2)
    assert float(row["topk_sd"]) == pytest.approx(np.std([0.70, 0.80], ddof=1), abs=1e-6)


@pytest.mark.skipif(not RUNS.is_file(), reason="finetune_runs.csv (../shared/published) not here")
def test_noise_summary_is_what_the_script_makes_from_the_released_runs(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("jns", REPO / "benchmarks" / "juodelyte_noise_summary.py")
    jns = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(jns)
    out = tmp_path / "noise_summary.csv"
    assert jns.main(["--runs", str(RUNS), "--out", str(out)]) == 0  # 0: all 267 cells reproduced
    assert out.read_text() == _text("noise_summary.csv")


# ------------------------------------------------------------------------------ the reproduction
def test_dataset_taus_and_ranks_recomputed_independently(report):
    ds = report["datasets"]
    mine = _independent("dataset", "AUCs_dataset.csv", 1.0, notebook=False)
    assert set(ds["targets"]) == set(mine) and len(mine) == 11
    for t, taus in mine.items():
        for m in SEVEN:
            got = ds["tau"][t][m]
            assert (got is None) == (taus[m] is None), (t, m)
            if got is not None:
                assert got == pytest.approx(taus[m], abs=1e-12), (t, m)
    for m in SEVEN:
        xs = [mine[t][m] for t in mine if mine[t][m] is not None]
        assert ds["mean_tau"][m] == pytest.approx(np.mean(xs), abs=1e-12)
    paper = _ranks_file("ktau_dataset_rank.csv")
    agree = sum(_rank(mine[t])[m] == paper[t][m] for t in paper for m in SEVEN)
    assert ds["rank_cells_agree"] == agree and ds["rank_cells"] == 7 * len(paper)
    assert agree == ds["rank_cells"]  # the released scores reproduce every rank of the paper's file


def test_architecture_ranks_follow_the_notebooks_orientation(report):
    arch = report["architectures"]
    paper = _ranks_file("ktau_model_rank.csv")
    counts = {}
    for orient, notebook in (("released", False), ("notebook", True)):
        mine = _independent("model", "AUCs_model.csv", 0.01, notebook=notebook)
        for t, taus in mine.items():
            for m in SEVEN:
                if taus[m] is not None:
                    assert arch[orient]["tau"][t][m] == pytest.approx(taus[m], abs=1e-12), (orient, t, m)
        counts[orient] = sum(_rank(mine[t])[m] == paper[t][m] for t in paper for m in SEVEN)
        assert arch[orient]["rank_cells_agree"] == counts[orient]
    # the paper's architecture ranks are those of the flipped scores, not of the released ones
    assert counts["notebook"] > 0.9 * 7 * len(paper) > counts["released"]


def test_track_record_is_the_mean_z_scored_auc_on_the_other_targets(report):
    sources, targets, m = _matrix("AUCs_dataset.csv")
    t = "breastmnist"
    j = targets.index(t)
    cands = [i for i in range(len(sources)) if not np.isnan(m[i, j])]
    z = np.full((len(sources), len(targets)), np.nan)
    for u in range(len(targets)):
        if u == j:
            continue
        rows = [i for i in cands if not np.isnan(m[i, u])]
        col = m[rows, u]
        z[rows, u] = (col - col.mean()) / col.std(ddof=1)
    score = {sources[i]: float(np.nanmean(z[i])) for i in cands}
    auc = {sources[i]: m[i, j] for i in cands}
    assert report["datasets"]["tau"][t]["track record"] == pytest.approx(_tau(score, auc, t), abs=1e-12)


def test_report_renders_and_writes_a_figure(report):
    assert report["tables"] and report["lines"]
    for tab in report["tables"]:
        assert all(len(r) == len(tab["columns"]) for r in tab["rows"])
    (fig,) = report["figures"]
    data = Path(fig).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    json.dumps(report)  # JSON-able


def test_cli_reproduce_juodelyte_json(capsys):
    from dsim.cli import main

    assert main(["reproduce", "juodelyte", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "juodelyte" and doc["figures"] == []
    assert set(doc["architectures"]) == {"released", "notebook"}

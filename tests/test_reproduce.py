"""`dsim reproduce cats-scans`: the paper's correlations from the shipped table; the core lookup of
reproductions and the generic `dsim reproduce` command."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from importlib import resources

import numpy as np
import pytest
from scipy.stats import spearmanr

import dsim
from dsim.evaluation.reproduce import reproduce, reproductions


def cats_scans(out=None):
    return reproduce("cats-scans", out)


def _csv(name):
    text = (resources.files("dsim_plugins") / "published_data" / name).read_text()
    return list(csv.DictReader(text.splitlines()))


def _independent():
    """The same analysis written directly on the CSV files (no dsim code involved)."""
    auc = defaultdict(dict)
    for r in _csv("cats_scans_transfer_auc.csv"):
        auc[(r["source"], r["target"])][int(r["fold"])] = float(r["auc"])
    t2v = defaultdict(list)
    for r in _csv("cats_scans_task2vec_distance.csv"):
        t2v[(r["source"], r["target"])].append(float(r["task2vec_distance"]))
    exp = {
        (r["source"], r["target"]): float(r["expert_hamming_distance"])
        for r in _csv("cats_scans_expert_distance.csv")
    }
    t = {}
    for (s, tg), folds in auc.items():
        if s == tg:
            continue
        base = auc[(tg, tg)]
        t[(s, tg)] = np.mean([(a - base[f]) / base[f] * 100 for f, a in folds.items()])
    keys = sorted(t)
    e = spearmanr([exp[k] for k in keys], [t[k] for k in keys])
    k2 = [k for k in keys if k in t2v]
    v = spearmanr([np.mean(t2v[k]) for k in k2], [t[k] for k in k2])
    return e, v, len(keys), len(k2)


def test_correlations_match_the_released_table_and_the_paper():
    rep = cats_scans()
    c = rep["correlations"]
    assert c["expert"]["rho"] == pytest.approx(0.23, abs=0.02)
    assert c["task2vec"]["rho"] == pytest.approx(-0.10, abs=0.02)
    # within 0.02 of the paper's printed values too
    assert abs(c["expert"]["rho"] - 0.24) <= 0.02 and abs(c["task2vec"]["rho"] - (-0.11)) <= 0.02
    e, v, n_e, n_v = _independent()
    assert c["expert"]["rho"] == pytest.approx(e.statistic, abs=1e-12)
    assert c["expert"]["p"] == pytest.approx(e.pvalue, abs=1e-12)
    assert c["task2vec"]["rho"] == pytest.approx(v.statistic, abs=1e-12)
    assert c["task2vec"]["p"] == pytest.approx(v.pvalue, abs=1e-12)
    assert (c["expert"]["n"], c["task2vec"]["n"]) == (n_e, n_v) == (21, 21)
    # neither is significant, as the paper says
    assert c["expert"]["p"] > 0.05 and c["task2vec"]["p"] > 0.05


def test_pairs_and_best_sources():
    rep = cats_scans()
    pairs = {(p["source"], p["target"]): p for p in rep["pairs"]}
    assert len(pairs) == 21
    # the three pairs that did not converge are absent
    for missing in [("pcam-small", "pcam-middle"), ("kimia", "isic"), ("kimia", "chest")]:
        assert missing not in pairs
    assert rep["best_source"] == {"chest": "imagenet", "isic": "imagenet", "pcam-middle": "imagenet"}
    p = pairs[("imagenet", "chest")]
    base = rep["auc_table"]["chest"]["chest"]
    # T of the mean is close to the mean of per-fold T (both ~2.8 %)
    assert p["t"] == pytest.approx((p["auc"] - base) / base * 100, abs=0.05)
    assert p["n_folds"] == 5


def test_figures_are_pngs(tmp_path):
    rep = cats_scans(tmp_path)
    assert len(rep["figures"]) == 2
    for f in rep["figures"]:
        data = open(f, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_cli_json(capsys):
    from dsim.cli import main

    assert main(["reproduce", "cats-scans", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["correlations"]["expert"]["paper"] == 0.24
    assert doc["figures"] == []


def test_cli_without_published_plugin_fails_in_one_line(monkeypatch, capsys, fresh_plugins):
    monkeypatch.setenv("DSIM_DISABLE_PLUGINS", "published")
    fresh_plugins.reset()
    from dsim.cli import main

    assert main(["reproduce", "cats-scans"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "published" in err[0]


def test_reproductions_come_from_plugins_by_name():
    reps = reproductions()
    assert {"cats-scans", "juodelyte"} <= set(reps)
    assert all(isinstance(r, dsim.Reproduction) and r.title for r in reps.values())
    with pytest.raises(dsim.UnknownNameError) as e:
        reproduce("cats-scan")
    assert "cats-scans" in str(e.value)  # the close match is suggested


def test_cli_lists_reproductions_and_renders_tables(capsys):
    from dsim.cli import main

    assert main(["reproduce"]) == 0
    listing = capsys.readouterr().out
    assert "cats-scans" in listing and "juodelyte" in listing
    assert main(["reproduce", "cats-scans"]) == 0
    text = capsys.readouterr().out
    assert "expert" in text and "task2vec" in text and "best source per target" in text

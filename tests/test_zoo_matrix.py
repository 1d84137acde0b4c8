"""The pieces of benchmarks/zoo_matrix.py that decide what its numbers mean: the seeded
stratified draws, the linear-probe ground truth, resuming from the CSV, the family rule."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def zm():
    spec = importlib.util.spec_from_file_location("zoo_matrix", REPO / "benchmarks" / "zoo_matrix.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stratified_keeps_every_class_and_is_seeded(zm):
    labels = np.array([0] * 990 + [1] * 5 + [2] * 5)
    pool = np.arange(1000)
    a = zm.stratified(labels, pool, 100, seed=3)
    assert len(a) == 100 and len(set(a)) == 100
    assert set(labels[a]) == {0, 1, 2}  # rare classes keep at least one image
    assert np.array_equal(a, zm.stratified(labels, pool, 100, seed=3))
    assert not np.array_equal(a, zm.stratified(labels, pool, 100, seed=4))
    sub = pool[::2]
    assert set(zm.stratified(labels, sub, 50, seed=0)) <= set(sub)


def test_probe_auc_separates_informative_from_noise_features(zm):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    informative = rng.normal(size=(400, 16)) + 2.0 * np.eye(3)[y] @ rng.normal(size=(3, 16))
    noise = rng.normal(size=(400, 16))
    good = zm.probe_auc(informative[:200], y[:200], informative[200:], y[200:], 3, seed=0)
    bad = zm.probe_auc(noise[:200], y[:200], noise[200:], y[200:], 3, seed=0)
    assert good > 0.9 and 0.35 < bad < 0.65
    assert good == zm.probe_auc(informative[:200], y[:200], informative[200:], y[200:], 3, seed=0)


def test_probe_auc_with_a_class_missing_from_the_training_draw(zm):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    X = rng.normal(size=(60, 4)) + y[:, None]
    yte = np.concatenate([y[40:], [2, 2]])  # a third class only in the test set
    Xte = np.concatenate([X[40:], rng.normal(size=(2, 4))])
    auc = zm.probe_auc(X[:40], y[:40], Xte, yte, 3, seed=0)
    assert 0.0 <= auc <= 1.0


def test_appender_resumes_from_the_csv(zm, tmp_path):
    p = tmp_path / "r.csv"
    a = zm.results_appender(p)
    row = dict(
        source="s", target="t", fold=0, repeat=1, auc="0.7", setup="zoo:lp:n100", strategy="lp", n_train=100
    )
    assert not a.has(**row)
    a.add(**row)
    b = zm.results_appender(p)  # a new process reads what the killed one wrote
    assert b.has(**row) and not b.has(**{**row, "repeat": 2})
    assert [r["auc"] for r in zm.read_csv(p)] == ["0.7"]
    assert zm.load_results([p])[0].repeat == 1


def test_no_candidate_pretrained_on_the_targets_family(zm):
    import dsim

    cards = [
        dsim.CheckpointCard(
            name="a", architecture="smallcnn", weights="random", pretrained_on="blood-pbc-28"
        ),
        dsim.CheckpointCard(name="b", architecture="smallcnn", weights="random", pretrained_on="usps"),
        dsim.CheckpointCard(name="c", architecture="smallcnn", weights="random", pretrained_on="busi-64"),
        dsim.CheckpointCard(name="d", architecture="smallcnn", weights="random"),
    ]
    assert [c.name for c in zm.candidates(cards, "blood-pbc-28")] == ["b", "c", "d"]
    assert [c.name for c in zm.candidates(cards, "breastmnist")] == ["a", "b", "d"]  # busi-64: same images

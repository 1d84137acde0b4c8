"""LogME, LEEP, NCE, H-score and the kNN proxy against their published definitions on hand-checkable cases,
and the source-checkpoint plumbing on real data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import data_file
from scipy.optimize import minimize

import dsim
from dsim_plugins.model_scores import (
    KNN,
    LEEP,
    NCE,
    HScore,
    LogME,
    h_score,
    knn_auc,
    leep,
    logme,
    nce,
    source_num_classes,
)


def test_leep_from_its_definition_on_a_3x2_joint_table():
    # 4 target images, 3 source classes (z), 2 target labels (y)
    theta = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    y = np.array([0, 1, 1, 0])
    n = 4
    joint = np.zeros((2, 3))  # P(y, z) = 1/n sum_i theta_z(x_i) [y_i = y]
    for i in range(n):
        for z in range(3):
            joint[y[i], z] += theta[i, z] / n
    cond = joint / joint.sum(0)  # P(y | z)
    expected = sum(math.log(sum(cond[y[i], z] * theta[i, z] for z in range(3))) for i in range(n)) / n
    assert leep(theta, y) == pytest.approx(expected, rel=1e-12)
    # hand value of one entry: P(y=0, z=0) = (0.7 + 0.5) / 4
    assert joint[0, 0] == pytest.approx(0.3)
    # label names do not matter
    assert leep(theta, np.array([7, 3, 3, 7])) == pytest.approx(expected, rel=1e-12)


def test_nce_hand_value():
    z = np.array([0, 0, 1, 1])
    y = np.array([0, 1, 1, 1])
    # H(Y|Z) = P(z=0) H(1/2, 1/2) + P(z=1) * 0 = 0.5 ln 2
    assert nce(z, y) == pytest.approx(-0.5 * math.log(2), rel=1e-12)
    assert nce(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0])) == pytest.approx(0.0)  # z determines y


def test_h_score_is_the_trace_formula():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(60, 4))
    y = rng.integers(0, 3, 60)
    f[:, 0] += 2 * y  # informative feature
    cov_f = np.cov(f, rowvar=False, bias=True)
    g = np.stack([f[y == c].mean(0) for c in y])  # E[f | y] for each sample
    cov_g = np.cov(g, rowvar=False, bias=True)
    expected = np.trace(np.linalg.inv(cov_f) @ cov_g)
    assert h_score(f, y) == pytest.approx(expected, rel=1e-9)
    assert h_score(f, y) > h_score(rng.normal(size=(60, 4)), y)


def test_knn_proxy_is_leave_one_out_knn_with_standardised_features():
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    f = rng.normal(size=(90, 5)) * np.array([1, 10, 100, 1, 1])
    y = rng.integers(0, 3, 90)
    f[:, 0] += 1.5 * y
    z = (f - f.mean(0)) / f.std(0)
    idx = NearestNeighbors(n_neighbors=8).fit(z).kneighbors(z, return_distance=False)[:, 1:]  # drop self
    votes = np.stack([np.bincount(y[i], minlength=3) / 7 for i in idx])
    expected = roc_auc_score(y, votes, average="weighted", multi_class="ovr")
    assert knn_auc(f, y, k=7) == pytest.approx(expected, rel=1e-12)
    # binary: the AUC of the positive-class fraction; separable classes -> 1, noise -> about 0.5
    yb = np.repeat([0, 1], 40)
    assert knn_auc(np.c_[yb + rng.normal(0, 0.05, 80), rng.normal(size=80)], yb) == pytest.approx(1.0)
    assert abs(knn_auc(rng.normal(size=(400, 4)), rng.integers(0, 2, 400)) - 0.5) < 0.1
    with pytest.raises(dsim.DsimError, match="two or more classes"):
        knn_auc(f, np.zeros(90))


def _brute_force_evidence(F, t):
    n = len(t)

    def nll(p):  # -log N(t; 0, F F^T / alpha + I / beta)
        a, b = np.exp(p)
        C = F @ F.T / a + np.eye(n) / b
        _, ld = np.linalg.slogdet(C)
        return 0.5 * t @ np.linalg.solve(C, t) + 0.5 * ld + n / 2 * np.log(2 * np.pi)

    r = minimize(
        nll, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000}
    )
    return -r.fun / n


@pytest.mark.parametrize("n,d", [(30, 5), (8, 12)])  # more samples than features, and fewer
def test_logme_is_the_maximised_evidence(n, d):
    rng = np.random.default_rng(n)
    F = rng.normal(size=(n, d))
    y = (F[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    y[:2] = [0, 1]
    brute = np.mean([_brute_force_evidence(F, (y == c).astype(float)) for c in (0, 1)])
    assert logme(F, y, tol=1e-12, max_iter=2000) == pytest.approx(brute, abs=1e-6)
    assert logme(F, y) == pytest.approx(brute, abs=2e-3)  # the authors' 11 iterations / 1 % tol
    assert logme(F, y) <= brute + 1e-9


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    import torch

    d = tmp_path_factory.mktemp("ckpt")
    with_head = dsim.create_backbone("resnet18", weights="random", num_classes=5, seed=1)
    torch.save({"state_dict": with_head.state_dict()}, d / "head5.pth")
    body = dsim.create_backbone("resnet18", weights="random", num_classes=0, seed=2)
    torch.save(body.state_dict(), d / "body.pth")
    return {"head5": str(d / "head5.pth"), "body": str(d / "body.pth")}


@pytest.fixture(scope="module")
def target():
    return dsim.load_dataset(str(data_file("breastmnist.npz")), max_samples=120, seed=0)


def _ctx():
    return dsim.Context(seed=0, device="cpu")


def _p(ckpts, **params):
    """The parameters of a source-model score over ``ckpts`` at 32 px."""
    return {"source_checkpoints": ckpts, "image_size": 32, **params}


def test_scores_of_a_source_checkpoint_on_real_target_images(checkpoints, target):
    assert source_num_classes(checkpoints["head5"]) == 5
    assert source_num_classes(checkpoints["body"]) is None
    src = dsim.DatasetCard(name="head5")
    ctx = _ctx()
    p = _p(checkpoints)
    vals = {
        m.name: m.pair(src, target, ctx) for m in (LogME(**p), LEEP(**p), NCE(**p), HScore(**p), KNN(**p))
    }
    assert all(np.isfinite(v) for v in vals.values())
    prior = np.bincount(target.labels) / len(target)
    entropy = -np.sum(prior * np.log(prior))
    # LEEP and NCE are at least the label log-likelihood of the prior (-H(Y)) and at most 0
    assert -entropy - 1e-9 <= vals["nce"] <= 0
    assert -entropy - 1e-6 <= vals["leep"] <= 0
    # recompute LEEP by hand from the model's own outputs
    feats, logits = LEEP(**p).target_outputs(src, target, ctx)
    assert logits.shape == (len(target), 5)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert vals["leep"] == pytest.approx(leep(p, target.labels), rel=1e-6)  # float32 logits
    assert vals["h-score"] == pytest.approx(h_score(feats, target.labels), rel=1e-9)
    assert 0 <= vals["knn"] <= 1 and vals["knn"] == pytest.approx(knn_auc(feats, target.labels, 10), rel=1e-9)
    assert KNN(**_p(checkpoints, knn_k=3)).pair(src, target, ctx) == pytest.approx(
        knn_auc(feats, target.labels, 3)
    )


def test_checkpoint_without_head_and_missing_source(checkpoints, target):
    ctx, p = _ctx(), _p(checkpoints)
    assert np.isfinite(LogME(**p).pair(dsim.DatasetCard(name="body"), target, ctx))
    with pytest.raises(dsim.DsimError, match="has no classifier .its file"):
        LEEP(**p).pair(dsim.DatasetCard(name="body"), target, ctx)
    with pytest.raises(dsim.DsimError, match="'nowhere'"):
        NCE(**p).pair(dsim.DatasetCard(name="nowhere"), target, ctx)


def test_rank_uses_source_checkpoints(checkpoints, target, tmp_path):
    import dsim.ranking.pair

    reg = dsim.get_registry()
    tcard = reg.resolve("busi-64")  # a target without published values: both must be computed
    ranking = dsim.rank(
        tcard,
        sources=["imagenet"],
        measures="leep,logme",
        predictor="rank-aggregation",
        max_samples=80,
        options={"source_checkpoints": {"imagenet": checkpoints["head5"]}, "image_size": 32},
        cache=dsim.Cache(tmp_path),
    )
    row = ranking.rows[0]
    assert row.source == "imagenet"
    assert set(row.contributions) == {"leep", "logme"}  # both computed from the checkpoint
    assert -np.log(2) - 1e-6 <= row.contributions["leep"]["value"] <= 0
    assert not [s for s in ranking.skipped if s.get("measure") in ("leep", "logme")]

"""Romero et al.'s radiomics baseline in full: L1, L2, elastic-net logistic regression and a random
forest, each tuned by random search and CV AUC on the training split, the best one kept."""

from __future__ import annotations

import numpy as np
import pytest
from gen_data import BACKBONE, TINY, gratings

import dsim
from dsim.kernel.interfaces import Context, FoldData
from dsim_plugins.radiomics import MODELS, Radiomics, select_model


def _auc(est, x, y):
    return dsim.auc_weighted_ovr(y, est.predict_proba(x))


def oblique(n, d=20, seed=0):
    """Labels from the sign of the sum of all features: easy for a linear model, hard for trees."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x, (x.sum(axis=1) + 0.5 * rng.normal(size=n) > 0).astype(int)


def xor(n, seed=0):
    """Labels from the sign of x0 * x1, plus 8 noise features: no linear model can separate them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10))
    return x, (x[:, 0] * x[:, 1] > 0).astype(int)


@pytest.mark.parametrize("model", MODELS)
def test_each_model_learns_and_reports_its_setting(model):
    make = xor if model == "forest" else oblique
    x, y = make(300, seed=1)
    xt, yt = make(300, seed=2)
    est, chosen, scores, folds = select_model(x, y, (model,), n_iter=3, cv=3, seed=0)
    assert chosen == model and folds == 3 and set(scores) == {model}
    cv_auc, setting = scores[model]
    assert cv_auc > 0.8 and _auc(est, xt, yt) > 0.8
    expected = {"forest": "max_depth", "elasticnet": "l1_ratio"}.get(model, "C")
    assert expected in setting


def test_the_best_cross_validated_model_is_kept():
    x, y = xor(300, seed=3)
    est, chosen, scores, _ = select_model(x, y, MODELS, n_iter=3, seed=0)
    assert chosen == "forest" and scores["forest"][0] > 0.8 > max(
        s for m, (s, _) in scores.items() if m != "forest"
    )
    assert _auc(est, *xor(300, seed=4)) > 0.8  # the refit winner, not an unfitted copy
    x, y = oblique(150, seed=5)
    _, chosen, scores, _ = select_model(x, y, MODELS, n_iter=3, seed=0)
    assert chosen != "forest" and scores[chosen][0] == max(s for s, _ in scores.values())


def test_strategy_metrics_name_the_chosen_model_and_its_cv_score():
    data = gratings(160, k=2, seed=3, name="gen-target", noise=1.5)
    tr, va, te = next(data.kfold(k=3, seed=0))
    fold = FoldData(train=data.take(tr), val=data.take(va), test=data.take(te))
    spec = dsim.RunSpec(
        source="gen-target",
        target="gen-target",
        backbone=BACKBONE,
        strategy="radiomics",
        fold=0,
        folds=3,
        hyperparameters=dict(TINY),
    )
    m = Radiomics(models=("l2", "forest"), n_iter=2).run(spec, fold, Context(seed=0, device="cpu"))
    chosen = [k.removeprefix("chosen_") for k in m if k.startswith("chosen_")]
    assert len(chosen) == 1 and chosen[0] in ("l2", "forest")
    assert m["cv_auc"] == m[f"cv_auc_{chosen[0]}"] == max(m["cv_auc_l2"], m["cv_auc_forest"])
    assert "cv_auc_l1" not in m and m["auc"] > 0.6
    assert m["notes"][0].startswith(f"radiomics: {chosen[0]} (") and "CV AUC" in m["notes"][0]
    with pytest.raises(dsim.UnknownOptionError, match="lasso"):
        Radiomics(models=("lasso",)).run(spec, fold, Context(seed=0, device="cpu"))

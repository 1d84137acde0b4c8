"""``radiomics``: the classical baseline of Romero et al., so users see what deep transfer buys.

79 features per image: GLCM properties (contrast, dissimilarity, homogeneity, energy,
correlation, ASM) at pixel offsets 1, 2, 4, 6 and angles 0, 45, 90 degrees (72); grey mean,
standard deviation and the 2nd to 5th central moments (6); Shannon entropy (1).

Classifiers, as the paper lists them ("logistic regression with L1 (Lasso), L2 (Ridge) and
Elastic Net penalties, and random forest, tuned by cross validation and random search; the best
traditional model is reported"): each candidate model is tuned by a seeded random search of
``n_iter`` settings, scored by ``cv``-fold stratified cross-validation AUC (weighted one-vs-rest,
as the runs are scored) on the fold's training split (training + validation images: nothing
needs an early-stopping hold-out here); the model with the best CV AUC is refit on the whole
training split and scored on the test fold. The logistic regressions see standardised features
and balanced class weights; C ~ log-uniform(1e-3, 1e2), the elastic-net mix l1_ratio ~
uniform(0.05, 0.95). The forest (``n_estimators`` trees, balanced class weights) searches
max_depth, min_samples_leaf and max_features. Every candidate's CV AUC, the winner and its
setting go into the run's metrics (``cv_auc``, ``cv_auc_<model>``, ``chosen_<model>`` = 1) and
notes. No source, no GPU (scikit-image + scikit-learn).

A multi-label target is fitted per label: each label's binary task gets its own model search
and winner on the same features; the run's ``cv_auc`` is the mean over labels of the winners'
CV AUC, ``cv_auc_<model>`` the mean of that model's, and ``chosen_<model>`` how many labels chose
it. A label with fewer than two positive (or negative) training images cannot be
cross-validated: it gets its training prevalence as its probability (named in the notes).
"""

from __future__ import annotations

import math

import dsim

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy

DISTANCES = (1, 2, 4, 6)
ANGLES = (0.0, math.pi / 4, math.pi / 2)
PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")


def _grey_uint8(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float64)
    if x.shape[-1] > 1:
        x = x.mean(axis=-1)
    else:
        x = x[..., 0]
    if images.dtype != np.uint8:
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo + 1e-12) * 255.0
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def radiomics_features(images: np.ndarray, levels: int = 32) -> np.ndarray:
    """``(N, 79)`` features (see module docs); grey levels quantised to ``levels`` for the GLCM."""
    from scipy.stats import moment
    from skimage.feature import graycomatrix, graycoprops

    grey = _grey_uint8(images)
    out = np.zeros((len(grey), len(PROPS) * len(DISTANCES) * len(ANGLES) + 7), dtype=np.float64)
    for i, g in enumerate(grey):
        q = (g.astype(np.int32) * levels // 256).astype(np.uint8)
        glcm = graycomatrix(q, distances=DISTANCES, angles=ANGLES, levels=levels, symmetric=True, normed=True)
        tex = np.concatenate([graycoprops(glcm, p).ravel() for p in PROPS])
        v = g.astype(np.float64).ravel() / 255.0
        hist = np.bincount(g.ravel(), minlength=256) / v.size
        nz = hist[hist > 0]
        stats = (
            [v.mean(), v.std()] + [moment(v, k) for k in (2, 3, 4, 5)] + [float(-(nz * np.log2(nz)).sum())]
        )
        out[i] = np.concatenate([np.nan_to_num(tex), stats])
    return out


MODELS = ("l1", "l2", "elasticnet", "forest")


def _logistic(l1_ratio: float | None, seed: int):
    """A saga logistic regression with the elastic-net mix ``l1_ratio`` (1 = L1, 0 = L2; None =
    searched), written for both scikit-learn APIs (``penalty=`` until 1.7, ``l1_ratio`` alone after)."""
    from inspect import signature

    from sklearn.linear_model import LogisticRegression

    kw = {"solver": "saga", "tol": 1e-3, "class_weight": "balanced", "max_iter": 1000, "random_state": seed}
    legacy = signature(LogisticRegression).parameters["penalty"].default != "deprecated"
    if legacy:
        kw["penalty"] = "elasticnet"
    if l1_ratio is not None:
        kw["l1_ratio"] = l1_ratio
    return LogisticRegression(**kw)


def candidate(model: str, seed: int = 0, n_estimators: int = 100):
    """``(estimator, search space)`` of one of :data:`MODELS`; the space's keys are pipeline
    parameter names (``clf__C`` ...)."""
    from scipy.stats import loguniform, randint, uniform
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if model == "forest":
        est = RandomForestClassifier(n_estimators=n_estimators, class_weight="balanced", random_state=seed)
        space = {
            "clf__max_depth": [None, 3, 5, 8, 12],
            "clf__min_samples_leaf": randint(1, 11),
            "clf__max_features": ["sqrt", "log2", 0.3, 0.6],
        }
        return Pipeline([("clf", est)]), space
    mix = {"l1": 1.0, "l2": 0.0, "elasticnet": None}
    if model not in mix:
        raise dsim.UnknownOptionError(model, "strategy 'radiomics' (models)", MODELS)
    space = {"clf__C": loguniform(1e-3, 1e2)}
    if mix[model] is None:
        space["clf__l1_ratio"] = uniform(0.05, 0.9)
    return Pipeline([("scale", StandardScaler()), ("clf", _logistic(mix[model], seed))]), space


def select_model(
    x, y, models=MODELS, *, n_iter: int = 8, cv: int = 3, seed: int = 0, n_estimators: int = 100
):
    """Tune every model of ``models`` by random search and CV AUC on ``(x, y)``; returns
    ``(best fitted estimator, best model name, {model: (cv auc, best setting)}, CV folds)``."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold

    y = np.asarray(y)
    counts = np.bincount(y)
    folds = int(max(2, min(cv, counts[counts > 0].min())))
    scoring = "roc_auc" if len(np.unique(y)) == 2 else "roc_auc_ovr_weighted"
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores, fitted = {}, {}
    for name in models:
        est, space = candidate(name, seed=seed, n_estimators=n_estimators)
        search = RandomizedSearchCV(
            est, space, n_iter=n_iter, scoring=scoring, cv=splitter, random_state=seed, refit=False
        )
        with warnings.catch_warnings():
            # saga on a few hundred images may stop short of tol at max_iter: the CV score says
            # whether that setting is any good, which is all the search needs
            warnings.simplefilter("ignore", ConvergenceWarning)
            search.fit(x, y)
        best = {k.removeprefix("clf__"): v for k, v in search.best_params_.items()}
        scores[name] = (float(search.best_score_), best)
        fitted[name] = (est, search.best_params_)
    chosen = max(models, key=lambda m: (scores[m][0], -models.index(m)))  # ties: the earlier (simpler)
    est, params = fitted[chosen]
    est.set_params(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x, y)
    return est, chosen, scores, folds


def _fmt(setting: dict) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(setting.items())
    )


class Radiomics(dsim.Strategy):
    """Romero et al.'s radiomics baseline: 79 texture/intensity features, the best of L1, L2,
    elastic-net logistic regression and a random forest by cross-validated AUC (module docs)."""

    name = "radiomics"
    description = (
        "GLCM texture + intensity moments + entropy (79 features); best of L1/L2/elastic-net "
        "logistic regression and random forest by CV AUC (Romero et al.)"
    )
    uses_source = False
    param_ranges = {
        "n_iter": dsim.Range(int, 1),
        "cv": dsim.Range(int, 2),
        "n_estimators": dsim.Range(int, 1),
        "levels": dsim.Range(int, 2, 256),
    }

    def __init__(
        self, models=MODELS, n_iter: int = 8, cv: int = 3, n_estimators: int = 100, levels: int = 32
    ):
        self.models = models
        self.n_iter = n_iter
        self.cv = cv
        self.n_estimators = n_estimators
        self.levels = levels

    def run(self, spec, data, ctx):
        models = tuple(self.models.split(",") if isinstance(self.models, str) else self.models)
        for m in models:
            if m not in MODELS:
                raise dsim.UnknownOptionError(m, "strategy 'radiomics' (models)", MODELS)
        if not models:
            raise dsim.DsimError("strategy 'radiomics': no model to try (models is empty)")
        x = radiomics_features(np.concatenate([data.train.images, data.val.images]), levels=self.levels)
        y = np.concatenate([data.train.labels, data.val.labels])
        if data.train.multilabel:
            return self._per_label(spec, data, models, x, y)
        est, chosen, scores, folds = select_model(
            x,
            y,
            models,
            n_iter=int(self.n_iter),
            cv=int(self.cv),
            seed=spec.seed,
            n_estimators=int(self.n_estimators),
        )
        p = est.predict_proba(radiomics_features(data.test.images, levels=self.levels))
        probs = np.zeros((len(p), data.train.num_classes))
        probs[:, est.classes_] = p
        metrics = dict(dsim.fold_metrics(spec, data, probs))
        metrics["cv_auc"] = scores[chosen][0]
        metrics.update({f"cv_auc_{m}": s for m, (s, _) in scores.items()})
        metrics[f"chosen_{chosen}"] = 1.0
        metrics["notes"] = [
            f"radiomics: {chosen} ({_fmt(scores[chosen][1])}) chosen by {folds}-fold CV AUC "
            f"{scores[chosen][0]:.3f} over " + ", ".join(f"{m} {s:.3f}" for m, (s, _) in scores.items())
        ]
        return metrics

    def _per_label(self, spec, data, models, x, y):
        """A multi-label fold: one model search per label (module docs)."""
        xt = radiomics_features(data.test.images, levels=self.levels)
        names = data.train.class_names
        probs = np.zeros((len(xt), y.shape[1]))
        chosen_n = dict.fromkeys(models, 0)
        cv_best, cv_of, constant = [], {m: [] for m in models}, []
        for j in range(y.shape[1]):
            yj = y[:, j]
            if np.bincount(yj, minlength=2).min() < 2:
                probs[:, j] = yj.mean()
                constant.append(names[j])
                continue
            est, chosen, scores, _ = select_model(
                x,
                yj,
                models,
                n_iter=int(self.n_iter),
                cv=int(self.cv),
                seed=spec.seed,
                n_estimators=int(self.n_estimators),
            )
            probs[:, j] = est.predict_proba(xt)[:, list(est.classes_).index(1)]
            chosen_n[chosen] += 1
            cv_best.append(scores[chosen][0])
            for m, (sc, _) in scores.items():
                cv_of[m].append(sc)
        metrics = dict(dsim.fold_metrics(spec, data, probs))
        note = f"radiomics per label: {len(cv_best)} label(s) fitted"
        if cv_best:
            metrics["cv_auc"] = float(np.mean(cv_best))
            metrics.update({f"cv_auc_{m}": float(np.mean(v)) for m, v in cv_of.items() if v})
            metrics.update({f"chosen_{m}": float(n) for m, n in chosen_n.items() if n})
            note += ", winners " + ", ".join(f"{m} {n}" for m, n in chosen_n.items() if n)
            note += f", mean CV AUC {np.mean(cv_best):.3f}"
        if constant:
            note += f"; too few positive or negative training images to cross-validate {', '.join(constant)} (training prevalence used)"
        metrics["notes"] = [note]
        return metrics


@dsim.hookimpl
def dsim_register_strategies():
    return [Radiomics()]

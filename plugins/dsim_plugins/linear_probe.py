"""Frozen features + a linear classifier from scikit-learn (Fok: "FE", feature extraction with a
one-vs-rest linear SVM):

* ``linear-probe`` — standardised penultimate features, L2 logistic regression (C by 3-fold CV
  on the training split, class-balanced);
* ``linear-svm`` — the same features, one-vs-rest linear SVM (``LinearSVC``, class-balanced);
  AUC from the softmax of its decision values.

Features come from the source checkpoint (``dsim pretrain``) in ``torch.inference_mode``.

A multi-label target is fitted one-vs-rest, one binary classifier per label on the same features
(a logistic regression, C by CV per label; a linear SVM whose decision values pass a sigmoid); a
label without positive (or negative) training images gets its training prevalence as its
probability. The fold is scored by the mean per-label AUC like every multi-label run.
"""

from __future__ import annotations

import dsim

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy


def _features(spec, data, ctx):
    cfg = dsim.TrainConfig.from_mapping(spec.hyperparameters)
    if data.source_checkpoint is None:
        raise dsim.DsimError(f"{spec.label}: no source checkpoint was given to strategy {spec.strategy!r}")
    body = dsim.create_backbone(
        spec.backbone, weights=data.source_checkpoint, num_classes=0, in_chans=cfg.channels, seed=spec.seed
    )
    dev = ctx.torch_device()
    out = []
    for part in (data.train, data.val, data.test):
        out.append(
            dsim.extract_features(
                body, part.images, size=cfg.image_size, channels=cfg.channels, device=dev, batch_size=256
            )
        )
    return out


def _metrics(spec, data, scores):
    """Softmax of decision values -> the fold's metrics."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:  # binary decision values
        scores = np.stack([-scores, scores], axis=1)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return dsim.fold_metrics(spec, data, e / e.sum(axis=1, keepdims=True))


def _full_probs(clf, x, k):
    """predict_proba over all k classes (a class absent from training gets 0)."""
    p = clf.predict_proba(x)
    out = np.zeros((len(x), k))
    out[:, clf.classes_] = p
    return out


def _logistic_cv(y, seed: int):
    """Standardised features + L2 logistic regression, C by (at most 3-fold) CV, class-balanced."""
    from inspect import signature

    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cv = int(min(3, np.bincount(y)[np.bincount(y) > 0].min()))
    # L2 and accuracy as CV score, spelled out so that scikit-learn 1.10's new defaults
    # cannot move the results (and its FutureWarnings stay quiet)
    kw = {"l1_ratios": (0.0,), "scoring": "accuracy"}
    if "use_legacy_attributes" in signature(LogisticRegressionCV).parameters:
        kw["use_legacy_attributes"] = False
    return make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            Cs=[0.001, 0.01, 0.1, 1.0],
            cv=max(2, cv),
            class_weight="balanced",
            max_iter=2000,
            random_state=seed,
            **kw,
        ),
    )


def per_label(x, y, x_test, fit_score) -> np.ndarray:
    """One-vs-rest over the columns of a multi-label ``y``: ``fit_score(x, y_j, x_test)`` gives
    label j's test probabilities; a label constant in training gets that constant."""
    out = np.zeros((len(x_test), y.shape[1]))
    for j in range(y.shape[1]):
        yj = y[:, j]
        out[:, j] = yj[0] if yj.min() == yj.max() else fit_score(x, yj, x_test)
    return out


class LinearProbe(dsim.Strategy):
    name = "linear-probe"
    description = (
        "frozen source features + logistic regression (C by CV; one per label if multi-label), scikit-learn"
    )
    uses_source = True

    def run(self, spec, data, ctx):
        ftr, fva, fte = _features(spec, data, ctx)
        x = np.concatenate([ftr, fva])
        y = np.concatenate([data.train.labels, data.val.labels])
        if data.train.multilabel:

            def fit_score(xa, ya, xt):
                return _logistic_cv(ya, spec.seed).fit(xa, ya).predict_proba(xt)[:, 1]

            return dsim.fold_metrics(spec, data, per_label(x, y, fte, fit_score))
        clf = _logistic_cv(y, spec.seed)
        clf.fit(x, y)
        return dsim.fold_metrics(spec, data, _full_probs(clf, fte, data.train.num_classes))


class LinearSVM(dsim.Strategy):
    name = "linear-svm"
    description = "frozen source features + one-vs-rest linear SVM (Fok's FE; one per label if multi-label)"
    uses_source = True
    hyperparameters = ("svm_c",)  # the SVM's C (default 0.01), read from --hp

    def run(self, spec, data, ctx):
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        ftr, fva, fte = _features(spec, data, ctx)
        x = np.concatenate([ftr, fva])
        y = np.concatenate([data.train.labels, data.val.labels])

        def svm():
            return make_pipeline(
                StandardScaler(),
                LinearSVC(
                    C=float(spec.hyperparameters.get("svm_c", 0.01)),
                    class_weight="balanced",
                    max_iter=5000,
                    random_state=spec.seed,
                ),
            )

        if data.train.multilabel:

            def fit_score(xa, ya, xt):
                return 1.0 / (1.0 + np.exp(-svm().fit(xa, ya).decision_function(xt)))

            return dsim.fold_metrics(spec, data, per_label(x, y, fte, fit_score))
        clf = svm()
        clf.fit(x, y)
        scores = clf.decision_function(fte)
        k = data.train.num_classes
        if scores.ndim == 2 and scores.shape[1] != k:
            full = np.full((len(fte), k), -1e3)
            full[:, clf.classes_] = scores
            scores = full
        return _metrics(spec, data, scores)


@dsim.hookimpl
def dsim_register_strategies():
    return [LinearProbe(), LinearSVM()]

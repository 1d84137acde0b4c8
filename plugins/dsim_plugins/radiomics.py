"""``radiomics``: the classical baseline of Romero et al., so users see what deep transfer buys.

79 features per image: GLCM properties (contrast, dissimilarity, homogeneity, energy,
correlation, ASM) at pixel offsets 1, 2, 4, 6 and angles 0, 45, 90 degrees (72); grey mean,
standard deviation and the 2nd to 5th central moments (6); Shannon entropy (1). Classifier: L1
(Lasso) logistic regression on standardised features, C chosen by cross-validation on the
training + validation split. No source, no GPU (scikit-image + scikit-learn).
"""

from __future__ import annotations

import numpy as np

import dsim

DISTANCES = (1, 2, 4, 6)
ANGLES = (0.0, np.pi / 4, np.pi / 2)
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


class Radiomics(dsim.Strategy):
    name = "radiomics"
    description = (
        "GLCM texture + intensity moments + entropy (79 features), L1 logistic regression (Romero et al.)"
    )
    uses_source = False

    def run(self, spec, data, ctx):
        from inspect import signature

        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x = radiomics_features(np.concatenate([data.train.images, data.val.images]))
        y = np.concatenate([data.train.labels, data.val.labels])
        counts = np.bincount(y)
        cv = int(max(2, min(3, counts[counts > 0].min())))
        kw = {"scoring": "accuracy"}  # spelled out: scikit-learn 1.10 changes the default
        if "use_legacy_attributes" in signature(LogisticRegressionCV).parameters:
            kw["use_legacy_attributes"] = False
        clf = make_pipeline(
            StandardScaler(),
            LogisticRegressionCV(
                Cs=[0.01, 0.1, 1.0, 10.0],
                cv=cv,
                l1_ratios=[1.0],
                solver="saga",
                class_weight="balanced",
                max_iter=3000,
                random_state=spec.seed,
                **kw,
            ),
        )
        clf.fit(x, y)
        p = clf.predict_proba(radiomics_features(data.test.images))
        probs = np.zeros((len(p), data.train.num_classes))
        probs[:, clf.classes_] = p
        return dsim.fold_metrics(spec, data, probs)


@dsim.hookimpl
def dsim_register_strategies():
    return [Radiomics()]

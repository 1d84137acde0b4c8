"""Transferability scores as plain functions of arrays: a source model's penultimate features on
the target images ``(n, d)``, or its class probabilities / predictions on them, and the target
labels ``(n,)``. Higher = the source model is expected to transfer better to the target.

Nothing here loads a model or an image: the measure classes of ``model_scores`` (and any user
script) compute the arrays and call these. Every random step takes a ``seed``; where the study of
Juodelyte et al. 2024 ("On dataset transferability in medical image classification",
github.com/DovileDo/transferability-in-medical-imaging, ``src/metrics.py``) fixed a seed, the
default is that seed, so that the default call reproduces the study's number on the same arrays.
Hyper-parameters are the ones the study ran with. ``benchmarks/score_agreement.py`` checks every
function against the reference code on the same arrays (figures in docs/scores.md).

``SCORES`` names each function as the study does (``logme``, ``leep``, ``nleep``, ``ncti``,
``parc``, ``sfda``, ``lp``, ``fu``) plus dsim's ``nce``, ``h-score`` and ``knn``, and says what
each needs: the source model's ``features``, its ``logits`` on the target, or the ``model``
itself (``fu`` back-propagates through it). ``ncti`` and the study's combined score (``lp`` times
``fu``) are *relative*: their parts are min-max normalised over the candidate set, see
``ncti_combine`` and ``lp_fu_combine``.

Multi-label targets (labels an ``(n, L)`` 0/1 matrix, several findings per image): LogME is
natively defined over a label matrix (its evidence per label column, averaged); the kNN proxy
takes the neighbours once and averages the per-label AUCs of their votes; every other score
(LEEP, NCE, H-score, N-LEEP, SFDA, PARC, LP, FU) is computed on each label's binary task
(positive vs not) and averaged over the labels, as a multi-label run is scored (the mean
per-label AUC); N-LEEP fits its mixture once (for a binary task, 10 components). Labels without
both positive and negative images are left out. NCTI refuses them (a relative score of three
terms, no per-label reading is established).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import dsim

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy


class ScoreError(dsim.DsimError):
    pass


# --------------------------------------------------------------------------------------------
# input checks: one-line errors naming the score and the argument
# --------------------------------------------------------------------------------------------


def is_multilabel(labels) -> bool:
    """Whether ``labels`` are a multi-label ``(n, L)`` matrix (L >= 2)."""
    y = np.asarray(labels)
    return y.ndim == 2 and y.shape[1] > 1


def label_columns(name: str, labels, n: int) -> list[np.ndarray]:
    """The binary tasks of a multi-label ``(n, L)`` 0/1 matrix: its columns (as 0/1 int arrays)
    that have both positive and negative images; a ScoreError when none has."""
    y = np.asarray(labels)
    if len(y) != n:
        raise ScoreError(f"{name}: {n} rows of features/outputs but {len(y)} label rows")
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise ScoreError(f"{name}: multi-label targets must be 0/1, got values other than 0 and 1")
    cols = [y[:, j].astype(np.int64) for j in range(y.shape[1]) if 0 < y[:, j].sum() < n]
    if not cols:
        raise ScoreError(f"{name}: no label has both positive and negative images")
    return cols


def per_label(name: str, score: Callable[[np.ndarray], float], labels, n: int) -> float:
    """``score`` of each binary label task of a multi-label matrix, averaged over the labels."""
    return float(np.mean([score(t) for t in label_columns(name, labels, n)]))


def _labels(name: str, labels, n: int) -> tuple[np.ndarray, int]:
    """Target labels as 0..C-1 (the order of their sorted values) and the number of classes C."""
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        raise ScoreError(f"{name}: takes one class per image, not multi-label (n, L) targets")
    if y.ndim != 1:
        raise ScoreError(f"{name}: labels must be 1-D (n,), got shape {y.shape}")
    if len(y) != n:
        raise ScoreError(f"{name}: {n} rows of features/outputs but {len(y)} labels")
    classes, yi = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ScoreError(f"{name}: needs two or more classes in labels, got {len(classes)}")
    return yi.reshape(-1), len(classes)


def _matrix(name: str, x, what: str = "features") -> np.ndarray:
    f = np.asarray(x, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] == 0:
        raise ScoreError(f"{name}: {what} must be a 2-D array (n images, d), got shape {np.shape(x)}")
    bad = ~np.isfinite(f).all(1)
    if bad.any():
        raise ScoreError(f"{name}: {what} row {int(np.argmax(bad))} is not finite (NaN or inf)")
    return f


def _features_labels(name: str, features, labels, min_images: int = 2) -> tuple[np.ndarray, np.ndarray, int]:
    f = _matrix(name, features)
    yi, c = _labels(name, labels, len(f))
    if len(f) < min_images:
        raise ScoreError(f"{name}: needs at least {min_images} images, got {len(f)}")
    return f, yi, c


def _probabilities(name: str, probs) -> np.ndarray:
    p = _matrix(name, probs, "source probabilities")
    if (p < 0).any():
        raise ScoreError(f"{name}: source probabilities are negative in row {int(np.argmax((p < 0).any(1)))}")
    s = p.sum(1)
    off = np.abs(s - 1) > 1e-4
    if off.any():
        i = int(np.argmax(off))
        raise ScoreError(
            f"{name}: source probability row {i} sums to {s[i]:.6g}, not 1 (pass a softmax, not logits)"
        )
    return p


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _onehot(yi: np.ndarray, c: int) -> np.ndarray:
    return np.eye(c)[yi]


# --------------------------------------------------------------------------------------------
# scores of the source classifier's outputs
# --------------------------------------------------------------------------------------------


def leep(probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP (Nguyen et al. 2020, "LEEP: A New Measure to Evaluate Transferability of Learned
    Representations", eq. 1-2) from the source classifier's probabilities ``theta(x)`` ``(n, Z)``
    on the target images and the target labels ``(n,)``.

    The mean log-likelihood of the target labels under the "expected empirical predictor"
    ``p(y|x) = sum_z P(y|z) theta_z(x)``, ``P(y|z)`` from the empirical joint
    ``P(y, z) = mean_i theta_z(x_i) [y_i = y]``. At most 0; at least ``-H(Y)`` (the prior's
    log-likelihood): the closer to 0, the better the source classes explain the target classes.
    """
    probs = _probabilities("leep", probs)
    if is_multilabel(labels):
        return per_label("leep", lambda t: leep(probs, t), labels, len(probs))
    yi, c = _labels("leep", labels, len(probs))
    n = len(yi)
    joint = _onehot(yi, c).T @ probs / n  # P(y, z), (Y, Z)
    pz = joint.sum(0, keepdims=True)  # P(z)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z)
    eep = probs @ cond.T  # (n, Y): sum_z P(y|z) theta_z(x)
    return float(np.mean(np.log(eep[np.arange(n), yi])))


def nce(source_pred: np.ndarray, labels: np.ndarray) -> float:
    """NCE (Tran et al. 2019, "Transferability and Hardness of Supervised Classification Tasks"):
    the negative conditional entropy ``-H(Y | Z)`` (natural log) of the target labels ``y`` given
    the source classifier's hard predictions ``z = argmax theta(x)``, both ``(n,)``. At most 0
    (the source prediction determines the target label), at least ``-H(Y)``."""
    z = np.asarray(source_pred)
    if z.ndim != 1:
        raise ScoreError(f"nce: source predictions must be 1-D (n,) class indices, got shape {z.shape}")
    if is_multilabel(labels):
        return per_label("nce", lambda t: nce(z, t), labels, len(z))
    yi, _ = _labels("nce", labels, len(z))
    _, zi = np.unique(z, return_inverse=True)
    zi = zi.reshape(-1)
    joint = np.zeros((zi.max() + 1, yi.max() + 1))
    np.add.at(joint, (zi, yi), 1.0)
    joint /= len(yi)
    pz = joint.sum(1, keepdims=True)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)
    mask = joint > 0
    return float(np.sum(joint[mask] * np.log(cond[mask])))


# --------------------------------------------------------------------------------------------
# scores of the source model's features
# --------------------------------------------------------------------------------------------


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score (Bao et al. 2019, "An Information-Theoretic Approach to Transferability in Task
    Transfer Learning"): ``tr(cov(f)^+ cov(E[f|y]))`` of the penultimate features ``f``, the
    between-class share of the feature variance, summed over feature directions; at most
    ``min(d, C - 1)``. Covariances with 1/n (the normalisation cancels) and a pseudo-inverse
    (``rcond`` 1e-10), so that rank-deficient features do not fail."""
    if is_multilabel(labels):
        f = _matrix("h-score", features)
        return per_label("h-score", lambda t: h_score(f, t), labels, len(f))
    f, y, _ = _features_labels("h-score", features, labels)
    f = f - f.mean(0)
    cov_f = f.T @ f / len(f)
    g = np.zeros_like(f)
    for c in np.unique(y):
        m = y == c
        g[m] = f[m].mean(0)
    cov_g = g.T @ g / len(f)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-10, hermitian=True) @ cov_g))


def logme(features: np.ndarray, labels: np.ndarray, tol: float = 1e-2, max_iter: int = 11) -> float:
    """LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning", Algorithm 1/2): for each class, the maximum over (alpha, beta) of the log evidence
    of the Bayesian linear regression ``y_c = F w + noise``, ``w ~ N(0, 1/alpha)``, noise
    ``N(0, 1/beta)``, found by the paper's fixed-point iteration, divided by n; averaged over the
    classes. Higher = a linear model on the features explains the labels with less capacity.
    ``max_iter`` 11 and ``tol`` 1e-2 as in the authors' code; the evidence is evaluated exactly at
    the final (alpha, beta) (the reference code evaluates it at the previous iterate's posterior
    mean and adds 1e-5 to two denominators, see docs/scores.md)."""
    if is_multilabel(labels):
        F = _matrix("logme", features)
        targets = [t.astype(np.float64) for t in label_columns("logme", labels, len(F))]
    else:
        F, y, _ = _features_labels("logme", features, labels)
        targets = [(y == c).astype(np.float64) for c in np.unique(y)]
    n, d = F.shape
    u, s, _ = np.linalg.svd(F, full_matrices=False)  # F = u diag(s) v^T
    sigma = s**2  # eigenvalues of F^T F (the non-zero ones)
    evidences = []
    for t in targets:
        proj = u.T @ t  # coordinates of t in the column space of F
        res_outside = float(t @ t - proj @ proj)  # part of |t|^2 outside span(F)
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            gamma = float(np.sum(beta * sigma / (alpha + beta * sigma)))
            m2 = float(np.sum(beta**2 * sigma * proj**2 / (alpha + beta * sigma) ** 2))  # |m|^2
            res2 = float(np.sum((alpha * proj / (alpha + beta * sigma)) ** 2)) + res_outside  # |Fm - t|^2
            new_alpha = gamma / max(m2, 1e-300)
            new_beta = (n - gamma) / max(res2, 1e-300)
            done = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) < tol
            alpha, beta = new_alpha, new_beta
            if done:
                break
        evidences.append(_log_evidence(n, d, sigma, proj, res_outside, alpha, beta) / n)
    return float(np.mean(evidences))


def _log_evidence(n, d, sigma, proj, res_outside, alpha, beta) -> float:
    """Log marginal likelihood of the Bayesian linear model at (alpha, beta), via the SVD."""
    m2 = float(np.sum(beta**2 * sigma * proj**2 / (alpha + beta * sigma) ** 2))
    res2 = float(np.sum((alpha * proj / (alpha + beta * sigma)) ** 2)) + res_outside
    logdet_a = float(np.sum(np.log(alpha + beta * sigma))) + (d - len(sigma)) * np.log(alpha)
    return (
        n / 2 * np.log(beta)
        + d / 2 * np.log(alpha)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * res2
        - alpha / 2 * m2
        - logdet_a / 2
    )


def knn_auc(features: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """The k-nearest-neighbour proxy (Renggli et al. 2022, "Which Model to Transfer? Finding the
    Needle in the Growing Haystack"), leave-one-out: each target image is classified by the class
    fractions of its ``k`` nearest other images (Euclidean, on features standardised per
    dimension); the score is the ROC AUC of those fractions (weighted one-vs-rest for more than
    two classes, as dsim scores transfer runs). 0.5 = chance, 1 = neighbourhoods are pure."""
    multilabel = is_multilabel(labels)
    if multilabel:
        f = _matrix("knn", features)
        if len(f) < 3:
            raise ScoreError(f"knn: needs at least 3 images, got {len(f)}")
        cols = np.stack(label_columns("knn", labels, len(f)), axis=1)  # (n, L') binary tasks
    else:
        f, yi, c = _features_labels("knn", features, labels, min_images=3)
    n = len(f)
    k = max(1, min(int(k), n - 1))
    sd = f.std(0)
    f = (f - f.mean(0)) / np.where(sd > 0, sd, 1.0)
    sq = (f * f).sum(1)
    votes = np.zeros((n, cols.shape[1] if multilabel else c))
    for s in range(0, n, 512):  # blocks of rows keep memory at 512 x n
        d = sq[s : s + 512, None] + sq[None, :] - 2.0 * f[s : s + 512] @ f.T
        d[np.arange(d.shape[0]), np.arange(s, s + d.shape[0])] = np.inf  # leave the image itself out
        nn = np.argpartition(d, k - 1, axis=1)[:, :k]
        if multilabel:  # per label: how many of the k neighbours are positive
            votes[s : s + d.shape[0]] = cols[nn].sum(1)
        else:
            np.add.at(votes, (np.repeat(np.arange(s, s + d.shape[0]), k), yi[nn].ravel()), 1.0)
    if multilabel:
        return dsim.mean_label_auc(cols, votes / k)
    return dsim.auc_weighted_ovr(yi, votes / k if c > 2 else votes[:, 1] / k)


def nleep(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    component_ratio: int = 5,
    variance: float = 0.8,
    log: bool = False,
    seed: int = 0,
) -> float:
    """N-LEEP (Li et al. 2021, "Ranking Neural Checkpoints"): LEEP with the source classifier
    replaced by a Gaussian mixture fitted to the target features. The features are reduced by PCA
    to the components that keep ``variance`` (80 %) of their variance; a full-covariance mixture
    of ``component_ratio * C`` components (5 per class) is fitted (seeded k-means start); its
    posteriors ``p(v|x)`` take the place of ``theta(x)``: ``p(y|x) = sum_v P(y|v) p(v|x)``.

    As the study and the SFDA authors' code compute it, the score is the mean of ``p(y_i|x_i)``
    (in [0, 1]; ``log=True`` gives the paper's mean log, comparable to LEEP). Higher = mixture
    clusters of the features are purer in the target classes. The mixture is fitted by EM from a
    random start, so the value depends on ``seed`` (the study left it unseeded).
    """
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    if is_multilabel(labels):  # one mixture for the binary tasks of every label
        f = _matrix("nleep", features)
        tasks, c = label_columns("nleep", labels, len(f)), 2
    else:
        f, yi, c = _features_labels("nleep", features, labels)
        tasks = [yi]
    n = len(f)
    k = int(component_ratio) * c
    if k > n:
        raise ScoreError(
            f"nleep: {k} mixture components ({component_ratio} per class) need {k} images, got {n}"
        )
    pca = PCA(n_components=variance, random_state=seed).fit(f)
    z = pca.transform(f)
    post = GaussianMixture(n_components=k, random_state=seed).fit(z).predict_proba(z)  # p(v | x)
    values = []
    for yi in tasks:
        pyv = _onehot(yi, c).T @ post / n  # P(y, v)
        pv = pyv.sum(0, keepdims=True)
        py_v = np.divide(pyv, pv, out=np.zeros_like(pyv), where=pv > 0)  # P(y | v)
        p = (post @ py_v.T)[np.arange(n), yi]  # p(y_i | x_i)
        values.append(float(np.mean(np.log(p)) if log else np.mean(p)))
    return float(np.mean(values))


def _largest_eigenvalue(a: np.ndarray, iterations: int = 3) -> float:
    """The largest eigenvalue of a symmetric PSD matrix by ``iterations`` double power steps from
    the row sums (the SFDA authors' estimate); the exact one where that start vector is zero."""
    x = a.sum(1)
    v = x
    for _ in range(iterations):
        t = a @ x
        if not np.linalg.norm(t) > 0:
            return float(np.linalg.eigvalsh(a)[-1])
        v = t / np.linalg.norm(t)
        t = a @ v
        x = t / np.linalg.norm(t)
    return float(x @ a @ v)


def _shrunk_lda_posteriors(x: np.ndarray, yi: np.ndarray, c: int, shrinkage: float | None):
    """Class posteriors of linear discriminant analysis with the within-class scatter shrunk
    towards its mean eigenvalue: ``Sw' = (1 - s) Sw + s tr(Sw)/d I``; ``s`` from the largest
    eigenvalue ``l`` of ``Sw`` as ``max(exp(-5 l), 1e-10)`` when not given (Shao et al. 2022)."""
    n, d = x.shape
    cnt = np.bincount(yi, minlength=c)
    priors = cnt / n
    means = (_onehot(yi, c).T @ x) / cnt[:, None]
    centred = x - means[yi]
    sw = (centred * priors[yi][:, None] / cnt[yi][:, None]).T @ centred  # sum_c pi_c cov_c
    if shrinkage is None:
        shrinkage = max(float(np.exp(-5 * _largest_eigenvalue(sw))), 1e-10)
    mu = np.trace(sw) / d
    if not mu > 0:
        raise ScoreError("sfda: the features do not vary within any class (within-class scatter is zero)")
    sw_s = (1.0 - shrinkage) * sw
    sw_s.flat[:: d + 1] += shrinkage * mu
    w = np.linalg.solve(sw_s, means.T)  # Sw'^-1 mu_c, (d, C)
    scores = x @ w - 0.5 * np.sum(means.T * w, 0) + np.log(priors)
    return _softmax(scores), shrinkage, means


def sfda(features: np.ndarray, labels: np.ndarray) -> float:
    """SFDA (Shao et al. 2022, "Not All Models Are Equal: Predicting Model Transferability in a
    Self-challenging Fisher Space"), as the authors' code (and the study) computes it:

    1. a regularised Fisher discriminant on the features: the within-class scatter ``Sw`` is
       shrunk towards ``tr(Sw)/d I`` by ``s = max(exp(-5 lambda_max(Sw)), 1e-10)``; its class
       posteriors ``p(y|x)`` are those of LDA with the shrunk ``Sw`` (the projection onto the
       Fisher directions that the paper describes keeps all ``d`` of them, which is the same);
    2. self-challenge ("ConfMix"): each feature is mixed with the mean of the *other* classes'
       means, ``x' = q x + (1 - q) mean_{c != y} mu_c``, where ``q`` is the softmax of the
       first-stage posteriors taken once more (a softened confidence in the true class);
    3. the same discriminant (same ``s``) on the mixed features; the score is the mean posterior
       of the true class, in (0, 1) (the paper's log is left out, as in the authors' code).

    Higher = the classes stay separable under the hardest mixing. Deterministic. The shrinkage
    depends on the features' absolute scale (``lambda_max``), as in the paper.
    """
    if is_multilabel(labels):
        f = _matrix("sfda", features)
        return per_label("sfda", lambda t: sfda(f, t), labels, len(f))
    f, yi, c = _features_labels("sfda", features, labels)
    n = len(yi)
    p, s, means = _shrunk_lda_posteriors(f, yi, c, None)
    q = _softmax(p)[np.arange(n), yi][:, None]  # softened confidence in the true class
    others = (means.sum(0) - means) / (c - 1)  # mean of the other classes' means, per class
    mixed = q * f + (1 - q) * others[yi]
    p2, _, _ = _shrunk_lda_posteriors(mixed, yi, c, s)
    return float(np.mean(p2[np.arange(n), yi]))


def parc(features: np.ndarray, labels: np.ndarray, *, n_dims: int = 32, seed: int = 1919) -> float:
    """PARC (Bolya et al. 2021, "Scalable Diverse Model Selection for Accessible Transfer
    Learning"): 100 x the Spearman correlation between the dissimilarity matrices of the images
    under the features and under the labels, over all pairs ``i < j``.

    The features are reduced by PCA to ``n_dims`` (32) components (randomised solver, one power
    iteration, seed 1919, as the authors and the study run it; fewer when there are fewer images;
    kept as they are when there are fewer than ``n_dims`` features), standardised per dimension;
    the feature dissimilarity of two images is ``1 - Pearson r`` of their feature vectors, the
    label one ``1 - r`` of their one-hot labels (0 for the same class, ``C/(C-1)`` otherwise).
    In [-100, 100]; higher = images of a class are more alike in the features than images of
    different classes.
    """
    from scipy.stats import spearmanr
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    if is_multilabel(labels):
        f = _matrix("parc", features)
        return per_label("parc", lambda t: parc(f, t, n_dims=n_dims, seed=seed), labels, len(f))
    f, yi, c = _features_labels("parc", features, labels, min_images=3)
    n, d = f.shape
    k = min(int(n_dims), n)
    if k <= d:
        f = PCA(n_components=k, svd_solver="randomized", random_state=seed, iterated_power=1).fit_transform(f)
    if f.shape[1] < 2:
        raise ScoreError(f"parc: needs two or more feature dimensions, got {f.shape[1]}")
    f = StandardScaler().fit_transform(f)
    iu = np.triu_indices(n, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rdm_f = 1 - np.corrcoef(f)[iu]
    # 1 - r of two one-hot label vectors, exactly: 0 within a class, C/(C-1) across classes
    # (np.corrcoef of the one-hots, as the reference code computes it, leaves ~1e-16 noise on the
    # within-class zeros, which splits their ties by class and moves the rank correlation)
    rdm_y = np.where(yi[iu[0]] == yi[iu[1]], 0.0, c / (c - 1))
    if not np.isfinite(rdm_f).all():
        i = int(iu[0][np.argmax(~np.isfinite(rdm_f))])
        raise ScoreError(f"parc: feature row {i} is constant after standardising (correlation undefined)")
    return float(spearmanr(rdm_f, rdm_y)[0] * 100)


def lp(
    features: np.ndarray, labels: np.ndarray, *, n_components: int = 50, k: int = 5, seed: int = 42
) -> float:
    """The forward-pass score of Juodelyte et al. 2024 ("On dataset transferability in medical
    image classification"; ``LP_Score`` in their code), the feature-quality half of their metric:
    Neighbourhood Components Analysis (Goldberger et al. 2004) learns a linear map of the features
    to ``n_components`` (50) dimensions that maximises a soft leave-one-out k-NN accuracy on the
    target labels, a cheap stand-in for fine-tuning; then a ``k``-NN vote (``k`` 5) in that
    embedding, fitted on and applied to the same target images (so each image is one of its own 5
    neighbours: the score is at least 0.2 for a 5-NN), gives ``P(y|x)``; the score is the mean
    ``P(y_i|x_i)`` of the true labels, in (0, 1]. Higher = the labels are easy to reach with a
    linear change of the features. NCA starts from a PCA seeded with ``seed`` (42, the study's);
    fewer components when there are fewer features.
    """
    from sklearn.neighbors import KNeighborsClassifier, NeighborhoodComponentsAnalysis

    if is_multilabel(labels):
        f = _matrix("lp", features)
        return per_label("lp", lambda t: lp(f, t, n_components=n_components, k=k, seed=seed), labels, len(f))
    f, yi, _ = _features_labels("lp", features, labels, min_images=3)
    n, d = f.shape
    nca = NeighborhoodComponentsAnalysis(n_components=min(int(n_components), d), random_state=seed)
    z = nca.fit(f, yi).transform(f)
    prob = KNeighborsClassifier(n_neighbors=min(int(k), n)).fit(z, yi).predict_proba(z)
    return float(np.mean(prob[np.arange(n), yi]))


class NCTIParts(NamedTuple):
    """The three terms of NCTI for one candidate (combine a candidate set with ``ncti_combine``)."""

    seli: float  # nuclear norm of the centred LDA projection (between-class separation)
    ncc: float  # mean LDA posterior of the true class (nearest-centre classifier fit)
    vc: float  # log of the summed per-class nuclear norms of the posteriors (within-class spread)


def ncti(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    n_components: int = 64,
    shrink_components: int = 32,
    seed: int = 42,
) -> NCTIParts:
    """The three terms of NCTI (Wang et al. 2023, "How Far Pre-trained Models Are from Neural
    Collapse on the Target Dataset Informs their Transferability"), computed as the authors' code
    and the study do: the features are reduced by PCA to ``n_components`` (64; sklearn's solver
    choice, seed 42); LDA is fitted on them, with shrinkage ``exp(-(sum of the first 32 PCA
    variances))`` (or the plain SVD solver when that falls to 1e-10). Then

    * ``seli``: nuclear norm of the centred LDA projection (C - 1 dims): how spread apart the
      classes are (higher = better);
    * ``ncc``: mean LDA posterior of the true class (higher = better);
    * ``vc``: log of the sum over classes of the nuclear norm of that class's posterior matrix:
      within-class variability of the predictions (lower = more collapsed = better).

    A single candidate has no NCTI value: the score of a candidate set is
    ``ncti_combine(parts)``. Fewer PCA components when there are fewer images or features.
    """
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    f, yi, c = _features_labels("ncti", features, labels, min_images=3)
    n, d = f.shape
    pca = PCA(n_components=min(int(n_components), n, d), random_state=seed)
    z = pca.fit_transform(f)
    shrink = max(float(np.exp(-pca.explained_variance_[: int(shrink_components)].sum())), 1e-10)
    if shrink == 1e-10:
        lda = LinearDiscriminantAnalysis(solver="svd")
    else:
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrink)
    low = lda.fit_transform(z, yi)
    low = low - low.mean(0, keepdims=True)
    pred = lda.predict_proba(z)
    seli = float(np.linalg.norm(low, ord="nuc"))
    ncc = float(np.mean(pred[np.arange(n), yi]))
    vc = float(np.log(sum(np.linalg.norm(pred[yi == k], ord="nuc") for k in range(c))))
    return NCTIParts(seli, ncc, vc)


def _minmax(v: np.ndarray) -> np.ndarray:
    span = v.max() - v.min()
    return (v - v.min()) / span if span > 0 else np.zeros_like(v)


def ncti_combine(parts: Sequence[NCTIParts | Sequence[float]], vc_sign: float = -1.0) -> np.ndarray:
    """NCTI of each candidate of a set (scored on the same target): every term is min-max
    normalised over the candidates, ``NCTI = seli' + ncc' - vc'`` (Wang et al. 2023 and their
    code). The study of Juodelyte et al. adds ``vc'`` instead (``vc_sign=+1`` reproduces its
    table). A term that is equal for all candidates contributes 0."""
    a = np.asarray(parts, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3 or len(a) == 0:
        raise ScoreError(f"ncti: parts must be (candidates, 3) (seli, ncc, vc), got shape {a.shape}")
    return _minmax(a[:, 0]) + _minmax(a[:, 1]) + float(vc_sign) * _minmax(a[:, 2])


def lp_fu_combine(lp_values: Sequence[float], fu_values: Sequence[float]) -> np.ndarray:
    """The metric of Juodelyte et al. 2024 for each candidate of a set: ``lp'`` x ``fu'``, both
    min-max normalised over the candidates (their notebooks' "Ours")."""
    a, b = np.asarray(lp_values, np.float64), np.asarray(fu_values, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ScoreError(f"lp*fu: lp and fu need one value per candidate each, got {a.shape} and {b.shape}")
    return _minmax(a) * _minmax(b)


# --------------------------------------------------------------------------------------------
# FU: gradients of the source model on the target (needs the network, no fine-tuning)
# --------------------------------------------------------------------------------------------


def _triplet_margin_loss(emb, y, margin: float, chunk: int = 64):
    """Mean over the violating triplets of ``relu(d(a, p) - d(a, n) + margin)``, all triplets of a
    batch (``y_a = y_p``, ``a != p``, ``y_n != y_a``), Euclidean distances of L2-normalised
    embeddings (the defaults of pytorch-metric-learning's TripletMarginLoss, which the study
    uses); a zero loss with zero gradients when no triplet violates the margin. Anchors in chunks
    keep memory at ``chunk x b x b``."""
    import torch

    e = torch.nn.functional.normalize(emb, p=2, dim=1)
    dist = torch.cdist(e, e, p=2)
    same = y[:, None] == y[None, :]
    pos = same & ~torch.eye(len(y), dtype=torch.bool, device=y.device)
    neg = ~same
    total, count = (emb * 0).sum(), 0
    for a in range(0, len(y), chunk):
        v = dist[a : a + chunk, :, None] - dist[a : a + chunk, None, :] + margin  # (anchors, p, n)
        keep = pos[a : a + chunk, :, None] & neg[a : a + chunk, None, :] & (v > 0)
        total = total + v[keep].sum()
        count += int(keep.sum())
    return total / count if count else total


def _module(model, layer):
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            raise ScoreError(f"fu: the model has no layer {layer!r}") from None
    return layer


def fu(
    model,
    images,
    labels,
    *,
    first="conv1",
    second="layer1.0.conv1",
    n_batches: int = 6,
    margin: float = 0.05,
    device=None,
) -> float:
    """The backward-pass score of Juodelyte et al. 2024 (``FU_Score``, "feature update"), the
    adaptability half of their metric. The source network ``model`` (mapping images to its
    penultimate embeddings, i.e. without classifier) in eval mode takes the target ``images``
    (a float tensor or array ``(n, C, H, W)``, preprocessed) in ``n_batches`` (6) consecutive
    batches of ``n // n_batches`` images (plus the remainder), as the study's loader does; for each
    batch the triplet margin loss of the embeddings with the target labels is back-propagated
    (no weight is updated). The score is the mean L2 norm of the gradient of the ``second``
    layer's weight over the batches divided by that of the ``first`` layer's (default names: a
    ResNet's stem conv and first block conv; modules or dotted names).

    It needs the network itself, not only features, but no fine-tuning. The study multiplies its
    min-max normalised value with ``lp``'s (``lp_fu_combine``), so larger counts as better: the
    target's loss pulls harder on the deeper layer than on the stem. (On a freshly initialised
    timm ResNet it is 0: timm zero-initialises each block's last BatchNorm, so no gradient reaches
    a residual-branch conv.)
    """
    import torch

    first_m, second_m = _module(model, first), _module(model, second)
    for name, m in (("first", first_m), ("second", second_m)):
        if not isinstance(getattr(m, "weight", None), torch.Tensor):
            raise ScoreError(f"fu: the {name} layer {m.__class__.__name__} has no weight")
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.ndim != 4:
        raise ScoreError(f"fu: images must be (n, C, H, W), got shape {tuple(x.shape)}")
    if is_multilabel(labels):
        kw = {"first": first, "second": second, "n_batches": n_batches, "margin": margin, "device": device}
        return per_label("fu", lambda t: fu(model, x, t, **kw), labels, len(x))
    yi, _ = _labels("fu", np.asarray(labels), len(x))
    y = torch.as_tensor(yi)
    n = len(y)
    b = n // int(n_batches)
    if b < 2:
        raise ScoreError(
            f"fu: {n} images make batches of {b} for {n_batches} batches; need 2 or more per batch"
        )
    device = device or next(model.parameters()).device
    model.eval()
    g1, g2 = [], []
    for s in range(0, n, b):
        model.zero_grad(set_to_none=True)
        emb = model(x[s : s + b].to(device, torch.float32))
        _triplet_margin_loss(emb, y[s : s + b].to(device), float(margin)).backward()
        for grads, m in ((g1, first_m), (g2, second_m)):
            if m.weight.grad is not None:
                grads.append(float(torch.linalg.vector_norm(m.weight.grad)))
    model.zero_grad(set_to_none=True)
    if not g1 or not np.mean(g1) > 0:
        raise ScoreError(
            "fu: zero gradient at the first layer (no triplet of the target violates the margin)"
        )
    return float(np.mean(g2) / np.mean(g1))


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """One score of the table: calling it calls ``function``.

    ``needs``: ``"features"`` (penultimate features of the source model on the target images),
    ``"logits"`` (the source classifier's outputs on them; ``inputs`` says whether the function
    takes their softmax, ``"probabilities"``, or argmax, ``"predictions"``) or ``"model"`` (the
    network and the images). ``relative``: the value of one candidate means nothing alone; the
    candidate set is scored by ``combine``.
    """

    name: str
    function: Callable[..., Any]
    needs: str
    inputs: str
    paper: str
    relative: bool = False
    combine: Callable[..., np.ndarray] | None = None

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def compute(self, labels, *, features=None, logits=None, **kwargs):
        """The score from whichever of ``features`` / ``logits`` it needs."""
        if self.needs == "features":
            if features is None:
                raise ScoreError(f"{self.name}: needs the source model's features")
            return self.function(features, labels, **kwargs)
        if self.needs == "logits":
            if logits is None:
                raise ScoreError(f"{self.name}: needs the source classifier's logits")
            z = _matrix(self.name, logits, "source logits")
            x = _softmax(z) if self.inputs == "probabilities" else np.argmax(z, 1)
            return self.function(x, labels, **kwargs)
        raise ScoreError(
            f"{self.name}: needs the model itself; call SCORES[{self.name!r}](model, images, labels)"
        )


SCORES: dict[str, Score] = {
    s.name: s
    for s in (
        Score("logme", logme, "features", "features", "You et al. 2021"),
        Score("leep", leep, "logits", "probabilities", "Nguyen et al. 2020"),
        Score("nleep", nleep, "features", "features", "Li et al. 2021"),
        Score("ncti", ncti, "features", "features", "Wang et al. 2023", relative=True, combine=ncti_combine),
        Score("parc", parc, "features", "features", "Bolya et al. 2021"),
        Score("sfda", sfda, "features", "features", "Shao et al. 2022"),
        Score("lp", lp, "features", "features", "Juodelyte et al. 2024"),
        Score("fu", fu, "model", "model", "Juodelyte et al. 2024"),
        Score("nce", nce, "logits", "predictions", "Tran et al. 2019"),
        Score("h-score", h_score, "features", "features", "Bao et al. 2019"),
        Score("knn", knn_auc, "features", "features", "Renggli et al. 2022"),
    )
}

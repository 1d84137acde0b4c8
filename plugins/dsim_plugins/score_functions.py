"""Transferability scores as plain functions of arrays (the source model's features or class
probabilities on the target images, and the target labels), usable without a measure class."""

from __future__ import annotations

import numpy as np

import dsim


class ScoreError(dsim.DsimError):
    pass


# --------------------------------------------------------------------------------------------
# the scores, on arrays (usable on their own)
# --------------------------------------------------------------------------------------------


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def leep(probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP from the source classifier's probabilities ``(n, Z)`` on the target and the target
    labels ``(n,)`` (Nguyen et al. 2020, eq. 1-2)."""
    probs = np.asarray(probs, np.float64)
    y = np.asarray(labels)
    n = len(y)
    classes, yi = np.unique(y, return_inverse=True)
    onehot = np.eye(len(classes))[yi]  # (n, Y)
    joint = onehot.T @ probs / n  # P(y, z), (Y, Z)
    pz = joint.sum(0, keepdims=True)  # P(z)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z)
    eep = probs @ cond.T  # (n, Y): sum_z P(y|z) theta_z(x)
    return float(np.mean(np.log(eep[np.arange(n), yi])))


def nce(source_pred: np.ndarray, labels: np.ndarray) -> float:
    """NCE = -H(Y | Z) from hard source predictions ``z`` and target labels ``y`` (natural log)."""
    z = np.asarray(source_pred)
    y = np.asarray(labels)
    _, zi = np.unique(z, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    joint = np.zeros((zi.max() + 1, yi.max() + 1))
    np.add.at(joint, (zi, yi), 1.0)
    joint /= len(y)
    pz = joint.sum(1, keepdims=True)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)
    mask = joint > 0
    return float(np.sum(joint[mask] * np.log(cond[mask])))


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score ``tr(cov(f)^+ cov(E[f|y]))`` (Bao et al. 2019), covariances with 1/n."""
    f = np.asarray(features, np.float64)
    y = np.asarray(labels)
    f = f - f.mean(0)
    cov_f = f.T @ f / len(f)
    g = np.zeros_like(f)
    for c in np.unique(y):
        m = y == c
        g[m] = f[m].mean(0)
    cov_g = g.T @ g / len(f)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-10, hermitian=True) @ cov_g))


def logme(features: np.ndarray, labels: np.ndarray, tol: float = 1e-2, max_iter: int = 11) -> float:
    """LogME (You et al. 2021, Algorithm 1/2): for each class, the maximum over (alpha, beta) of
    the log evidence of ``y_c = F w + noise`` with ``w ~ N(0, 1/alpha)``, noise
    ``N(0, 1/beta)``, found by the fixed-point iteration, divided by n; averaged over classes.
    ``max_iter`` 11 and ``tol`` 1e-2 as in the authors' code."""
    F = np.asarray(features, np.float64)
    y = np.asarray(labels)
    n, d = F.shape
    u, s, _ = np.linalg.svd(F, full_matrices=False)  # F = u diag(s) v^T
    sigma = s**2  # eigenvalues of F^T F (the non-zero ones)
    len(sigma)
    evidences = []
    for c in np.unique(y):
        t = (y == c).astype(np.float64)
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


def knn_auc(features: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Leave-one-out k-NN proxy: each target image is classified by the class fractions of its
    ``k`` nearest other images (Euclidean, on features standardised per dimension); the score is
    the ROC AUC of those fractions (weighted one-vs-rest for more than two classes)."""
    f = np.asarray(features, np.float64)
    y = np.asarray(labels)
    classes, yi = np.unique(y, return_inverse=True)
    n = len(y)
    if len(classes) < 2 or n < 3:
        raise ScoreError("kNN proxy needs two or more classes and three or more images")
    k = max(1, min(int(k), n - 1))
    sd = f.std(0)
    f = (f - f.mean(0)) / np.where(sd > 0, sd, 1.0)
    sq = (f * f).sum(1)
    votes = np.zeros((n, len(classes)))
    for s in range(0, n, 512):  # blocks of rows keep memory at 512 x n
        d = sq[s : s + 512, None] + sq[None, :] - 2.0 * f[s : s + 512] @ f.T
        d[np.arange(d.shape[0]), np.arange(s, s + d.shape[0])] = np.inf  # leave the image itself out
        nn = np.argpartition(d, k - 1, axis=1)[:, :k]
        np.add.at(votes, (np.repeat(np.arange(s, s + d.shape[0]), k), yi[nn].ravel()), 1.0)
    return dsim.auc_weighted_ovr(yi, votes / k if len(classes) > 2 else votes[:, 1] / k)


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

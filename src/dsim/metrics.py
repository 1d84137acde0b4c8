"""Metrics of transfer: AUC as cats-scans computes it and transferability T."""

from __future__ import annotations

import numpy as np

__all__ = ["transferability", "auc_weighted_ovr"]


def transferability(auc_source_to_target: float, auc_target_only: float) -> float:
    """T(S->T) = (AUC(S->T) - AUC(T)) / AUC(T) x 100 ("Cats, not CAT scans", eq. 1)."""
    return (auc_source_to_target - auc_target_only) / auc_target_only * 100.0


def auc_weighted_ovr(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC; one-vs-rest weighted by class prior for multi-class (scikit-learn's
    ``roc_auc_score(average="weighted", multi_class="ovr")``), as in cats-scans."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]
    if scores.ndim == 1:
        return float(roc_auc_score(labels, scores))
    present = np.unique(labels)
    if len(present) < scores.shape[1]:  # a test fold missing a class: score the present ones
        probs = scores[:, present]
        probs = probs / probs.sum(axis=1, keepdims=True)
        if len(present) == 2:
            return float(roc_auc_score(labels == present[1], probs[:, 1]))
        return float(roc_auc_score(labels, probs, average="weighted", multi_class="ovr", labels=present))
    return float(roc_auc_score(labels, scores, average="weighted", multi_class="ovr"))

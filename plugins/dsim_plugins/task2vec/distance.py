"""Task2Vec distances: the paper's symmetric normalised cosine and the asymmetric variant."""

from __future__ import annotations

import dsim

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy


def symmetric_distance(h0: np.ndarray, h1: np.ndarray) -> float:
    """Achille et al.'s symmetric Task2Vec distance (the reference's ``cosine``)."""
    h0, h1 = np.asarray(h0, np.float64), np.asarray(h1, np.float64)
    s = h0 + h1 + 1e-8
    a, b = h0 / s, h1 / s
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(1.0 - np.dot(a, b) / den) if den > 0 else 0.0


def asymmetric_distance(
    hs: np.ndarray, ht: np.ndarray, alpha: float = 0.15, trivial: np.ndarray | None = None
) -> float:
    """``d_sym(s, t) - alpha * d_sym(s, trivial)``, trivial = every filter at the prior: F = 1 for
    the Monte-Carlo embedding, the layer's prior scale ``1 / lambda^2`` for the variational one."""
    triv = np.ones_like(hs) if trivial is None else np.asarray(trivial, np.float64)
    return symmetric_distance(hs, ht) - alpha * symmetric_distance(hs, triv)

"""Optimal Transport Dataset Distance (Alvarez-Melis & Fusi 2020, "Geometric dataset distances
via optimal transport"; reference implementation microsoft/otdd).

Each dataset is a distribution over (feature, label) pairs; a label is itself the distribution
of the features of its images. The distance is the optimal transport cost between the two
datasets under the ground cost

    c((x, y), (x', y')) = (lambda_x * |x - x'|^p + lambda_y * W_p^p(P_y, P'_y')) / p

where ``W_p^p(P_y, P'_y')`` is the (inner) p-Wasserstein cost between the feature distributions
of class ``y`` of one dataset and class ``y'`` of the other. The value reported is that OT cost,
the same quantity microsoft/otdd's ``DatasetDistance.distance()`` returns (which also divides
both terms by ``p``; for ``p = 2`` it is half the squared OTDD of the paper).

Parameters (``__init__``; ``-o name=value`` on the CLI):

* ``otdd_inner``: ``"gaussian"`` (default; each class a Gaussian, ``W_2^2`` in closed form =
  ``|mu - mu'|^2 + Bures^2(S, S')``, the reference's ``gaussian_approx``) or ``"exact"`` (the
  inner OT solved exactly with POT's ``ot.emd2`` on the class samples, the reference's
  ``inner_ot_method="exact", inner_ot_loss="wasserstein"``). One measure with an option, not
  two measures, so that a ranking does not count OTDD twice.
* ``otdd_outer``: ``"exact"`` (default; ``ot.emd2``) or ``"sinkhorn"`` (entropic OT with
  ``otdd_entreg`` relative to the largest cost, POT's log-domain ``ot.sinkhorn2``; debiased,
  ``S(a,b) = OT(a,b) - (OT(a,a) + OT(b,b)) / 2``, unless ``otdd_debiased=False``).
* ``otdd_features``: ``"pixels"`` (default: images resized to ``otdd_image_size`` (28) and
  ``otdd_channels`` (1) in [0, 1], flattened; needs no network, runs offline on any data) or a
  backbone name (``"resnet18"``...) whose pooled embeddings are used (``probe_weights``,
  ``image_size``).
* ``otdd_lambda_x``, ``otdd_lambda_y`` (1, 1), ``otdd_p`` (2; the Gaussian inner cost needs 2).
* ``otdd_max_samples`` (2000): images per dataset, a seeded stratified subsample (every class
  keeps its share), so large sets stay cheap; ``otdd_min_labelcount`` (2): classes with fewer
  images are left out (as the reference does).

A multi-label dataset (labels an ``(N, L)`` 0/1 matrix) is read over its *label sets*: each
distinct combination of labels (an image's set of findings, the empty set included) is one
class, the natural reading of "a label is the distribution of its images" when an image has
several; combinations with fewer than ``otdd_min_labelcount`` images are left out as rare
classes are (their number is in the representation's meta).

The per-dataset representation (cached) holds the features, the canonical labels and, for the
Gaussian inner cost, per-class means and covariance *factors* ``L`` with ``L L^T = Sigma``
(the centred samples / sqrt(n - 1) when a class has fewer samples than dimensions, else
``V sqrt(w)`` from the eigendecomposition of ``Sigma`` without its zero-variance directions).
With them the Bures term needs no matrix square root per pair:
``tr((S^1/2 S' S^1/2)^1/2) = ||L^T L'||_*`` (nuclear norm), so
``W_2^2 = |mu - mu'|^2 + |L|_F^2 + |L'|_F^2 - 2 ||L^T L'||_*``, batched over all class pairs.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import dsim

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy

DEFAULTS: dict[str, Any] = {
    "otdd_inner": "gaussian",
    "otdd_outer": "exact",
    "otdd_entreg": 0.1,
    "otdd_debiased": True,
    "otdd_features": "pixels",
    "otdd_image_size": 28,
    "otdd_channels": 1,
    "otdd_lambda_x": 1.0,
    "otdd_lambda_y": 1.0,
    "otdd_p": 2,
    "otdd_max_samples": 2000,
    "otdd_min_labelcount": 2,
}


class OTDDError(dsim.DsimError):
    measure_wide = True


def check_options(o: dict[str, Any]) -> dict[str, Any]:
    """The parameters ``o`` if they can work together, else a measure-wide OTDDError."""
    if o["otdd_inner"] not in ("gaussian", "exact"):
        raise OTDDError(f"otdd_inner={o['otdd_inner']!r}: use 'gaussian' or 'exact'")
    if o["otdd_outer"] not in ("exact", "sinkhorn"):
        raise OTDDError(f"otdd_outer={o['otdd_outer']!r}: use 'exact' or 'sinkhorn'")
    if int(o["otdd_p"]) not in (1, 2):
        raise OTDDError(f"otdd_p={o['otdd_p']!r}: use 1 or 2")
    if o["otdd_inner"] == "gaussian" and int(o["otdd_p"]) != 2:
        raise OTDDError("otdd_inner='gaussian' (Bures-Wasserstein) needs otdd_p=2")
    return o


# --------------------------------------------------------------------------------------------
# numerical core (numpy + POT), usable on its own
# --------------------------------------------------------------------------------------------


def pairwise_cost(X1: np.ndarray, X2: np.ndarray, p: int = 2) -> np.ndarray:
    """``|x - x'|^p`` for all pairs (float64), computed with one matrix product."""
    X1 = np.asarray(X1, np.float64)
    X2 = np.asarray(X2, np.float64)
    d2 = (X1 * X1).sum(1)[:, None] + (X2 * X2).sum(1)[None, :] - 2.0 * X1 @ X2.T
    np.maximum(d2, 0.0, out=d2)
    return d2 if p == 2 else np.sqrt(d2)


def cov_factor(Xc: np.ndarray) -> np.ndarray:
    """``L`` (D x r) with ``L L^T`` = the unbiased covariance of the rows of ``Xc``."""
    X = np.asarray(Xc, np.float64)
    n, d = X.shape
    Z = (X - X.mean(0)) / np.sqrt(max(n - 1, 1))
    if n <= d:
        return Z.T.copy()
    w, V = np.linalg.eigh(Z.T @ Z)
    # Any factor with L L^T = S gives the same Bures term (||L^T L'||_* depends only on S and S'),
    # so V sqrt(w) is enough; directions of zero variance (constant pixels) add nothing and are
    # dropped, which makes the per-pair SVDs smaller.
    keep = w > max(float(w[-1]), 0.0) * 1e-12
    return V[:, keep] * np.sqrt(w[keep])


def gaussian_w2(mu1, L1, mu2, L2) -> np.ndarray:
    """Squared 2-Wasserstein distance between every pair of Gaussians, ``(K1, K2)``.

    ``mu*`` are ``(K, D)`` means, ``L*`` lists of ``(D, r_k)`` covariance factors."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    dm = pairwise_cost(mu1, mu2, 2)
    tr1 = np.array([float((L * L).sum()) for L in L1])
    tr2 = np.array([float((L * L).sum()) for L in L2])
    nuc = np.zeros((len(L1), len(L2)))
    r2 = max(L.shape[1] for L in L2)
    B = np.zeros((len(L2), mu2.shape[1], r2))
    for j, L in enumerate(L2):
        B[j, :, : L.shape[1]] = L
    for i, L in enumerate(L1):  # one batched SVD per source class (zero padding adds zeros)
        M = np.matmul(np.asarray(L, np.float64).T[None], B)  # (K2, r1, r2)
        nuc[i] = np.linalg.svd(M, compute_uv=False).sum(-1)
    return np.maximum(dm + tr1[:, None] + tr2[None, :] - 2.0 * nuc, 0.0)


def bures_wasserstein(mu1, S1, mu2, S2) -> float:
    """``W_2^2`` between N(mu1, S1) and N(mu2, S2) by the textbook formula (scipy sqrtm)."""
    from scipy.linalg import sqrtm

    r1 = sqrtm(S1)
    cross = sqrtm(r1 @ S2 @ r1)
    return float(np.sum((np.asarray(mu1) - np.asarray(mu2)) ** 2) + np.trace(S1 + S2 - 2 * np.real(cross)))


def _ot():
    """POT, without its torch backend: dsim hands it numpy arrays only, and POT imports torch
    when it is installed (about 650 MB and seconds; a ranking on pixels needs no torch).
    ``POT_BACKEND_DISABLE_PYTORCH=0`` in the environment keeps the backend."""
    if "ot" not in sys.modules:
        os.environ.setdefault("POT_BACKEND_DISABLE_PYTORCH", "1")
    import ot

    return ot


def exact_label_costs(X1, y1, X2, y2, p: int = 2, progress=None) -> np.ndarray:
    """``W_p^p`` between the feature distributions of every class pair, solved exactly (emd)."""
    ot = _ot()

    c1, c2 = np.unique(y1), np.unique(y2)
    W = np.zeros((len(c1), len(c2)))
    total = len(c1) * len(c2)
    for i, a in enumerate(c1):
        Xa = X1[y1 == a]
        for j, b in enumerate(c2):
            Xb = X2[y2 == b]
            M = pairwise_cost(Xa, Xb, p)
            W[i, j] = ot.emd2(ot.unif(len(Xa)), ot.unif(len(Xb)), M, numItermax=10_000_000)
            if progress:
                progress("otdd: label costs", i * len(c2) + j + 1, total)
    return W


def outer_ot(C: np.ndarray, method: str = "exact", entreg: float = 0.1) -> float:
    ot = _ot()

    a, b = ot.unif(C.shape[0]), ot.unif(C.shape[1])
    if method == "exact":
        return float(ot.emd2(a, b, C, numItermax=10_000_000))
    scale = float(C.max()) or 1.0
    P = ot.sinkhorn(a, b, C / scale, entreg, method="sinkhorn_log", numItermax=2000, stopThr=1e-9)
    return float((P * C).sum())


def otdd_value(rep1: dict, rep2: dict, o: dict[str, Any], progress=None) -> float:
    """The OTDD between two per-dataset representations (dicts of arrays, see the measure)."""
    p = int(o["otdd_p"])
    lx, ly = float(o["otdd_lambda_x"]), float(o["otdd_lambda_y"])

    def label_costs(r1, r2):
        if ly == 0:
            return np.zeros((int(r1["y"].max()) + 1, int(r2["y"].max()) + 1))
        if o["otdd_inner"] == "gaussian":
            return gaussian_w2(r1["means"], _factors(r1), r2["means"], _factors(r2))
        return exact_label_costs(r1["X"], r1["y"], r2["X"], r2["y"], p, progress)

    def cost(r1, r2, W):
        C = lx * pairwise_cost(r1["X"], r2["X"], p) if lx else np.zeros((len(r1["y"]), len(r2["y"])))
        C += ly * W[r1["y"]][:, r2["y"]]
        return C / p

    W12 = label_costs(rep1, rep2)
    value = outer_ot(cost(rep1, rep2, W12), o["otdd_outer"], float(o["otdd_entreg"]))
    if o["otdd_outer"] == "sinkhorn" and o["otdd_debiased"]:
        v11 = outer_ot(cost(rep1, rep1, label_costs(rep1, rep1)), "sinkhorn", float(o["otdd_entreg"]))
        v22 = outer_ot(cost(rep2, rep2, label_costs(rep2, rep2)), "sinkhorn", float(o["otdd_entreg"]))
        value = value - 0.5 * (v11 + v22)
    return float(value)


def _factors(rep: dict) -> list[np.ndarray]:
    F, ranks = rep["factors"], rep["ranks"]
    return [F[k, :, : int(r)] for k, r in enumerate(ranks)]


def class_stats(X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class means and covariance factors, padded into arrays for the cache."""
    K = int(y.max()) + 1
    d = X.shape[1]
    means = np.zeros((K, d))
    facs = []
    for k in range(K):
        Xk = np.asarray(X[y == k], np.float64)
        means[k] = Xk.mean(0)
        facs.append(cov_factor(Xk))
    r = max(f.shape[1] for f in facs)
    F = np.zeros((K, d, r), dtype=np.float64)
    for k, f in enumerate(facs):
        F[k, :, : f.shape[1]] = f
    return {"means": means, "factors": F, "ranks": np.array([f.shape[1] for f in facs])}


def label_sets(data: dsim.ImageSet) -> dsim.ImageSet:
    """A multi-label set as a single-label one whose classes are its distinct label combinations
    (named ``a+b``, ``(none)`` for an image without any label), in order of first appearance."""
    combos, first, inverse = np.unique(data.labels, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # renumber by first appearance, independent of the sort
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    names = tuple("+".join(n for n, v in zip(data.class_names, combos[i]) if v) or "(none)" for i in order)
    return dsim.ImageSet(
        name=data.name,
        images=data.images,
        labels=rank[inverse.reshape(-1)],
        class_names=names,
        source=data.source,
    )


# --------------------------------------------------------------------------------------------
# the measures
# --------------------------------------------------------------------------------------------


class OTDD(dsim.Measure):
    name = "otdd"
    description = (
        "Optimal transport dataset distance, Gaussian (Bures-Wasserstein) label costs "
        "(Alvarez-Melis & Fusi 2020)"
    )
    kind = "distance"
    needs = "images"
    param_ranges = {
        "otdd_inner": dsim.Range(choices=("gaussian", "exact")),
        "otdd_outer": dsim.Range(choices=("exact", "sinkhorn")),
        "otdd_entreg": dsim.Range(float, 0, min_open=True),
        "otdd_image_size": dsim.Range(int, 2, 1024),
        "otdd_channels": dsim.Range(int, 1, 4),
        "otdd_lambda_x": dsim.Range(float, 0),
        "otdd_lambda_y": dsim.Range(float, 0),
        "otdd_p": dsim.Range(int, 1, 2),
        "otdd_max_samples": dsim.Range(int, 2),
        "otdd_min_labelcount": dsim.Range(int, 1),
        "image_size": dsim.Range(int, 8, 4096),
    }

    def __init__(
        self,
        otdd_inner=DEFAULTS["otdd_inner"],
        otdd_outer=DEFAULTS["otdd_outer"],
        otdd_entreg=DEFAULTS["otdd_entreg"],
        otdd_debiased=DEFAULTS["otdd_debiased"],
        otdd_features=DEFAULTS["otdd_features"],
        otdd_image_size=DEFAULTS["otdd_image_size"],
        otdd_channels=DEFAULTS["otdd_channels"],
        otdd_lambda_x=DEFAULTS["otdd_lambda_x"],
        otdd_lambda_y=DEFAULTS["otdd_lambda_y"],
        otdd_p=DEFAULTS["otdd_p"],
        otdd_max_samples=DEFAULTS["otdd_max_samples"],
        otdd_min_labelcount=DEFAULTS["otdd_min_labelcount"],
        probe_weights="imagenet",
        image_size=64,
    ):
        self.otdd_inner = otdd_inner
        self.otdd_outer = otdd_outer
        self.otdd_entreg = otdd_entreg
        self.otdd_debiased = otdd_debiased
        self.otdd_features = otdd_features
        self.otdd_image_size = otdd_image_size
        self.otdd_channels = otdd_channels
        self.otdd_lambda_x = otdd_lambda_x
        self.otdd_lambda_y = otdd_lambda_y
        self.otdd_p = otdd_p
        self.otdd_max_samples = otdd_max_samples
        self.otdd_min_labelcount = otdd_min_labelcount
        self.probe_weights = probe_weights
        self.image_size = image_size

    def _o(self, ctx=None):
        return check_options(self.get_params())

    def config(self, ctx):
        o = self._o(ctx)
        keys = ["otdd_inner", "otdd_features", "otdd_max_samples", "otdd_min_labelcount"]
        if o["otdd_features"] == "pixels":
            keys += ["otdd_image_size", "otdd_channels"]
        cfg = {k: o[k] for k in keys}
        if o["otdd_features"] != "pixels":
            cfg["image_size"] = self.image_size
        cfg.update(seed=ctx.seed, version=1)
        return cfg

    def compare_config(self, ctx) -> dict[str, Any]:
        o = self._o(ctx)
        return {
            k: o[k]
            for k in (
                "otdd_outer",
                "otdd_entreg",
                "otdd_debiased",
                "otdd_lambda_x",
                "otdd_lambda_y",
                "otdd_p",
            )
        }

    def fingerprints(self, ctx):
        o = self._o(ctx)
        if o["otdd_features"] == "pixels":
            return {}
        return {"backbone": self._backbone(ctx).dsim_weights_id}

    def _backbone(self, ctx):
        o = self._o(ctx)
        cache = self.__dict__.setdefault("_models", {})
        key = (o["otdd_features"], str(self.probe_weights), ctx.seed)
        if key not in cache:
            cache[key] = dsim.create_backbone(
                o["otdd_features"],
                weights=str(self.probe_weights),
                num_classes=0,
                seed=ctx.seed,
            )
        return cache[key]

    def features(self, data: dsim.ImageSet, ctx) -> np.ndarray:
        o = self._o(ctx)
        if o["otdd_features"] == "pixels":  # numpy only: a ranking on pixels imports no torch
            out = []
            for s in range(0, len(data), 1024):
                x = dsim.to_array(
                    data.images[s : s + 1024],
                    size=int(o["otdd_image_size"]),
                    channels=int(o["otdd_channels"]),
                )
                out.append(x.reshape(len(x), -1))
            return np.concatenate(out).astype(np.float32)
        return dsim.extract_features(
            self._backbone(ctx),
            data.images,
            size=int(self.image_size),
            device=ctx.torch_device(),
            progress=lambda d, i, t: ctx.progress("otdd: features", i, t),
        )

    def represent(self, data, ctx):
        if not isinstance(data, dsim.ImageSet):
            raise dsim.DsimError(f"otdd needs images of {getattr(data, 'name', data)!r}")
        o = self._o(ctx)
        full = data
        if len(data) > int(o["otdd_max_samples"]):
            data = data.subsample(int(o["otdd_max_samples"]), seed=ctx.seed)
        if data.multilabel:
            data = label_sets(data)
        counts = np.bincount(data.labels)
        keep_classes = np.flatnonzero(counts >= int(o["otdd_min_labelcount"]))
        if len(keep_classes) == 0:
            raise dsim.DsimError(
                f"otdd: dataset {data.name!r} has no class with at least {o['otdd_min_labelcount']} images"
            )
        mask = np.isin(data.labels, keep_classes)
        X = self.features(data, ctx)[mask]
        lut = np.full(counts.size, -1)
        lut[keep_classes] = np.arange(len(keep_classes))
        y = lut[data.labels[mask]].astype(np.int64)
        arrays: dict[str, np.ndarray] = {"X": X, "y": y}
        if o["otdd_inner"] == "gaussian":
            arrays.update(class_stats(X, y))
        meta = {
            "n": int(len(y)),
            "classes": [
                data.class_names[c] if c < len(data.class_names) else str(c) for c in keep_classes.tolist()
            ],
            "dim": int(X.shape[1]),
        }
        if full.multilabel:
            meta.update(label_sets=True, left_out=int(len(data) - len(y)))
        return self.representation(full, ctx, meta=meta, arrays=arrays)

    def compare(self, source, target, ctx):
        o = self._o(ctx)
        if source.arrays["X"].shape[1] != target.arrays["X"].shape[1]:
            raise dsim.DsimError(
                f"otdd: feature dimensions differ ({source.dataset!r}: {source.arrays['X'].shape[1]}, "
                f"{target.dataset!r}: {target.arrays['X'].shape[1]})"
            )
        return otdd_value(
            dict(source.arrays), dict(target.arrays), o, progress=lambda d, i, t: ctx.progress(d, i, t)
        )

    def pair(self, source, target, ctx):
        """Represent both (cached per dataset), then the OT solve, cached per pair."""
        rs = dsim.representation_of(self, source, ctx)
        rt = dsim.representation_of(self, target, ctx)
        key = dsim.stable_hash(
            {"measure": self.name, "source": rs.key, "target": rt.key, "compare": self.compare_config(ctx)}
        )
        if ctx.cache is not None:
            hit = ctx.cache.get_value(key)
            if hit is not None:
                return hit
        value = self.compare(rs, rt, ctx)
        if ctx.cache is not None:
            ctx.cache.put_value(key, value, measure=self.name, source=rs.dataset, target=rt.dataset)
        return value


@dsim.hookimpl
def dsim_register_measures():
    return [OTDD()]

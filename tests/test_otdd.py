"""OTDD: closed forms and invariances (Alvarez-Melis & Fusi 2020; microsoft/otdd)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_file
from scipy.optimize import linear_sum_assignment

import dsim
from dsim_plugins.otdd import (
    OTDD,
    bures_wasserstein,
    class_stats,
    cov_factor,
    exact_label_costs,
    gaussian_w2,
    otdd_value,
)


def _ctx():
    return dsim.Context(seed=0, device="cpu", cache=None)


def _m(**params) -> OTDD:
    return OTDD(**{"otdd_max_samples": 300, **params})


@pytest.fixture(scope="module")
def breast():
    return dsim.load_dataset(str(data_file("breastmnist.npz")), max_samples=200, seed=0)


@pytest.fixture(scope="module")
def usps():
    return dsim.load_dataset(str(data_file("usps_16x16.npz")), max_samples=250, seed=0)


def _spd(rng, d):
    A = rng.normal(size=(d, d))
    return A @ A.T + 0.1 * np.eye(d)


def test_bures_wasserstein_of_known_gaussians_equals_the_formula():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    S1, S2 = _spd(rng, d), _spd(rng, d)
    got = gaussian_w2(mu1[None], [np.linalg.cholesky(S1)], mu2[None], [np.linalg.cholesky(S2)])[0, 0]
    assert got == pytest.approx(bures_wasserstein(mu1, S1, mu2, S2), rel=1e-9)
    # commuting (diagonal) covariances: |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2
    a, b = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = gaussian_w2(mu1[None], [np.diag(np.sqrt(a))], mu2[None], [np.diag(np.sqrt(b))])[0, 0]
    assert got == pytest.approx(closed, rel=1e-12)


def test_covariance_factors_reproduce_the_unbiased_covariance():
    rng = np.random.default_rng(1)
    for n, d in ((5, 12), (40, 6)):  # fewer samples than dimensions, and more
        X = rng.normal(size=(n, d))
        L = cov_factor(X)
        np.testing.assert_allclose(L @ L.T, np.cov(X, rowvar=False), atol=1e-10)
    X = rng.normal(size=(40, 6))
    X[:, 2] = 0.5  # a constant pixel: no variance there, so the factor loses that direction
    L = cov_factor(X)
    assert L.shape == (6, 5)
    np.testing.assert_allclose(L @ L.T, np.cov(X, rowvar=False), atol=1e-10)
    X = rng.normal(size=(30, 4))
    y = np.repeat([0, 1, 2], 10)
    st = class_stats(X, y)
    S1 = np.cov(X[y == 1], rowvar=False)
    got = gaussian_w2(st["means"][:1], [st["factors"][0]], st["means"][1:2], [st["factors"][1]])[0, 0]
    assert got == pytest.approx(
        bures_wasserstein(X[y == 0].mean(0), np.cov(X[y == 0], rowvar=False), X[y == 1].mean(0), S1), rel=1e-8
    )


def test_exact_label_costs_are_assignment_costs():
    rng = np.random.default_rng(2)
    X1, X2 = rng.normal(size=(12, 3)), rng.normal(size=(12, 3)) + 1
    y1, y2 = np.repeat([0, 1], 6), np.repeat([0, 1], 6)
    W = exact_label_costs(X1, y1, X2, y2, p=2)
    for i in range(2):
        for j in range(2):
            C = ((X1[y1 == i][:, None] - X2[y2 == j][None]) ** 2).sum(-1)
            r, c = linear_sum_assignment(C)  # equal sizes, uniform weights: OT = assignment
            assert W[i, j] == pytest.approx(C[r, c].mean(), rel=1e-9)


def test_full_otdd_equals_a_brute_force_assignment():
    rng = np.random.default_rng(3)
    X1, X2 = rng.normal(size=(10, 4)), rng.normal(size=(10, 4)) * 1.5
    y1, y2 = np.array([0] * 5 + [1] * 5), np.array([0] * 4 + [1] * 6)
    o = {
        "otdd_p": 2,
        "otdd_lambda_x": 1.0,
        "otdd_lambda_y": 0.5,
        "otdd_inner": "exact",
        "otdd_outer": "exact",
        "otdd_entreg": 0.1,
        "otdd_debiased": True,
    }
    W = exact_label_costs(X1, y1, X2, y2)
    C = (((X1[:, None] - X2[None]) ** 2).sum(-1) + 0.5 * W[y1][:, y2]) / 2
    r, c = linear_sum_assignment(C)
    got = otdd_value({"X": X1, "y": y1}, {"X": X2, "y": y2}, o)
    assert got == pytest.approx(C[r, c].mean(), rel=1e-9)


@pytest.mark.parametrize("measure", [_m(), _m(otdd_inner="exact")], ids=["gaussian", "exact"])
def test_self_zero_symmetric_and_label_permutation_invariant(measure, breast, usps):
    ctx = _ctx()
    rb, ru = measure.represent(breast, ctx), measure.represent(usps, ctx)
    assert measure.compare(rb, rb, ctx) == pytest.approx(0.0, abs=1e-7)
    d = measure.compare(rb, ru, ctx)
    assert d > 1.0  # ultrasound vs digits: far apart
    assert measure.compare(ru, rb, ctx) == pytest.approx(d, rel=1e-9)
    perm = np.random.default_rng(0).permutation(10)
    renamed = dsim.ImageSet("usps-renamed", usps.images, perm[usps.labels])
    assert measure.compare(rb, measure.represent(renamed, ctx), ctx) == pytest.approx(d, rel=1e-9)


def test_gaussian_and_exact_agree_on_real_data_and_closer_sets_are_closer(breast, usps):
    pneu = dsim.load_dataset(str(data_file("pneumoniamnist.npz")), max_samples=200, seed=0)
    ctx = _ctx()
    vals = {}
    for inner in ("gaussian", "exact"):
        m = _m(otdd_inner=inner)
        rb, ru, rp = (m.represent(x, ctx) for x in (breast, usps, pneu))
        vals[inner] = (m.compare(rb, rp, ctx), m.compare(rb, ru, ctx), m.compare(rp, ru, ctx))
    for a, b in zip(vals["gaussian"], vals["exact"]):
        assert a == pytest.approx(b, rel=0.25)  # different inner costs, same scale
    assert np.argsort(vals["gaussian"]).tolist() == np.argsort(vals["exact"]).tolist()


def test_sinkhorn_outer_is_debiased_and_close_to_exact(breast, usps):
    m = _m(otdd_outer="sinkhorn", otdd_entreg=0.01)
    ctx = _ctx()
    rb, ru = m.represent(breast, ctx), m.represent(usps, ctx)
    assert m.compare(rb, rb, ctx) == pytest.approx(0.0, abs=1e-6)
    exact = _m().compare(rb, ru, ctx)
    assert m.compare(rb, ru, ctx) == pytest.approx(exact, rel=0.05)


def test_subsampling_per_class_is_seeded_and_bounded(usps):
    m = _m(otdd_max_samples=100)
    r1 = m.represent(usps, _ctx())
    r2 = m.represent(usps, _ctx())
    assert len(r1.arrays["y"]) == 100 and np.array_equal(r1.arrays["X"], r2.arrays["X"])
    assert set(np.unique(r1.arrays["y"])) == set(range(10))  # every class keeps its share


def test_options_are_checked_and_pair_values_are_cached(breast, usps, tmp_path):
    with pytest.raises(dsim.DsimError, match="otdd_inner"):
        _m(otdd_inner="sliced").config(_ctx())
    with pytest.raises(dsim.DsimError, match="otdd_p=2"):
        _m(otdd_p=1).config(_ctx())
    cache = dsim.Cache(tmp_path)
    ctx = dsim.Context(seed=0, cache=cache)
    v1 = _m().pair(breast, usps, ctx)
    hits = cache.hits
    v2 = _m().pair(breast, usps, ctx)
    assert v1 == v2 and cache.hits == hits + 2  # both representations from the cache ...
    assert any((tmp_path / "values").rglob("*.json"))  # ... and the OT value too


@pytest.mark.parametrize(
    "shape,size,channels",
    [((4, 64, 64, 3), 28, 1), ((4, 16, 16, 1), 28, 1), ((4, 64, 48, 3), 32, 3), ((3, 30, 30, 3), 28, 1)],
)
def test_pixel_features_in_numpy_are_to_tensors(shape, size, channels):
    """OTDD's pixels are resized in numpy (``dsim.to_array``), as ``dsim.to_tensor`` resizes them
    (bilinear, antialiased when shrinking), to float32 precision."""
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    want = dsim.to_tensor(x, size=size, channels=channels, normalize=False).numpy()
    got = dsim.to_array(x, size=size, channels=channels)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_a_pixel_otdd_ranking_imports_no_torch(tmp_path):
    """A user's .npz ranked against a local source on pixels: no torch (650 MB, seconds)."""
    import os
    import subprocess
    import sys

    data_file("usps_16x16.npz")  # the source's images must be here
    rng = np.random.default_rng(0)
    t = tmp_path / "t.npz"
    np.savez(t, images=rng.integers(0, 255, (60, 32, 32), dtype=np.uint8), labels=np.arange(60) % 2)
    code = (
        "import sys, dsim; r = dsim.rank(sys.argv[1], sources=['usps'], measures='otdd', max_samples=60); "
        "print('VALUE', r.rows[0].contributions['otdd']['value'], 'TORCH', 'torch' in sys.modules)"
    )
    env = {**os.environ, "DSIM_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run(
        [sys.executable, "-c", code, str(t)], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert "TORCH False" in r.stdout and "VALUE None" not in r.stdout, r.stdout

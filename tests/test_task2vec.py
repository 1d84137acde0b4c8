"""Task2Vec: fidelity to the definition (Achille et al. 2019; awslabs/aws-cv-task2vec montecarlo)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_file
from scipy.spatial.distance import cosine

import dsim
from dsim_plugins.task2vec import (
    Task2Vec,
    asymmetric_distance,
    canonical_labels,
    symmetric_distance,
    task2vec_embedding,
)

#: small and fast: 32 px, Fisher from layer3 on, two Fisher batches, one classifier epoch
FAST = {
    "probe_weights": "random",
    "image_size": 32,
    "task2vec_fisher_samples": 128,
    "task2vec_epochs": 1,
}


def _npz(name: str, n: int, seed: int = 0) -> dsim.ImageSet:
    return dsim.load_dataset(str(data_file(name)), max_samples=n, seed=seed)


def _ctx(seed: int = 0) -> dsim.Context:
    return dsim.Context(seed=seed, device="cpu", cache=None, max_samples=96)


def _m(measure=None, **params) -> Task2Vec:
    """Task2Vec with the FAST parameters (and ``params``) set."""
    return (measure or Task2Vec()).with_params(**{**FAST, **params})


@pytest.fixture(scope="module")
def breast():
    return _npz("breastmnist.npz", 96)


@pytest.fixture(scope="module")
def breast_rep(breast):
    return _m().represent(breast, _ctx())


def test_embedding_bit_for_bit_repeatable_and_self_distance_zero(breast, breast_rep):
    again = _m().represent(breast, _ctx())
    h = breast_rep.arrays["hessian"]
    assert h.shape == again.arrays["hessian"].shape and h.size > 1000
    assert np.array_equal(h, again.arrays["hessian"])  # bit for bit, fresh probe and fresh RNG
    assert np.all(h >= 0) and h.max() > 0
    m = Task2Vec()
    assert _m(m).compare(breast_rep, breast_rep, _ctx()) == pytest.approx(0.0, abs=1e-12)
    # a different seed draws other Monte-Carlo labels: not bit-identical, but close
    other = _m(m).represent(breast, _ctx(seed=1))
    assert not np.array_equal(h, other.arrays["hessian"])


def test_label_renaming_gives_the_same_embedding(breast, breast_rep):
    perm = np.array([1, 0])
    renamed = dsim.ImageSet("renamed", breast.images, perm[breast.labels], class_names=("b", "a"))
    rep = _m().represent(renamed, _ctx())
    assert np.array_equal(rep.arrays["hessian"], breast_rep.arrays["hessian"])
    assert canonical_labels(np.array([5, 2, 5, 7, 2])).tolist() == [0, 1, 0, 2, 1]


def test_cached_features_give_the_full_network_fisher_of_the_last_blocks(breast):
    """Fisher from layer3 on cached layer2 outputs == the full-network Fisher's layer3/layer4
    part (eval-mode BN makes the caching exact; same seed, same draws, same MC labels)."""
    opts = {**FAST, "image_size": 32, "task2vec_bn": "eval", "task2vec_precision": "fp32"}  # exact comparison
    data = breast.take(np.arange(64))
    mk = lambda: dsim.create_backbone("resnet18", weights="random", num_classes=2, seed=0)  # noqa: E731
    full = task2vec_embedding(
        data.images, data.labels, mk(), opts={**opts, "task2vec_skip_layers": 0}, seed=3
    )
    tail = task2vec_embedding(
        data.images, data.labels, mk(), opts={**opts, "task2vec_skip_layers": 6}, seed=3
    )
    start = full["names"].index(tail["names"][0])
    assert full["names"][start:] == tail["names"]
    off = sum(full["sizes"][:start])
    np.testing.assert_allclose(full["hessian"][off:], tail["hessian"], rtol=1e-4, atol=1e-12)
    assert full["hessian"][:off].max() > 0  # the earlier layers are embedded too


def test_distances_match_the_published_formulas():
    rng = np.random.default_rng(0)
    a, b = rng.gamma(1.0, 1e-3, 500), rng.gamma(1.0, 1e-3, 500)
    ref = cosine(a / (a + b + 1e-8), b / (a + b + 1e-8))
    assert symmetric_distance(a, b) == pytest.approx(ref, rel=1e-12)
    assert symmetric_distance(a, b) == pytest.approx(symmetric_distance(b, a), rel=1e-12)
    triv = np.ones_like(a)
    expected = ref - 0.15 * cosine(a / (a + triv + 1e-8), triv / (a + triv + 1e-8))
    assert asymmetric_distance(a, b, 0.15) == pytest.approx(expected, rel=1e-12)
    assert asymmetric_distance(a, b) != pytest.approx(asymmetric_distance(b, a))


def test_asymmetric_option_and_bad_option(breast_rep):
    m = Task2Vec()
    sym = _m(m).compare(breast_rep, breast_rep, _ctx())
    asym = _m(m, task2vec_distance="asymmetric").compare(breast_rep, breast_rep, _ctx())
    assert asym < sym  # minus alpha times the (positive) distance to the trivial embedding
    with pytest.raises(dsim.DsimError, match="task2vec_distance"):
        _m(m, task2vec_distance="kl").compare(breast_rep, breast_rep, _ctx())


@pytest.mark.slow
def test_different_tasks_are_farther_than_two_samples_of_one(breast):
    pneu = _npz("pneumoniamnist.npz", 96)
    m, ctx = _m(task2vec_fisher_samples=640), _ctx()
    full = _npz("breastmnist.npz", 400)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(full))
    a1, a2 = full.take(np.sort(idx[:96])), full.take(np.sort(idx[96:192]))
    ra1, ra2, rp = (m.represent(d, ctx) for d in (a1, a2, pneu))
    assert m.compare(ra1, ra2, ctx) < m.compare(ra1, rp, ctx)


def test_fingerprint_holds_the_probe_weights_and_imagenet_without_weights_skips():
    m = Task2Vec()
    f0 = _m(m).fingerprints(_ctx())
    f1 = _m(m).fingerprints(_ctx(seed=1))
    assert f0["probe"] != f1["probe"]  # another random init is another probe
    probe = dsim.create_backbone("resnet18", weights="random", num_classes=2, seed=0)
    assert f0["probe"] == probe.dsim_weights_id
    with pytest.raises(dsim.WeightsMissingError):
        _m(m, probe_weights="imagenet", probe="resnet10t").fingerprints(_ctx())


def test_cats_scans_protocol_averages_random_subset_pairs(breast):
    m = _m(task2vec_protocol="cats-scans", task2vec_subsets=2, task2vec_subset_min=40, task2vec_pairs=5)
    ctx = _ctx()
    ra = m.represent(breast, ctx)
    rb = m.represent(_npz("pneumoniamnist.npz", 96), ctx)
    assert ra.arrays["hessians"].shape[0] == 2 and ra.meta["subset_size"] == 40
    d = m.compare(ra, rb, ctx)
    every = [symmetric_distance(x, y) for x in ra.arrays["hessians"] for y in rb.arrays["hessians"]]
    assert min(every) - 1e-12 <= d <= max(every) + 1e-12
    assert d == m.compare(ra, rb, ctx)  # the pairs are drawn with a seed


def test_label_draws_share_one_forward_pass_exactly():
    """``task2vec_label_draws`` reuses one forward pass for several label draws (retain_graph):
    each draw's squared batch gradient equals the one from its own forward pass on the same
    inputs, so the estimator's expectation is the reference's."""
    import torch
    import torch.nn.functional as F

    from dsim_plugins.task2vec import _Probe, _set_bn

    model = dsim.create_backbone("resnet18", weights="random", num_classes=3, seed=0)
    probe = _Probe(model, 6)
    _set_bn(model, "train")
    for p in model.parameters():
        p.requires_grad_(False)
    for p in probe.weights:
        p.requires_grad_(True)
    x = torch.randn(16, 128, 4, 4, generator=torch.Generator().manual_seed(0))
    ys = torch.randint(0, 3, (3, 16), generator=torch.Generator().manual_seed(1))
    out = probe.forward_from(x, 6)
    shared = [
        torch.autograd.grad(F.cross_entropy(out, ys[d]), probe.weights, retain_graph=d < 2) for d in range(3)
    ]
    for d in range(3):
        own = torch.autograd.grad(F.cross_entropy(probe.forward_from(x, 6), ys[d]), probe.weights)
        for a, b in zip(shared[d], own):
            assert torch.allclose(a**2, b**2, rtol=1e-5, atol=1e-12)


def test_label_draws_estimate_agrees_with_one_draw_per_forward(breast):
    """Same expectation: k label draws per forward pass give an embedding as close to the
    one-draw-per-forward one as two seeds of the latter are to each other (up to noise)."""
    m = Task2Vec()
    opts = {"task2vec_fisher_samples": 512}
    k1 = _m(m, task2vec_label_draws=1, **opts).represent(breast, _ctx()).arrays["hessian"]
    k4 = _m(m, task2vec_label_draws=4, **opts).represent(breast, _ctx()).arrays["hessian"]
    k1b = _m(m, task2vec_label_draws=1, **opts).represent(breast, _ctx(seed=1)).arrays["hessian"]
    from scipy.stats import spearmanr

    assert spearmanr(k1, k4).correlation > 0.95
    assert symmetric_distance(k1, k4) < 3 * symmetric_distance(k1, k1b) + 1e-3
    with pytest.raises(dsim.DsimError, match="task2vec_label_draws"):
        _m(m, task2vec_label_draws=0).represent(breast, _ctx())


def test_bf16_precision_keeps_the_embedding_and_is_part_of_the_cache_key(breast):
    """bf16 autocast of the Fisher passes (float32 accumulation) gives the fp32 embedding up to
    Monte-Carlo-level noise; the resolved precision is in the config, so caches never mix them."""
    from scipy.stats import spearmanr

    from dsim_plugins.task2vec import Task2VecError, resolve_precision

    m = Task2Vec()
    opts = {"task2vec_fisher_samples": 512}
    f32 = _m(m, task2vec_precision="fp32", **opts).represent(breast, _ctx()).arrays["hessian"]
    b16 = _m(m, task2vec_precision="bf16", **opts).represent(breast, _ctx()).arrays["hessian"]
    other_seed = _m(m, task2vec_precision="fp32", **opts).represent(breast, _ctx(seed=1)).arrays["hessian"]
    assert not np.array_equal(f32, b16)  # it really ran in bf16
    assert spearmanr(f32, b16).correlation > 0.98
    assert symmetric_distance(f32, b16) < 2 * symmetric_distance(f32, other_seed) + 1e-3
    assert _m(m, task2vec_precision="fp32").config(_ctx())["precision"] == "fp32"
    assert _m(m, task2vec_precision="bf16").config(_ctx())["precision"] == "bf16"
    assert resolve_precision("auto", "cpu") in ("fp32", "bf16")
    with pytest.raises(Task2VecError, match="task2vec_precision"):
        resolve_precision("fp8", "cpu")


def test_threads_option_is_restored_and_changes_nothing(breast, breast_rep):
    import torch

    before = torch.get_num_threads()
    rep = _m(None, task2vec_threads=1).represent(breast, _ctx())
    assert torch.get_num_threads() == before
    assert np.allclose(rep.arrays["hessian"], breast_rep.arrays["hessian"], rtol=1e-3, atol=1e-12)


def test_run_time_estimate_is_reported_and_sane(tmp_path):
    """dsim.measure asks task2vec for an estimate before the work and hands it to the progress
    callback's ``estimate``; it is within a sane factor of the real time (not a speed test)."""
    import time

    calls = []

    class Prog:
        def __call__(self, *a):
            pass

        def estimate(self, measure, seconds, n_sources):
            calls.append((measure, seconds, n_sources))

    src, tgt = str(data_file("breastmnist.npz")), str(data_file("pneumoniamnist.npz"))
    t0 = time.perf_counter()
    out = dsim.measure(
        src,
        tgt,
        "task2vec",
        max_samples=96,
        device="cpu",
        progress=Prog(),
        options={**FAST, "task2vec_fisher_samples": 256},
        cache=dsim.Cache(tmp_path),
    )
    real = out["timings"]["measure_s"]
    assert time.perf_counter() - t0 >= real
    assert len(calls) == 1 and calls[0][0] == "task2vec" and calls[0][2] == 1
    assert real / 10 < calls[0][1] < real * 10
    # everything cached now: nothing to estimate, nothing reported
    dsim.measure(
        src,
        tgt,
        "task2vec",
        max_samples=96,
        device="cpu",
        progress=Prog(),
        options={**FAST, "task2vec_fisher_samples": 256},
        cache=dsim.Cache(tmp_path),
    )
    assert len(calls) == 1
    # no estimate method on the callback: nothing is asked, nothing fails
    dsim.measure(
        src,
        tgt,
        "task2vec",
        max_samples=96,
        device="cpu",
        progress=lambda *a: None,
        options={**FAST, "task2vec_fisher_samples": 256},
        cache=dsim.Cache(tmp_path),
    )


def test_cli_prints_the_estimate_line_only_for_long_work(capsys):
    from dsim.cli._util import Progress, format_duration

    p = Progress(enabled=True)
    p.estimate("task2vec", 5.0, 6)
    p.estimate("task2vec", 185.0, 6)
    err = capsys.readouterr()
    assert err.out == "" and err.err == "task2vec: about 3 min for 6 sources (estimate)\n"
    Progress(enabled=False).estimate("task2vec", 500.0, 2)  # --json / --csv: quiet
    assert capsys.readouterr().err == ""
    assert format_duration(40) == "40 s" and format_duration(2 * 3600) == "2.0 h"


def test_variational_fisher_embeds_every_conv_filter_repeatably(breast):
    """``task2vec_method=variational`` (the reference's second method): one value per conv filter
    after the skipped layers (exp(-logvar), positive), the layer prior as trivial embedding,
    bit-for-bit repeatable, and a cache key of its own."""
    opts = {"task2vec_method": "variational", "task2vec_variational_samples": 256}
    m = Task2Vec()
    a = _m(m, **opts).represent(breast, _ctx())
    b = _m(m, **opts).represent(breast, _ctx())
    h, scale = a.arrays["hessian"], a.arrays["scale"]
    assert np.array_equal(h, b.arrays["hessian"])
    assert (
        h.shape == scale.shape == (5 * 256 + 5 * 512,)
    )  # layer3 + layer4 convs (incl. downsample) of resnet18
    assert np.all(h > 0) and np.all(scale > 0)
    assert [n.split(".")[-1] for n in a.meta["names"]][:3] == ["conv1", "conv2", "0"]
    assert (
        _m(m, **opts).config(_ctx())["method"] == "variational"
        and _m(m).config(_ctx())["method"] == "montecarlo"
    )
    other = _m(m, **opts).represent(_npz("usps_16x16.npz", 96), _ctx())
    d = _m(m, **opts, task2vec_distance="asymmetric").compare(a, other, _ctx())
    assert d == pytest.approx(
        symmetric_distance(h, other.arrays["hessian"]) - 0.15 * symmetric_distance(h, scale)
    )
    with pytest.raises(dsim.DsimError, match="task2vec_method"):
        _m(m, task2vec_method="laplace").represent(breast, _ctx())

"""The transferability score functions of dsim_plugins.score_functions against their definitions:
hand-computable cases, invariances, seeded determinism, the direction of every score (separated
classes above shuffled labels), one-line errors for bad input, and real images."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import data_file

import dsim
from dsim_plugins import model_scores
from dsim_plugins import score_functions as sf

FEATURE_SCORES = [n for n, s in sf.SCORES.items() if s.needs == "features"]
LOGIT_SCORES = [n for n, s in sf.SCORES.items() if s.needs == "logits"]


def _value(name, labels, features=None, logits=None):
    s = sf.SCORES[name]
    out = s.compute(labels, features=features, logits=logits)
    return out.ncc if name == "ncti" else out


@pytest.fixture(scope="module")
def blobs():
    """Three classes of 30 images, 60 features; the class centres 6 noise sd apart."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    centres = rng.normal(0, 6.0, (3, 60))
    f = centres[y] + rng.normal(size=(90, 60))
    logits = np.eye(3)[y] @ rng.normal(0, 3.0, (3, 8)) + rng.normal(0, 0.3, (90, 8))
    return f, y, logits, rng.permutation(y)


def test_the_table_names_the_studys_and_dsims_scores():
    assert {"logme", "leep", "nleep", "ncti", "parc", "sfda", "lp", "fu", "nce", "h-score", "knn"} <= set(
        sf.SCORES
    )
    for name, s in sf.SCORES.items():
        assert s.name == name and callable(s) and s.needs in {"features", "logits", "model"}
    assert [n for n, s in sf.SCORES.items() if s.relative] == ["ncti"]
    # moved, not copied: the measure classes use the very same functions
    for fn in ("leep", "nce", "h_score", "logme", "knn_auc"):
        assert getattr(model_scores, fn) is getattr(sf, fn)
    assert model_scores.ScoreError is sf.ScoreError and issubclass(sf.ScoreError, dsim.DsimError)


def test_logit_scores_take_softmax_or_argmax_of_the_logits(blobs):
    _, y, logits, _ = blobs
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert sf.SCORES["leep"].compute(y, logits=logits) == pytest.approx(sf.leep(p, y), rel=1e-12)
    assert sf.SCORES["nce"].compute(y, logits=logits) == sf.nce(logits.argmax(1), y)
    with pytest.raises(sf.ScoreError, match="logits"):
        sf.SCORES["leep"].compute(y, features=logits)


def test_parc_by_its_formula_on_five_images():
    f = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 1.0], [0.5, 3.0, 2.0], [4.0, 0.0, 1.5], [3.0, 1.0, 0.0]])
    y = np.array([0, 0, 1, 1, 2])
    # 5 images < 32 components and 3 features < 5: no PCA; standardise each column (1/n variance)
    z = (f - f.mean(0)) / f.std(0)

    def pearson(a, b):
        a, b = a - a.mean(), b - b.mean()
        return (a @ b) / math.sqrt((a @ a) * (b @ b))

    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    rdm_f = np.array([1 - pearson(z[i], z[j]) for i, j in pairs])
    rdm_y = np.array([0.0 if y[i] == y[j] else 3 / 2 for i, j in pairs])  # 1 - r of one-hots: C/(C-1)

    def ranks(v):  # average ranks of ties, 1-based
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(1, len(v) + 1)
        for x in np.unique(v):
            r[v == x] = r[v == x].mean()
        return r

    expected = 100 * pearson(ranks(rdm_f), ranks(rdm_y))
    assert sf.parc(f, y) == pytest.approx(expected, rel=1e-10)
    assert sf.parc(f, np.array([5, 5, 9, 9, 1])) == pytest.approx(expected, rel=1e-10)  # label names


def test_sfda_is_two_shrunk_lda_fits_around_the_confmix(blobs):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 40)
    f = 0.15 * rng.normal(size=(120, 6)) + 0.4 * np.eye(3, 6)[y]
    f[:, 0] *= 3  # one dominant within-class direction: three power steps find lambda_max exactly
    centred = f - np.stack([f[y == c].mean(0) for c in range(3)])[y]
    sw = centred.T @ centred / len(f)  # sum_c pi_c cov_c
    s = max(math.exp(-5 * np.linalg.eigvalsh(sw)[-1]), 1e-10)
    assert 1e-3 < s < 0.9  # the shrinkage matters in this case

    def posteriors(x):  # sklearn's LDA shrinks each class covariance: the same (1-s) Sw + s tr/d I
        return LinearDiscriminantAnalysis(solver="lsqr", shrinkage=s).fit(x, y).predict_proba(x)

    p = posteriors(f)
    q = (np.exp(p) / np.exp(p).sum(1, keepdims=True))[np.arange(120), y][:, None]
    means = np.stack([f[y == c].mean(0) for c in range(3)])
    others = np.stack([means[[k for k in range(3) if k != c]].mean(0) for c in range(3)])
    mixed = q * f + (1 - q) * others[y]
    expected = posteriors(mixed)[np.arange(120), y].mean()
    assert sf.sfda(f, y) == pytest.approx(expected, rel=1e-8)

    # invariances: class names and the order of the images
    f2, y2, _, _ = blobs
    base = sf.sfda(f2, y2)
    assert sf.sfda(f2, np.array([7, 3, 11])[y2]) == pytest.approx(base, rel=1e-10)
    order = np.random.default_rng(2).permutation(len(y2))
    assert sf.sfda(f2[order], y2[order]) == pytest.approx(base, rel=1e-10)


def test_nleep_is_leep_over_the_seeded_mixture_posteriors(blobs):
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    f, y, _, _ = blobs
    z = PCA(n_components=0.8, random_state=3).fit(f).transform(f)
    post = GaussianMixture(n_components=15, random_state=3).fit(z).predict_proba(z)
    assert sf.nleep(f, y, seed=3, log=True) == pytest.approx(sf.leep(post, y), rel=1e-10)
    # the study's (and SFDA authors') variant: the mean of p(y|x), without the log
    joint = np.eye(3)[y].T @ post / len(y)
    p_true = (post @ (joint / joint.sum(0)).T)[np.arange(len(y)), y]
    assert sf.nleep(f, y, seed=3) == pytest.approx(p_true.mean(), rel=1e-10)
    # seeded: the same seed, the same value; label names never matter (the mixture ignores labels)
    assert sf.nleep(f, y, seed=3) == sf.nleep(f, y, seed=3)
    assert sf.nleep(f, np.array([2, 0, 1])[y], seed=3) == pytest.approx(sf.nleep(f, y, seed=3), rel=1e-12)
    # order of the images: the k-means start depends on it, the clusters of separated classes do not
    order = np.random.default_rng(4).permutation(len(y))
    a = sf.nleep(f, y, component_ratio=1, seed=0)
    assert sf.nleep(f[order], y[order], component_ratio=1, seed=0) == pytest.approx(a, abs=1e-6)
    with pytest.raises(sf.ScoreError, match="mixture components"):
        sf.nleep(f[::9], y[::9])  # 10 images, 3 classes x 5 components


def test_lp_votes_among_five_neighbours_including_the_image_itself(blobs):
    f, y, _, shuffled = blobs
    v = sf.lp(f, shuffled)
    assert 0.2 <= v <= 1  # each image is one of its own 5 neighbours
    assert v * 5 * len(y) == pytest.approx(round(v * 5 * len(y)), abs=1e-9)  # a sum of fifths
    assert sf.lp(f, y) == 1.0  # separated classes: all five neighbours agree
    assert sf.lp(f, shuffled, seed=7) == sf.lp(f, shuffled, seed=7)


def test_ncti_parts_at_neural_collapse_and_their_combination(blobs):
    f, y, _, shuffled = blobs
    sep = sf.ncti(f, y)
    # collapsed predictions are one-hot: each class's posterior matrix has nuclear norm sqrt(n_c)
    assert sep.ncc == pytest.approx(1.0, abs=1e-9)
    assert sep.vc == pytest.approx(math.log(3 * math.sqrt(30)), rel=1e-9)
    shuf = sf.ncti(f, shuffled)
    assert sep.seli > shuf.seli and sep.ncc > shuf.ncc and sep.vc < shuf.vc
    # min-max over the candidates, seli' + ncc' - vc' (the study: + vc')
    parts = [(1.0, 0.5, 2.0), (3.0, 0.7, 1.0), (2.0, 0.6, 3.0)]
    assert sf.ncti_combine(parts) == pytest.approx([0 + 0 - 0.5, 1 + 1 - 0, 0.5 + 0.5 - 1])
    assert sf.ncti_combine(parts, vc_sign=1) == pytest.approx([0.5, 2.0, 2.0])
    assert list(sf.ncti_combine([sep, shuf])) == [2.0, -1.0]
    assert sf.lp_fu_combine([0.5, 1.0, 0.75], [2.0, 4.0, 1.0]) == pytest.approx([0.0, 1.0, 0.0])
    with pytest.raises(sf.ScoreError, match="one value per candidate"):
        sf.lp_fu_combine([1.0, 2.0], [1.0])


@pytest.mark.parametrize("name", FEATURE_SCORES + LOGIT_SCORES)
def test_separated_classes_score_above_shuffled_labels(blobs, name):
    f, y, logits, shuffled = blobs
    assert _value(name, y, f, logits) > _value(name, shuffled, f, logits)


def test_seeded_scores_are_deterministic(blobs):
    f, _, _, shuffled = blobs
    for name in ("nleep", "parc", "lp", "ncti"):
        assert sf.SCORES[name](f, shuffled, seed=5) == sf.SCORES[name](f, shuffled, seed=5)


@pytest.mark.parametrize("name", FEATURE_SCORES + LOGIT_SCORES)
def test_bad_input_is_a_one_line_error_naming_the_score(blobs, name):
    f, y, logits, _ = blobs
    arg = "features" if name in FEATURE_SCORES else "logits"
    x = f if arg == "features" else logits
    bad_cases = {
        "two or more classes": (x, np.zeros(len(y), int)),
        "2-D": (x[:, 0], y),
        "labels": (x, y[:-1]),
        "not finite": (np.where(np.arange(len(y))[:, None] == 4, np.nan, x), y),
    }
    for expect, (xx, yy) in bad_cases.items():
        with pytest.raises(sf.ScoreError, match=expect) as err:
            sf.SCORES[name].compute(yy, **{arg: xx})
        assert "\n" not in str(err.value)
        assert str(err.value).startswith(name if name != "knn" else "knn")


def test_leep_refuses_logits_for_probabilities(blobs):
    _, y, logits, _ = blobs
    with pytest.raises(sf.ScoreError, match="row 0 sums to .*pass a softmax"):
        sf.leep(np.exp(logits), y)
    with pytest.raises(sf.ScoreError, match="negative in row"):
        sf.leep(logits, y)


# --------------------------------------------------------------------------------------------
# FU
# --------------------------------------------------------------------------------------------


def test_triplet_margin_loss_by_hand():
    import torch

    emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])  # unit vectors already
    y = torch.tensor([0, 0, 1, 1])
    d = torch.cdist(emb, emb)
    losses = []
    for a in range(4):
        for p in range(4):
            for n in range(4):
                if a != p and y[a] == y[p] and y[n] != y[a]:
                    v = float(d[a, p] - d[a, n]) + 0.5
                    if v > 0:
                        losses.append(v)
    assert losses  # margin 0.5 makes some triplets violate
    got = sf._triplet_margin_loss(emb * 3.0, y, margin=0.5, chunk=2)  # scale-free: L2-normalised
    assert float(got) == pytest.approx(sum(losses) / len(losses), rel=1e-6)
    assert float(sf._triplet_margin_loss(emb, y, margin=-10.0)) == 0.0  # no violation: zero loss


def _tiny_net():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 5, 3, padding=1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )


def test_fu_is_the_ratio_of_mean_gradient_norms_over_batches():
    import torch

    net = _tiny_net()
    x = torch.randn(14, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    y = np.array([0, 1] * 7)
    norms = {0: [], 2: []}
    for s in range(0, 14, 7):  # 2 batches of 14 // 2 images
        net.zero_grad()
        sf._triplet_margin_loss(net(x[s : s + 7]), torch.as_tensor(y[s : s + 7]), 0.05).backward()
        for i in norms:
            norms[i].append(float(net[i].weight.grad.norm()))
    expected = np.mean(norms[2]) / np.mean(norms[0])
    assert sf.fu(net, x, y, first="0", second="2", n_batches=2) == pytest.approx(expected, rel=1e-6)
    assert sf.fu(net, x.numpy(), y, first=net[0], second=net[2], n_batches=2) == pytest.approx(
        expected, rel=1e-6
    )
    with pytest.raises(sf.ScoreError, match="zero gradient"):  # each batch one class: no triplet
        sf.fu(net, x, np.repeat([0, 1], 7), first="0", second="2", n_batches=2)
    with pytest.raises(sf.ScoreError, match="no layer 'conv9'"):
        sf.fu(net, x, y, first="conv9", second="2")
    with pytest.raises(sf.ScoreError, match="batches of 1"):
        sf.fu(net, x, y, first="0", second="2", n_batches=8)


# --------------------------------------------------------------------------------------------
# real images
# --------------------------------------------------------------------------------------------


def test_pixel_features_of_real_chest_xrays_carry_their_labels():
    from sklearn.decomposition import PCA

    data = dsim.load_dataset(str(data_file("pneumoniamnist.npz")), max_samples=150, seed=0)
    px = data.images.reshape(len(data), -1).astype(np.float64) / 255.0
    f = PCA(n_components=20, random_state=0).fit_transform(px)
    y = data.labels
    shuffled = np.random.default_rng(0).permutation(y)
    for name in FEATURE_SCORES:
        assert np.isfinite(_value(name, y, f)), name
        assert _value(name, y, f) > _value(name, shuffled, f), name

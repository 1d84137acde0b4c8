"""The filter-structure score (Fok 2019's share of structural filters, made a permutation test):
calibrated on random kernels, high on edges and ramps, blind to colour blobs, and the `dsim
filters` command with its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gen_data import one_torch_thread  # noqa: F401 (autouse fixture)

import dsim
from dsim_plugins import filter_structure as fs


def ramps(n: int, size: int = 3, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """Colour edge/ramp kernels (n, 3, size, size) at random orientations, plus a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    out = np.empty((n, 3, size, size))
    for i in range(n):
        t = rng.uniform(0, np.pi)
        ramp = np.cos(t) * xx + np.sin(t) * yy
        colour = rng.normal(size=3)
        out[i] = colour[:, None, None] * ramp + noise * rng.normal(size=(3, size, size))
    return out


@pytest.mark.parametrize("method", fs.METHODS)
def test_iid_random_kernels_score_about_the_threshold(method):
    """Under the null (values placed at random) a filter is called structured with probability
    about `threshold`, whatever the statistic: the score of a random-init layer is ~0.05."""
    k = np.random.default_rng(1).normal(size=(400, 3, 3, 3))
    share = fs.structured_share(k, method=method, n_null=199, seed=0, threshold=0.05)
    assert 0.015 < share < 0.095, f"{method}: {share:.3f} of i.i.d. kernels called structured"


def test_edges_are_structured_colour_blobs_and_their_shuffles_are_not():
    edges = ramps(60, seed=2)
    t = fs.structure_test(edges, "autocorr", n_null=199)
    assert t["structured"].mean() > 0.9 and (t["p"] < 0.02).mean() > 0.8
    rng = np.random.default_rng(3)
    blobs = rng.normal(size=(60, 3, 1, 1)) + 0.05 * rng.normal(size=(60, 3, 3, 3))  # a colour each
    assert fs.structured_share(blobs, method="autocorr", n_null=199) < 0.15
    flat = edges.reshape(60, 3, 9)
    shuffled = np.stack([f[:, rng.permutation(9)] for f in flat]).reshape(edges.shape)
    assert fs.structured_share(shuffled, method="autocorr", n_null=199) < 0.2


def test_fine_gratings_need_the_directional_statistic():
    """Stripes one pixel wide alternate across but agree along: isotropic Moran's I misses them,
    the largest directional autocorrelation finds them."""
    rng = np.random.default_rng(4)
    x = np.arange(16)
    stripes = np.where(x % 2 == 0, 1.0, -1.0)[None, None, :].repeat(16, axis=1)  # (1, 16, 16)
    imgs = stripes[None] + 0.3 * rng.normal(size=(20, 1, 16, 16))
    assert fs.structured_share(imgs, method="autocorr", n_null=99) == 0.0
    assert fs.structured_share(imgs, method="directional", n_null=99) == 1.0


def test_effect_floor_decides_for_large_images():
    """With 1 024 positions a faint smoothness is 'significant'; the effect floor keeps it out."""
    rng = np.random.default_rng(5)
    noise = rng.normal(size=(10, 1, 32, 32))
    faint = noise + 0.3 * np.roll(noise, 1, axis=-1)  # lag-1 correlation 0.28 along x only: I < 0.1
    t = fs.structure_test(faint, "autocorr", n_null=99)
    assert (t["p"] < 0.05).all() and not t["structured"].any()
    strong = sum(np.roll(noise, (a, b), axis=(-2, -1)) for a in range(3) for b in range(3))  # a 3x3 blur
    assert fs.structure_test(strong, "autocorr", n_null=99)["structured"].all()


def test_seeded_and_checked():
    k = np.random.default_rng(6).normal(size=(5, 3, 3, 3))
    a, b = fs.structure_test(k, n_null=99, seed=3), fs.structure_test(k, n_null=99, seed=3)
    assert np.array_equal(a["p"], b["p"])
    with pytest.raises(dsim.UnknownOptionError, match="spectrl"):
        fs.structure_test(k, method="spectrl")
    with pytest.raises(fs.FilterError, match=r"\(n, C, h, w\)"):
        fs.structure_test(np.zeros((4, 3)))


def _smallcnn(seed=0):
    return dsim.create_backbone("smallcnn-w16", weights="random", seed=seed)


def test_score_model_reads_the_first_layer_and_is_cached_by_content(tmp_path):
    import torch

    # the default layer: the deepest whose output is still 4 x 4 at the image size (smallcnn halves it 3x)
    assert fs.FilterStructure().layer_name(_smallcnn()) == "features.12"  # 32 px -> 4 x 4
    assert fs.FilterStructure(image_size=28).layer_name(_smallcnn()) == "features.8"  # 28 px -> 3 x 3 at .12
    measure = fs.FilterStructure(layer="first", view="kernels", n_null=199)
    assert measure.kind == "score" and measure.needs == "checkpoint"
    model = _smallcnn()
    random_score = measure.score_model(model)
    conv = fs.conv_layers(model)["features.0"]
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(ramps(16, seed=7)).float())
    model.dsim_weights_id = "ramps"
    assert random_score <= 0.25 and measure.score_model(model) > 0.8
    cache = dsim.Cache(tmp_path)
    first = measure.score_model(model, cache=cache)
    assert cache.get_value(measure.value_key(model)) == first
    assert measure.value_key(model) != measure.with_params(threshold=0.01).value_key(model)
    assert measure.value_key(model) != measure.value_key(_smallcnn(seed=1))
    with pytest.raises(fs.FilterError, match="score_model"):
        measure.pair(dsim.get_registry().get("usps"), dsim.get_registry().get("usps"), dsim.Context())


def test_activation_maximisation_raises_its_channel_and_leaves_the_model_as_it_was():
    import torch

    model = _smallcnn().train()
    acts = {}
    conv = fs.conv_layers(model)["features.8"]
    conv.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    imgs = fs.activation_maximisation(model, "features.8", [0, 5], image_size=16, steps=20, seed=1)
    assert imgs.shape == (2, 3, 16, 16) and np.abs(imgs).max() <= fs.AM_CLIP
    assert model.training and all(p.requires_grad for p in model.parameters())
    model.eval()
    start = fs.AM_INIT_STD * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(start)
        before = acts["a"][[0, 1], [0, 5]].mean(dim=(1, 2))
        model(torch.from_numpy(imgs).float())
        after = acts["a"][[0, 1], [0, 5]].mean(dim=(1, 2))
    assert (after > before + 0.1).all()
    again = fs.activation_maximisation(model, "features.8", [0, 5], image_size=16, steps=20, seed=1)
    assert np.allclose(imgs, again)
    with pytest.raises(fs.FilterError, match="no channel 999"):
        fs.activation_maximisation(model, "features.8", [999])


def test_unknown_layer_lists_the_valid_ones():
    with pytest.raises(fs.FilterError) as e:
        fs.resolve_layer(_smallcnn(), "features.9")
    msg = str(e.value)
    assert (
        "\n" not in msg and "did you mean" in msg and "features.0, features.4, features.8, features.12" in msg
    )


@pytest.fixture
def shared_weights(monkeypatch):
    from conftest import REPO

    d = REPO.parent / "shared" / "weights"
    if not (d / "mobilenetv1_x0.25_imagenet.pth").exists():
        pytest.skip("../shared/weights is not beside the repo")
    monkeypatch.setenv("DSIM_WEIGHTS_DIR", str(d))
    return d


def test_trained_checkpoints_have_more_structure_than_their_random_init(shared_weights):
    """The shared ImageNet MobileNet's deeper channels maximise into textures, its random-init
    copy's into noise; CIFAR ResNet-20's first-layer kernels are edges far more often than chance."""
    am = fs.FilterStructure(
        layer="stage2.0.3", view="images", image_size=32, steps=32, max_channels=16, n_null=99
    )
    imagenet = am.score_model(dsim.create_backbone("mobilenetv1-x0.25", weights="imagenet"))
    random_init = am.score_model(dsim.create_backbone("mobilenetv1-x0.25", weights="random"))
    assert imagenet >= 0.75 and random_init <= 0.1
    kernels = fs.FilterStructure(layer="first", view="kernels", n_null=199)
    cifar = kernels.score_model(dsim.create_backbone("cifar-resnet20", weights="cifar10"))
    assert cifar >= 0.25 > kernels.score_model(dsim.create_backbone("cifar-resnet20", weights="random"))


def test_dsim_filters_writes_the_figure_and_scores(tmp_path, capsys):
    from dsim.cli import main

    out = tmp_path / "f.png"
    args = ["filters", "--arch", "smallcnn-w16", "--weights", "random", "--compare-weights", "random"]
    args += ["--layer", "features.4", "--out", str(out), "--n-null", "49", "--steps", "8"]
    args += ["--max-channels", "8", "--image-size", "16", "--seed", "2", "--json"]
    assert main(args) == 0
    rep = json.loads(capsys.readouterr().out)
    assert out.stat().st_size > 10_000 and rep["figure"] == str(out)
    assert len(rep["checkpoints"]) == 2
    panels = rep["checkpoints"][0]["panels"]
    assert [(p["layer"], p["view"], p["filters"]) for p in panels] == [
        ("features.0", "kernels", 16),
        ("features.4", "images", 8),
    ]
    assert all(0 <= p["share"] <= 1 and len(p["p"]) == p["filters"] for p in panels)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--arch", "smallcnn-w16", "--weights", "/nonexistent/ck.pt"], ["/nonexistent/ck.pt", "not found"]),
        (["--arch", "smallcnnn", "--weights", "random"], ["unknown backbone", "smallcnn"]),
        (["--arch", "smallcnn-w16", "--weights", "random", "--layer", "conv9"], ["conv9", "features.12"]),
    ],
)
def test_dsim_filters_errors_are_one_line(extra, words, tmp_path, capsys):
    from dsim.cli import main

    assert main(["filters", *extra, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and all(w in err for w in words)
    assert not (tmp_path / "x.png").exists()

"""``filter-structure``: the share of a checkpoint's filters with spatial structure, from the
network alone (no data). ``dsim filters`` draws the filters and prints the score.

Fok's BSc thesis ("Transfer learning from non-medical source data to medical datasets", TU/e
2019; code github.com/tueimage/transfer-medical-bsc-2018) visualised the filters of each
pretrained VGG16 by activation maximisation and sorted them by eye into *structural* (complex,
directional) and *non-structural* (colour blobs, noise); the share of structural filters followed
the success of fine-tuning from that source (ImageNet 79 %, Retina 40 %, Cat/Dog 30 %, Natural
14 %, Chest 6 %, the Chest model excepted). This module replaces the eye by a test.

**A filter** is an array ``(C, h, w)``, a ``C``-vector at each of ``h*w`` positions: a kernel of a
conv layer (``view="kernels"``; ``C`` = its input channels) or the activation-maximisation image
of one channel of a layer (``view="images"``; ``C`` = the network's input channels).

**Per filter, a permutation test of its spatial arrangement** (:func:`structure_test`). The
per-channel spatial mean is removed first (so a colour blob, a constant colour, leaves only its
residue), then a statistic of the arrangement is compared with the same statistic of ``n_null``
copies whose positions are shuffled (one permutation for all channels: each position keeps its
colour, only where it sits changes). Two numbers come out: the one-sided permutation p-value
``(1 + #{null >= observed}) / (1 + n_null)`` and the effect ``(observed - null mean) / (1 - null
mean)``, the share of the way from chance to a perfect score (every statistic is at most 1). A
filter is *structured* when ``p < threshold`` **and** ``effect >= min_effect``: the p-value decides
for small kernels (a 3x3 kernel has 9! arrangements, so p-values down to ~1e-4 exist, and the null
is wide), the effect floor for images (with 1 000 positions any faint correlation is
"significant"). For i.i.d. random kernels the share is about ``threshold`` whatever the
statistic (tested). Statistics (``method``):

* ``"autocorr"`` (default): Moran's I over the 8-neighbourhood, ``I = (n / S0) sum_{p~q}
  <z_p, z_q> / sum_p |z_p|^2`` (S0 = the number of ordered neighbour pairs): edges, ramps, bars
  and blobs have I well above the null's mean ``-1/(n-1)``; noise and pixel-scale alternation do
  not;
* ``"directional"``: the largest of the four directional lag-1 autocorrelations (0, 45, 90, 135
  degrees): also catches fine oriented gratings, whose isotropic I is near 0;
* ``"orientation"``: the coherence ``sqrt((Jxx-Jyy)^2 + 4 Jxy^2) / (Jxx+Jyy)`` of the structure
  tensor of 2x2 finite differences summed over channels: 1 for one orientation.

A spectral-peak statistic (share of the power in the strongest plane wave) was tried and dropped:
every activation-maximisation image, of random networks too, was "concentrated" against shuffled
pixels. ``docs/filters.md`` tabulates the score's sensitivity to ``method`` and ``threshold``.

**Activation maximisation** (:func:`activation_maximisation`): gradient ascent on the input, from
seeded Gaussian noise (std 0.1, in normalised-input units), on the mean over positions of one
channel of the layer's output (the "channel" objective of Olah et al. 2017, "Feature
Visualization", Distill; Fok maximised a filter's activation for 20 steps after Chollet's Keras
recipe), for a fixed number of ``steps``: each step adds ``lr`` times the gradient divided by its
RMS (Chollet's normalisation, so the step does not depend on the layer's scale), subtracts ``l2``
times the image (L2 decay, Simonyan et al. 2014) and clips it to ``[-clip, clip]``. Nothing that
smooths (no blur, jitter or frequency parametrisation): that would put into the image the very
structure the test looks for. The network is in eval mode (batch-norm running statistics). For the
first layer, a linear map of the input, the channel objective's optimum is a uniform colour, so
the first layer is judged by its kernels.

**The score** of a checkpoint (:class:`FilterStructure`) is the share of structured filters of one
layer: by default the activation-maximisation images of a deep conv layer (the class says which
and why).
"""

from __future__ import annotations

import difflib
from typing import Any, Sequence

import dsim

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy

METHODS = ("autocorr", "directional", "orientation")
VIEWS = ("kernels", "images")
FIRST, LAST, AUTO = "first", "last", "auto"
#: ``layer="auto"``: the deepest conv layer whose output at the image size is at least this many
#: positions on each side (a 1 x 1 output maximises into the footprint of one receptive field)
AUTO_MIN_SIDE = 4
#: activation-maximisation settings the measure and ``dsim filters`` use (module docs)
AM_LR, AM_L2, AM_CLIP, AM_INIT_STD = 0.05, 0.01, 3.0, 0.1


class FilterError(dsim.DsimError):
    """A layer, channel, view or array the filter analysis cannot use."""


# --------------------------------------------------------------------------------------------
# layers of a network
# --------------------------------------------------------------------------------------------


def conv_layers(model) -> dict[str, Any]:
    """The ``Conv2d`` modules of ``model`` by name, in definition order (the first is the input
    layer in every dsim backbone)."""
    import torch.nn as nn

    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def output_sizes(model, image_size: int, in_chans: int | None = None) -> dict[str, tuple[int, int]]:
    """The spatial size of every conv layer's output for an ``image_size`` px input (one forward
    pass of a zero image in eval mode; the model's mode is restored)."""
    import torch

    convs = conv_layers(model)
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: sizes.__setitem__(n, tuple(o.shape[-2:])))
        for n, m in convs.items()
    ]
    was_training = model.training
    try:
        model.eval()
        c = int(next(iter(convs.values())).in_channels) if in_chans is None else int(in_chans)
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, c, int(image_size), int(image_size), device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return sizes


def resolve_layer(model, layer: str, image_size: int | None = None) -> str:
    """The name of the conv layer ``layer``: a ``Conv2d`` name, ``"first"``, ``"last"`` or
    ``"auto"`` (the deepest whose output at ``image_size`` px is at least :data:`AUTO_MIN_SIDE`
    positions a side; the first layer when none is). An unknown name is a one-line
    :class:`FilterError` listing the valid ones."""
    convs = conv_layers(model)
    if not convs:
        raise FilterError(f"{type(model).__name__} has no Conv2d layer to analyse")
    names = list(convs)
    if layer in (FIRST, LAST):
        return names[0] if layer == FIRST else names[-1]
    if layer == AUTO:
        if image_size is None:
            raise FilterError("layer 'auto' needs the image size the layer is maximised at")
        sizes = output_sizes(model, image_size)
        big = [n for n in names if n in sizes and min(sizes[n]) >= AUTO_MIN_SIDE]
        return big[-1] if big else names[0]
    if layer not in convs:
        near = difflib.get_close_matches(str(layer), names, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise FilterError(
            f"unknown layer {layer!r}; {hint}valid layers ({len(names)} Conv2d): "
            f"{FIRST}, {LAST}, {AUTO}, {', '.join(names)}"
        )
    return layer


def layer_kernels(model, layer: str = FIRST) -> np.ndarray:
    """The kernels of conv layer ``layer``, ``(out_channels, in_channels/groups, k, k)`` float64."""
    conv = conv_layers(model)[resolve_layer(model, layer)]
    return conv.weight.detach().cpu().double().numpy()


def first_layer_kernels(model) -> np.ndarray:
    """The kernels of the network's first convolution (a depthwise one gives ``in_channels == 1``)."""
    return layer_kernels(model, FIRST)


def input_channels(model) -> int:
    """Input channels the network takes (those of its first convolution)."""
    conv = conv_layers(model)[resolve_layer(model, FIRST)]
    return int(conv.in_channels)


def activation_maximisation(
    model,
    layer: str,
    channels: Sequence[int] | None = None,
    *,
    image_size: int = 32,
    in_chans: int | None = None,
    steps: int = 64,
    lr: float = AM_LR,
    l2: float = AM_L2,
    clip: float = AM_CLIP,
    seed: int = 0,
) -> np.ndarray:
    """Images ``(len(channels), in_chans, image_size, image_size)`` float64, in normalised-input
    units, that maximise the spatial mean of each channel of ``layer``'s output (module docs).
    All channels by default. They are optimised together in one batch (each image drives only its
    own channel; batch norm in eval mode keeps them independent), so the cost is ``steps``
    forward and backward passes. The model is left as it was (mode and ``requires_grad``)."""
    import torch

    name = resolve_layer(model, layer, image_size)
    conv = conv_layers(model)[name]
    n_out = int(conv.out_channels)
    chans = list(range(n_out)) if channels is None else [int(c) for c in channels]
    bad = [c for c in chans if not 0 <= c < n_out]
    if bad:
        raise FilterError(f"layer {name!r} has {n_out} channels; there is no channel {bad[0]}")
    in_chans = input_channels(model) if in_chans is None else int(in_chans)
    if not chans:
        return np.zeros((0, in_chans, image_size, image_size))
    was_training = model.training
    params = list(model.parameters())
    grads_were = [p.requires_grad for p in params]
    out: dict[str, Any] = {}
    handle = conv.register_forward_hook(lambda m, i, o: out.__setitem__("a", o))
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        device = params[0].device if params else torch.device("cpu")
        gen = torch.Generator().manual_seed(int(seed))
        x = AM_INIT_STD * torch.randn(len(chans), in_chans, image_size, image_size, generator=gen)
        x = x.to(device).requires_grad_(True)
        rows, idx = torch.arange(len(chans), device=device), torch.tensor(chans, device=device)
        for _ in range(int(steps)):
            out.clear()
            model(x)
            objective = out["a"][rows, idx].mean(dim=(1, 2)).sum()
            (g,) = torch.autograd.grad(objective, x)
            with torch.no_grad():
                rms = g.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
                x += lr * g / rms - l2 * x
                x.clamp_(-clip, clip)
        return x.detach().cpu().double().numpy()
    finally:
        handle.remove()
        for p, r in zip(params, grads_were):
            p.requires_grad_(r)
        model.train(was_training)


# --------------------------------------------------------------------------------------------
# the statistics and their permutation null
# --------------------------------------------------------------------------------------------


def _lag_products(z: np.ndarray, h: int, w: int):
    """Per direction: (sum over its neighbour pairs of <z_p, z_q>, number of pairs), for z of
    shape (..., C, h*w); slices of the (h, w) grid, so no copies."""
    a = z.reshape(*z.shape[:-1], h, w)
    views = (
        (a[..., :, :-1], a[..., :, 1:]),  # (0, 1)
        (a[..., :-1, :], a[..., 1:, :]),  # (1, 0)
        (a[..., :-1, :-1], a[..., 1:, 1:]),  # (1, 1)
        (a[..., :-1, 1:], a[..., 1:, :-1]),  # (1, -1)
    )
    return [(np.einsum("...cij,...cij->...", u, v), u.shape[-1] * u.shape[-2]) for u, v in views]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(np.shape(num)), where=den > 0)


def _energy(z: np.ndarray) -> np.ndarray:
    return np.einsum("...ck,...ck->...", z, z)


def _stat_autocorr(z: np.ndarray, h: int, w: int) -> np.ndarray:
    energy = _energy(z)
    lags = _lag_products(z, h, w)
    num = sum(s for s, _ in lags)
    pairs = sum(k for _, k in lags)
    return _ratio(h * w * num, pairs * energy)


def _stat_directional(z: np.ndarray, h: int, w: int) -> np.ndarray:
    energy = _energy(z)
    return np.max([_ratio(h * w * s, k * energy) for s, k in _lag_products(z, h, w)], axis=0)


def _stat_orientation(z: np.ndarray, h: int, w: int) -> np.ndarray:
    img = z.reshape(*z.shape[:-1], h, w)
    gx = 0.5 * (img[..., 1:, 1:] - img[..., 1:, :-1] + img[..., :-1, 1:] - img[..., :-1, :-1])
    gy = 0.5 * (img[..., 1:, 1:] - img[..., :-1, 1:] + img[..., 1:, :-1] - img[..., :-1, :-1])
    jxx = (gx * gx).sum(axis=(-1, -2, -3))
    jyy = (gy * gy).sum(axis=(-1, -2, -3))
    jxy = (gx * gy).sum(axis=(-1, -2, -3))
    return _ratio(np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2), jxx + jyy)


_STATS = {"autocorr": _stat_autocorr, "directional": _stat_directional, "orientation": _stat_orientation}


def _check_method(method: str) -> None:
    if method not in _STATS:
        raise dsim.UnknownOptionError(method, "filter-structure (method)", METHODS)


def _centred(filters: np.ndarray) -> tuple[np.ndarray, int, int]:
    a = np.asarray(filters, dtype=np.float64)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[-1] < 2 or a.shape[-2] < 2:
        raise FilterError(
            f"filters must be (n, C, h, w) or (n, h, w) with h, w >= 2; got shape {tuple(np.shape(filters))}"
        )
    if not np.isfinite(a).all():
        raise FilterError("filters hold NaN or infinite values")
    n, c, h, w = a.shape
    z = a.reshape(n, c, h * w)
    return z - z.mean(axis=-1, keepdims=True), h, w


def structure_statistic(filters: np.ndarray, method: str = "autocorr") -> np.ndarray:
    """The ``method`` statistic of each filter of ``filters`` ``(n, C, h, w)`` (or ``(n, h, w)``)."""
    _check_method(method)
    z, h, w = _centred(filters)
    return _STATS[method](z, h, w)


def structure_test(
    filters: np.ndarray,
    method: str = "autocorr",
    n_null: int = 499,
    seed: int = 0,
    *,
    threshold: float = 0.05,
    min_effect: float = 0.1,
) -> dict[str, np.ndarray]:
    """Per filter: ``statistic``, permutation ``p`` and ``effect`` against ``n_null`` spatial
    shufflings of the same filter, ``null_mean``, and ``structured`` (``p < threshold`` and
    ``effect >= min_effect``). Seeded: the same call gives the same numbers."""
    _check_method(method)
    if int(n_null) < 1:
        raise FilterError(f"n_null must be at least 1, got {n_null}")
    z, h, w = _centred(filters)
    n, c, hw = z.shape
    stat_fn = _STATS[method]
    stat = stat_fn(z, h, w)
    rng = np.random.default_rng(int(seed))
    null = np.empty((n, int(n_null)))
    chunk = max(1, int(4e6 // max(1, n * c * hw)))  # bounded memory: n x chunk x C x hw floats
    for j0 in range(0, int(n_null), chunk):
        j1 = min(int(n_null), j0 + chunk)
        perms = np.argsort(rng.random((j1 - j0, hw)), axis=1)
        # (n, k, C, hw), contiguous: permutation j of the positions, the same for every channel
        shuffled = z[
            np.arange(n)[:, None, None, None], np.arange(c)[None, None, :, None], perms[None, :, None, :]
        ]
        null[:, j0:j1] = stat_fn(shuffled, h, w)
    p = (1.0 + (null >= stat[:, None] - 1e-12).sum(axis=1)) / (1.0 + int(n_null))
    null_mean = null.mean(axis=1)
    effect = (stat - null_mean) / np.maximum(1.0 - null_mean, 1e-12)
    structured = (p < threshold) & (effect >= min_effect)
    return {"statistic": stat, "p": p, "effect": effect, "null_mean": null_mean, "structured": structured}


def structured_share(filters: np.ndarray, **kwargs: Any) -> float:
    """Share of ``filters`` that :func:`structure_test` (same keyword arguments) calls structured."""
    t = structure_test(filters, **kwargs)
    return float(np.mean(t["structured"])) if len(t["structured"]) else float("nan")


def weights_fingerprint(model) -> str:
    """A content id of the network's weights: the backbone's ``dsim_weights_id`` (file sha256,
    or architecture + seed for random init), else the sha256 of its state dict."""
    wid = getattr(model, "dsim_weights_id", None)
    if wid:
        return str(wid)
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# the measure
# --------------------------------------------------------------------------------------------


class FilterStructure(dsim.Measure):
    """Share of a checkpoint's filters with spatial structure (Fok 2019's "structural filters"),
    tested as the module docs describe; higher = expected to transfer better, by Fok's finding
    (a hypothesis: benchmarks/filter_structure.py checks it on dsim's own checkpoints).

    Parameters: ``layer`` (``"auto"``, ``"last"``, ``"first"`` or a conv layer name; see
    :func:`resolve_layer`), ``view`` (``"images"``:
    activation-maximisation images of the layer's first ``max_channels`` channels, ``image_size``
    px, ``steps`` ascent steps; ``"kernels"``: the layer's kernels), ``method``, ``threshold``
    (p-value), ``min_effect``, ``n_null`` shufflings and ``seed`` (of the shufflings and of the
    images' start noise).

    Default: activation-maximisation images (32 px) of the deepest conv layer whose output is
    still at least 4 x 4 there (``"auto"``: features.12 of smallcnn, stage1.5.3 of MobileNetV1,
    layer2.1.conv2 of resnet18). On the shared checkpoints deeper layers' images separate trained
    from random-init networks at every threshold (ImageNet MobileNet 88-100 % vs 0 %), while
    first-layer 3x3 kernels are few and mostly colour blobs even after ImageNet training (1 of 8
    structured; docs/filters.md).
    """

    name = "filter-structure"
    description = "share of structured filters of a checkpoint, permutation-tested (Fok 2019); the network alone, no data"
    kind = "score"
    needs = "checkpoint"
    opt_in = True  # activation maximisation costs minutes a checkpoint; no transfer signal found
    param_ranges = {
        "threshold": dsim.Range(float, 0, 1, min_open=True),
        "min_effect": dsim.Range(float, 0),
        "n_null": dsim.Range(int, 1),
        "seed": dsim.Range(int, 0),
        "image_size": dsim.Range(int, 8, 4096),
        "steps": dsim.Range(int, 1),
        "max_channels": dsim.Range(int, 1),
    }

    def __init__(
        self,
        layer: str = AUTO,
        view: str = "images",
        method: str = "autocorr",
        threshold: float = 0.05,
        min_effect: float = 0.1,
        n_null: int = 499,
        seed: int = 0,
        image_size: int = 32,
        steps: int = 64,
        max_channels: int = 64,
    ):
        self.layer = layer
        self.view = view
        self.method = method
        self.threshold = threshold
        self.min_effect = min_effect
        self.n_null = n_null
        self.seed = seed
        self.image_size = image_size
        self.steps = steps
        self.max_channels = max_channels

    def filters(self, model) -> np.ndarray:
        """The arrays this measure tests for ``model``: kernels or activation-maximisation images."""
        if self.view not in VIEWS:
            raise FilterError(f"filter-structure: unknown view {self.view!r} (one of {', '.join(VIEWS)})")
        if self.view == "kernels":
            return layer_kernels(model, self.layer)
        conv = conv_layers(model)[self.layer_name(model)]
        n = min(int(conv.out_channels), int(self.max_channels))
        return activation_maximisation(
            model,
            self.layer,
            range(n),
            image_size=int(self.image_size),
            steps=int(self.steps),
            seed=self.seed,
        )

    def layer_name(self, model, layer: str | None = None) -> str:
        """The conv layer ``layer`` (default: this measure's) names in ``model`` (:func:`resolve_layer`)."""
        return resolve_layer(model, self.layer if layer is None else layer, int(self.image_size))

    def weights_id(self, model) -> str:
        """The content id of ``model``'s weights (:func:`weights_fingerprint`)."""
        return weights_fingerprint(model)

    def test_model(self, model) -> dict[str, np.ndarray]:
        """:func:`structure_test` of this measure's filters of ``model``."""
        _check_method(self.method)
        return self.test_filters(self.filters(model))

    def test_filters(self, filters: np.ndarray) -> dict[str, np.ndarray]:
        """:func:`structure_test` of ``filters`` with this measure's parameters."""
        _check_method(self.method)
        return structure_test(
            filters,
            method=self.method,
            n_null=int(self.n_null),
            seed=self.seed,
            threshold=float(self.threshold),
            min_effect=float(self.min_effect),
        )

    def value_key(self, model) -> str:
        """Cache key of this measure's value for ``model``: the parameters and the weights' content id."""
        return dsim.stable_hash(
            {"measure": self.name, "config": self.get_params(), "weights": weights_fingerprint(model)}
        )

    def score_model(self, model, cache=None) -> float:
        """Share of structured filters of ``model`` (a network from ``dsim.create_backbone``), in
        [0, 1]. With a :class:`dsim.Cache`, the value is kept under :meth:`value_key`."""
        key = self.value_key(model) if cache is not None else None
        if cache is not None:
            hit = cache.get_value(key)
            if hit is not None:
                return hit
        value = float(np.mean(self.test_model(model)["structured"]))
        if cache is not None:
            cache.put_value(key, value, measure=self.name, config=self.get_params())
        return value

    def applicable(self, card):
        """Never for a dataset pair: ranking datasets skips this measure (checkpoints only)."""
        return "scores checkpoints, not datasets (see `dsim filters`)"

    def pair(self, source, target, ctx):
        """A checkpoint measure has no pair: the score is the source network's alone."""
        import torch.nn as nn

        if isinstance(source, nn.Module):
            return self.score_model(source, cache=ctx.cache)
        if isinstance(source, dsim.CheckpointCard):  # a checkpoint candidate of a ranking
            return self.score_model(
                dsim.load_checkpoint(source, num_classes=0, seed=ctx.seed), cache=ctx.cache
            )
        raise FilterError(
            "filter-structure scores a checkpoint, not a dataset pair: call score_model(network) "
            "or `dsim filters --arch A --weights W`"
        )


@dsim.hookimpl
def dsim_register_measures():
    return [FilterStructure()]

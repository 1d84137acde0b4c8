"""Task2Vec (Achille et al. 2019, "Task2Vec: Task Embedding for Meta-Learning").

A task (dataset) is embedded as the diagonal of the Fisher information of a probe network's
filters, estimated the way awslabs/aws-cv-task2vec's ``montecarlo`` method does:

1. *Feature caching* (one pass, ``torch.inference_mode``, sequential batches): the probe's body
   up to layer ``skip_layers`` is run once over the images; its output (the input of layer
   ``skip_layers``) and the pooled features (the input of the classifier) are kept.
2. *Classifier fit*: a fresh linear head (one output per class present) is fitted on the cached
   pooled features with Adam (lr 4e-4, weight decay 1e-4, 10 epochs of ``fisher_samples``
   class-balanced draws in batches of 64), as the reference's ``_fit_classifier``.
3. *Monte-Carlo Fisher*: ``fisher_samples`` class-balanced draws (with replacement) of the
   cached layer-``skip_layers`` inputs, in batches of 64; per batch the network from layer
   ``skip_layers`` on is run, labels are *sampled from the probe's own predictive distribution*
   ``y ~ softmax(f(x))``, and the squared gradient of the batch-mean cross-entropy w.r.t. every
   conv/BN weight is accumulated, then averaged over batches (exactly the reference's
   ``p.grad2_acc += p.grad ** 2``; it is the squared *batch* gradient, not a per-sample one).
   One forward pass serves ``task2vec_label_draws`` (4) consecutive draw-batches: as many
   independent label draws on the same drawn inputs, one backward pass each (graph retained).
   Each term is still a squared batch gradient with labels from the model, so the expectation
   is the reference's; the number of draw-batches is unchanged (``fisher_samples // 64``), only
   the inputs are shared (``task2vec_label_draws=1``: the reference's loop).
4. *Embedding*: for every module with a ``weight`` after layer ``skip_layers`` (convolutions and
   batch norms, not the classifier), the Fisher averaged over each filter, concatenated in
   module order (the reference's ``extract_embedding``).

``task2vec_method="variational"`` is the reference's second estimator: a learned per-filter
noise variance instead of sampled gradients (see :func:`_variational`); the embedding holds one
value per conv filter (batch norms excluded, as in the reference) and the layer's prior scale as
the trivial embedding. It runs in float32 and is not the default (the paper and cats-scans use
the Monte-Carlo method).

Batch norm runs in *train* mode (batch statistics) throughout, as in the reference (which calls
``model.train()``); running statistics are not updated. With ``task2vec_bn="eval"`` the stored
statistics are used instead (meaningful for ImageNet probes).

Differences from the reference, all about speed, none about the expected numbers: shared
forward passes for several label draws (above), ``task2vec_threads`` (torch threads for the
embedding; 0 = unchanged), images are
preprocessed in batches (no per-sample transforms or DataLoader workers), the caching pass runs
without autograd, and only the gradients of the embedded weights are requested
(``torch.autograd.grad``), not the classifier's. Labels are canonicalised (renumbered by first
appearance) so that renaming the classes gives the bit-identical embedding.

Distances (``task2vec_distance``):

* ``symmetric`` (default; the paper's and the reference's ``cosine``):
  ``d(a, b) = cos_dist(Fa / (Fa + Fb + 1e-8), Fb / (Fa + Fb + 1e-8))``.
* ``asymmetric``: ``d(s -> t) = d_sym(s, t) - alpha * d_sym(s, trivial)`` with ``alpha = 0.15``
  (paper) and the trivial embedding of the reference's ``get_trivial_embedding_from`` (every
  filter at the prior; for the Monte-Carlo method, whose scale is 1, ``F = 1``).

``task2vec_protocol="cats-scans"`` (van den Brandt et al.): the dataset is embedded on
``task2vec_subsets`` (100) seeded random subsets of ``task2vec_subset_fraction`` (1 %) of its
images (at least ``task2vec_subset_min``); the distance is the mean symmetric distance over
``task2vec_pairs`` (5) random (source subset, target subset) pairs.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

import dsim

#: the reference's ResNet layer list (models.py), mapped to timm's ResNet module names; the
#: reference's ``skip_layers`` indexes this list (6 = start at layer3).
_RESNET_LAYERS = (
    "conv1",
    "bn1",
    "act1",
    "maxpool",
    "layer1",
    "layer2",
    "layer3",
    "layer4",
    "global_pool",
    None,  # the reference's flatten; timm's global_pool already flattens
    "fc",
)

DEFAULTS: dict[str, Any] = {
    "probe": "resnet18",
    "probe_weights": "imagenet",
    "image_size": 64,
    "task2vec_skip_layers": 6,
    "task2vec_fisher_samples": 2000,
    "task2vec_batch_size": 64,
    "task2vec_epochs": 10,
    "task2vec_lr": 4e-4,
    "task2vec_weight_decay": 1e-4,
    "task2vec_bn": "train",
    "task2vec_distance": "symmetric",
    "task2vec_alpha": 0.15,
    "task2vec_protocol": "single",
    "task2vec_subsets": 100,
    "task2vec_subset_fraction": 0.01,
    "task2vec_subset_min": 100,
    "task2vec_pairs": 5,
    "task2vec_label_draws": 4,
    "task2vec_threads": 0,
    "task2vec_precision": "auto",
    "task2vec_method": "montecarlo",
    "task2vec_variational_samples": 10000,
    "task2vec_variational_beta": 1e-7,
    "task2vec_variational_lr": 1e-2,
}


class Task2VecError(dsim.DsimError):
    """A Task2Vec option that cannot work: stops the whole measure (``measure_wide``)."""

    measure_wide = True


def _opts(ctx) -> dict[str, Any]:
    return {k: ctx.option(k, v) for k, v in DEFAULTS.items()}


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    """True where the CPU executes bfloat16 natively (AVX512-BF16 or AMX): there oneDNN's bf16
    convolutions are faster than float32; elsewhere they are emulated and slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(value: Any, device) -> str:
    """``task2vec_precision``: ``fp32``, ``bf16`` (autocast of the Fisher passes; the gradients
    are accumulated in float32) or ``auto`` (bf16 on a CUDA GPU that supports it and on a CPU
    with native bf16, else fp32). The resolved value is part of the cache key."""
    v = str(value)
    if v not in ("auto", "fp32", "bf16"):
        raise Task2VecError(f"task2vec_precision={v!r}: use 'auto', 'fp32' or 'bf16'")
    if v != "auto":
        return v
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if dev.type == "cpu":
        return "bf16" if _cpu_has_bf16() else "fp32"
    return "fp32"


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..K-1 in order of first appearance (renaming classes changes nothing)."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    order = labels[np.sort(first)]
    lut = {int(c): i for i, c in enumerate(order)}
    return np.array([lut[int(c)] for c in labels], dtype=np.int64) if len(labels) else labels.astype(np.int64)


# --------------------------------------------------------------------------------------------
# the probe, split at ``skip_layers``
# --------------------------------------------------------------------------------------------


class _Probe:
    """A probe network as the reference sees it: an ordered list of layers ending in the
    classifier, so that a forward pass can start from any layer."""

    def __init__(self, model, skip: int):
        import torch.nn as nn

        self.model = model
        if all(hasattr(model, n) for n in ("layer1", "layer4", "fc", "global_pool")):
            self.layers = [getattr(model, n) if n else nn.Identity() for n in _RESNET_LAYERS]
        else:
            if skip != 0:
                raise Task2VecError(
                    f"task2vec_skip_layers={skip} is only defined for ResNet probes; use 0 with "
                    f"probe {type(model).__name__}"
                )
            self.layers = [_Body(model), model.get_classifier()]
        if not 0 <= skip < len(self.layers) - 1:
            raise Task2VecError(
                f"task2vec_skip_layers={skip} out of range 0..{len(self.layers) - 2} for this probe"
            )
        self.skip = skip
        self.classifier = self.layers[-1]
        tail = self.layers[skip:-1]
        tail_modules = {id(m) for layer in tail for m in layer.modules()}
        self.names, self.weights = [], []
        for name, mod in model.named_modules():
            if mod is self.classifier or id(mod) not in tail_modules:
                continue
            w = getattr(mod, "weight", None)
            if isinstance(w, nn.Parameter):
                self.names.append(name)
                self.weights.append(w)

    def forward_from(self, x, start: int, stop: int | None = None):
        for layer in self.layers[start:stop]:
            x = layer(x)
        return x


class _Body:
    """Generic timm model: pooled features (``forward_head(pre_logits=True)``)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def modules(self):
        return (m for m in self.model.modules() if m is not self.model.get_classifier())


def _set_bn(model, mode: str) -> None:
    """``train``: batch statistics, running statistics left untouched; ``eval``: stored ones."""
    import torch.nn as nn

    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if mode == "train":
                m.train()
                m.track_running_stats = False  # use batch stats, never update the buffers
            else:
                m.eval()


# --------------------------------------------------------------------------------------------
# the embedding
# --------------------------------------------------------------------------------------------


def task2vec_embedding(
    images: np.ndarray,
    labels: np.ndarray,
    model,
    *,
    opts: dict[str, Any],
    seed: int = 0,
    device=None,
    progress=None,
) -> dict[str, Any]:
    """Diagonal Monte-Carlo Fisher embedding of one task (see the module docstring).

    ``model`` is a probe whose classifier has one output per class in ``labels`` (it is
    re-fitted here). Returns ``{"hessian": (D,) float64, "names": [...], "sizes": [...],
    "train_error": float}``. ``opts["task2vec_threads"] > 0`` runs it with that many torch
    threads (restored afterwards); 0 leaves torch's setting.
    """
    import torch

    threads = int({**DEFAULTS, **opts}["task2vec_threads"] or 0)
    if threads <= 0:
        return _embedding(images, labels, model, opts=opts, seed=seed, device=device, progress=progress)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _embedding(images, labels, model, opts=opts, seed=seed, device=device, progress=progress)
    finally:
        torch.set_num_threads(before)


def _embedding(images, labels, model, *, opts, seed, device, progress) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    progress = progress or (lambda *a: None)
    device = device or torch.device("cpu")
    opts = {**DEFAULTS, **opts}
    labels = canonical_labels(labels)
    n = len(labels)
    k = int(labels.max()) + 1 if n else 0
    if n < 2 or k < 2:
        raise dsim.DsimError(
            f"task2vec needs at least two images of two classes, got {n} images of {k} class(es)"
        )
    size = int(opts["image_size"])
    bs = int(opts["task2vec_batch_size"])
    skip = int(opts["task2vec_skip_layers"])
    n_draws = int(opts["task2vec_fisher_samples"])
    if n_draws < bs:
        raise Task2VecError(f"task2vec_fisher_samples={n_draws} is smaller than one batch ({bs})")
    model = model.to(device)
    probe = _Probe(model, skip)
    _set_bn(model, str(opts["task2vec_bn"]))
    if str(opts["task2vec_bn"]) not in ("train", "eval"):
        raise Task2VecError(f"task2vec_bn={opts['task2vec_bn']!r}: use 'train' or 'eval'")
    gen = torch.Generator().manual_seed(int(seed))

    def inputs(idx):
        return dsim.to_tensor(images[idx], size=size, channels=3).to(device)

    # 1. cache the body's features once (sequential batches, no autograd)
    cached, pooled = [], []
    n_fc = len(probe.layers) - 1
    with torch.inference_mode():
        for start in range(0, n, bs):
            idx = np.arange(start, min(n, start + bs))
            h = inputs(idx)
            h_skip = probe.forward_from(h, 0, skip) if skip else None
            if skip:
                cached.append(h_skip)
            pooled.append(probe.forward_from(h_skip if skip else h, skip, n_fc))
            progress("task2vec: features", int(idx[-1]) + 1, n)
    pooled_t = torch.cat(pooled).clone()
    cached_t = torch.cat(cached).clone() if skip else None
    y_all = torch.from_numpy(labels).to(device)

    # class-balanced draws, as the reference's WeightedRandomSampler
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    w = 1.0 / counts[labels] / k
    weights = torch.as_tensor(w / w.sum(), dtype=torch.double)
    n_batches = n_draws // bs  # drop_last
    label_draws = int(opts["task2vec_label_draws"])
    precision = resolve_precision(opts["task2vec_precision"], device)
    if label_draws < 1:
        raise Task2VecError(f"task2vec_label_draws={label_draws}: use 1 or more")

    def draws():
        return torch.multinomial(weights, n_batches * bs, replacement=True, generator=gen).view(n_batches, bs)

    # 2. fit the classifier on the cached pooled features
    clf = probe.classifier
    for p in model.parameters():
        p.requires_grad_(False)
    for p in clf.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(
        clf.parameters(), lr=float(opts["task2vec_lr"]), weight_decay=float(opts["task2vec_weight_decay"])
    )
    epochs = int(opts["task2vec_epochs"])
    for epoch in range(epochs):
        for b in draws():
            b = b.to(device)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(clf(pooled_t[b]), y_all[b])
            loss.backward()
            opt.step()
        progress("task2vec: classifier", epoch + 1, epochs)
    with torch.no_grad():
        train_error = float((clf(pooled_t).argmax(1) != y_all).float().mean())
    for p in clf.parameters():
        p.requires_grad_(False)
    method = str(opts["task2vec_method"])
    if method == "variational":
        return _variational(
            probe,
            model,
            cached_t if skip else None,
            inputs,
            y_all,
            weights,
            skip,
            opts,
            gen,
            device,
            progress,
            train_error,
        )
    if method != "montecarlo":
        raise Task2VecError(f"task2vec_method={method!r}: use 'montecarlo' or 'variational'")

    # 3. Monte-Carlo Fisher of the weights after layer ``skip``: ``n_batches`` draw-batches of
    # 64 labels; each forward pass of a drawn batch of inputs serves ``label_draws`` independent
    # label draws (one backward pass each, the graph kept between them). Every draw-batch is
    # still the reference's squared batch gradient, so the expectation is unchanged; only the
    # inputs are shared by ``label_draws`` consecutive draw-batches.
    params = probe.weights
    for p in params:
        p.requires_grad_(True)
    acc = [torch.zeros_like(p) for p in params]  # float32, as the reference
    order = draws()
    done = 0
    for _i, b in enumerate(order):
        if done >= n_batches:
            break
        kk = min(label_draws, n_batches - done)
        x = cached_t[b.to(device)] if skip else inputs(b.numpy())
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = probe.forward_from(x, skip)
        out = out.float()
        with torch.no_grad():
            probs = F.softmax(out, dim=-1).cpu()
            ys = torch.multinomial(probs, kk, replacement=True, generator=gen).T.contiguous().to(device)
        for d in range(kk):
            loss = F.cross_entropy(out, ys[d])
            grads = torch.autograd.grad(loss, params, retain_graph=d < kk - 1)
            for a, g in zip(acc, grads):
                a.addcmul_(g, g)
        done += kk
        progress("task2vec: fisher", done, n_batches)
    del out, loss, grads
    for p in params:
        p.requires_grad_(False)
    hess, sizes = [], []
    for a in acc:
        a = (a / n_batches).reshape(a.shape[0], -1).mean(dim=1)
        hess.append(a.double().cpu().numpy())
        sizes.append(int(a.shape[0]))
    return {
        "hessian": np.concatenate(hess),
        "names": list(probe.names),
        "sizes": sizes,
        "train_error": train_error,
        "precision": precision,
        "scale": np.ones(sum(sizes)),
    }


def _variational(
    probe, model, cached_t, inputs, y_all, weights, skip, opts, gen, device, progress, train_error
) -> dict[str, Any]:
    """The reference's ``variational`` Fisher (Achille et al. 2019, sec. 3): every conv / linear
    filter after layer ``skip`` (classifier excluded) gets Gaussian weight noise with a learned
    per-filter log-variance, applied through the local reparametrisation trick (output noise of
    variance ``conv(x^2 + 1e-2, var)``); the log-variances and a per-layer prior scale lambda^2
    are fitted by Adam (lr 1e-2; the classifier at lr 5e-4; weights and batch norms stay fixed)
    on cross-entropy with the *true* labels plus ``beta`` times the KL divergence to the
    prior N(0, lambda^2), for one pass over ``task2vec_variational_samples`` class-balanced draws.
    The Fisher of a filter is then ``exp(-logvar)`` (the noise it tolerates), its prior scale
    ``exp(-log lambda^2)`` (the trivial embedding)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    tail_ids = {id(m) for layer in probe.layers[skip:-1] for m in layer.modules()}
    mods, names = [], []
    for name, mod in model.named_modules():
        if mod is probe.classifier or id(mod) not in tail_ids:
            continue
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and mod.weight.ndim >= 2:
            mods.append(mod)
            names.append(name)
    if not mods:
        raise Task2VecError(
            "task2vec_method=variational: no convolution or linear layer after the skipped ones"
        )
    logvar, loglam = [], []
    for m in mods:
        w = m.weight.detach()
        shape = (-1,) + (1,) * (w.ndim - 1)
        var = w.reshape(w.shape[0], -1).var(dim=1).reshape(shape)
        logvar.append(nn.Parameter(torch.log(0.05 * var + 1e-8)))
        loglam.append(nn.Parameter(torch.log(w.pow(2).mean() + 1e-8)))

    def noisy(i):
        def hook(mod, args, out):
            x = args[0]
            v = logvar[i].exp().expand_as(mod.weight)
            if isinstance(mod, nn.Conv2d):
                ov = F.conv2d(x * x + 1e-2, v, None, mod.stride, mod.padding, mod.dilation, mod.groups)
            else:
                ov = F.linear(x * x + 1e-2, v)
            eps = (
                torch.empty(out.shape, device=out.device).normal_(generator=gen)
                if out.device.type == "cpu"
                else torch.randn_like(out)
            )
            return out + ov.sqrt() * eps

        return hook

    def kl():
        k = sum(m.weight.numel() for m in mods)
        total = -float(k)
        for m, lv, ll in zip(mods, logvar, loglam):
            n_per = m.weight.numel() // m.weight.shape[0]
            total = (
                total
                + m.weight.pow(2).sum() / ll.exp()
                + lv.exp().sum() * n_per / ll.exp()
                + ll * m.weight.numel()
                - lv.sum() * n_per
            )
        return total

    # the reference lists the batch-norm parameters in its optimizer (lr 5e-4) but turns their
    # gradients off with every other non-variational, non-classifier parameter, so they stay
    # fixed; dsim does the same
    clf = list(probe.classifier.parameters())
    for p in clf:
        p.requires_grad_(True)
    opt = torch.optim.Adam(
        [{"params": logvar + loglam}, {"params": clf, "lr": 5e-4}],
        lr=float(opts["task2vec_variational_lr"]),
        betas=(0.9, 0.999),
    )
    beta = float(opts["task2vec_variational_beta"])
    bs = int(opts["task2vec_batch_size"])
    n_batches = int(opts["task2vec_variational_samples"]) // bs
    order = torch.multinomial(weights, n_batches * bs, replacement=True, generator=gen).view(n_batches, bs)
    handles = [m.register_forward_hook(noisy(i)) for i, m in enumerate(mods)]
    try:
        for i, b in enumerate(order):
            x = cached_t[b.to(device)] if skip else inputs(b.numpy())
            loss = F.cross_entropy(probe.forward_from(x, skip), y_all[b.to(device)]) + beta * kl()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            progress("task2vec: variational fisher", i + 1, n_batches)
    finally:
        for h in handles:
            h.remove()
        for p in clf:
            p.requires_grad_(False)
    hess, scale, sizes = [], [], []
    for lv, ll in zip(logvar, loglam):
        h = torch.exp(-lv.detach()).reshape(-1).double().cpu().numpy()
        hess.append(h)
        scale.append(np.full(h.size, float(torch.exp(-ll.detach()))))
        sizes.append(int(h.size))
    return {
        "hessian": np.concatenate(hess),
        "names": names,
        "sizes": sizes,
        "train_error": train_error,
        "precision": "fp32",
        "scale": np.concatenate(scale),
    }


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


# --------------------------------------------------------------------------------------------
# the measure
# --------------------------------------------------------------------------------------------


class Task2Vec(dsim.Measure):
    name = "task2vec"
    description = (
        "Task2Vec: cosine distance of diagonal Monte-Carlo Fisher embeddings of a probe "
        "network (Achille et al. 2019)"
    )
    kind = "distance"
    needs = "images"

    def config(self, ctx):
        o = _opts(ctx)
        cfg = {
            k: o[k]
            for k in (
                "probe",
                "image_size",
                "task2vec_skip_layers",
                "task2vec_fisher_samples",
                "task2vec_batch_size",
                "task2vec_epochs",
                "task2vec_lr",
                "task2vec_weight_decay",
                "task2vec_bn",
                "task2vec_protocol",
                "task2vec_label_draws",
            )
        }
        if o["task2vec_protocol"] == "cats-scans":
            cfg.update(
                {k: o[k] for k in ("task2vec_subsets", "task2vec_subset_fraction", "task2vec_subset_min")}
            )
        cfg["max_samples"] = ctx.option("max_samples")
        cfg["seed"] = ctx.seed
        cfg["method"] = str(o["task2vec_method"])
        if cfg["method"] == "variational":
            cfg.update(
                {
                    k: o[k]
                    for k in (
                        "task2vec_variational_samples",
                        "task2vec_variational_beta",
                        "task2vec_variational_lr",
                    )
                }
            )
            cfg["precision"] = "fp32"
        else:
            cfg["precision"] = resolve_precision(o["task2vec_precision"], ctx.torch_device())
        cfg["version"] = 2
        return cfg

    def fingerprints(self, ctx):
        return {"probe": self._weights_id(ctx)}

    def _weights_id(self, ctx) -> str:
        # the probe's weights id does not depend on the head size: build a 2-class probe once
        key = (
            ctx.option("probe", DEFAULTS["probe"]),
            str(ctx.option("probe_weights", DEFAULTS["probe_weights"])),
            ctx.seed,
        )
        cache = self.__dict__.setdefault("_wid", {})
        if key not in cache:
            cache[key] = self._probe(ctx, 2).dsim_weights_id
        return cache[key]

    def estimate_seconds(self, n_source_images, n_target_images, ctx) -> float | None:
        """Seconds to represent the sources (and the target), from a calibration: one forward
        pass of the probe's body on a batch and one Fisher step (forward + ``label_draws``
        backward passes) timed once per configuration, scaled by the batches each dataset
        needs (the core leaves out datasets whose representation is cached; 0 images = none)."""
        import torch

        o = _opts(ctx)
        bs, size, skip = int(o["task2vec_batch_size"]), int(o["image_size"]), int(o["task2vec_skip_layers"])
        variational = str(o["task2vec_method"]) == "variational"
        kd = 1 if variational else max(1, int(o["task2vec_label_draws"]))
        n_batches = max(
            1, int(o["task2vec_variational_samples" if variational else "task2vec_fisher_samples"]) // bs
        )
        key = (
            o["probe"],
            str(o["probe_weights"]),
            size,
            skip,
            bs,
            kd,
            str(ctx.torch_device()),
            str(o["task2vec_precision"]),
            int(o["task2vec_threads"] or 0),
            torch.get_num_threads(),
        )
        cal = self.__dict__.setdefault("_calibration", {})
        if key not in cal:
            try:
                cal[key] = self._calibrate(ctx, o, bs, size, skip, kd)
            except Exception:  # an estimate must never stop the work
                return None
        t_body, t_step = cal[key]
        if variational:
            t_step *= 1.5  # a noise convolution beside every convolution, its backward too (rough)
        n_fwd = math.ceil(n_batches / kd)

        def one(n):
            if o["task2vec_protocol"] == "cats-scans":
                m = min(
                    n, max(int(o["task2vec_subset_min"]), math.ceil(float(o["task2vec_subset_fraction"]) * n))
                )
                return int(o["task2vec_subsets"]) * (math.ceil(m / bs) * t_body + n_fwd * t_step)
            return math.ceil(n / bs) * t_body + n_fwd * t_step

        cap = ctx.option("max_samples")
        sizes = [
            min(int(n), int(cap)) if cap else int(n) for n in list(n_source_images) + [n_target_images] if n
        ]
        return float(sum(one(n) for n in sizes)) if sizes else None

    def _calibrate(self, ctx, o, bs, size, skip, kd):
        import time

        import torch
        import torch.nn.functional as F

        threads = int(o["task2vec_threads"] or 0)
        before = torch.get_num_threads()
        if threads > 0:
            torch.set_num_threads(threads)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                device = ctx.torch_device()
                model = self._probe(ctx, 2).to(device)
                probe = _Probe(model, skip)
                _set_bn(model, str(o["task2vec_bn"]))
                for p in model.parameters():
                    p.requires_grad_(False)
                x = torch.randn(bs, 3, size, size, device=device)
                with torch.inference_mode():
                    probe.forward_from(x, 0, len(probe.layers) - 1)  # warm-up
                    t0 = time.perf_counter()
                    h = probe.forward_from(x, 0, skip) if skip else x
                    probe.forward_from(h, skip, len(probe.layers) - 1)
                    t_body = time.perf_counter() - t0
                h = h.clone()
                for p in probe.weights:
                    p.requires_grad_(True)

                prec = resolve_precision(o["task2vec_precision"], device)

                def step(k):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
                        out = probe.forward_from(h, skip).float()
                    y = torch.zeros(bs, dtype=torch.long, device=device)
                    for d in range(k):
                        torch.autograd.grad(F.cross_entropy(out, y), probe.weights, retain_graph=d < k - 1)

                step(1)  # warm-up
                t0 = time.perf_counter()
                step(kd)
                t_step = time.perf_counter() - t0
        finally:
            torch.set_num_threads(before)
        return t_body, t_step

    def _probe(self, ctx, num_classes: int):
        o = _opts(ctx)
        return dsim.create_backbone(
            o["probe"], weights=str(o["probe_weights"]), num_classes=num_classes, in_chans=3, seed=ctx.seed
        )

    def _embed(self, data: dsim.ImageSet, ctx, seed: int, desc: str = "") -> dict[str, Any]:

        k = len(np.unique(data.labels))
        model = self._probe(ctx, max(k, 2))

        def prog(d, i, t):
            return ctx.progress(f"{d}{desc}", i, t)

        return task2vec_embedding(
            data.images,
            data.labels,
            model,
            opts=_opts(ctx),
            seed=seed,
            device=ctx.torch_device(),
            progress=prog,
        )

    def represent(self, data, ctx):
        import torch

        if not isinstance(data, dsim.ImageSet):
            raise dsim.DsimError(f"task2vec needs images of {getattr(data, 'name', data)!r}")
        o = _opts(ctx)
        max_samples = ctx.option("max_samples")
        if max_samples and len(data) > int(max_samples):
            data = data.subsample(int(max_samples), seed=ctx.seed)
        if len(np.unique(data.labels)) < 2:
            raise dsim.DsimError(f"task2vec: dataset {data.name!r} has fewer than two classes")
        protocol = o["task2vec_protocol"]
        with torch.random.fork_rng(devices=[]):
            if protocol == "single":
                e = self._embed(data, ctx, ctx.seed)
                arrays = {"hessian": e["hessian"], "scale": e["scale"]}
                meta = {
                    "names": e["names"],
                    "sizes": e["sizes"],
                    "train_error": e["train_error"],
                    "n": len(data),
                }
            elif protocol == "cats-scans":
                n_sub = int(o["task2vec_subsets"])
                m = max(
                    int(o["task2vec_subset_min"]),
                    int(math.ceil(float(o["task2vec_subset_fraction"]) * len(data))),
                )
                m = min(m, len(data))
                hs, errs, scales = [], [], []
                for i in range(n_sub):
                    sub = data.subsample(m, seed=ctx.seed * 1000003 + i) if m < len(data) else data
                    e = self._embed(sub, ctx, ctx.seed + i, desc=f" (subset {i + 1}/{n_sub})")
                    hs.append(e["hessian"])
                    scales.append(e["scale"])
                    errs.append(e["train_error"])
                arrays = {
                    "hessian": np.mean(hs, axis=0),
                    "hessians": np.stack(hs),
                    "scale": np.mean(scales, axis=0),
                }
                meta = {
                    "names": e["names"],
                    "sizes": e["sizes"],
                    "train_error": float(np.mean(errs)),
                    "n": len(data),
                    "subset_size": m,
                }
            else:
                raise Task2VecError(f"task2vec_protocol={protocol!r}: use 'single' or 'cats-scans'")
        return self.representation(data if len(data) else data, ctx, meta=meta, arrays=arrays)

    def compare(self, source, target, ctx):
        o = _opts(ctx)
        kind = o["task2vec_distance"]
        if kind not in ("symmetric", "asymmetric"):
            raise Task2VecError(f"task2vec_distance={kind!r}: use 'symmetric' or 'asymmetric'")
        if o["task2vec_protocol"] == "cats-scans" and "hessians" in source.arrays:
            hs, ht = source.arrays["hessians"], target.arrays["hessians"]
            rng = np.random.default_rng([int(ctx.seed), int(source.key[:8], 16), int(target.key[:8], 16)])
            pairs = [(rng.integers(len(hs)), rng.integers(len(ht))) for _ in range(int(o["task2vec_pairs"]))]
            vals = [self._dist(hs[i], ht[j], kind, o, trivial=source.arrays.get("scale")) for i, j in pairs]
            return float(np.mean(vals))
        return self._dist(
            source.arrays["hessian"], target.arrays["hessian"], kind, o, trivial=source.arrays.get("scale")
        )

    @staticmethod
    def _dist(a, b, kind, o, trivial=None) -> float:
        if kind == "symmetric":
            return symmetric_distance(a, b)
        return asymmetric_distance(a, b, float(o["task2vec_alpha"]), trivial)


@dsim.hookimpl
def dsim_register_measures():
    return [Task2Vec()]

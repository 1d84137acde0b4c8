"""The diagonal Fisher embedding of one task: the reference's Monte-Carlo estimator (one pass to
cache the body's features, a classifier fit, squared batch gradients with labels drawn from the
probe), or its variational estimator (:mod:`.variational`). Details and the differences from
awslabs/aws-cv-task2vec (all about speed) are in docs/measures.md.

Multi-label labels (an ``(n, L)`` 0/1 matrix) get a BCE head: the probe's classifier has one
sigmoid output per label and is fitted with binary cross-entropy, and the Fisher's labels are
drawn per label from Bernoulli(sigmoid(output)); the loss of a batch is then the per-image sum of
the labels' BCE, averaged over the batch (the log-likelihood of the factorised Bernoulli model,
as cross-entropy is of the categorical one). The inputs are drawn uniformly (the single-label
draws are class-balanced; label sets have no such balance)."""

from __future__ import annotations

from typing import Any

import dsim

from .probe import _Probe, _set_bn
from .settings import DEFAULTS, Task2VecError, resolve_precision
from .variational import _variational

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..K-1 in order of first appearance (renaming classes changes nothing)."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    order = labels[np.sort(first)]
    lut = {int(c): i for i, c in enumerate(order)}
    return np.array([lut[int(c)] for c in labels], dtype=np.int64) if len(labels) else labels.astype(np.int64)


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


def bce_loss(out, y):
    """The multi-label loss: per-image sum of the labels' BCE with logits, mean over the batch."""
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(out, y, reduction="sum") / len(y)


def _check_labels(labels) -> tuple[Any, int, int, bool]:
    """The labels as the embedding uses them: ``(labels, n, k, multilabel)``; refuses too few."""
    multilabel = np.ndim(labels) == 2 and np.shape(labels)[1] > 1
    if multilabel:
        labels = np.asarray(labels, dtype=np.float32)
        n, k = labels.shape
        pos = labels.sum(0)
        if n < 2 or not ((pos > 0) & (pos < n)).any():
            raise dsim.DsimError(
                f"task2vec needs a label with positive and negative images, got {n} images of {k} label(s)"
            )
    else:
        labels = canonical_labels(labels)
        n = len(labels)
        k = int(labels.max()) + 1 if n else 0
    if not multilabel and (n < 2 or k < 2):
        raise dsim.DsimError(
            f"task2vec needs at least two images of two classes, got {n} images of {k} class(es)"
        )
    return labels, n, k, multilabel


def _cache_features(probe, inputs, n, bs, skip, progress):
    """Step 1: the body's features, once (sequential batches, no autograd): (pooled, cached)."""
    import torch

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
    return pooled_t, cached_t


def _draw_weights(labels, n, k, multilabel):
    """Class-balanced draws, as the reference's WeightedRandomSampler (uniform for multi-label)."""
    import torch

    if multilabel:
        w = np.ones(n)
    else:
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        w = 1.0 / counts[labels] / k
    return torch.as_tensor(w / w.sum(), dtype=torch.double)


def _fit_classifier(
    model, probe, pooled_t, y_all, draws, loss_fn, opts, device, progress, multilabel
) -> float:
    """Step 2: fit the classifier on the cached pooled features; its training error."""
    import torch

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
            loss = loss_fn(clf(pooled_t[b]), y_all[b])
            loss.backward()
            opt.step()
        progress("task2vec: classifier", epoch + 1, epochs)
    with torch.no_grad():
        if multilabel:  # mean per-label error at 0.5
            train_error = float(((clf(pooled_t) > 0).float() != y_all).float().mean())
        else:
            train_error = float((clf(pooled_t).argmax(1) != y_all).float().mean())
    for p in clf.parameters():
        p.requires_grad_(False)
    return train_error


def _montecarlo_fisher(
    probe,
    cached_t,
    inputs,
    skip,
    order,
    n_batches,
    label_draws,
    precision,
    device,
    multilabel,
    loss_fn,
    gen,
    progress,
):
    """Step 3: Monte-Carlo Fisher of the weights after layer ``skip``: ``n_batches`` draw-batches
    of 64 labels; each forward pass of a drawn batch of inputs serves ``label_draws`` independent
    label draws (one backward pass each, the graph kept between them). Every draw-batch is still
    the reference's squared batch gradient, so the expectation is unchanged; only the inputs are
    shared by ``label_draws`` consecutive draw-batches. Returns the summed squared gradients."""
    import torch
    import torch.nn.functional as F

    params = probe.weights
    for p in params:
        p.requires_grad_(True)
    acc = [torch.zeros_like(p) for p in params]  # float32, as the reference
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
            if multilabel:  # one Bernoulli draw per label, kk times
                probs = torch.sigmoid(out).cpu()
                ys = torch.bernoulli(probs.expand(kk, *probs.shape).contiguous(), generator=gen).to(device)
            else:
                probs = F.softmax(out, dim=-1).cpu()
                ys = torch.multinomial(probs, kk, replacement=True, generator=gen).T.contiguous().to(device)
        for d in range(kk):
            loss = loss_fn(out, ys[d])
            grads = torch.autograd.grad(loss, params, retain_graph=d < kk - 1)
            for a, g in zip(acc, grads):
                a.addcmul_(g, g)
        done += kk
        progress("task2vec: fisher", done, n_batches)
    del out, loss, grads
    for p in params:
        p.requires_grad_(False)
    return acc


def _fisher_result(probe, acc, n_batches, train_error, precision) -> dict[str, Any]:
    """The embedding from the summed squared gradients: per-filter means of the Fisher."""
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


def _embedding(images, labels, model, *, opts, seed, device, progress) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    progress = progress or (lambda *a: None)
    device = device or torch.device("cpu")
    opts = {**DEFAULTS, **opts}
    labels, n, k, multilabel = _check_labels(labels)
    loss_fn = bce_loss if multilabel else F.cross_entropy
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

    pooled_t, cached_t = _cache_features(probe, inputs, n, bs, skip, progress)
    y_all = torch.from_numpy(labels).to(device)
    weights = _draw_weights(labels, n, k, multilabel)
    n_batches = n_draws // bs  # drop_last
    label_draws = int(opts["task2vec_label_draws"])
    precision = resolve_precision(opts["task2vec_precision"], device)
    if label_draws < 1:
        raise Task2VecError(f"task2vec_label_draws={label_draws}: use 1 or more")

    def draws():
        return torch.multinomial(weights, n_batches * bs, replacement=True, generator=gen).view(n_batches, bs)

    train_error = _fit_classifier(
        model, probe, pooled_t, y_all, draws, loss_fn, opts, device, progress, multilabel
    )
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
            loss=loss_fn,
        )
    if method != "montecarlo":
        raise Task2VecError(f"task2vec_method={method!r}: use 'montecarlo' or 'variational'")
    acc = _montecarlo_fisher(
        probe,
        cached_t,
        inputs,
        skip,
        draws(),
        n_batches,
        label_draws,
        precision,
        device,
        multilabel,
        loss_fn,
        gen,
        progress,
    )
    return _fisher_result(probe, acc, n_batches, train_error, precision)

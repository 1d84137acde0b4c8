"""The reference's variational Fisher estimator (Achille et al. 2019, sec. 3): learned per-filter
weight noise with a KL term to a per-layer prior; one value per conv filter."""

from __future__ import annotations

from typing import Any

import dsim

from .settings import Task2VecError

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy


def _noisy_layers(probe, model, skip):
    """The conv / linear layers after layer ``skip`` (classifier excluded): (modules, names)."""
    import torch.nn as nn

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
    return mods, names


def _initial_noise(mods):
    """The starting per-filter log-variances and per-layer log prior scales: (logvar, loglam)."""
    import torch
    import torch.nn as nn

    logvar, loglam = [], []
    for m in mods:
        w = m.weight.detach()
        shape = (-1,) + (1,) * (w.ndim - 1)
        var = w.reshape(w.shape[0], -1).var(dim=1).reshape(shape)
        logvar.append(nn.Parameter(torch.log(0.05 * var + 1e-8)))
        loglam.append(nn.Parameter(torch.log(w.pow(2).mean() + 1e-8)))
    return logvar, loglam


def _noise_hook(lv, gen):
    """A forward hook adding the output noise of log-variance ``lv`` (local reparametrisation)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def hook(mod, args, out):
        x = args[0]
        v = lv.exp().expand_as(mod.weight)
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


def _kl(mods, logvar, loglam):
    """The KL divergence of the weight noise to the prior N(0, lambda^2) (up to constants)."""
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


def _variational_result(logvar, loglam, names, train_error) -> dict[str, Any]:
    """The embedding: ``exp(-logvar)`` per filter, scale ``exp(-log lambda^2)`` per layer."""
    import torch

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


def _variational(
    probe, model, cached_t, inputs, y_all, weights, skip, opts, gen, device, progress, train_error, loss=None
) -> dict[str, Any]:
    """The reference's ``variational`` Fisher (Achille et al. 2019, sec. 3): every conv / linear
    filter after layer ``skip`` (classifier excluded) gets Gaussian weight noise with a learned
    per-filter log-variance, applied through the local reparametrisation trick (output noise of
    variance ``conv(x^2 + 1e-2, var)``); the log-variances and a per-layer prior scale lambda^2
    are fitted by Adam (lr 1e-2; the classifier at lr 5e-4; weights and batch norms stay fixed)
    on cross-entropy with the *true* labels plus ``beta`` times the KL divergence to the
    prior N(0, lambda^2), for one pass over ``task2vec_variational_samples`` class-balanced draws.
    The Fisher of a filter is then ``exp(-logvar)`` (the noise it tolerates), its prior scale
    ``exp(-log lambda^2)`` (the trivial embedding). ``loss``: the data term (default
    cross-entropy; the BCE of a multi-label task)."""
    import torch
    import torch.nn.functional as F

    loss_fn = loss or F.cross_entropy
    mods, names = _noisy_layers(probe, model, skip)
    logvar, loglam = _initial_noise(mods)

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
    handles = [m.register_forward_hook(_noise_hook(logvar[i], gen)) for i, m in enumerate(mods)]
    try:
        for i, b in enumerate(order):
            x = cached_t[b.to(device)] if skip else inputs(b.numpy())
            total = loss_fn(probe.forward_from(x, skip), y_all[b.to(device)]) + beta * _kl(
                mods, logvar, loglam
            )
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            progress("task2vec: variational fisher", i + 1, n_batches)
    finally:
        for h in handles:
            h.remove()
        for p in clf:
            p.requires_grad_(False)
    return _variational_result(logvar, loglam, names, train_error)

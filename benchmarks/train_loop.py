"""dsim's training engine (``dsim.networks.training.fit``) vs a bare PyTorch loop: same model, same data,
same process, same work (class-weighted cross-entropy, AdamW, one validation pass per epoch).

    .venv/bin/python benchmarks/train_loop.py                      # CPU, smallcnn at 28 px
    .venv/bin/python benchmarks/train_loop.py --backbone resnet18 --device cuda --images 20000

Runs alternate (bare, dsim, bare, dsim ...) so that drift in machine load hits both; the median
of ``--repeats`` is reported. Overhead = dsim / bare - 1. The dsim run uses the engine exactly as
the strategies do, with augmentation off (the bare loop has none) and early stopping disabled.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import numpy as np


def bare_loop(model, xtr, ytr, xva, yva, *, epochs, batch, lr, wd, weight, dev, seed):
    import torch
    import torch.nn.functional as F

    cuda = dev.type == "cuda"
    memfmt = torch.channels_last if cuda else torch.contiguous_format
    model.to(dev, memory_format=memfmt)
    amp = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    gen = torch.Generator().manual_seed(seed)
    w = weight.to(dev)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), batch):
            idx = perm[i : i + batch]
            xb = xtr[idx].to(dev, non_blocking=True, memory_format=memfmt)
            yb = ytr[idx].to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                loss = F.cross_entropy(model(xb).float(), yb, weight=w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.inference_mode():
            tot = 0.0
            for i in range(0, len(yva), 256):
                with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                    out = model(xva[i : i + 256].to(dev, memory_format=memfmt))
                tot += float(
                    F.cross_entropy(out.float(), yva[i : i + 256].to(dev), weight=w, reduction="sum")
                )
    if cuda:
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="smallcnn")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)

    import torch

    import dsim
    from dsim.networks.training import TrainConfig, _class_weights, _device, build_classifier, fit

    if a.threads:
        torch.set_num_threads(a.threads)
    dev = _device(a.device)
    rng = np.random.default_rng(0)
    n = a.images + a.val
    imgs = rng.integers(0, 256, (n, a.size, a.size, 1), dtype=np.uint8)
    labels = rng.integers(0, 2, n)
    data = dsim.ImageSet(name="bench", images=imgs, labels=labels)
    train, val = data.take(np.arange(a.images)), data.take(np.arange(a.images, n))
    cfg = TrainConfig(
        epochs=a.epochs,
        batch_size=a.batch,
        lr=1e-3,
        schedule="constant",
        patience=10**6,
        augment=False,
        image_size=a.size,
        channels=3,
    )
    from dsim.networks.training import prepare

    xtr, ytr = prepare(train, cfg)
    xva, yva = prepare(val, cfg)
    if dev.type == "cuda":
        xtr, ytr, xva, yva = (t.pin_memory() for t in (xtr, ytr, xva, yva))
    base = build_classifier(a.backbone, weights="random", num_classes=2, seed=0)
    weight = _class_weights(ytr, 2)
    # warm-up both paths once (allocator, cudnn autotune, lazy init)
    bare_loop(
        copy.deepcopy(base),
        xtr,
        ytr,
        xva,
        yva,
        epochs=1,
        batch=a.batch,
        lr=1e-3,
        wd=1e-4,
        weight=weight,
        dev=dev,
        seed=0,
    )
    fit(
        copy.deepcopy(base),
        train,
        val,
        TrainConfig(**{**cfg.to_dict(), "epochs": 1}),
        device=dev,
        tensors=(xtr, ytr, xva, yva),
    )
    t_bare, t_dsim = [], []
    for r in range(a.repeats):
        m = copy.deepcopy(base)
        t0 = time.perf_counter()
        bare_loop(
            m,
            xtr,
            ytr,
            xva,
            yva,
            epochs=a.epochs,
            batch=a.batch,
            lr=1e-3,
            wd=1e-4,
            weight=weight,
            dev=dev,
            seed=r,
        )
        t_bare.append(time.perf_counter() - t0)
        m = copy.deepcopy(base)
        t0 = time.perf_counter()
        fit(m, train, val, cfg, seed=r, device=dev, tensors=(xtr, ytr, xva, yva))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t_dsim.append(time.perf_counter() - t0)
    mb, md = statistics.median(t_bare), statistics.median(t_dsim)
    pair = statistics.median(d / b for b, d in zip(t_bare, t_dsim))  # each pair ran back to back
    steps = a.epochs * -(-a.images // a.batch)
    print(
        f"device {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), "
        f"{a.backbone} at {a.size}px, {a.images} train + {a.val} val images, batch {a.batch}, {a.epochs} epochs, "
        f"median of {a.repeats}"
    )
    print(f"bare PyTorch loop: {mb:.3f}s ({mb / steps * 1000:.1f} ms/step)")
    print(f"dsim fit:          {md:.3f}s ({md / steps * 1000:.1f} ms/step)")
    print(
        f"overhead: {(md / mb - 1) * 100:+.1f}% (medians), {(pair - 1) * 100:+.1f}% (median of paired ratios), "
        f"{(min(t_dsim) / min(t_bare) - 1) * 100:+.1f}% (minima)"
    )
    print(f"all runs: bare {[round(x, 2) for x in t_bare]}, dsim {[round(x, 2) for x in t_dsim]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

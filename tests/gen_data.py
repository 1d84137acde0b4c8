"""Generated image sets for the validate/strategy tests: oriented gratings plus noise, so that a
small network or texture features can learn them in seconds, but not trivially."""

from __future__ import annotations

import numpy as np
import pytest

import dsim

# 16 px keeps the default tests fast on 2 shared CPU cores; the smallcnn works at any size
TINY = {"epochs": 3, "batch_size": 32, "patience": 2, "min_epochs": 1, "image_size": 16}
TINY_PRETRAIN = {"epochs": 2, "batch_size": 64, "patience": 2, "image_size": 16}
BACKBONE = "smallcnn-w16"


def gratings(
    n: int,
    k: int = 2,
    seed: int = 0,
    name: str = "gen",
    noise: float = 0.8,
    size: int = 28,
    freq: float = 0.5,
) -> dsim.ImageSet:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    imgs = np.empty((n, size, size), dtype=np.uint8)
    for i, c in enumerate(labels):
        theta = np.pi * c / k + rng.normal(0, 0.15)
        phase = rng.uniform(0, 2 * np.pi)
        g = np.sin(freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)
        g = g + noise * rng.normal(size=g.shape)
        imgs[i] = np.clip((g + 2.5) / 5 * 255, 0, 255).astype(np.uint8)
    return dsim.ImageSet(name=name, images=imgs, labels=labels, class_names=tuple(f"c{j}" for j in range(k)))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread: on 2 shared cores it is faster than two (no spin-waiting threads).
    Import it into a test module to apply it there (autouse, per module)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

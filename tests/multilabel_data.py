"""A realistic multi-label target built from the shared blood-cell images (blood_pbc_28.npz, 8
cell types, 28 px RGB): each image is a mosaic of two cells side by side (28 x 56), or of four in
a 2 x 2 grid (56 x 56), some tiles left as empty background; its labels are the union of the
classes of its cells, so an image has one, two (or more) findings, or none at all (an empty
mosaic: the "no finding" case). Seeded: the same call gives the same set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: BloodMNIST's class order (shared/data/README)
BLOOD_CLASSES = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)


def blood_pool(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All images (N, 28, 28, 3) and class indices (N,) of blood_pbc_28.npz, splits joined."""
    z = np.load(path)
    images = np.concatenate([z[f"{s}_images"] for s in ("train", "val", "test")])
    labels = np.concatenate([z[f"{s}_labels"].reshape(-1) for s in ("train", "val", "test")])
    return images, labels.astype(np.int64)


def blood_mosaics(
    path: Path, n: int, *, seed: int = 0, grid: tuple[int, int] = (1, 2), empty: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` mosaics of ``grid`` (rows, columns) blood-cell tiles and their multi-hot labels
    ``(n, 8)``: the union of the tiles' classes. A tile is empty background (the pool's median
    colour plus a little noise) with probability ``empty``."""
    pool, classes = blood_pool(path)
    rng = np.random.default_rng(seed)
    rows, cols = grid
    background = np.median(pool.reshape(-1, 3), axis=0)
    images = np.zeros((n, 28 * rows, 28 * cols, 3), dtype=np.uint8)
    labels = np.zeros((n, len(BLOOD_CLASSES)), dtype=np.int64)
    for i in range(n):
        for r in range(rows):
            for c in range(cols):
                if rng.random() < empty:
                    tile = background + rng.normal(0, 4, (28, 28, 3))
                else:
                    j = int(rng.integers(len(pool)))
                    tile = pool[j]
                    labels[i, classes[j]] = 1
                images[i, 28 * r : 28 * (r + 1), 28 * c : 28 * (c + 1)] = np.clip(tile, 0, 255)
    return images, labels

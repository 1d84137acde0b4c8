"""From :class:`dsim.ImageSet` arrays to torch tensors, and batched feature extraction.

Shared by every measure and strategy that feeds images to a network, so that all of them see
the same preprocessing: uint8 -> [0, 1] float, grey <-> RGB by repeating/averaging channels,
bilinear resize to ``size``, then ImageNet mean/std normalisation (the probe networks were
trained with it).
"""

from __future__ import annotations

from typing import Iterator

from dsim.kernel.lazy import lazy_module

np = lazy_module("numpy")  # imported on first use: `dsim datasets` needs no numpy

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "to_tensor", "to_array", "batches", "extract_features"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensor(images: np.ndarray, size: int | None = None, channels: int = 3, normalize: bool = True):
    """``(N,H,W,C)`` array -> ``(N,channels,size,size)`` float32 tensor, preprocessed as above."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.float().div_(255.0) if images.dtype == np.uint8 else x.float()
    x = x.permute(0, 3, 1, 2)
    c = x.shape[1]
    if c != channels:
        if channels == 3 and c == 1:
            x = x.expand(-1, 3, -1, -1)
        elif channels == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            raise ValueError(f"cannot turn {c}-channel images into {channels} channels")
    if size is not None and (x.shape[2] != size or x.shape[3] != size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[2] > size
        )
    if normalize:
        if channels == 3:
            mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        else:
            mean = torch.tensor([float(np.mean(IMAGENET_MEAN))]).view(1, 1, 1, 1)
            std = torch.tensor([float(np.mean(IMAGENET_STD))]).view(1, 1, 1, 1)
        x = (x - mean) / std
    return x.contiguous()


def _resize_matrix(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
    """``(n_out, n_in)`` weights of torch's ``F.interpolate(mode="bilinear", align_corners=False)``
    along one axis, with its ``antialias`` triangle filter when shrinking (as :func:`to_tensor`
    calls it): ``resized = W_h @ image @ W_w.T``."""
    scale = n_in / n_out
    w = np.zeros((n_out, n_in), np.float64)
    if antialias and scale > 1.0:  # antialias: a triangle filter stretched over ``scale`` input pixels
        for i in range(n_out):
            center = scale * (i + 0.5)
            lo = max(int(center - scale + 0.5), 0)
            hi = min(int(center + scale + 0.5), n_in)
            j = np.arange(lo, hi)
            f = np.maximum(0.0, 1.0 - np.abs((j - center + 0.5) / scale))
            w[i, lo:hi] = f / f.sum()
    else:
        for i in range(n_out):
            src = max(scale * (i + 0.5) - 0.5, 0.0)
            i0 = min(int(src), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            lam = src - i0
            w[i, i0] += 1.0 - lam
            w[i, i1] += lam
    return w.astype(np.float32)


def to_array(images: np.ndarray, size: int | None = None, channels: int = 3) -> np.ndarray:
    """:func:`to_tensor` without normalisation, in numpy (no torch import): ``(N,H,W,C)`` ->
    ``(N,channels,size,size)`` float32 in [0, 1] for uint8 images, grey <-> RGB as there, the
    same bilinear (antialiased when shrinking) resize to float32 precision. For measures that
    read pixels (OTDD) and need no network."""
    x = np.ascontiguousarray(images)
    x = x.astype(np.float32) / np.float32(255.0) if images.dtype == np.uint8 else x.astype(np.float32)
    x = x.transpose(0, 3, 1, 2)
    c = x.shape[1]
    if c != channels:
        if channels == 3 and c == 1:
            x = np.broadcast_to(x, (x.shape[0], 3, *x.shape[2:]))
        elif channels == 1:
            x = x.mean(axis=1, keepdims=True, dtype=np.float32)
        else:
            raise ValueError(f"cannot turn {c}-channel images into {channels} channels")
    if size is not None and (x.shape[2] != size or x.shape[3] != size):
        aa = x.shape[2] > size  # as to_tensor asks torch: antialias when the height shrinks
        wh, ww = _resize_matrix(x.shape[2], size, aa), _resize_matrix(x.shape[3], size, aa)
        x = np.matmul(np.matmul(wh, x), ww.T)
    return np.ascontiguousarray(x, dtype=np.float32)


def batches(n: int, batch_size: int) -> Iterator[slice]:
    for i in range(0, n, batch_size):
        yield slice(i, min(n, i + batch_size))


def extract_features(
    model,
    images: np.ndarray,
    *,
    size: int | None = None,
    channels: int = 3,
    batch_size: int = 128,
    device=None,
    progress=None,
) -> np.ndarray:
    """Penultimate features of ``model`` (a timm model created with ``num_classes=0``) for every
    image, in ``torch.inference_mode`` and batches; returns ``(N, D)`` float32."""
    import torch

    device = device or torch.device("cpu")
    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for _k, sl in enumerate(batches(len(images), batch_size)):
            x = to_tensor(images[sl], size=size, channels=channels).to(device, non_blocking=True)
            out.append(model(x).float().cpu().numpy())
            if progress is not None:
                progress("features", sl.stop, len(images))
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

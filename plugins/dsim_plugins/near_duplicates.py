"""Near-duplicate images between a target and a source: the target's own images are never a
candidate source for it, whatever the file, name or resolution they come in.

Each image becomes a content fingerprint: a 16x16 grey thumbnail (area average, so the same
image at 28 or 64 px gives nearly the same thumbnail), lightly blurred (what resampling changes
is the finest detail), centred and scaled to unit length (a change of brightness or contrast, or
re-encoding noise, moves it little); what all the target's images share (the mean fingerprint:
the round field of a fundus photo, the frame of an ultrasound) is taken out of both sides. Two
images are near-duplicates when the correlation of their fingerprints is at least ``threshold``;
below 16 px (an 8x8 set) both are compared at 8x8. The thumbnails of a dataset are computed once, in
vectorised numpy, and cached under its content fingerprint. A target is compared through a
seeded sample of its images against every image of the source, so the share of the target found
in the source is estimated without bias.

Calibration on ../shared/data (300 test-split images against the train split of the same set,
and the same 300 resized with PIL's bilinear filter, 28 -> 64 px or 64 -> 28 px): the same
images correlate at >= 0.9995 (pneumoniamnist, retinamnist, breastmnist, cifar10), >= 0.99
(mnist, usps 16 -> 64; 95 % of dtd textures 64 -> 28); the best match of a different image
stays below 0.99 for 99 % of pneumoniamnist (p99 0.951), retinamnist (0.977) and cifar10
(0.923) images. Sets that hold near-identical images themselves (COIL-20's poses 5 degrees
apart, BreastMNIST's repeated frames, mnist's ones) match at that level too: such a share is
real overlap in content, and the ranking only flags it below half.
"""

from __future__ import annotations

import dsim

np = dsim.lazy_module("numpy")  # imported on first use: listings and --help need no numpy

SIZE = 16


def _area_matrix(n: int, m: int) -> np.ndarray:
    """``(m, n)`` weights that average ``n`` input pixels into ``m`` output pixels (area)."""
    edges = np.linspace(0.0, n, m + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n)[None, :]
    w = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0.0, None)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def thumbnails(images: np.ndarray, size: int = SIZE, chunk: int = 1024) -> np.ndarray:
    """``(N, H, W, C)`` images -> ``(N, size, size)`` float32 grey thumbnails (area average)."""
    n, h, w = images.shape[:3]
    rh, rw = _area_matrix(h, size), _area_matrix(w, size).T
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(0, n, chunk):
        x = images[i : i + chunk].astype(np.float32)
        x = x.mean(-1) if x.ndim == 4 else x
        out[i : i + chunk] = np.matmul(np.matmul(rh, x), rw)
    return out


_K = (0.25, 0.5, 0.25)  # the binomial blur kernel


def _blur(t: np.ndarray) -> np.ndarray:
    """A 3x3 binomial blur of ``(N, s, s)`` thumbnails (edges repeated): what resampling leaves."""
    p = np.pad(t, ((0, 0), (1, 1), (0, 0)), mode="edge")
    t = p[:, :-2] * _K[0] + p[:, 1:-1] * _K[1] + p[:, 2:] * _K[2]
    p = np.pad(t, ((0, 0), (0, 0), (1, 1)), mode="edge")
    return p[:, :, :-2] * _K[0] + p[:, :, 1:-1] * _K[1] + p[:, :, 2:] * _K[2]


def _unit(t: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit length (a constant row stays zero: it matches nothing)."""
    t = t.reshape(len(t), -1).astype(np.float32)
    t = t - t.mean(1, keepdims=True)
    norm = np.linalg.norm(t, axis=1, keepdims=True)
    return np.divide(t, norm, out=np.zeros_like(t), where=norm > 1e-6)


def fingerprints(thumbs: np.ndarray, size: int, common: np.ndarray | None = None) -> np.ndarray:
    """Comparable fingerprints of 16x16 thumbnails: at ``size`` (2x2 blocks averaged down),
    blurred at 16, centred and unit length; minus ``common`` (what every target image shares,
    e.g. the round field of a fundus photo), then unit length again."""
    t = thumbs
    while t.shape[1] > size:
        t = t.reshape(len(t), t.shape[1] // 2, 2, t.shape[2] // 2, 2).mean((2, 4))
    u = _unit(_blur(t) if size >= SIZE else t)
    return u if common is None else _unit(u - common)


class ThumbnailMatch(dsim.OverlapCheck):
    name = "thumbnail-match"
    description = "share of the target's images found in a source: correlation of 16x16 grey thumbnails"

    def __init__(self, threshold: float = 0.99):
        self.threshold = threshold

    def _thumbs(self, data: dsim.ImageSet, ctx: dsim.Context) -> np.ndarray:
        cfg = {"size": SIZE, "version": 1}
        key = dsim.Representation.make_key(self.name, cfg, {"data": data.fingerprint()})
        rep = ctx.cache.get(self.name, key) if ctx.cache is not None else None
        if rep is not None and "thumbs" in rep.arrays:
            return np.asarray(rep.arrays["thumbs"], dtype=np.float32)
        t = thumbnails(data.images)
        if ctx.cache is not None:
            ctx.cache.put(
                dsim.Representation(
                    measure=self.name,
                    dataset=data.name,
                    key=key,
                    config=cfg,
                    fingerprints={"data": data.fingerprint()},
                    arrays={"thumbs": t},
                )
            )
        return t

    def best_match(self, source: dsim.ImageSet, target: dsim.ImageSet, ctx: dsim.Context) -> np.ndarray:
        """For each target image, the correlation of its best match in the source."""
        size = SIZE if min(*source.image_shape, *target.image_shape) >= SIZE else SIZE // 2
        tt = self._thumbs(target, ctx)
        common = fingerprints(tt, size).mean(0)
        s = fingerprints(self._thumbs(source, ctx), size, common)
        t = fingerprints(tt, size, common)
        best = np.full(len(t), -1.0, dtype=np.float32)
        for i in range(0, len(s), 4096):
            np.maximum(best, (t @ s[i : i + 4096].T).max(1), out=best)
        return best

    def share(self, source: dsim.ImageSet, target: dsim.ImageSet, ctx: dsim.Context) -> float:
        return float((self.best_match(source, target, ctx) >= self.threshold).mean())


@dsim.hookimpl
def dsim_register_overlap_checks():
    return [ThumbnailMatch()]

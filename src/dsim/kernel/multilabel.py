"""Multi-label targets (several findings per image, e.g. ChestX-ray14's 14 diseases): the check of
a multi-hot label matrix, and seeded *iterative stratification* for subsamples and k-fold splits.

A multi-label :class:`dsim.ImageSet` holds its labels as an ``(N, L)`` matrix of 0/1, one column
per label (``class_names`` are the L label names); a row of zeros is an image without any
finding ("no finding"), which is allowed.

Splits follow the iterative stratification of Sechidis, Tsoumakas & Vlahavas (2011, "On the
stratification of multi-label data"): the label with the fewest images still to place is taken
first, and each of its images goes to the part that still wants the most images of that label
(ties: the part that wants the most images; then a seeded random choice); every part is filled
to its exact size. A label with at least k positives thus has a positive in each of k folds.
A subsample first takes one positive of every label (rarest first), so that no label with
positives is lost, as a single-label subsample keeps one image of every class.
"""

from __future__ import annotations

from typing import Sequence

from dsim.kernel.errors import DatasetError
from dsim.kernel.lazy import lazy_module

np = lazy_module("numpy")  # imported on first use: the listings need no numpy

__all__ = ["TASKS", "multi_hot", "check_label_columns", "one_hot", "iterative_split", "subsample_indices"]

#: the kinds of classification task dsim knows; a card's ``task`` is one of them or "" (decide
#: from the data: multi-label for an (N, L) label matrix, ordinal for graded class names)
TASKS: tuple[str, ...] = ("multi-class", "ordinal", "multi-label")


def multi_hot(labels, where: str, names: Sequence[str] | None = None) -> np.ndarray:
    """``labels`` as an int64 ``(N, L)`` matrix of 0/1, or a one-line :class:`dsim.DatasetError`
    prefixed with ``where`` naming the first row and label whose value is not 0 or 1."""
    y = np.asarray(labels)
    if y.ndim != 2 or y.shape[1] < 2:
        raise DatasetError(
            f"{where}: multi-label targets must be an (N, L) matrix with L >= 2, got {y.shape}"
        )
    if y.dtype.kind == "b":
        return y.astype(np.int64)
    if y.dtype.kind not in "iuf":
        raise DatasetError(f"{where}: multi-label targets must be 0/1 numbers, got dtype {y.dtype}")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        r, c = (int(v[0]) for v in np.nonzero(bad))
        what = f"label {names[c]!r}" if names is not None and c < len(names) else f"column {c}"
        value = y[r, c].item()
        hint = " (CheXpert's -1 'uncertain' must be mapped to 0 or 1 first)" if value == -1 else ""
        raise DatasetError(f"{where}: row {r}, {what} is {value:g}; multi-label targets take 0 or 1{hint}")
    return y.astype(np.int64)


def check_label_columns(labels: np.ndarray, names: Sequence[str], where: str) -> None:
    """A loaded multi-label set: every label needs a positive image. A label that is never
    positive can be neither learnt nor scored (its AUC is undefined), so it is refused, named."""
    never = [str(names[i]) if i < len(names) else str(i) for i in np.flatnonzero(labels.sum(0) == 0)]
    if never:
        raise DatasetError(
            f"{where}: label(s) {', '.join(repr(n) for n in never)} never positive; drop the column(s) "
            "or add images with that finding"
        )


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    """Class indices ``(N,)`` as an int64 ``(N, k)`` 0/1 matrix."""
    out = np.zeros((len(labels), k), dtype=np.int64)
    out[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)] = 1
    return out


def _pick(rng, cand: np.ndarray) -> int:
    return int(cand[0]) if len(cand) == 1 else int(rng.choice(cand))


def iterative_split(
    labels: np.ndarray, sizes: Sequence[int], seed: int = 0, *, cover: int | None = None
) -> np.ndarray:
    """The part (0..len(sizes)-1) of each row of the ``(N, L)`` 0/1 matrix ``labels``, by seeded
    iterative stratification (module docs); part ``j`` gets exactly ``sizes[j]`` rows.

    ``cover``: a part that first gets one positive of every label (rarest label first, as long as
    it has room), e.g. the kept part of a subsample."""
    y = np.asarray(labels).astype(bool)
    n = len(y)
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.sum() != n or (sizes < 0).any():
        raise ValueError(f"part sizes {sizes.tolist()} do not add up to {n} rows")
    rng = np.random.default_rng(seed)
    want = sizes.astype(np.float64).copy()  # rows each part still wants
    want_l = np.outer(y.sum(0), sizes / max(n, 1))  # (L, parts): positives each part still wants
    part = np.full(n, -1, dtype=np.int64)

    def place(i: int, j: int) -> None:
        part[i] = j
        want[j] -= 1
        want_l[y[i], j] -= 1

    if cover is not None:
        for lab in np.argsort(y.sum(0), kind="stable"):
            if want[cover] < 1:
                break
            rows = np.flatnonzero(y[:, lab] & (part < 0))
            if len(rows) and not (y[:, lab] & (part == cover)).any():
                place(_pick(rng, rows), cover)
    while True:
        left = y & (part < 0)[:, None]
        counts = left.sum(0)
        labs = np.flatnonzero(counts > 0)
        if not len(labs):
            break
        lab = _pick(rng, labs[counts[labs] == counts[labs].min()])
        for i in rng.permutation(np.flatnonzero(left[:, lab])):
            room = np.flatnonzero(want >= 1)
            d = want_l[lab, room]
            cand = room[d == d.max()]
            if len(cand) > 1:
                cand = cand[want[cand] == want[cand].max()]
            place(int(i), _pick(rng, cand))
    for i in rng.permutation(np.flatnonzero(part < 0)):  # images without any label
        room = np.flatnonzero(want >= 1)
        place(int(i), _pick(rng, room[want[room] == want[room].max()]))
    return part


def subsample_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Seeded iterative-stratified choice of ``n`` rows of a multi-label matrix (sorted): the label
    frequencies kept, one positive of every label first."""
    part = iterative_split(labels, [n, len(labels) - n], seed, cover=0)
    return np.flatnonzero(part == 0)

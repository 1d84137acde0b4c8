"""The ``npz`` dataset loader: a generic reader for NumPy ``.npz`` archives of images and labels.

It understands the layouts the public small datasets come in:

* one pair of arrays: ``images``/``labels`` (also ``x``/``y``, ``X``/``Y``, ``data``/``targets``...);
* split pairs: ``x_train``/``y_train``/``x_test``/``y_test`` (Keras style) or MedMNIST's
  ``train_images``/``train_labels``/``val_*``/``test_*``; the splits are concatenated (train, val,
  test) and each image keeps its split in :attr:`dsim.ImageSet.split`;
* images ``(N,H,W)``, ``(N,H,W,C)`` or channel-first ``(N,C,H,W)`` (taken as channel-first when
  dim 1 is 1 or 3 and the last dim is not), always returned as ``(N,H,W,C)``;
* labels ``(N,)`` or ``(N,1)``; integer-valued float labels; **one-hot labels ``(N,K)`` are turned
  into class indices with argmax**; string labels become indices into their sorted unique values;
* **multi-label targets**: labels ``(N,L)`` of 0/1 whose rows are not all one-hot (an image may
  have several findings, or none) are kept as the multi-hot matrix, one column per label (in
  every split of the file); an array of label names (``label_names``, ``class_names``,
  ``classes`` or ``names``, L strings) names the columns. Values other than 0/1 (CheXpert's -1
  "uncertain", a blank) are refused, naming the row and label; so is a label that is never
  positive. ``task: multi-label`` reads one-hot rows as multi-label too (a card with
  ``task: multi-label`` does the same).

Loader args: ``file`` (a bare name is looked up in ``dsim.data_dirs()`` — ``$DSIM_DATA_DIR`` then
the user data dir; an absolute path is taken as is), optional ``images_key``/``labels_key`` to
name the arrays, ``split`` to keep one split only ("train", "val" or "test"), ``class_names``
and ``task`` ("multi-class", "ordinal" or "multi-label"; default: from the labels).

Files are read with ``allow_pickle=False``. Every error is a one-line :class:`dsim.DatasetError`
that names the file. The array-normalising functions here are reused by the ``medmnist`` loader.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import dsim
from dsim import DataMissingError, DatasetError, DatasetLoader, ImageSet

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy

__all__ = [
    "NpzLoader",
    "SPLITS",
    "normalise_images",
    "normalise_labels",
    "is_multi_hot",
    "read_npz",
    "resolve_file",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_ALIASES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
_IMAGE_WORDS = ("images", "image", "imgs", "x", "data", "inputs", "features")
_LABEL_WORDS = ("labels", "label", "y", "targets", "target")
_CLASS_NAME_KEYS = ("class_names", "classes", "label_names", "names")


# --------------------------------------------------------------------------- array normalising
def normalise_images(arr: np.ndarray, where: str) -> np.ndarray:
    """Images as ``(N,H,W,C)``: uint8 kept, other integers in 0..255 -> uint8, floats -> float32.

    Raises :class:`dsim.DatasetError` (prefixed with ``where``) for a wrong rank, an unknown
    channel layout, a non-numeric dtype or NaN/infinite pixels.
    """
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{where}: images must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[..., None]
    elif arr.ndim == 4:
        if arr.shape[-1] in (1, 3):
            pass
        elif arr.shape[1] in (1, 3):  # channel first (N,C,H,W)
            arr = np.ascontiguousarray(arr.transpose(0, 2, 3, 1))
        else:
            raise DatasetError(
                f"{where}: images of shape {arr.shape} have neither 1 nor 3 channels "
                "(expected (N,H,W), (N,H,W,C) or (N,C,H,W) with C = 1 or 3; 3-D volumes are not supported)"
            )
    else:
        raise DatasetError(
            f"{where}: images must have rank 3 or 4 ((N,H,W), (N,H,W,C) or (N,C,H,W)), got shape {arr.shape}"
        )
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype.kind in "iu":
        if arr.size == 0 or (arr.min() >= 0 and arr.max() <= 255):
            return arr.astype(np.uint8)
        return arr.astype(np.float32)
    arr = arr.astype(np.float32, copy=False)
    if arr.size and not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "infinite"
        raise DatasetError(f"{where}: images contain {bad} pixel values")
    return arr


def is_multi_hot(arr: np.ndarray) -> bool:
    """Whether ``arr`` is an ``(N, L)`` 0/1 matrix (L >= 2) whose rows are not all one-hot: a
    multi-label target rather than one-hot classes."""
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[1] < 2 or arr.dtype.kind not in "biuf" or not arr.size:
        return False
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        return False
    return bool(np.isin(arr, (0, 1)).all() and not (arr.sum(axis=1) == 1).all())


def normalise_labels(
    arr: np.ndarray, where: str, *, multilabel: bool = False, names: Sequence[str] | None = None
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Labels as int64 ``(N,)`` and, for string labels, their class names (else None).

    Accepts ``(N,)``, ``(N,1)``, integer-valued floats and one-hot ``(N,K)`` (argmax); with
    ``multilabel``, an ``(N, L)`` 0/1 matrix, returned as it is (int64). ``names``: the label
    names an error about a column names.
    """
    arr = np.asarray(arr)
    if arr.dtype.kind == "f" and arr.ndim == 2 and np.isnan(arr).any():
        r, c = (int(v[0]) for v in np.nonzero(np.isnan(arr)))
        what = f"label {names[c]!r}" if names is not None and c < len(names) else f"column {c}"
        raise DatasetError(f"{where}: labels contain NaN (row {r}, {what})")
    if multilabel:
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise DatasetError(
                f"{where}: multi-label targets must be an (N, L) 0/1 matrix, got labels of shape {arr.shape}"
            )
        return dsim.multi_hot(arr, where, names), None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.dtype.kind in "US":
        if arr.ndim != 1:
            raise DatasetError(f"{where}: string labels must be (N,), got shape {arr.shape}")
        if arr.dtype.kind == "S":
            arr = arr.astype(str)
        names, idx = np.unique(arr, return_inverse=True)
        return idx.astype(np.int64).reshape(-1), tuple(str(n) for n in names)
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{where}: labels must be integers or class names, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and arr.size and np.isnan(arr).any():
        raise DatasetError(f"{where}: labels contain NaN")
    if arr.ndim == 2:
        if arr.size and np.isin(arr, (0, 1)).all() and (arr.sum(axis=1) == 1).all():
            return arr.argmax(axis=1).astype(np.int64), None
        return normalise_labels(arr, where, multilabel=True, names=names)  # not 0/1: says which
    if arr.ndim != 1:
        raise DatasetError(f"{where}: labels must be (N,), (N,1) or one-hot (N,K), got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if arr.size and not np.all(np.mod(arr, 1) == 0):
            raise DatasetError(f"{where}: labels must be whole numbers, got fractional values ({arr.dtype})")
    if arr.size and arr.min() < 0:
        raise DatasetError(f"{where}: labels must be >= 0, found {arr.min():g}")
    return arr.astype(np.int64), None


# --------------------------------------------------------------------------- finding the file
def resolve_file(file: str | os.PathLike) -> tuple[Path | None, str]:
    """The path of a dataset file, or None plus a one-line reason saying where dsim looked."""
    text = str(file)
    p = Path(text).expanduser()
    if p.is_absolute():
        return (p, "") if p.exists() else (None, f"{p}: no such file")
    names = [text] if p.suffix.lower() == ".npz" else [text, text + ".npz"]
    found = dsim.find_data_file(*names)
    if found is not None:
        return found, ""
    if p.exists():  # relative to the working directory
        return p.resolve(), ""
    where = os.pathsep.join(str(d) for d in dsim.data_dirs())
    return None, (
        f"{names[-1]}: not found in {where} (put it in one of these folders, or set DSIM_DATA_DIR "
        "to the folder that holds it)"
    )


# --------------------------------------------------------------------------- reading
def _ci(keys: Sequence[str]) -> dict[str, str]:
    return {k.lower(): k for k in keys}


def _split_keys(keys: Sequence[str], split: str) -> tuple[str | None, str | None]:
    lower = _ci(keys)
    for s in _SPLIT_ALIASES[split]:
        for iw, lw in (("images", "labels"), ("x", "y"), ("imgs", "labels"), ("data", "labels")):
            for img, lab in ((f"{s}_{iw}", f"{s}_{lw}"), (f"{iw}_{s}", f"{lw}_{s}")):
                if img in lower:
                    return lower[img], lower.get(lab)
    return None, None


def _single_keys(keys: Sequence[str]) -> tuple[str | None, str | None]:
    lower = _ci(keys)
    img = next((lower[w] for w in _IMAGE_WORDS if w in lower), None)
    lab = next((lower[w] for w in _LABEL_WORDS if w in lower), None)
    return img, lab


def _open(path: Path):
    try:
        if path.stat().st_size == 0:
            raise DatasetError(f"{path}: empty file, not an .npz archive")
        z = np.load(path, allow_pickle=False)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{path}: not a valid .npz archive (corrupt zip: {exc})") from None
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DatasetError(f"{path}: not an .npz archive (not a zip file)") from None
        raise DatasetError(f"{path}: not a valid .npz archive ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read ({dsim.one_line(exc)})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path}: a single .npy array, not an .npz archive of images and labels")
    return z


def _array(z, key: str, path: Path) -> np.ndarray:
    try:
        return z[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc):
            raise DatasetError(
                f"{path}: array {key!r} holds Python objects (pickled); dsim reads plain arrays only"
            ) from None
        raise DatasetError(f"{path}: array {key!r} is corrupt ({exc})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise DatasetError(f"{path}: array {key!r} is corrupt ({dsim.one_line(exc)})") from None


def _given_names(z, keys, path, class_names) -> tuple[str, ...] | None:
    """The class (label) names the caller gave or the file holds, for error messages."""
    if class_names is not None:
        return tuple(str(c) for c in class_names)
    for k in keys:
        if k.lower() in _CLASS_NAME_KEYS:
            cn = _array(z, k, path)
            return tuple(str(c) for c in cn.astype(str)) if cn.dtype.kind in "US" and cn.ndim == 1 else None
    return None


def _find_parts(
    keys: list[str],
    shown: str,
    path: Path,
    images_key: str | None,
    labels_key: str | None,
    split: str | None,
) -> list[tuple[str | None, str, str]]:
    """The (split, images key, labels key) triples to read, one per split kept."""
    parts: list[tuple[str | None, str, str]] = []  # (split, images key, labels key)
    if images_key or labels_key:
        ik, lk = images_key or _single_keys(keys)[0], labels_key or _single_keys(keys)[1]
        for what, k in (("images", ik), ("labels", lk)):
            if k is None or k not in keys:
                raise DatasetError(f"{path}: no {what} array {k!r} (keys found: {shown})")
        parts.append((None, ik, lk))
    else:
        for s in SPLITS:
            ik, lk = _split_keys(keys, s)
            if ik is None:
                continue
            if lk is None:
                raise DatasetError(
                    f"{path}: images {ik!r} have no matching labels array (keys found: {shown})"
                )
            parts.append((s, ik, lk))
        if not parts:
            ik, lk = _single_keys(keys)
            if ik is None or lk is None:
                raise DatasetError(
                    f"{path}: no recognisable image/label arrays (keys found: {shown}; expected "
                    "images/labels, x_train/y_train... or train_images/train_labels..., or name "
                    "them with images_key/labels_key)"
                )
            parts.append((None, ik, lk))
    if split is not None:
        if parts[0][0] is None:
            raise DatasetError(f"{path}: has no splits, cannot keep split {split!r} (keys found: {shown})")
        parts = [p for p in parts if p[0] == split]
        if not parts:
            raise DatasetError(f"{path}: has no {split!r} split (keys found: {shown})")
    return parts


def _read_parts(
    z: Any,
    keys: list[str],
    path: Path,
    parts: list[tuple[str | None, str, str]],
    task: str | None,
    class_names: Sequence[str] | None,
) -> tuple[list[Any], list[Any], list[Any], tuple[str, ...] | None, bool]:
    """Read and normalise each part's arrays: (images, labels, splits, names, multilabel)."""
    images, labels, splits, names = [], [], [], None
    raw = {lk: _array(z, lk, path) for _, _, lk in parts}
    multilabel = task == "multi-label" or any(is_multi_hot(a) for a in raw.values())
    given = _given_names(z, keys, path, class_names)
    for s, ik, lk in parts:
        img = normalise_images(_array(z, ik, path), f"{path} [{ik}]")
        lab, lab_names = normalise_labels(raw[lk], f"{path} [{lk}]", multilabel=multilabel, names=given)
        if len(img) != len(lab):
            raise DatasetError(f"{path}: {len(img)} images in {ik!r} but {len(lab)} labels in {lk!r}")
        if lab_names is not None:
            if len(parts) > 1:  # string labels per split: map through the union later
                lab = np.asarray(lab_names, dtype=object)[lab]
            else:
                names = lab_names
        images.append(img)
        labels.append(lab)
        if s is not None:
            splits.append(np.full(len(img), s, dtype="<U5"))
    return images, labels, splits, names, multilabel


def _join_splits(
    path: Path,
    parts: list[tuple[str | None, str, str]],
    images: list[Any],
    labels: list[Any],
    names: tuple[str, ...] | None,
    multilabel: bool,
) -> tuple[Any, Any, tuple[str, ...] | None]:
    """Concatenate the parts' images and labels: (all images, all labels, names)."""
    if len(images) > 1:
        shapes = {a.shape[1:] for a in images}
        if len(shapes) > 1:
            raise DatasetError(
                f"{path}: splits have different image shapes "
                f"({', '.join(f'{p[1]} {a.shape[1:]}' for p, a in zip(parts, images))})"
            )
        if any(lab.dtype == object for lab in labels):
            if not all(lab.dtype == object for lab in labels):
                raise DatasetError(f"{path}: some splits have string labels and some numbers")
            allnames = np.concatenate(labels).astype(str)
            uniq, idx = np.unique(allnames, return_inverse=True)
            names, labels = tuple(str(u) for u in uniq), [idx.astype(np.int64)]
        if multilabel and len({lab.shape[1] for lab in labels}) > 1:
            raise DatasetError(
                f"{path}: splits have different numbers of label columns "
                f"({', '.join(f'{p[2]} {lab.shape[1]}' for p, lab in zip(parts, labels))})"
            )
        dtypes = {a.dtype for a in images}
        if len(dtypes) > 1:
            images = [a.astype(np.float32) for a in images]
        all_images = np.concatenate(images)
    else:
        all_images = images[0]
    all_labels = np.concatenate(labels) if len(labels) > 1 else labels[0]
    return all_images, all_labels, names


def _stored_names(z: Any, keys: list[str], path: Path, all_labels: Any, names: Any, multilabel: bool) -> Any:
    """The class names stored in the file (``label_names``...), if usable; else ``names``."""
    for k in keys:
        if k.lower() in _CLASS_NAME_KEYS:
            cn = _array(z, k, path)
            if cn.dtype.kind in "US" and cn.ndim == 1:
                if multilabel:
                    if len(cn) != all_labels.shape[1]:
                        raise DatasetError(
                            f"{path}: {len(cn)} label names in {k!r} for {all_labels.shape[1]} label columns"
                        )
                    names = tuple(str(c) for c in cn.astype(str))
                elif not len(all_labels) or len(cn) > int(all_labels.max()):
                    names = tuple(str(c) for c in cn.astype(str))
            break
    return names


def _given_class_names(
    path: Path, class_names: Sequence[str] | None, names: Any, all_labels: Any, multilabel: bool
) -> Any:
    """Check the ``class_names`` loader arg against the labels; the names to use."""
    if class_names is not None and multilabel:
        class_names = tuple(str(c) for c in class_names)
        if len(class_names) != all_labels.shape[1]:
            raise DatasetError(
                f"{path}: {len(class_names)} class names given for {all_labels.shape[1]} label columns"
            )
        names, class_names = class_names, None
    if multilabel:
        dsim.check_label_columns(all_labels, names or [str(i) for i in range(all_labels.shape[1])], str(path))
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        if len(all_labels) and int(all_labels.max()) >= len(class_names):
            raise DatasetError(
                f"{path}: label {int(all_labels.max())} but only {len(class_names)} class names given"
            )
        names = class_names
    return names


def read_npz(
    path: Path,
    name: str,
    *,
    images_key: str | None = None,
    labels_key: str | None = None,
    split: str | None = None,
    class_names: Sequence[str] | None = None,
    task: str | None = None,
) -> ImageSet:
    """Read one ``.npz`` file into an :class:`dsim.ImageSet` (see the module docstring)."""
    path = Path(path)
    if split is not None and split not in SPLITS:
        raise DatasetError(f"{path}: split must be one of {', '.join(SPLITS)}, got {split!r}")
    if task and task not in dsim.TASKS:
        raise DatasetError(f"{path}: task must be one of {', '.join(dsim.TASKS)}, got {task!r}")
    with _open(path) as z:
        keys = list(z.files)
        shown = ", ".join(keys) if keys else "none"
        parts = _find_parts(keys, shown, path, images_key, labels_key, split)
        images, labels, splits, names, multilabel = _read_parts(z, keys, path, parts, task, class_names)
        all_images, all_labels, names = _join_splits(path, parts, images, labels, names, multilabel)
        if names is None and class_names is None:
            names = _stored_names(z, keys, path, all_labels, names, multilabel)
    names = _given_class_names(path, class_names, names, all_labels, multilabel)
    return ImageSet(
        name=name,
        images=all_images,
        labels=all_labels,
        class_names=names or (),
        split=np.concatenate(splits) if splits else None,
        source=str(path),
        task="multi-label" if multilabel else (task or ""),
    )


class NpzLoader(DatasetLoader):
    name = "npz"
    description = (
        ".npz archive of images and labels (images/labels, x_train/y_train..., MedMNIST "
        "train_images/train_labels...; channel-first, (N,1), one-hot and multi-label 0/1 (N,L) labels handled)"
    )

    def claims(self, path: Path) -> Mapping[str, Any] | None:
        path = Path(path)
        if path.is_file() and path.suffix.lower() == ".npz":
            return {"file": str(path.resolve())}
        return None

    def missing(self, args: Mapping[str, Any], name: str) -> str | None:
        if not args.get("file"):
            return f"dataset {name!r}: npz loader needs a 'file' argument"
        path, reason = resolve_file(args["file"])
        return None if path is not None else reason

    def load(self, args: Mapping[str, Any], name: str) -> ImageSet:
        if not args.get("file"):
            raise DatasetError(f"dataset {name!r}: npz loader needs a 'file' argument")
        path, reason = resolve_file(args["file"])
        if path is None:
            raise DataMissingError(reason)
        if path.is_dir():
            raise DatasetError(f"{path}: is a folder, not an .npz file")
        return read_npz(
            path,
            name,
            images_key=args.get("images_key"),
            labels_key=args.get("labels_key"),
            split=args.get("split"),
            class_names=args.get("class_names"),
            task=args.get("task"),
        )


@dsim.hookimpl
def dsim_register_loaders():
    return [NpzLoader()]

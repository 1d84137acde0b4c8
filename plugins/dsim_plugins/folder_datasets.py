"""Loaders for a user's own images: ``image-folder`` (one sub-folder per class) and ``csv``
(a table of ``path,label``).

``image-folder`` args: ``path``; ``image_size`` (an int for square images, ``[height, width]`` or
``"HxW"``; default: the most common size in the folder); ``mode`` (``"L"``, ``"RGB"`` or ``"auto"``,
the default: RGB when any image is in colour, else L). Class names are the sorted names of the
sub-folders (hidden folders skipped); images are found recursively inside each class folder.
A folder whose sub-folders are all split names (train/val/test, also training/valid/validation/
testing) each holding class folders, e.g. ``chest_xray/train/NORMAL``, is read as
``<split>/<class>``: the classes are the union of the class folders and each image keeps its
split in :attr:`dsim.ImageSet.split`.

``csv`` args: ``path`` (the .csv) plus the same ``image_size`` and ``mode``. The csv needs a header
with the columns ``path`` and ``label`` (more columns are ignored, except ``split``, kept as
:attr:`dsim.ImageSet.split`). A label is an integer class index or a class name (then the class
names are the sorted distinct labels); relative paths are relative to the csv's folder.

**Multi-label targets** (several findings per image, or none) in a csv, without a ``label``
column, one of two ways:

* a ``labels`` column of ``|``-separated label names (NIH ChestX-ray14's ``Finding Labels``:
  ``Effusion|Mass``); an empty cell is an image without any finding, and so is the value the
  loader arg ``none_label`` names (default ``No Finding``, in any case, as NIH writes it); the
  labels are the sorted distinct names;
* one 0/1 column per label: every column other than ``path`` and ``split`` (at least two), or
  the columns the loader arg ``label_columns`` names (a list or comma-separated; the others are
  then ignored, e.g. CheXpert's Sex and Age). The header's names are the label names. A cell
  other than 0 or 1 (CheXpert's -1 "uncertain", a blank) is refused, naming the line and column.

Either way a label that is never positive is refused, named (map or drop it first).

An image folder (``image-folder``) holds one class per image: it cannot express a multi-label
target; give those as a csv or an ``.npz`` with an ``(N, L)`` 0/1 label matrix.

A file that cannot be read (corrupt, truncated, missing from the csv) is left out and named in
:attr:`dsim.ImageSet.skipped` (``dsim rank`` prints the count and the first few); the loader arg
``strict`` (``--strict``) fails on the first one instead. Images are read with PIL (PNG, JPEG, BMP, TIFF). An image counts as "colour" when its channels
differ somewhere (an RGB file of a grey X-ray is grey). Images of another size are resized with
PIL's bilinear filter. 16-bit grey images are scaled to 0..255 (divided by 257). Output is uint8
``(N,H,W,1)`` for L and ``(N,H,W,3)`` for RGB. Every error is a one-line :class:`dsim.DatasetError`
naming the folder, csv (with its line number) or image file at fault. A single class loads
without comment; deciding whether it is usable is the caller's business.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import dsim
from dsim import DataMissingError, DatasetError, DatasetLoader, ImageSet

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy

__all__ = ["ImageFolderLoader", "CsvLoader", "IMAGE_EXTENSIONS", "read_images", "parse_image_size"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
_MODES = {"l": "L", "grey": "L", "gray": "L", "rgb": "RGB", "auto": "auto", "": "auto"}
SPLIT_ORDER = ("train", "val", "test")
_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"}


# --------------------------------------------------------------------------- options
def parse_image_size(value: Any, where: str) -> tuple[int, int] | None:
    """``image_size`` arg as (height, width): an int, ``[h, w]`` or ``"HxW"``; None = automatic."""
    if value is None or value == "" or value == "auto":
        return None
    try:
        if isinstance(value, str):
            parts = value.lower().replace("×", "x").split("x")
            hw = [int(p) for p in parts]
        elif isinstance(value, (int, np.integer)):
            hw = [int(value)]
        else:
            hw = [int(v) for v in value]
        if len(hw) == 1:
            hw = hw * 2
        if len(hw) != 2 or min(hw) < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise DatasetError(
            f"{where}: image_size must be an int, [height, width] or 'HxW', got {value!r}"
        ) from None
    return hw[0], hw[1]


def parse_mode(value: Any, where: str) -> str:
    mode = _MODES.get(str(value if value is not None else "auto").strip().lower())
    if mode is None:
        raise DatasetError(f"{where}: mode must be 'L', 'RGB' or 'auto', got {value!r}")
    return mode


# --------------------------------------------------------------------------- reading images
def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _walk_images(folder: Path) -> Iterator[Path]:
    """Image files under ``folder`` (recursively, hidden entries skipped), sorted per folder."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    subdirs = []
    for e in entries:
        if _hidden(e.name):
            continue
        if e.is_dir():
            subdirs.append(Path(e.path))
        elif e.is_file() and _is_image(Path(e.name)):
            yield Path(e.path)
    for d in subdirs:
        yield from _walk_images(d)


def _open(path: Path, where: str):
    from PIL import Image

    try:
        return Image.open(path)
    except FileNotFoundError:
        raise DatasetError(f"{where}: image file {path} not found") from None
    except Exception as exc:
        raise DatasetError(f"{where}: cannot read image {path} ({dsim.one_line(exc)})") from None


def _to_array(im, path: Path, where: str, size_wh: tuple[int, int] | None) -> np.ndarray:
    """Decode one opened PIL image to uint8 (H,W) grey or (H,W,3) colour, resized to ``size_wh``."""
    from PIL import Image

    original = im
    try:
        im.load()
        if im.mode in _GREY_MODES:
            if im.mode in ("I", "F") or im.mode.startswith("I;16"):
                a = np.asarray(im, dtype=np.float64)
                hi = a.max() if a.size else 0
                if im.mode.startswith("I;16") or 255 < hi <= 65535:
                    a = a / 257.0
                elif hi > 65535:
                    lo = a.min()
                    a = (a - lo) / max(hi - lo, 1e-12) * 255.0
                im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")
            else:
                im = im.convert("L")
        else:
            im = im.convert("RGB")
        if size_wh is not None and im.size != size_wh:
            im = im.resize(size_wh, Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"{where}: cannot read image {path} ({dsim.one_line(exc)})") from None
    finally:
        original.close()


def read_images(
    files: Sequence[Path],
    where: Sequence[str],
    *,
    image_size: tuple[int, int] | None = None,
    mode: str = "auto",
    strict: bool = True,
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Read ``files`` into one uint8 ``(N,H,W,C)`` array; ``where[i]`` names file i in errors.

    Returns the images, the indices of the files read, and (where, reason) of each file that
    could not be read: with ``strict`` the first such file raises instead."""
    from PIL import Image

    skipped: list[tuple[str, str]] = []
    bad: set[int] = set()

    def unreadable(i: int, exc: DatasetError) -> None:
        if strict:
            raise exc
        bad.add(i)
        skipped.append((where[i], str(exc).split(": ", 1)[-1]))

    if image_size is None:  # first pass: headers only, for the most common size
        sizes = Counter()
        for i, (f, w) in enumerate(zip(files, where)):
            try:
                im = _open(f, w)
            except DatasetError as exc:
                unreadable(i, exc)
                continue
            sizes[im.size] += 1
            im.close()
        size_wh = sizes.most_common(1)[0][0] if sizes else None
    else:
        size_wh = (image_size[1], image_size[0])
    arrays, kept, colour = [], [], False
    for i, (f, w) in enumerate(zip(files, where)):
        if i in bad:
            continue
        try:
            a = _to_array(_open(f, w), f, w, size_wh)
        except DatasetError as exc:
            unreadable(i, exc)
            continue
        if a.ndim == 3 and not colour:
            if (a[..., 0] != a[..., 1]).any() or (a[..., 0] != a[..., 2]).any():
                colour = True
        arrays.append(a)
        kept.append(i)
    if mode == "auto":
        mode = "RGB" if colour else "L"
    out = []
    for a in arrays:
        if mode == "L":
            if a.ndim == 3:
                a = np.asarray(Image.fromarray(a, mode="RGB").convert("L"))
            out.append(a[..., None])
        else:
            out.append(np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a)
    if not out:
        return np.zeros((0, 1, 1, 1), np.uint8), kept, skipped
    return np.stack(out), kept, skipped


def _kept(images, kept, skipped, where_all: str, labels, splits):
    """Labels and splits of the files read; an error when none could be read."""
    if not kept:
        first = "; ".join(f"{w} ({why})" for w, why in skipped[:3])
        raise DatasetError(f"{where_all}: no readable image ({len(skipped)} unreadable: {first})")
    idx = np.asarray(kept, dtype=np.int64)
    return np.asarray(labels, dtype=np.int64)[idx], [splits[i] for i in kept]


# --------------------------------------------------------------------------- image folder
def _class_dirs(root: Path) -> list[Path]:
    return sorted(
        (Path(e.path) for e in os.scandir(root) if e.is_dir() and not _hidden(e.name)),
        key=lambda p: p.name,
    )


class ImageFolderLoader(DatasetLoader):
    name = "image-folder"
    description = "a folder with one sub-folder of images (PNG/JPEG/BMP/TIFF) per class"

    def claims(self, path: Path) -> Mapping[str, Any] | None:
        path = Path(path)
        if not path.is_dir():
            return None
        try:
            for d in _class_dirs(path):
                if next(_walk_images(d), None) is not None:
                    return {"path": str(path.resolve())}
        except OSError:
            return None
        return None

    def missing(self, args: Mapping[str, Any], name: str) -> str | None:
        if not args.get("path"):
            return f"dataset {name!r}: image-folder loader needs a 'path' argument"
        p = Path(str(args["path"])).expanduser()
        if not p.exists():
            return f"{p}: no such folder"
        return None

    def load(self, args: Mapping[str, Any], name: str) -> ImageSet:
        if not args.get("path"):
            raise DatasetError(f"dataset {name!r}: image-folder loader needs a 'path' argument")
        root = Path(str(args["path"])).expanduser()
        if not root.exists():
            raise DataMissingError(f"{root}: no such folder")
        if not root.is_dir():
            raise DatasetError(f"{root}: not a folder (image-folder expects one sub-folder per class)")
        size = parse_image_size(args.get("image_size"), str(root))
        mode = parse_mode(args.get("mode"), str(root))
        top = _class_dirs(root)
        if not top:
            raise DatasetError(f"{root}: no class sub-folders (expected one sub-folder of images per class)")
        # root/<split>/<class>/... (e.g. Kermany's chest_xray/train/NORMAL): keep the split
        if all(d.name.lower() in _SPLIT_NAMES for d in top) and all(_class_dirs(d) for d in top):
            top.sort(key=lambda d: SPLIT_ORDER.index(_SPLIT_NAMES[d.name.lower()]))
            groups = [(_SPLIT_NAMES[sd.name.lower()], c) for sd in top for c in _class_dirs(sd)]
        else:
            groups = [(None, c) for c in top]
        class_names = sorted({c.name for _, c in groups})
        files: list[Path] = []
        labels: list[int] = []
        splits: list[str] = []
        for split, d in groups:
            found = list(_walk_images(d))
            if not found:
                raise DatasetError(
                    f"{d}: class folder {d.name!r} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            files += found
            labels += [class_names.index(d.name)] * len(found)
            splits += [split or ""] * len(found)
        strict = bool(args.get("strict", False))
        images, kept, skipped = read_images(
            files, [str(f) for f in files], image_size=size, mode=mode, strict=strict
        )
        labels, splits = _kept(images, kept, skipped, str(root), labels, splits)
        return ImageSet(
            name=name,
            images=images,
            labels=labels,
            class_names=tuple(class_names),
            split=np.asarray(splits, dtype=str) if groups[0][0] is not None else None,
            source=str(root),
            skipped=tuple(skipped),
        )


# --------------------------------------------------------------------------- csv
class CsvLoader(DatasetLoader):
    name = "csv"
    description = "a .csv with a header and columns path,label (label: class index or name)"

    def claims(self, path: Path) -> Mapping[str, Any] | None:
        path = Path(path)
        if path.is_file() and path.suffix.lower() == ".csv":
            return {"path": str(path.resolve())}
        return None

    def missing(self, args: Mapping[str, Any], name: str) -> str | None:
        if not args.get("path"):
            return f"dataset {name!r}: csv loader needs a 'path' argument"
        p = Path(str(args["path"])).expanduser()
        if not p.is_file():
            return f"{p}: no such file"
        return None

    def _rows(self, path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]], list[str]]:
        """The header (lower case), the rows (csv line, cells by column) and the header as written."""
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                rows = []
                if header is None:
                    return [], [], []
                original = [h.strip() for h in header]
                header = [h.strip().lower() for h in header]
                for row in reader:
                    if not any(cell.strip() for cell in row):
                        continue  # blank line
                    rows.append((reader.line_num, dict(zip(header, (c.strip() for c in row)))))
                return header, rows, original
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path}: not a UTF-8 text file ({dsim.one_line(exc)})") from None
        except csv.Error as exc:
            raise DatasetError(f"{path}: not a valid csv ({dsim.one_line(exc)})") from None
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read ({dsim.one_line(exc)})") from None

    def load(self, args: Mapping[str, Any], name: str) -> ImageSet:
        if not args.get("path"):
            raise DatasetError(f"dataset {name!r}: csv loader needs a 'path' argument")
        path = Path(str(args["path"])).expanduser()
        if not path.is_file():
            raise DataMissingError(f"{path}: no such file")
        size = parse_image_size(args.get("image_size"), str(path))
        mode = parse_mode(args.get("mode"), str(path))
        header, rows, original = self._rows(path)
        if not header:
            raise DatasetError(f"{path}: empty csv (expected a header path,label and one row per image)")
        if "path" in header and "label" not in header:
            label_cols = _label_columns(path, header, original, args)
            if label_cols is not None:
                if not rows:
                    raise DatasetError(f"{path}: empty csv (a header but no rows)")
                return self._load_multilabel(path, name, args, header, rows, label_cols, size, mode)
        for col in ("path", "label"):
            if col not in header:
                raise DatasetError(
                    f"{path}: missing column {col!r} (header: {', '.join(header)}; expected path,label, "
                    "or for multi-label targets path,labels or path plus one 0/1 column per label)"
                )
        if not rows:
            raise DatasetError(f"{path}: empty csv (a header but no rows)")
        for line, row in rows:  # every row's cells first, in order, before any file is looked for
            if not row.get("path", ""):
                raise DatasetError(f"{path} line {line}: empty path")
            if not row.get("label", ""):
                raise DatasetError(f"{path} line {line}: empty label")
        strict = bool(args.get("strict", False))
        files, where, rows_kept, splits, missing = self._images_of(path, args, rows)
        raw_labels = [row["label"] for row in rows_kept]
        ints = []
        for lab in raw_labels:
            try:
                ints.append(int(lab))
            except ValueError:
                ints = None
                break
        if ints is not None:
            bad = next((i for i, v in enumerate(ints) if v < 0), None)
            if bad is not None:
                raise DatasetError(
                    f"{where[bad]}: label {ints[bad]} is negative (labels are class indices >= 0 or names)"
                )
            labels = np.asarray(ints, dtype=np.int64)
            class_names: tuple[str, ...] = ()
        else:
            names, inv = np.unique(np.asarray(raw_labels, dtype=str), return_inverse=True)
            labels = inv.astype(np.int64).reshape(-1)
            class_names = tuple(str(n) for n in names)
        images, kept, skipped = read_images(files, where, image_size=size, mode=mode, strict=strict)
        labels, splits = _kept(images, kept, missing + skipped, str(path), labels, splits)
        split = None
        if "split" in header and all(splits):
            split = np.asarray(splits, dtype=str)
        return ImageSet(
            name=name,
            images=images,
            labels=labels,
            class_names=class_names,
            split=split,
            source=str(path),
            skipped=tuple(missing + skipped),
        )

    def _images_of(self, path, args, rows):
        """The image files of the csv's rows: (files, where, kept rows, splits, missing)."""
        strict = bool(args.get("strict", False))
        files, where, kept, splits, missing = [], [], [], [], []
        for line, row in rows:
            at = f"{path} line {line}"
            cell = row.get("path", "")
            if not cell:
                raise DatasetError(f"{at}: empty path")
            f = Path(cell).expanduser()
            if not f.is_absolute():
                f = path.parent / f
            if not f.is_file():
                if strict:
                    raise DatasetError(f"{at}: image file {cell} not found ({f})")
                missing.append((at, f"image file {cell} not found"))
                continue
            files.append(f)
            where.append(at)
            kept.append(row)
            splits.append(row.get("split", ""))
        return files, where, kept, splits, missing

    def _load_multilabel(self, path, name, args, header, rows, label_cols, size, mode) -> ImageSet:
        """A multi-label csv (module docs): a ``labels`` column or one 0/1 column per label."""
        strict = bool(args.get("strict", False))
        files, where, kept, splits, missing = self._images_of(path, args, rows)
        if label_cols == "labels":
            none = str(args.get("none_label", "No Finding") or "").strip().lower()
            sets = []
            for row in kept:
                names = [n.strip() for n in row.get("labels", "").split("|")]
                sets.append({n for n in names if n and n.lower() != none})
            names = tuple(sorted(set().union(*sets))) if sets else ()
            if len(names) < 2:
                raise DatasetError(
                    f"{path}: the labels column names {len(names)} label(s); a multi-label target needs two "
                    "or more (one class per image: use a label column)"
                )
            col = {n: j for j, n in enumerate(names)}
            matrix = np.zeros((len(sets), len(names)), dtype=np.int64)
            for i, labs in enumerate(sets):
                matrix[i, [col[n] for n in labs]] = 1
        else:
            keys, names, auto = label_cols
            hint = (
                " (without a label column every column but path and split is a 0/1 label; name the "
                "label columns with the loader arg label_columns)"
                if auto
                else ""
            )
            matrix = np.zeros((len(kept), len(keys)), dtype=np.int64)
            for i, (at, row) in enumerate(zip(where, kept)):
                for j, (k, n) in enumerate(zip(keys, names)):
                    matrix[i, j] = _zero_one(row.get(k, ""), at, n, hint)
        images, ok, skipped = read_images(files, where, image_size=size, mode=mode, strict=strict)
        if not ok:
            _kept(images, ok, missing + skipped, str(path), [], [])
        idx = np.asarray(ok, dtype=np.int64)
        labels = matrix[idx]
        dsim.check_label_columns(labels, names, str(path))
        split = None
        if "split" in header and all(splits[i] for i in ok):
            split = np.asarray([splits[i] for i in ok], dtype=str)
        return ImageSet(
            name=name,
            images=images,
            labels=labels,
            class_names=tuple(names),
            split=split,
            source=str(path),
            skipped=tuple(missing + skipped),
            task="multi-label",
        )


def _label_columns(path: Path, header: list[str], original: list[str], args: Mapping[str, Any]):
    """How a csv without a ``label`` column gives multi-label targets: ``"labels"`` (a column of
    ``|``-separated names), ``(keys, names, auto)`` of its 0/1 label columns (``auto``: taken as
    every column but path and split, not named by ``label_columns``), or None (neither)."""
    wanted = args.get("label_columns")
    if wanted:
        if isinstance(wanted, str):
            wanted = [w for w in wanted.split(",")]
        keys, names = [], []
        for w in wanted:
            k = str(w).strip().lower()
            if k not in header:
                raise DatasetError(
                    f"{path}: label_columns names {str(w).strip()!r}, not a column (header: {', '.join(original)})"
                )
            keys.append(k)
            names.append(original[header.index(k)])
        if len(keys) < 2:
            raise DatasetError(
                f"{path}: label_columns names {len(keys)} column(s); a multi-label target needs two or more"
            )
        return keys, names, False
    if "labels" in header:
        return "labels"
    keys = [h for h in header if h not in ("path", "split") and h]
    if len(keys) < 2:
        return None
    return keys, [original[header.index(k)] for k in keys], True


def _zero_one(cell: str, at: str, column: str, hint: str = "") -> int:
    try:
        v = float(cell)
    except ValueError:
        v = None
    if v not in (0.0, 1.0):
        if v == -1.0:
            hint = " (CheXpert's -1 'uncertain' must be mapped to 0 or 1 first)"
        shown = repr(cell) if cell else "empty"
        raise DatasetError(f"{at}: column {column!r} is {shown}; label columns take 0 or 1{hint}")
    return int(v)


@dsim.hookimpl
def dsim_register_loaders():
    return [ImageFolderLoader(), CsvLoader()]

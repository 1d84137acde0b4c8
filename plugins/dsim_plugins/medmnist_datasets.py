"""The ``medmnist`` dataset loader: the MedMNIST v2 family (PneumoniaMNIST, BreastMNIST, ...).

Loader args: ``flag`` (MedMNIST's name, e.g. ``pneumoniamnist``) and ``size`` (28, 64, 128 or
224; default 28). The file is looked for in ``dsim.data_dirs()`` under MedMNIST's own names:
``{flag}.npz`` (or ``{flag}_28.npz``) for 28 px, ``{flag}_{size}.npz`` for the larger sizes.

When it is not there, it is downloaded from the URL in the ``medmnist`` package's metadata
(``medmnist.INFO``) into the user data dir (the last of ``dsim.data_dirs()``), announced on stderr
and checked against the release MD5; a file that does not match is not kept. Nothing is
downloaded when ``DSIM_OFFLINE=1`` or when the network cannot be reached: then a
:class:`dsim.DataMissingError` says exactly which file to put where. Local files are not checked
against the release MD5 (a local copy may be a deliberate subset, as the test data is).

Class names come from ``medmnist.INFO[flag]["label"]``. Only 2-D sets are supported (not the 3-D
volumes). A set MedMNIST calls multi-label (ChestMNIST: 14 findings of NIH ChestX-ray14, an image
may have several or none) loads as a multi-label :class:`dsim.ImageSet`, its labels the ``(N, 14)``
0/1 matrix, ``class_names`` the 14 finding names.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import dsim
from dsim import DataMissingError, DatasetError, DatasetLoader, ImageSet

# Both modules are built-in plugins of the same package (dsim_plugins), so sharing the npz
# reader with a sibling module is fine; a third-party plugin would import dsim's API only.
from dsim_plugins.npz_datasets import read_npz

__all__ = ["MedMNISTLoader", "fetch", "medmnist_info", "SIZES"]

SIZES = (28, 64, 128, 224)
_TIMEOUT_S = 60.0


@lru_cache(maxsize=1)
def _all_info() -> Mapping[str, Mapping[str, Any]]:
    """``medmnist.INFO``, read as a literal from ``medmnist/info.py`` without importing the package
    (``import medmnist`` imports torch, seconds on a CPU machine, and creates ~/.medmnist).
    Falls back to ``import medmnist``; {} when medmnist is not installed."""
    try:
        spec = importlib.util.find_spec("medmnist")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        info_py = Path(list(spec.submodule_search_locations)[0]) / "info.py"
        try:
            tree = ast.parse(info_py.read_text(encoding="utf-8"))
            for node in tree.body:
                if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "INFO" for t in node.targets
                ):
                    return dict(ast.literal_eval(node.value))
        except (OSError, SyntaxError, ValueError):
            pass
    try:
        import medmnist  # fallback: the official way

        return dict(medmnist.INFO)
    except Exception:
        return {}


def medmnist_info(flag: str) -> Mapping[str, Any] | None:
    """MedMNIST's metadata of one flag (url, MD5, label names, task...), or None when unknown."""
    return _all_info().get(flag)


def fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` (raises OSError / urllib.error.URLError on failure)."""
    import shutil
    import urllib.request

    req = urllib.request.Request(url, headers={"User-Agent": "dsim"})
    with urllib.request.urlopen(req, timeout=_TIMEOUT_S) as resp, open(dest, "wb") as out:
        shutil.copyfileobj(resp, out, length=1 << 20)


def _offline() -> bool:
    return dsim.env_flag("DSIM_OFFLINE")


def _md5(path: Path) -> str:
    return dsim.file_digest(path, "md5")


def _file_names(flag: str, size: int) -> list[str]:
    return [f"{flag}.npz", f"{flag}_28.npz"] if size == 28 else [f"{flag}_{size}.npz"]


def _url_md5(info: Mapping[str, Any] | None, size: int) -> tuple[str | None, str | None]:
    if not info:
        return None, None
    sfx = "" if size == 28 else f"_{size}"
    return info.get(f"url{sfx}"), info.get(f"MD5{sfx}")


class MedMNISTLoader(DatasetLoader):
    name = "medmnist"
    description = (
        "MedMNIST v2 (2-D) .npz by flag and size, from a local dir or a checked download "
        "(never when DSIM_OFFLINE=1)"
    )

    # -- argument checks ------------------------------------------------------------------------
    def _args(self, args: Mapping[str, Any], name: str) -> tuple[str, int, Mapping[str, Any] | None]:
        flag = str(args.get("flag") or "").strip().lower()
        if not flag:
            raise DatasetError(f"dataset {name!r}: medmnist loader needs a 'flag' (e.g. pneumoniamnist)")
        try:
            size = int(args.get("size", 28) or 28)
        except (TypeError, ValueError):
            raise DatasetError(
                f"dataset {name!r}: medmnist size must be one of {SIZES}, got {args.get('size')!r}"
            ) from None
        if size not in SIZES:
            raise DatasetError(f"dataset {name!r}: medmnist size must be one of {SIZES}, got {size}")
        info = medmnist_info(flag)
        if _all_info() and info is None:
            import difflib

            known = sorted(_all_info())
            near = difflib.get_close_matches(flag, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else f" (known: {', '.join(known)})"
            raise DatasetError(f"dataset {name!r}: unknown MedMNIST flag {flag!r}{hint}")
        if info is not None:
            if flag.endswith("3d"):
                raise DatasetError(f"dataset {name!r}: {flag} holds 3-D volumes; dsim reads 2-D images only")
            if _url_md5(info, size)[0] is None and not dsim.find_data_file(*_file_names(flag, size)):
                raise DatasetError(f"dataset {name!r}: MedMNIST has no {size} px release of {flag}")
        return flag, size, info

    def _where(self) -> list[Path]:
        return [Path(d) for d in dsim.data_dirs()]

    def _absent_message(self, flag: str, size: int, info: Mapping[str, Any] | None) -> str:
        fname = _file_names(flag, size)[0]
        dirs = os.pathsep.join(str(d) for d in self._where())
        url, md5 = _url_md5(info, size)
        source = f"download {url} (md5 {md5})" if url else "get it from MedMNIST (https://medmnist.com)"
        return f"{fname} not found in {dirs}; {source} into one of them or set DSIM_DATA_DIR"

    # -- DatasetLoader --------------------------------------------------------------------------
    def missing(self, args: Mapping[str, Any], name: str) -> str | None:
        try:
            flag, size, info = self._args(args, name)
        except DatasetError as exc:
            return str(exc)
        if dsim.find_data_file(*_file_names(flag, size)) is not None:
            return None
        return self._absent_message(flag, size, info)

    def load(self, args: Mapping[str, Any], name: str) -> ImageSet:
        flag, size, info = self._args(args, name)
        path = dsim.find_data_file(*_file_names(flag, size))
        if path is None:
            path = self._download(flag, size, info)
        class_names = None
        if info and info.get("label"):
            labels = info["label"]
            class_names = [labels[k] for k in sorted(labels, key=lambda k: int(k))]
        multilabel = bool(info) and "multi-label" in str(info.get("task", ""))
        data = read_npz(path, name, split=args.get("split"), task="multi-label" if multilabel else None)
        if class_names is not None:
            if data.multilabel and data.num_classes != len(class_names):
                raise DatasetError(
                    f"{path}: {data.num_classes} label columns but {flag} has {len(class_names)} labels"
                )
            if not data.multilabel and len(data) and int(data.labels.max()) >= len(class_names):
                raise DatasetError(
                    f"{path}: label {int(data.labels.max())} but {flag} has {len(class_names)} classes"
                )
            data = ImageSet(
                name=data.name,
                images=data.images,
                labels=data.labels,
                class_names=tuple(class_names),
                split=data.split,
                source=data.source,
                task=data.task if data.multilabel else "",
            )
        return data

    def _download(self, flag: str, size: int, info: Mapping[str, Any] | None) -> Path:
        message = self._absent_message(flag, size, info)
        url, md5 = _url_md5(info, size)
        if url is None:
            raise DataMissingError(
                message + " (the medmnist package, which knows the download URL, is not installed)"
            )
        if _offline():
            raise DataMissingError(message + " (DSIM_OFFLINE is set, so dsim does not download)")
        dest_dir = self._where()[-1]
        dest = dest_dir / _file_names(flag, size)[0]
        tmp = dest.with_name(dest.name + ".part")
        print(f"dsim: downloading {url} -> {dest}", file=sys.stderr)
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
            fetch(url, tmp)
        except Exception as exc:  # unreachable network, HTTP error, disk full...
            tmp.unlink(missing_ok=True)
            reason = dsim.one_line(exc)
            raise DataMissingError(f"{message} (download failed: {reason})") from None
        got = _md5(tmp)
        if md5 and got != md5:
            tmp.unlink(missing_ok=True)
            raise DatasetError(
                f"{dest}: downloaded file from {url} has md5 {got}, expected {md5}; not kept "
                "(try again, or download it yourself)"
            )
        os.replace(tmp, dest)
        return dest


@dsim.hookimpl
def dsim_register_loaders():
    return [MedMNISTLoader()]

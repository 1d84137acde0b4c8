"""Where dsim keeps its files, and writing one so that no reader ever sees half of it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable

import platformdirs

__all__ = ["atomic_write", "user_path"]

#: what :func:`atomic_write` writes: bytes, text (UTF-8), or a function writing to a binary file
Content = bytes | str | Callable[[IO[bytes]], object]


def atomic_write(path: str | Path, content: Content) -> Path:
    """Write ``content`` to a temporary file beside ``path``, then rename it into place: a
    killed writer never leaves half a file, and concurrent writers leave one whole one. The
    parent folder is created. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def user_path(env: str, name: str = "", *, cache: bool = False) -> Path:
    """``$env`` when it is set (``~`` expanded), else ``name`` in dsim's user data folder (its
    user cache folder with ``cache``) of the platform (``platformdirs``)."""
    value = os.environ.get(env)
    if value:
        return Path(value).expanduser()
    return Path(platformdirs.user_cache_dir("dsim") if cache else platformdirs.user_data_dir("dsim")) / name

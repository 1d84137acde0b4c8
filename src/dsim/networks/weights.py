"""Where checkpoint files are looked for, how their content is checked, and how a backbone
plugin loads one strictly.

A checkpoint card names its weights ``file:<name>`` (:class:`dsim.CheckpointCard`); the name is
looked up in :func:`weights_dirs`: ``$DSIM_WEIGHTS_DIR`` (``os.pathsep``-separated), then
``<user data dir>/dsim/weights`` (``platformdirs``). A file is identified by its content, never by
its name: :func:`check_sha256` compares its sha256 with the one the card or plugin expects.

:func:`read_state_dict` and :func:`load_strict` are for backbone plugins that build their own
architectures (``dsim_plugins.mobilenet_v1``, ``dsim_plugins.cifar_resnet``): a file that does not
fit the network key for key is refused with one line naming the file, the backbone and the
first mismatched tensor.
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping

import platformdirs

from dsim.kernel.errors import CheckpointError, WeightsChecksumError, WeightsMissingError, one_line
from dsim.kernel.records import file_digest, stable_hash

__all__ = [
    "weights_dirs",
    "find_weights_file",
    "check_sha256",
    "locate_weights",
    "resolve_weights",
    "read_state_dict",
    "load_strict",
    "adapt_in_chans",
    "random_weights_id",
]


def weights_dirs() -> list[Path]:
    """Where checkpoint files are looked for: ``$DSIM_WEIGHTS_DIR`` (``os.pathsep``-separated),
    then ``<user data dir>/dsim/weights``."""
    dirs = [Path(p).expanduser() for p in os.environ.get("DSIM_WEIGHTS_DIR", "").split(os.pathsep) if p]

    dirs.append(Path(platformdirs.user_data_dir("dsim")) / "weights")
    return dirs


def find_weights_file(name: str | os.PathLike) -> Path | None:
    """The file ``name`` in the first of :func:`weights_dirs` that has it (an absolute path, or
    one starting with ``~``, is taken as is), or None."""
    p = Path(name).expanduser()
    if p.is_absolute():
        return p if p.is_file() else None
    for d in weights_dirs():
        if (d / p).is_file():
            return d / p
    return None


def check_sha256(path: str | os.PathLike, expected: str) -> str:
    """The sha256 of ``path`` (:func:`dsim.file_digest`); a :class:`dsim.WeightsChecksumError`
    naming the file, the expected and the found digest when it is not ``expected``."""

    found = file_digest(path)
    if found != expected.lower():
        raise WeightsChecksumError(
            f"{path}: sha256 {found} is not the expected {expected.lower()} "
            "(a corrupted or different file; replace it with the published one)"
        )
    return found


def locate_weights(file_name: str, *, sha256: str | None = None, what: str = "") -> Path:
    """The checked path of the weights file ``file_name``: found by :func:`find_weights_file`,
    its sha256 checked when given. Missing: a :class:`dsim.WeightsMissingError` saying which file
    to put in which directory; ``what`` names what the weights are for (a backbone, a card)."""
    path = find_weights_file(file_name)
    if path is None:
        dirs = os.pathsep.join(str(d) for d in weights_dirs())
        digest = f" (sha256 {sha256})" if sha256 else ""
        owner = f" for {what}" if what else ""
        raise WeightsMissingError(
            f"weights file {file_name!r}{owner} not found: put {Path(file_name).name}{digest} in a "
            f"directory of DSIM_WEIGHTS_DIR (searched: {dirs})"
        )
    if sha256:
        check_sha256(path, sha256)
    return path


def read_state_dict(path: str | os.PathLike) -> OrderedDict[str, Any]:
    """The tensors of a checkpoint file: a state dict, or a dict holding one under
    ``state_dict``/``model``/``model_state_dict`` (e.g. from ``dsim pretrain``); a ``module.``
    prefix (``DataParallel``) is dropped. ``.safetensors`` files are read with safetensors."""

    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        first = one_line(exc)
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    if isinstance(sd, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(sd.get(key), dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        what = "no tensors" if not isinstance(sd, dict) or not sd else "values that are not tensors"
        raise CheckpointError(f"{path}: not a checkpoint (it holds {what}; expected a state dict of tensors)")
    out = OrderedDict((_strip_module(k), v) for k, v in sd.items())
    meta = getattr(sd, "_metadata", None)  # module versions, which some modules' loading reads
    if meta is not None:
        out._metadata = type(meta)((_strip_module(k), v) for k, v in meta.items())
    return out


def _strip_module(key: str) -> str:
    """A key without the ``module.`` prefix of ``torch.nn.DataParallel``."""
    return key[7:] if key.startswith("module.") else ("" if key == "module" else key)


def _mismatches(
    own: Mapping[str, Any], found: Mapping[str, Any], optional: Iterable[str]
) -> tuple[list[str], list[str], list[str]]:
    """The model's keys the file lacks, the keys whose shapes differ (``key (file) vs (model)``)
    and the file's keys the model does not have."""
    optional = tuple(optional)
    missing = [k for k in own if k not in found and not k.endswith(optional)]
    shapes = [
        f"{k} {tuple(found[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in found and tuple(found[k].shape) != tuple(v.shape)
    ]
    unexpected = [k for k in found if k not in own]
    return missing, shapes, unexpected


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_strict(
    model,
    state_dict: Mapping[str, Any],
    *,
    file: str | os.PathLike,
    backbone: str,
    optional: Iterable[str] = ("num_batches_tracked",),
) -> None:
    """Load ``state_dict`` into ``model`` key for key: every tensor of the model present with its
    shape and nothing else in the file. Keys ending in one of ``optional`` may be absent (BN's
    ``num_batches_tracked``, which files saved by old PyTorch versions lack). Otherwise a
    :class:`dsim.CheckpointError` naming ``file`` and ``backbone``, how many of the model's
    tensors the file lacks or has with another shape, how many of the file's the model does not
    take, and the first few keys on both sides."""
    own = model.state_dict()
    missing, shapes, unexpected = _mismatches(own, state_dict, optional)
    if missing or shapes or unexpected:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} of the model's {len(own)} tensors missing (model: {_first(missing)})"
            )
        if shapes:
            parts.append(f"{len(shapes)} with another shape (file vs model: {_first(shapes, 2)})")
        if unexpected:
            parts.append(
                f"{len(unexpected)} of the file's {len(state_dict)} tensors not in the model "
                f"(file: {_first(unexpected)})"
            )
        raise CheckpointError(
            f"checkpoint {str(file)!r} does not fit backbone {backbone!r}: {'; '.join(parts)} "
            "(is --arch / the card's architecture the one it was saved from?)"
        )
    model.load_state_dict(state_dict, strict=False)


def resolve_weights(model_name: str, weights: str, published: Mapping[str, tuple[str, str]]) -> Path | None:
    """The checkpoint file that ``weights`` names for the backbone ``model_name``, or None for
    ``"random"``. ``weights`` is a key of ``published`` (a pretraining-set name such as
    ``"imagenet"``, mapped to the published ``(file name, sha256)``: found in :func:`weights_dirs`
    and checked), ``file:NAME`` (looked up in :func:`weights_dirs`) or a path (a relative one not
    found from the working directory is looked up in :func:`weights_dirs`). Anything else is a
    one-line :class:`dsim.WeightsMissingError`."""
    spec = str(weights)
    if spec == "random":
        return None
    if spec in published:
        file_name, sha = published[spec]
        return locate_weights(file_name, sha256=sha, what=f"backbone {model_name!r} ({spec})")
    if spec.startswith("file:"):
        return locate_weights(spec[5:], what=f"backbone {model_name!r}")
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    found = None if path.is_absolute() else find_weights_file(path)  # a file name in weights_dirs()
    if found is not None:
        return found
    if not path.suffix and len(path.parts) == 1:  # a weights name, not a path
        known = ", ".join(repr(k) for k in (*published, "random"))
        raise WeightsMissingError(
            f"backbone {model_name!r} has no {spec!r} weights; choose {known} or a checkpoint file"
        )
    raise WeightsMissingError(f"checkpoint file {spec!r} not found")


def adapt_in_chans(weight, in_chans: int):
    """First-conv weights ``(out, c, k, k)`` for ``in_chans`` input channels, by timm's rule
    (``timm.models.adapt_input_conv``): summed over the channels for one, repeated and rescaled
    by ``c / in_chans`` otherwise."""
    if in_chans == weight.shape[1]:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_chans // weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def random_weights_id(model_name: str, *, seed: int, in_chans: int, **versions: str) -> str:
    """The content id (``model.dsim_weights_id``) of a seeded random-init network, which every
    cache built on it is keyed by: what builds it (architecture, seed, input channels, torch's
    version, and the version of any library that makes it, e.g. ``timm=timm.__version__``)."""
    import torch

    return stable_hash(
        {
            "arch": model_name,
            "init": "random",
            "seed": seed,
            "in_chans": in_chans,
            "torch": torch.__version__.split("+")[0],
            **versions,
        }
    )

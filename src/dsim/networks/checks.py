"""Everything a command is given, checked before work starts.

``dsim rank``, ``validate``, ``measure`` and ``pretrain`` (the CLI and the Python API alike) call
one ``check_*`` function here first. Each problem is one :class:`dsim.OptionValueError` naming the
option, the value and what is allowed (``--epochs: -1 is not allowed (a whole number >= 1)``), or
a :class:`dsim.UnknownNameError` for a name no plugin knows; nothing has been computed when it is
raised. The parameters of measures, strategies and predictors are checked the same way against
the :class:`dsim.Range` they declare (:func:`check_params`), and a checkpoint is looked at without
building it (:func:`checkpoint_problem`) so that one which cannot be evaluated is never ranked.

Warnings (an environment variable naming a folder that is not there) are printed once each, on
stderr, as ``warning: ...``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsim.kernel.cache import default_cache_dir
from dsim.kernel.catalog import backbone_missing, list_measures, list_predictors, list_strategies
from dsim.kernel.environment import check_flags
from dsim.kernel.errors import (
    OptionValueError,
    StorageError,
    UnknownNameError,
    UnknownOptionError,
    one_line,
    warn,
)
from dsim.kernel.interfaces import Range
from dsim.networks.checkpoints import checkpoint_missing, network_name
from dsim.networks.weights import find_weights_file

__all__ = [
    "check_params",
    "check_number",
    "check_list",
    "check_target",
    "check_environment",
    "check_hyperparameters",
    "check_rank",
    "check_measure",
    "check_validate",
    "check_pretrain",
    "checkpoint_problem",
    "warn",
]


# ---------------------------------------------------------------------------------- numbers
def check_number(
    option: str,
    value: Any,
    kind: type = int,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    none: bool = False,
) -> Any:
    """``value`` as an ``int`` or ``float`` within ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``);
    a numeric string is read; ``None`` passes when ``none``. Else an :class:`OptionValueError`
    naming ``option`` (:meth:`dsim.Range.read`)."""
    return Range(kind, lo, hi, none=none, min_open=lo_open).read(option, value)


def check_params(owner, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` for the :class:`dsim.Parameterised` ``owner`` (a class or an instance), each
    checked against its :class:`dsim.Range` (:meth:`dsim.Parameterised.check_params`)."""
    return owner.check_params(params)


# ---------------------------------------------------------------------------------- lists, names
def check_list(option: str, value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """A comma-separated option (or a list of names) as a tuple; an empty element (``",,"``,
    ``"a,,b"``, a trailing comma, ``""``) is an :class:`OptionValueError`."""
    if value is None:
        return None
    if not isinstance(value, str) and len(value) == 0:
        return ()  # an explicit empty list (the API's "no sources"): nothing to check
    items = value.split(",") if isinstance(value, str) else [str(x) for x in value]
    items = [i.strip() for i in items]
    if not items or any(not i for i in items):
        raise OptionValueError(
            option,
            value if isinstance(value, str) else ",".join(items),
            "a comma-separated list of names, none empty",
        )
    return tuple(items)


def check_target(target: Any, option: str = "--target") -> None:
    """An empty target (``--target ""``) is not the current folder: it is an error."""
    if isinstance(target, str) and not target.strip():
        raise OptionValueError(option, target, "a registered dataset name or a path to your data")


def check_environment() -> None:
    """The environment variables dsim reads, before work starts: a flag variable
    (``DSIM_DEBUG``, ``DSIM_ALLOW_DOWNLOAD`` ...) set to a value that is not a flag value, and
    ``DSIM_RESULTS`` / ``DSIM_PREDICTOR_DIR`` naming something that cannot be what they name (a
    folder for the results file, a file for a folder, a path under a file), are each a one-line :class:`OptionValueError` naming the variable; each entry of
    ``DSIM_DATA_DIR`` / ``DSIM_WEIGHTS_DIR`` that is not a folder is one warning naming it (it is
    searched in vain). (A ``DSIM_CACHE_DIR`` that cannot be written is not an error: work runs
    uncached, with one warning, and pretraining names it in :func:`check_checkpoint_cache`.)"""
    check_flags()
    for var, folder in (("DSIM_RESULTS", False), ("DSIM_PREDICTOR_DIR", True)):
        _check_path_variable(var, folder)
    for var in ("DSIM_DATA_DIR", "DSIM_WEIGHTS_DIR"):
        for entry in os.environ.get(var, "").split(os.pathsep):
            if entry and not Path(entry).expanduser().is_dir():
                what = "a file" if Path(entry).expanduser().exists() else "not there"
                warn(f"{var} entry {entry!r} is not a folder ({what}); it is left out of the search")


def _check_path_variable(var: str, folder: bool) -> None:
    """``$var`` (when set) names a folder (``folder``) or a file that is, or can be, there."""
    value = os.environ.get(var, "")
    if not value.strip():
        return
    path = Path(value).expanduser()
    allowed = (
        "a folder dsim can create and write" if folder else "a results file (SQLite) in a writable folder"
    )
    if folder and path.exists() and not path.is_dir():
        raise OptionValueError(var, value, f"{allowed}; this is a file")
    if not folder and path.is_dir():
        raise OptionValueError(var, value, f"{allowed}; this is a folder")
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise OptionValueError(var, value, f"{allowed}; {str(above)!r} above it is a file")


def _strategy_names(names: Sequence[str]) -> None:
    known = list_strategies()
    for s in names:
        if s not in known:
            raise UnknownNameError("strategy", s, known)


def _backbone(option: str, name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise OptionValueError(option, name, "a backbone name (`dsim plugins` lists the backbone plugins)")
    why = backbone_missing(name, "random")
    if why and why.startswith("no backbone plugin builds"):
        raise OptionValueError(
            option, name, "a backbone name: smallcnn, a timm model, ...; `dsim plugins` lists them"
        )


# ---------------------------------------------------------------------------------- hyper-parameters
#: what each training hyper-parameter allows (``--hp key=value``)
HP_RANGES: dict[str, tuple] = {
    "epochs": (int, 1, None),
    "batch_size": (int, 1, None),
    "lr": (float, 0, None, True),
    "weight_decay": (float, 0, None),
    "patience": (int, 0, None),
    "min_epochs": (int, 0, None),
    "image_size": (int, 8, 4096),
    "channels": (int, 1, 4),
    "label_smoothing": (float, 0, 1),
    "seed": (int, 0, None),
}
_HP_FLAGS = ("class_weights", "augment", "ordinal")
_HP_CHOICES = {"schedule": ("constant", "plateau", "one-cycle")}


def check_hyperparameters(
    hp: Mapping[str, Any] | None,
    option: str = "--hp",
    strategies: Sequence[str] = (),
    flags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Training hyper-parameters, each checked (range, type); a key that neither the training
    loop nor one of ``strategies`` (their ``hyperparameters``) reads is an
    :class:`UnknownOptionError`: no setting is dropped in silence. ``flags`` names the option
    a key comes from when it has its own (``{"epochs": "--epochs"}``)."""
    extra: set[str] = set()
    every = list_strategies()
    for s in strategies:
        if s in every:
            extra |= set(getattr(every[s], "hyperparameters", ()) or ())
    known = sorted({*HP_RANGES, *_HP_FLAGS, *_HP_CHOICES, *extra})
    out = {}
    for k, v in dict(hp or {}).items():
        name = (flags or {}).get(k) or f"{option} {k}"
        if k in HP_RANGES:
            kind, lo, hi, *rest = HP_RANGES[k]
            out[k] = check_number(name, v, kind, lo, hi, lo_open=bool(rest and rest[0]))
        elif k in _HP_FLAGS:
            if not isinstance(v, bool):
                raise OptionValueError(name, v, "true or false")
            out[k] = v
        elif k in _HP_CHOICES:
            if v not in _HP_CHOICES[k]:
                raise OptionValueError(name, v, "one of " + ", ".join(_HP_CHOICES[k]))
            out[k] = v
        elif k in extra:
            out[k] = v
        else:
            raise UnknownOptionError(k, f"{option} (the training hyper-parameters)", known)
    return out


# ---------------------------------------------------------------------------------- checkpoints
def checkpoint_problem(card) -> str | None:
    """Why ``card``'s network cannot be evaluated, found without building it, or None: its
    architecture is one no backbone plugin builds, its weights are not here (the message names the
    file and DSIM_WEIGHTS_DIR), or its file is empty, truncated or not a checkpoint at all."""
    arch = backbone_missing(network_name(card), "random")
    if arch and arch.startswith("no backbone plugin builds"):
        return f"architecture {network_name(card)!r} of checkpoint {card.name!r} is unknown: {arch}"
    why = checkpoint_missing(card)
    if why:
        return why
    if card.weights.startswith("file:"):
        path = find_weights_file(card.weights[5:])
        if path is not None:
            return file_problem(path)
    return None


def file_problem(path: str | os.PathLike) -> str | None:
    """Why the checkpoint file ``path`` is surely unreadable, from its size and first bytes (an
    empty file, a truncated or foreign zip, bytes that are neither a torch file nor safetensors),
    or None. Reads a few bytes, never the tensors."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        return f"{p}: cannot be read ({exc.strerror or exc})"
    if size == 0:
        return f"{p}: not a readable checkpoint (the file is empty)"
    if p.suffix.lower() == ".safetensors":
        n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
        if n <= 0 or n + 8 > size or head[8:9] != b"{":
            return f"{p}: not a readable checkpoint (not a safetensors file, or truncated)"
        return None
    if head[:4] == b"PK\x03\x04":  # torch's zip format: its central directory must be there
        if not zipfile.is_zipfile(p):
            return f"{p}: not a readable checkpoint (a truncated or damaged torch file)"
        return None
    if head[:1] == b"\x80":  # torch's legacy pickle format
        return None
    return f"{p}: not a readable checkpoint (neither a torch file nor safetensors; {size} bytes)"


def check_checkpoint_cache() -> None:
    """Pretrained checkpoints are the product of pretraining, not a cache that can be skipped:
    a checkpoint folder (``<DSIM_CACHE_DIR>/checkpoints``) that cannot be written is a
    :class:`dsim.StorageError` naming it and what to do, before any training."""
    d = default_cache_dir() / "checkpoints"
    try:
        d.mkdir(parents=True, exist_ok=True)
        ok = os.access(d, os.W_OK | os.X_OK)
    except OSError as exc:
        raise StorageError(
            f"checkpoint folder {d} cannot be created ({one_line(exc)}): set DSIM_CACHE_DIR to a "
            "writable folder"
        ) from None
    if not ok:
        raise StorageError(f"checkpoint folder {d} is not writable: set DSIM_CACHE_DIR to a writable folder")


# ---------------------------------------------------------------------------------- commands
def _rank_numbers(top, max_samples, seed) -> None:
    if top is not None:
        check_number("--top", top, int, 1)
    if max_samples is not None:
        check_number("--max-samples", max_samples, int, 2)
    check_number("--seed", seed, int, 0)


def _predictor(choice) -> None:
    """A predictor choice that names nothing (not a plugin, not 'fitted', no such file)."""
    if choice is None or not isinstance(choice, str):
        return

    if choice == "fitted" or choice in list_predictors():
        return
    if choice.endswith(".json") or os.sep in choice:
        if not Path(choice).expanduser().is_file():
            raise OptionValueError("--predictor", choice, "a saved predictor file that exists")
        return
    raise UnknownNameError("predictor", choice, [*list_predictors(), "fitted"])


def check_rank(
    target,
    *,
    sources=None,
    measures=None,
    top=None,
    max_samples=None,
    seed=0,
    arch=None,
    zoo=(),
    predictor=None,
) -> None:
    """``dsim rank``'s arguments, before anything is loaded or computed."""
    check_environment()
    check_target(target)
    _rank_numbers(top, max_samples, seed)
    if isinstance(sources, str) or sources is not None:
        check_list("--sources", sources)
    if isinstance(measures, str) or measures is not None:
        names = check_list("--measures", measures)

        every = list_measures()
        for m in names or ():
            if m not in every:
                raise UnknownNameError("measure", m, every)
    if arch is not None:
        _backbone("--arch", arch)
    _predictor(predictor)
    for z in [zoo] if isinstance(zoo, str) else list(zoo or ()):
        if not str(z).strip():
            raise OptionValueError("--zoo", z, "a YAML file of checkpoint cards")


def check_measure(source, target, measure: str, *, max_samples=None, seed=0) -> None:
    """``dsim measure``'s arguments."""
    check_environment()
    check_target(source, "--source")
    check_target(target)
    if max_samples is not None:
        check_number("--max-samples", max_samples, int, 2)
    check_number("--seed", seed, int, 0)
    if not isinstance(measure, str) or not measure.strip():
        raise OptionValueError("--measure", measure, "a measure name (`dsim plugins` lists them)")


def check_validate(target, cfg, *, sources=None) -> None:
    """``dsim validate``'s settings (a :class:`dsim.ValidateConfig`), before the plan starts:
    numbers in range, strategies and backbone known, hyper-parameters read by someone."""
    check_environment()
    check_target(target)
    if isinstance(sources, str) or sources is not None:
        check_list("--sources", sources)
    check_number("--top", cfg.top, int, 1)
    check_number("--folds", cfg.folds, int, 2)
    check_number("--seed", cfg.seed, int, 0)
    if cfg.target_max is not None:
        check_number("--target-max", cfg.target_max, int, 4)
    if cfg.source_max is not None:
        check_number("--source-max", cfg.source_max, int, 2)
    for n in cfg.train_sizes:
        if n is not None:
            check_number("--train-sizes", n, int, 2)
    _strategy_names(cfg.strategies + ((cfg.baseline,) if cfg.baseline else ()))
    _backbone("--backbone", cfg.backbone)
    check_hyperparameters(
        cfg.hyperparameters, "--hp", cfg.strategies, {"epochs": "--epochs", "image_size": "--image-size"}
    )
    check_hyperparameters(
        cfg.pretrain_hyperparameters,
        "pretrain_hyperparameters",
        cfg.strategies,
        {"epochs": "--pretrain-epochs", "image_size": "--image-size"},
    )
    check_checkpoint_cache()


def check_pretrain(
    source, backbone: str, *, init: str = "random", hyperparameters=None, max_samples=None, seed=0
) -> None:
    """``dsim pretrain``'s arguments."""
    check_environment()
    check_target(source, "--source")
    _backbone("--backbone", backbone)
    if init not in ("random", "imagenet"):
        raise OptionValueError("--init", init, "random or imagenet")
    if max_samples is not None:
        check_number("--max-samples", max_samples, int, 2)
    check_number("--seed", seed, int, 0)
    check_hyperparameters(hyperparameters, "--hp", flags={"epochs": "--epochs", "image_size": "--image-size"})
    check_checkpoint_cache()

"""Every knob of a validation in one place: :class:`ValidateConfig` and its defaults.

``dsim.validate(**knobs)``, the run planner and ``dsim validate`` all build one from the same
field defaults, so a default is written once. Light module: no torch, safe for ``--help``.
See docs/validate.md for what each knob does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from dsim.kernel.defaults import (
    BASELINE_STRATEGY,
    DEFAULT_BACKBONE,
    DEFAULT_PRETRAIN,
    DEFAULT_STRATEGY,
    DEFAULT_TRAIN,
)
from dsim.kernel.errors import DsimError, UnknownOptionError, closest

__all__ = ["ValidateConfig", "DEFAULT_TRAIN", "DEFAULT_PRETRAIN", "DATA_PLACEMENTS", "QUICK"]

#: ``dsim validate --quick``: a CPU check of the whole loop in minutes, not a measurement that
#: separates sources (its report says so); options given beside it win. Measured time: docs/validate.md
QUICK: Mapping[str, Any] = {
    "top": 2,
    "folds": 2,
    "target_max": 200,
    "source_max": 500,
    "epochs": 3,
    "pretrain_epochs": 2,
    "image_size": 28,  # checkpoints too (warned: below their native size), so that a CPU can do it
}
#: how workers get registered datasets: shipped by the driver, or read from a shared location
DATA_PLACEMENTS = ("ship", "shared")


def _split(x: str | Sequence[str]) -> tuple[str, ...]:
    items = [x] if isinstance(x, str) else list(x)
    return tuple(s.strip() for i in items for s in str(i).split(",") if s.strip())


def _sizes(x: str | Sequence[int | None] | None) -> tuple[int | None, ...]:
    if x is None or x == "" or (not isinstance(x, str) and len(x) == 0):
        return (None,)
    if isinstance(x, str):
        return tuple(int(s) for s in x.split(",") if s.strip())
    return tuple(None if s is None else int(s) for s in x)


@dataclass(frozen=True)
class ValidateConfig:
    """The settings of one ``dsim.validate``: what to run, how to train, where to run it.

    What to train (strategies, baseline, backbone, folds, train sizes, seed, caps and
    hyper-parameters) enters the run keys: a changed hyper-parameter is another run. Which
    sources (``top``, ``predict``, ``rank_options``) and where to run (``executor``, ``address``,
    ``device``, resources, ``data_placement``) do not: the same run elsewhere is the same run.
    """

    top: int = 3  # without explicit sources: the K best-ranked sources that can be trained here
    strategies: tuple[str, ...] = (DEFAULT_STRATEGY,)
    baseline: str | None = BASELINE_STRATEGY  # the from-scratch strategy AUC(T) comes from; None: none
    backbone: str = DEFAULT_BACKBONE
    folds: int = 5
    train_sizes: tuple[int | None, ...] = (None,)  # data-size curve; None = the whole training split
    seed: int = 0
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)  # over DEFAULT_TRAIN
    pretrain_hyperparameters: Mapping[str, Any] = field(default_factory=dict)  # over DEFAULT_PRETRAIN
    target_max: int | None = None  # seeded, stratified cap on the target's images
    source_max: int | None = None  # the same per source
    predict: bool = True  # rank the sources to compare the measurement with the prediction
    rank_options: Mapping[str, Any] = field(default_factory=dict)
    executor: Any = "local"  # "local", "ray", or an executor object
    address: str | None = None  # Ray cluster address (None: start a local Ray)
    device: str = "auto"
    cpus_per_run: float | None = None  # CPUs per task; torch threads follow (None: 1 on Ray, as is locally)
    gpus_per_run: float | None = None  # GPUs per task, fractional (None: 1 when the cluster has GPUs)
    data_placement: str = "ship"  # "ship": through the object store; "shared": every node reads it
    zoo: tuple[str, ...] = ()  # checkpoint zoo YAML files whose card names --sources may use

    #: keyword names of ``dsim.validate`` that differ from the field names
    ALIASES = {"strategy": "strategies"}
    #: flags of ``dsim validate`` that set part of a field: ``epochs`` and ``image_size`` the
    #: fine-tuning hyper-parameters (``image_size`` pretraining's too), ``pretrain_epochs`` the
    #: pretraining's, ``measures`` the ranking's, ``hp`` more fine-tuning hyper-parameters
    FLAGS = ("epochs", "image_size", "pretrain_epochs", "measures", "hp")
    #: keywords of ``dsim.validate`` itself (not settings), listed when a keyword is unknown
    CALL_KEYWORDS = (
        "sources",
        "store",
        "inline",
        "labels",
        "facts",
        "card",
        "progress",
        "run_progress",
        "on_event",
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "strategies", _split(self.strategies))
        set_(self, "train_sizes", _sizes(self.train_sizes))
        set_(self, "hyperparameters", dict(self.hyperparameters or {}))
        set_(self, "pretrain_hyperparameters", dict(self.pretrain_hyperparameters or {}))
        set_(self, "rank_options", dict(self.rank_options or {}))
        set_(self, "zoo", (self.zoo,) if isinstance(self.zoo, str) else tuple(str(z) for z in self.zoo or ()))
        if self.folds < 2:
            raise DsimError(f"validate: folds must be at least 2, got {self.folds}")
        if not self.strategies:
            raise DsimError("validate: no strategy given")
        if self.data_placement not in DATA_PLACEMENTS:
            raise DsimError(
                f"validate: data placement {self.data_placement!r} is not one of {', '.join(DATA_PLACEMENTS)}"
            )
        for name in ("cpus_per_run", "gpus_per_run"):
            v = getattr(self, name)
            if v is not None and not float(v) >= 0:
                raise DsimError(f"validate: {name} must be 0 or more, got {v}")
        if self.cpus_per_run is not None and self.cpus_per_run <= 0:
            raise DsimError(f"validate: cpus_per_run must be more than 0, got {self.cpus_per_run}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def build(cls, config: ValidateConfig | None = None, **knobs: Any) -> ValidateConfig:
        """``config`` (or the defaults) with ``knobs`` changed; ``strategy`` is an alias of
        ``strategies``. An unknown knob is a one-line error naming it and the close ones."""
        names = cls.field_names()
        changes = {}
        flags = {k: knobs.pop(k) for k in cls.FLAGS if k in knobs}
        for k, v in knobs.items():
            k = cls.ALIASES.get(k, k)
            if k not in names:
                valid = sorted({*names, *cls.ALIASES, *cls.FLAGS, *cls.CALL_KEYWORDS})
                hint = closest(k, valid)
                exc = UnknownOptionError(k, "dsim.validate", valid)
                exc.args = (
                    f"unknown option {k!r} for dsim.validate"
                    + (f"; did you mean {', '.join(hint)}?" if hint else "")
                    + f" (valid keywords: {', '.join(valid)})",
                )
                raise exc
            changes[k] = v
        base = config if config is not None else cls()
        if flags:
            hp = {
                **base.hyperparameters,
                **dict(changes.get("hyperparameters") or {}),
                **dict(flags.get("hp") or {}),
            }
            php = {**base.pretrain_hyperparameters, **dict(changes.get("pretrain_hyperparameters") or {})}
            if flags.get("epochs") is not None:
                hp["epochs"] = flags["epochs"]
            if flags.get("image_size") is not None:
                hp["image_size"] = php["image_size"] = flags["image_size"]
            if flags.get("pretrain_epochs") is not None:
                php["epochs"] = flags["pretrain_epochs"]
            changes["hyperparameters"], changes["pretrain_hyperparameters"] = hp, php
            if flags.get("measures") is not None:
                changes["rank_options"] = {
                    **base.rank_options,
                    **dict(changes.get("rank_options") or {}),
                    "measures": _split(flags["measures"]),
                }
        return dataclasses.replace(base, **changes) if changes else base

    def train_hp(self) -> dict[str, Any]:
        """The fine-tuning hyper-parameters: :data:`DEFAULT_TRAIN` with this config's on top."""
        return {**DEFAULT_TRAIN, **self.hyperparameters}

    def pretrain_hp(self) -> dict[str, Any]:
        """The pretraining hyper-parameters: :data:`DEFAULT_PRETRAIN` with this config's on top."""
        return {**DEFAULT_PRETRAIN, **self.pretrain_hyperparameters}

    def to_dict(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in self.field_names()}
        if not isinstance(d["executor"], str):
            d["executor"] = getattr(d["executor"], "name", type(d["executor"]).__name__)
        return d

"""The base classes a plugin implements: dataset loaders, backbones, measures, strategies and
predictors. A plugin returns instances (or, for predictors, classes) of these from the hooks in
:mod:`dsim.kernel.hookspecs`. Everything here is part of dsim's public API (``from dsim import Measure``).

The classes are deliberately small: a name, a one-line description, and one or two methods.
Heavy libraries (torch, timm, POT) are imported inside the methods, never at module import.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

from dsim.kernel.errors import DsimError, OptionValueError, UnknownOptionError
from dsim.kernel.records import (
    BackboneSpec,
    CheckpointCard,
    DatasetCard,
    ImageSet,
    MeasureValue,
    Ranking,
    Representation,
    RunResult,
    RunSpec,
    TransferResult,
    stable_hash,
)

if TYPE_CHECKING:  # pragma: no cover
    from dsim.kernel.cache import Cache

__all__ = [
    "data_fingerprint",
    "representation_of",
    "representation_key",
    "Range",
    "Parameterised",
    "Context",
    "DatasetLoader",
    "BackboneFactory",
    "Measure",
    "Strategy",
    "Predictor",
    "Candidate",
    "FoldData",
    "Reproduction",
    "Tracker",
    "Executor",
]

ProgressFn = Callable[[str, int, int], None]  # (description, done, total)


def _no_progress(description: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class Range:
    """What one parameter allows, declared beside it in ``param_ranges``:
    ``Range(int, 1)`` a whole number >= 1, ``Range(float, 0, 1)`` a number from 0 to 1,
    ``Range(float, 0, min_open=True)`` one > 0, ``none=True`` None as well,
    ``choices=("exact", "gaussian")`` one of those values."""

    type: type = float
    min: float | None = None
    max: float | None = None
    none: bool = False
    min_open: bool = False
    choices: tuple = ()

    def allowed(self) -> str:
        """What the range allows, in words: ``a whole number >= 1``."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        what = "a whole number" if self.type is int else "a number"
        lo, hi = self.min, self.max
        if lo is not None and hi is not None:
            what += f" > {lo} and <= {hi}" if self.min_open else f" from {lo} to {hi}"
        elif lo is not None:
            what += f" {'>' if self.min_open else '>='} {lo}"
        elif hi is not None:
            what += f" <= {hi}"
        return what + (", or none" if self.none else "")

    def read(self, option: str, value: Any) -> Any:
        """``value`` checked (a numeric string is read as a number); else a one-line
        :class:`dsim.OptionValueError` naming ``option``, the value and :meth:`allowed`."""
        if value is None and self.none:
            return None
        if self.choices:
            if value not in self.choices:
                raise OptionValueError(option, value, self.allowed())
            return value
        v = value
        if isinstance(v, str):
            try:
                v = float(v.strip()) if v.strip() else None
            except ValueError:
                v = None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise OptionValueError(option, value, self.allowed())
        if self.type is int:
            if float(v) != int(float(v)):
                raise OptionValueError(option, value, self.allowed())
            v = int(v)
        else:
            v = float(v)
        lo, hi = self.min, self.max
        if lo is not None and (v < lo or (self.min_open and v == lo)) or hi is not None and v > hi:
            raise OptionValueError(option, value, self.allowed())
        return v


class Parameterised:
    """Parameters in the scikit-learn style: every keyword argument of ``__init__`` is a
    parameter, stored unchanged as the attribute of the same name; nothing else is state.

    :meth:`get_params` reads them back (measures use them as their cache config) and
    :meth:`with_params` makes a copy with some changed; an unknown name is a one-line
    :class:`dsim.UnknownOptionError` naming it and the nearest valid ones, a value out of the
    parameter's :class:`Range` (``param_ranges``; without one, of another type than its
    default) a one-line :class:`dsim.OptionValueError` naming the parameter, the value and what
    is allowed.

    Example::

        class Knn(Measure):
            param_ranges = {"knn_k": Range(int, 1)}

            def __init__(self, knn_k: int = 10):
                self.knn_k = knn_k
    """

    #: parameter name -> the values it allows (checked by :meth:`with_params`)
    param_ranges: ClassVar[Mapping[str, Range]] = {}

    @classmethod
    def param_names(cls) -> list[str]:
        init = cls.__init__
        if init is object.__init__:
            return []
        sig = inspect.signature(init)
        return [
            n
            for n, p in sig.parameters.items()
            if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]

    def get_params(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.param_names()}

    def with_params(self, **params: Any):
        """A new instance with ``params`` changed (the others as they are here)."""
        if not params:
            return self
        return type(self)(**{**self.get_params(), **self.check_params(params)})

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` checked: an unknown name is an :class:`dsim.UnknownOptionError`; a value
        outside the parameter's :class:`Range` (``param_ranges``) or, without one, of another
        type than its default (a number for a numeric default, true/false for a flag) an
        :class:`dsim.OptionValueError` naming the parameter and its owner. Returns the values
        read (``"500"`` -> 500)."""
        names = cls.param_names()
        label = f"{cls._kind_label()} {(getattr(cls, 'name', '') or cls.__name__)!r}"
        sig = inspect.signature(cls.__init__).parameters
        out = {}
        for k, v in params.items():
            if k not in names:
                raise UnknownOptionError(k, label, names)
            option = f"option {k!r} of {label}"
            r = cls.param_ranges.get(k)
            d = sig[k].default
            if r is not None:
                out[k] = r.read(option, v)
            elif isinstance(d, bool):
                if not isinstance(v, bool):
                    raise OptionValueError(option, v, "true or false")
                out[k] = v
            elif isinstance(d, (int, float)) and v is not None:
                out[k] = Range(int if isinstance(d, int) else float).read(option, v)
            else:
                out[k] = v
        return out

    @classmethod
    def _kind_label(cls) -> str:
        for base, label in (("Measure", "measure"), ("Strategy", "strategy"), ("Predictor", "predictor")):
            if any(b.__name__ == base and b.__module__ == __name__ for b in cls.__mro__):
                return label
        return cls.__name__


#: the run-level facts a :class:`Context` may carry in ``options`` (the core sets them)
CONTEXT_OPTIONS = ("label",)


@dataclass
class Context:
    """What the core hands to plugin code for one piece of work: seed, device, the
    representation cache, a progress callback, the image cap of a ranking (``max_samples``:
    image measures look at a seeded stratified subsample of at most that many images per
    dataset) and run-level facts the core sets (``options``, e.g. a run's ``label``).

    A measure's or strategy's own parameters are not here: they are ``__init__`` arguments
    (:class:`Parameterised`); one given in ``options`` is an error naming it (it would be
    ignored), as is any option besides the run-level facts (``label``).
    """

    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    cache: Cache | None = None
    progress: ProgressFn = _no_progress
    options: Mapping[str, Any] = field(default_factory=dict)
    max_samples: int | None = None

    def __post_init__(self) -> None:
        for k in self.options:  # run-level facts only: a parameter here would be dropped in silence
            if k not in CONTEXT_OPTIONS:
                raise DsimError(
                    f"run context option {k!r} would be ignored: Context.options carries run-level "
                    f"facts only ({', '.join(CONTEXT_OPTIONS)}); a measure's or strategy's parameter is "
                    f"set on it (dsim.create_measure(name, {k}=...), dsim.get_strategy(name, {k}=...), "
                    f"-o {k}=...)"
                )

    def option(self, name: str, default: Any = None) -> Any:
        value = self.options.get(name)
        return default if value is None else value

    def torch_device(self):
        """The torch device to use: CUDA when present and ``device == "auto"``."""
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def with_options(self, **options: Any) -> Context:
        return dataclasses.replace(self, options={**self.options, **options})


class DatasetLoader:
    """Turns a card's ``loader_args`` (or a path the user gave) into an :class:`ImageSet`.

    Example (a loader for a folder of ``.npy`` files)::

        class NpyLoader(DatasetLoader):
            name = "npy"
            description = "one .npy array of images plus labels.npy"

            def claims(self, path):
                return {"dir": str(path)} if (path / "labels.npy").exists() else None

            def load(self, args, name):
                d = Path(args["dir"])
                return ImageSet(name, np.load(d / "images.npy"), np.load(d / "labels.npy"))
    """

    name: str = ""
    description: str = ""

    def claims(self, path: Path) -> Mapping[str, Any] | None:
        """Loader args if this loader can read the user-given ``path``, else None."""
        return None

    def missing(self, args: Mapping[str, Any], name: str) -> str | None:
        """Why the data is not available locally (one line saying how to supply it), or None."""
        return None

    def load(self, args: Mapping[str, Any], name: str) -> ImageSet:
        """Read the images. Raise :class:`dsim.DatasetError` naming the file and the problem."""
        raise NotImplementedError


class OverlapCheck:
    """Finds a target's own images inside a source dataset (the same images at another size,
    encoding or file name), so that the ranking never offers the target's images as a source.

    ``share`` returns the fraction (0..1) of ``target``'s images (a seeded sample) that have a
    near-duplicate in ``source`` (all of its images). The ranking excludes a source holding most
    of the target's images and flags a partial overlap with its share. Example::

        class ExactMatch(OverlapCheck):
            name = "exact-match"

            def share(self, source, target, ctx):
                seen = {img.tobytes() for img in source.images}
                return float(np.mean([img.tobytes() in seen for img in target.images]))
    """

    name: str = ""
    description: str = ""

    def share(self, source: ImageSet, target: ImageSet, ctx: Context) -> float:
        raise NotImplementedError


class BackboneFactory:
    """Creates networks by name, as ``timm.create_model`` does.

    ``weights`` is ``"imagenet"`` (pretrained weights from a local cache or the network, never a
    silent download in offline mode), ``"random"`` (seeded random init, an explicit choice) or a
    path to a checkpoint file. ``num_classes=0`` returns a feature extractor.

    The module returned follows timm's model interface, which dsim's strategies and measures use:
    ``forward(x)`` (logits, or pooled features when ``num_classes=0``), ``forward_features(x)``,
    ``forward_head(features, pre_logits=False)``, ``get_classifier()`` and ``num_features``. It
    also carries ``dsim_weights_id``: the content id of its weights (a file's sha256, a pretrained
    tag, or a hash of architecture and seed for a random init), which every cache built on the
    network is keyed by; ``dsim.create_backbone`` refuses a network without it.

    The network's own terms (its native input size, its normalisation mean/std, its feature
    dimension) are declared by :meth:`spec`, which ``dsim.create_backbone`` asks once per built
    network and attaches as ``model.dsim_spec`` (:func:`dsim.backbone_spec` reads it): a
    checkpoint whose card gives no ``input_size`` is ranked at the declared size. The default reads
    a timm-like network's ``default_cfg`` and ``num_features``, so a timm model needs nothing more::

        class TinyNets(dsim.BackboneFactory):
            name = "tiny"

            def handles(self, model_name):
                return model_name == "tinynet"

            def create(self, model_name, *, weights="imagenet", num_classes=0, in_chans=3, seed=0):
                model = TinyNet(in_chans, num_classes)  # forward_features, num_features, ...
                model.dsim_weights_id = dsim.random_weights_id(model_name, seed=seed)
                return model

            def spec(self, model_name, model):
                return dsim.BackboneSpec(input_size=64, mean=(0.5,) * 3, std=(0.25,) * 3, num_features=128)
    """

    name: str = ""
    description: str = ""
    #: True for a broad factory whose ``handles`` is costly (timm's imports torch and lists every
    #: model): dsim asks it only after every other factory declined a name, and asks its
    #: ``missing`` first: a reason it gives (no weights could be here) stands without the costly
    #: check of the name, so that ``dsim zoo`` imports no deep-learning library.
    catch_all: bool = False

    def handles(self, model_name: str) -> bool:
        return False

    def list_models(self, pattern: str = "*") -> list[str]:
        return []

    def missing(self, model_name: str, weights: str) -> str | None:
        """Why ``create(model_name, weights=weights)`` would fail for want of the weights (one line
        saying how to supply them), or None. Called without building the network (``dsim zoo``
        lists many checkpoints); the default assumes the weights are there."""
        return None

    def create(
        self,
        model_name: str,
        *,
        weights: str = "imagenet",
        num_classes: int = 0,
        in_chans: int = 3,
        seed: int = 0,
    ):
        raise NotImplementedError

    def spec(self, model_name: str, model: Any) -> BackboneSpec:
        """What ``model`` (built by :meth:`create` for ``model_name``) declares about itself: its
        native input size, normalisation and feature dimension. The default reads the timm-like
        ``default_cfg`` (``input_size``, ``mean``, ``std``) and ``num_features`` of the network,
        else ImageNet's normalisation at 224 px; override it for a network without them."""
        return timm_like_spec(model)


def timm_like_spec(model: Any) -> BackboneSpec:
    """The :class:`dsim.BackboneSpec` of a network that follows timm's conventions
    (``default_cfg`` with ``input_size``, ``mean``, ``std``; ``num_features``), with defaults for
    what it lacks."""
    cfg = getattr(model, "default_cfg", None) or {}
    base = BackboneSpec()
    return BackboneSpec(
        input_size=int((cfg.get("input_size") or (3, base.input_size, base.input_size))[-1]),
        mean=tuple(cfg.get("mean") or base.mean),
        std=tuple(cfg.get("std") or base.std),
        num_features=int(getattr(model, "num_features", 0) or 0),
    )


class Measure(Parameterised):
    """A similarity (distance) or transferability score between a source and a target.

    Parameters (probe network, sample sizes, ...) are keyword arguments of ``__init__`` with
    defaults, scikit-learn style (:class:`Parameterised`); ``dsim.create_measure(name, **params)``
    and ``-o key=value`` on the CLI set them, and an unknown name is refused. By default
    :meth:`config`, the cache key of the numbers, is :meth:`get_params`.

    A measure computes one :class:`Representation` per dataset (cached by the core, keyed by the
    data fingerprint and :meth:`config`) and compares two of them. ``kind`` says how to read the
    number: ``"distance"`` (lower = more similar, expected to transfer better) or ``"score"``
    (higher = expected to transfer better). ``needs`` says what it needs: ``"card"`` (card facts
    only), ``"images"`` (both datasets' images), ``"source-model"`` (a network trained on the
    source plus the target's images; such a measure overrides :meth:`pair`) or ``"checkpoint"``
    (the candidate network alone, no data at all; such a measure overrides :meth:`pair` too).
    ``opt_in = True`` keeps a measure out of a ranking that names no measures: it runs only when
    named (``--measures``), for one that is slow or not shown to predict transfer.

    Example (mean-intensity difference)::

        class MeanIntensity(Measure):
            name = "mean-intensity"
            description = "difference of mean pixel intensity"

            def represent(self, data, ctx):
                m = float(data.images.mean())
                return self.representation(data, ctx, meta={"mean": m})

            def compare(self, source, target, ctx):
                return abs(source.meta["mean"] - target.meta["mean"])
    """

    name: str = ""
    description: str = ""
    kind: str = "distance"  # "distance" | "score"
    needs: str = "images"  # "card" | "images" | "source-model" | "checkpoint"
    opt_in: bool = False  # True: only when named (--measures), never in the default set

    def config(self, ctx: Context) -> dict[str, Any]:
        """Everything that changes the numbers (probe, sizes, seeds...): part of the cache key.
        The default: every parameter (:meth:`get_params`)."""
        return self.get_params()

    def applicable(self, card: DatasetCard) -> str | None:
        """Why this measure cannot describe ``card`` (one line), or None when it can. The core
        already checks that images are available for ``needs == "images"``."""
        return None

    def source_model(self, candidate: DatasetCard) -> CheckpointCard | None:
        """For a ``source-model``/``checkpoint`` measure: the network that stands for a *dataset*
        candidate (e.g. a checkpoint pretrained on it that the user named), or None. Checkpoint
        candidates bring their own. The default: None (datasets are not scored)."""
        return None

    def unavailable(self) -> str | None:
        """Why this measure cannot run at all with its parameters (one line, e.g. a source-model
        score given no checkpoints), or None. ``dsim rank`` leaves such a measure out, and says
        why when the user asked for it by name."""
        return None

    def fingerprints(self, ctx: Context) -> dict[str, str]:
        """Content hashes of anything besides the data the numbers depend on (e.g. the probe
        network's weights). Part of the cache key."""
        return {}

    def represent(self, data: ImageSet | DatasetCard, ctx: Context) -> Representation:
        """Compute this measure's representation of one dataset; build the record with
        :meth:`representation` so its key matches what the cache looks up."""
        raise NotImplementedError

    def compare(self, source: Representation, target: Representation, ctx: Context) -> float:
        raise NotImplementedError

    def contributions(
        self, source: Representation, target: Representation, ctx: Context
    ) -> Mapping[str, float]:
        """Optional break-down of the value (e.g. which expert features differ)."""
        return {}

    def estimate_seconds(
        self, n_source_images: Sequence[int], n_target_images: int, ctx: Context
    ) -> float | None:
        """Optional: about how many seconds representing these sources (one image count each)
        and the target will take, computed cheaply (a cost model or a short calibration) before
        the work starts. ``dsim.rank``/``dsim.measure`` hand it to the progress callback's
        ``estimate(measure, seconds, n_sources)`` when it has one (the CLI prints one line when
        it exceeds ~10 s). None (the default): no estimate."""
        return None

    def pair(self, source: Any, target: Any, ctx: Context) -> float:
        """Value for one pair. The default represents both (through the cache) and compares."""
        return self.compare(representation_of(self, source, ctx), representation_of(self, target, ctx), ctx)

    # helper for implementations
    def representation(
        self,
        data: ImageSet | DatasetCard,
        ctx: Context,
        *,
        meta: Mapping[str, Any] | None = None,
        arrays: Mapping[str, Any] | None = None,
    ) -> Representation:
        fps = {"data": data_fingerprint(data), **self.fingerprints(ctx)}
        cfg = self.config(ctx)
        return Representation(
            measure=self.name,
            dataset=data.name,
            key=Representation.make_key(self.name, cfg, fps),
            config=cfg,
            fingerprints=fps,
            meta=dict(meta or {}),
            arrays=dict(arrays or {}),
        )


@dataclass
class FoldData:
    """The target data of one cross-validation fold, plus the source the run transfers from."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    source_checkpoint: str | None = None  # path of the source-pretrained checkpoint, if any


class Strategy(Parameterised):
    """A transfer strategy: given a (possibly source-pretrained) backbone and one fold of the
    target, train and return metrics on the test fold (``auc``, ``accuracy``, ``kappa``...).

    A strategy that ``uses_source`` gets the source checkpoint in ``FoldData.source_checkpoint``;
    dsim pretrains it beforehand, once per distinct (:meth:`pretrain_sources`, backbone,
    :attr:`pretrain_init`, hyper-parameters), and caches it by content.
    """

    name: str = ""
    description: str = ""
    #: False for from-scratch baselines and classical pipelines (no source, no pretraining)
    uses_source: bool = True
    #: the weights source pretraining starts from: ``"random"`` (seeded) or ``"imagenet"``
    pretrain_init: str = "random"
    #: training hyper-parameters (``--hp key=value``) this strategy reads besides the training
    #: loop's own (epochs, lr ...); any other key is refused, never dropped
    hyperparameters: tuple[str, ...] = ()

    def pretrain_sources(self, source: str, target: str) -> str:
        """The dataset(s) to pretrain on for a run from ``source`` to ``target``: a name, or
        ``"a+b"`` for the union of several. The default is the source itself; the target is
        always left out of a union."""
        return source

    def run(self, spec: RunSpec, data: FoldData, ctx: Context) -> Mapping[str, float]:
        raise NotImplementedError


@dataclass(frozen=True)
class Candidate:
    """One candidate source for a target, with every measure value dsim could get for the pair.

    A dataset candidate is its card (``source``). A checkpoint candidate carries its
    :class:`dsim.CheckpointCard` in ``checkpoint``, and ``source`` is the card of the dataset it
    was pretrained on under the checkpoint's name (so dataset-level facts apply to it)."""

    source: DatasetCard
    values: Mapping[str, float] = field(default_factory=dict)  # measure name -> value
    origins: Mapping[str, str] = field(default_factory=dict)  # measure name -> "computed"/"published"
    contributions: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    checkpoint: CheckpointCard | None = None

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def kind(self) -> str:
        return "checkpoint" if self.checkpoint is not None else "dataset"


class Predictor(Parameterised):
    """Ranks candidate sources for a target; an estimator in the scikit-learn sense.

    Parameters go to ``__init__``; :meth:`fit` learns from measured results only (no hidden global
    state) and returns ``self``; :meth:`rank` returns a :class:`Ranking`, built with
    :func:`dsim.assemble_ranking` (measured rows from the history, predicted rows from scores).
    ``measure_kinds`` maps each measure name to ``"distance"`` or ``"score"``.

    A learned predictor saves and restores what it learned through :meth:`get_state` /
    :meth:`set_state` (JSON-able; ``dsim predictor fit`` writes it, ``--predictor fitted`` reads
    it back and sets :attr:`fitted_from` to the saved document). :meth:`describe` gives the
    features it sees for each candidate (the evaluation's headroom diagnostics read it).
    """

    name: str = ""
    description: str = ""
    #: the saved document a loaded predictor came from (None when it was fitted in this process)
    fitted_from: Mapping[str, Any] | None = None

    def fit(
        self,
        results: Sequence[TransferResult],
        values: Sequence[MeasureValue],
        cards: Mapping[str, DatasetCard],
        measure_kinds: Mapping[str, str],
    ) -> Predictor:
        return self

    def rank(
        self,
        target: DatasetCard,
        candidates: Sequence[Candidate],
        history: Sequence[TransferResult],
        measure_kinds: Mapping[str, str],
    ) -> Ranking:
        raise NotImplementedError

    def fold_fitter(
        self,
        results: Sequence[TransferResult],
        values: Sequence[MeasureValue],
        cards: Mapping[str, DatasetCard],
        measure_kinds: Mapping[str, str],
    ) -> Callable[[set[str]], Predictor] | None:
        """For leave-one-target-out: a function that, given a set of held-out targets, returns a
        new predictor fitted on every result and value whose target is outside that set, exactly
        as :meth:`fit` on those would be, sharing the work the folds have in common (say, what
        each target's rows are). ``None`` (the default): the evaluation calls :meth:`fit` anew
        for each fold. Example: ``fit_without = p.fold_fitter(r, v, c, k); fit_without({"chest"})``."""
        return None

    def unused_measures(self, measures: Mapping[str, Any]) -> dict[str, str]:
        """Of ``measures`` (name -> :class:`Measure`, those a ranking would compute by default),
        the ones this predictor would give no weight, each with a one-line reason: the ranking
        does not compute them and says why (``--measures`` still asks for them). Default: none."""
        return {}

    def get_state(self) -> dict[str, Any]:
        """What :meth:`fit` learned, as JSON-able data (nothing for a fixed rule)."""
        return {}

    def set_state(self, state: Mapping[str, Any]) -> Predictor:
        """Restore what :meth:`get_state` returned; returns ``self``."""
        return self

    def summary(self) -> list[str]:
        """A few lines on what :meth:`fit` learned (``dsim predictor fit`` prints them)."""
        return []

    def describe(
        self,
        target: DatasetCard,
        candidates: Sequence[Candidate],
        history: Sequence[TransferResult],
        measure_kinds: Mapping[str, str],
    ) -> dict[str, dict[str, float]]:
        """source -> {feature: value} as this predictor sees the candidates, oriented so that
        higher = expected to transfer better. The default: each measure value (distances negated)."""
        return {
            c.source.name: {
                m: (-v if measure_kinds.get(m, "distance") == "distance" else v) for m, v in c.values.items()
            }
            for c in candidates
        }


class Reproduction:
    """A published analysis recomputed from the results a plugin ships (``dsim reproduce NAME``).

    :meth:`run` returns a JSON-able report. For the terminal, the report may hold ``tables``
    (each ``{"title", "columns", "rows"}``) and ``lines`` (short sentences), which the CLI prints;
    ``figures`` lists the PNG files written to ``out``.

    Example::

        class MyPaper(Reproduction):
            name = "my-paper"
            title = "Doe et al. 2024, Table 2"

            def run(self, out=None, *, figures=True):
                rho = ...  # recomputed from the shipped table
                return {"tables": [{"title": "Spearman rho", "columns": ["metric", "rho"],
                                    "rows": [["logme", rho]]}], "lines": [], "figures": []}
    """

    name: str = ""
    title: str = ""
    description: str = ""

    def run(self, out: Path | None = None, *, figures: bool = True) -> dict[str, Any]:
        raise NotImplementedError


class Tracker:
    """An experiment tracker that ``dsim validate`` and ``dsim pretrain`` log to (``--track NAME``,
    ``dsim.validate(..., track=NAME)``), and that ``dsim results import`` can read runs back from.

    dsim calls a tracker on the driver only (also when runs execute on Ray workers), after each
    fold is in dsim's results store: :meth:`start` once per command, then :meth:`run_finished` /
    :meth:`run_failed` per fold run (a fold taken from the store is not run, so not logged
    again), :meth:`validation_done` with the report, or :meth:`pretrain_done` with a checkpoint,
    and :meth:`close` at the end. A method that raises costs one warning; the tracker is then
    left out for the rest of the command and the runs go on. Import the tracker's library inside
    the methods, never at module import: without ``--track`` nothing of it is loaded.

    Example::

        class PrintTracker(Tracker):
            name = "print"

            def run_finished(self, result):
                print(result.spec.label, result.metrics["auc"])
    """

    name: str = ""
    description: str = ""
    #: how to install what the tracker needs, shown when :meth:`unavailable` says it is missing
    install: str = ""

    def unavailable(self) -> str | None:
        """Why this tracker cannot log here (its library is not installed ...), or None.
        Checked before any work starts."""
        return None

    def start(self, say: Callable[[str, str], None]) -> None:
        """A command begins; ``say(kind, message)`` prints one line (e.g. where runs are logged)."""

    def run_finished(self, result: RunResult) -> None:
        """One fold finished (its :class:`RunResult`, with the per-epoch ``history``)."""

    def run_failed(self, spec: RunSpec, error: str) -> None:
        """One fold failed with the one-line ``error``."""

    def validation_done(self, report: Any) -> None:
        """``dsim validate`` finished with ``report`` (means, predicted score and rank, plot)."""

    def pretrain_done(self, checkpoint: Path, meta: Mapping[str, Any]) -> None:
        """``dsim pretrain`` trained (or found cached) ``checkpoint``; ``meta`` is its metadata."""

    def close(self, error: BaseException | None = None) -> None:
        """The command ends; ``error`` is what interrupted it (None when it finished)."""

    def read_runs(
        self, location: str | None, experiment: str, fields: Mapping[str, str]
    ) -> list[tuple[str, dict[str, str]]]:
        """The finished runs of ``experiment`` at ``location`` as results-table rows, for
        ``dsim results import``: ``(where, row)`` each, ``where`` naming the run in messages,
        ``row`` mapping ``source``, ``target``, ``auc`` (and ``fold``, ``accuracy``, ``kappa``,
        ``backbone``, ``strategy`` when present) to text. ``fields`` maps each of these names to
        the tracker's parameter or metric name that holds it."""
        raise DsimError(f"tracker {self.name!r} cannot import runs")


class Executor:
    """Where the pretraining jobs and runs of a validation execute (``dsim.validate(executor=...)``,
    ``dsim validate --executor``). dsim's own are ``local`` (this process) and ``ray``.

    :meth:`run` executes ``work`` (a ``dsim.validation.runs.Work``: the runs in order, the
    pretraining jobs they need, the data and checkpoints already at hand) and reports every job
    and run through ``callbacks`` (a ``dsim.validation.executors.Callbacks``), always in the
    driver's process: the driver stores each result as it arrives. :meth:`slots` is how many
    runs go at once (for the progress line).

    Example::

        class Serial(Executor):
            name = "serial"

            def run(self, work, callbacks):
                for spec in work.runs:
                    callbacks.on_result(spec, None, f"{spec.label}: not run (example)")
    """

    name: str = ""
    description: str = ""

    def slots(self, work: Any) -> int:
        return 1

    def run(self, work: Any, callbacks: Any) -> None:
        raise NotImplementedError


# the cached representation of a dataset, which Measure.pair goes through
def data_fingerprint(data: ImageSet | DatasetCard) -> str:
    """Content fingerprint: pixels+labels of an ImageSet, the facts of a card."""
    if isinstance(data, ImageSet):
        return data.fingerprint()
    if isinstance(data, DatasetCard):
        return stable_hash(
            {
                "card": data.name,
                "expert": dict(data.expert),
                "classes": data.num_classes,
                "origin": data.origin,
            }
        )
    raise TypeError(f"cannot fingerprint {type(data).__name__}")


def representation_of(measure: Measure, data: Any, ctx: Context) -> Representation:
    """``measure.represent(data)`` through the cache: computed once per content + config."""
    key = representation_key(measure, data, ctx)
    if ctx.cache is not None:
        hit = ctx.cache.get(measure.name, key)
        if hit is not None:
            return hit
    rep = measure.represent(data, ctx)
    if rep.key != key:
        raise RuntimeError(
            f"measure {measure.name!r} built a representation whose key does not match its config "
            "and fingerprints; build it with Measure.representation()"
        )
    if ctx.cache is not None:
        ctx.cache.put(rep)
    return rep


def representation_key(measure: Measure, data: Any, ctx: Context) -> str:
    fps = {"data": data_fingerprint(data), **measure.fingerprints(ctx)}
    return Representation.make_key(measure.name, measure.config(ctx), fps)

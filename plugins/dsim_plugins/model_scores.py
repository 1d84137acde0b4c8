"""Model-based transferability scores of a source-pretrained network on the target's images.

All five take the network trained on the *source* (a checkpoint file) and look at what it does on
the *target* images, without fine-tuning; higher = expected to transfer better (kind "score").

* **LogME** (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning"): the log marginal evidence of a Bayesian linear regression from the penultimate
  features to each one-hot target label, maximised over the prior precision alpha and noise
  precision beta by the paper's fixed-point iteration, divided by n and averaged over classes.
* **LEEP** (Nguyen et al. 2020, "LEEP: A New Measure to Evaluate Transferability of Learned
  Representations"): the mean log-likelihood of the target labels under the "expected empirical
  predictor" ``p(y|x) = sum_z P(y|z) theta_z(x)``, where ``theta(x)`` is the source classifier's
  softmax and ``P(y|z)`` comes from the empirical joint ``P(y, z) = mean_i theta_z(x_i) [y_i = y]``.
* **NCE** (Tran et al. 2019, "Transferability and Hardness of Supervised Classification Tasks"):
  negative conditional entropy ``-H(Y|Z)`` of the target labels given the source classifier's
  hard predictions ``z_i = argmax theta(x_i)``.
* **kNN** (the k-nearest-neighbour proxy of Renggli et al. 2022, "Which Model to Transfer? Finding
  the Needle in the Growing Haystack"): the leave-one-out ROC AUC (weighted one-vs-rest, as the
  transfer runs are scored) of a k-NN vote over the target images in the source model's
  standardised penultimate features; ``knn_k`` option, default 10. Unlike LogME and H-score it is
  not linear in the features, so it sees neighbourhoods a linear score misses.
* **H-score** (Bao et al. 2019, "An Information-Theoretic Approach to Transferability in Task
  Transfer Learning"): ``tr(cov(f)^+ cov(E[f|y]))`` of the penultimate features ``f`` (a
  pseudo-inverse, so that rank-deficient features do not fail).

The source model comes from the ``source_checkpoints`` parameter: a dict source name -> checkpoint
path, created with ``dsim.create_backbone(backbone, weights=path)`` (``backbone`` parameter, default resnet18). LEEP
and NCE need the checkpoint's classifier: the number of source classes is read from the
checkpoint itself (a top-level ``num_classes`` entry if there is one, else the first dimension of
the classifier weight the architecture names, e.g. ``fc.weight`` for ResNets; an explicit
``source_num_classes`` option, an int or a dict per source, overrides both). Images are
preprocessed as everywhere in dsim (``dsim.to_tensor``, ``image_size`` option, default 64).

A multi-label target (labels an ``(N, L)`` 0/1 matrix) is scored as ``score_functions`` reads one:
LogME's evidence per label column and the kNN proxy's per-label AUCs, averaged; every other score
on each label's binary task, averaged over the labels (docs/measures.md).
"""

from __future__ import annotations

from pathlib import Path

import dsim
from dsim_plugins.score_functions import ScoreError, _softmax, h_score, knn_auc, leep, logme, nce  # noqa: F401

from . import score_functions

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy

# --------------------------------------------------------------------------------------------
# the source model
# --------------------------------------------------------------------------------------------


def _read_checkpoint(path: Path) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable: the candidate fails, named, never ranked
        raise dsim.CheckpointError(f"{path}: not a readable checkpoint ({dsim.one_line(exc)})") from None
    return obj if isinstance(obj, dict) else {}


def source_num_classes(path: str | Path, classifier: str = "fc") -> int | None:
    """Number of source classes stored in a checkpoint (``num_classes`` entry or the classifier
    weight's first dimension), or None when it has no classifier."""
    ck = _read_checkpoint(Path(path))
    if isinstance(ck.get("num_classes"), int):
        return int(ck["num_classes"])
    sd = ck
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(ck.get(key), dict):
            sd = ck[key]
            break
    for k in (f"{classifier}.weight", f"module.{classifier}.weight"):
        w = sd.get(k)
        if w is not None and getattr(w, "ndim", 0) == 2:
            return int(w.shape[0])
    return None


class _SourceModelScore(dsim.Measure):
    """A score of a pretrained network (a checkpoint candidate, or the file ``source_checkpoints``
    maps a dataset candidate to) on the target's images, from its penultimate features (and,
    for LEEP/NCE, its own classifier's outputs), extracted once per checkpoint content and target
    and cached (``dsim.checkpoint_features``), so every score reuses them.

    Parameters: ``image_size`` (None: the checkpoint's own input size, 64 for a mapped file);
    ``source_checkpoints`` (dataset name -> checkpoint file) with ``backbone`` (its architecture)
    and ``source_num_classes`` (an int or a dict per source; default: read from the file)."""

    kind = "score"
    needs = "source-model"
    uses_logits = False
    #: a costly score reads a seeded stratified part of this many target images (None: all);
    #: LP and FU take it as a parameter
    max_images: int | None = None
    param_ranges = {
        "image_size": dsim.Range(int, 8, 4096, none=True),
        "source_num_classes": dsim.Range(int, 1, none=True),
        "knn_k": dsim.Range(int, 1),
        "max_images": dsim.Range(int, 2, none=True),
    }

    def __init__(
        self, backbone="resnet18", image_size=None, source_checkpoints=None, source_num_classes=None
    ):
        self.backbone = backbone
        self.image_size = image_size
        self.source_checkpoints = source_checkpoints
        self.source_num_classes = source_num_classes

    def config(self, ctx):
        return {"image_size": self.image_size, "max_samples": ctx.max_samples, "seed": ctx.seed, "version": 2}

    def represent(self, data, ctx):  # pragma: no cover - these measures work per pair
        raise dsim.DsimError(f"{self.name} scores a source model on a target; use pair()")

    def source_model(self, candidate):
        """The checkpoint file ``source_checkpoints`` maps a dataset candidate to, as a card."""
        ckpts = self.source_checkpoints or {}
        for n in candidate.all_names:
            if n in ckpts:
                path = Path(str(ckpts[n])).expanduser()
                if not path.is_file():
                    raise ScoreError(
                        f"{self.name}: checkpoint {str(path)!r} of source {candidate.name!r} not found"
                    )
                return dsim.CheckpointCard(
                    name=candidate.name,
                    architecture=self.backbone,
                    weights=f"file:{path.resolve()}",
                    num_classes=self._mapped_classes(candidate.name),
                    input_size=64,
                    provider="source_checkpoints",
                )
        return None

    def _mapped_classes(self, name):
        opt = self.source_num_classes
        if isinstance(opt, int):
            return opt
        if isinstance(opt, dict) and name in opt:
            return int(opt[name])
        return None

    def _card(self, source) -> dsim.CheckpointCard:
        if isinstance(source, dsim.CheckpointCard):
            card = source
        else:
            card = self.source_model(source)
            if card is None:
                name = getattr(source, "name", str(source))
                raise ScoreError(
                    f"{self.name}: no source checkpoint for {name!r} in option source_checkpoints"
                )
        if card.weights.startswith("file:"):
            path = Path(dsim.weights_argument(card))
            updates = {}
            if not card.sha256:
                updates["sha256"] = dsim.file_digest(path)
            if self.uses_logits and not card.num_classes:
                model = dsim.create_backbone(card.architecture, weights="random", num_classes=2)
                cls = model.default_cfg.get("classifier", "fc") if hasattr(model, "default_cfg") else "fc"
                k = source_num_classes(path, cls if isinstance(cls, str) else cls[0])
                if k is None:
                    raise ScoreError(  # one wording for LEEP and NCE: one skip line for both
                        f"checkpoint {card.name!r} has no classifier (its file {path.name} holds no "
                        "classifier weights): LEEP and NCE need the source model's class outputs"
                    )
                updates["num_classes"] = k
            if updates:
                import dataclasses

                card = dataclasses.replace(card, **updates)
        return card

    def target_outputs(self, source, target: dsim.ImageSet, ctx):
        """Penultimate features and (for LEEP/NCE) source-class logits of the target images."""
        card = self._card(source)
        return dsim.checkpoint_features(
            card, target, image_size=self.image_size, with_logits=self.uses_logits, ctx=ctx
        )

    def pair(self, source, target, ctx):
        """The score of ``source``'s network on ``target`` (at most ``ctx.max_samples`` images),
        cached under the checkpoint's content, the target's fingerprint and :meth:`config`."""
        if not isinstance(target, dsim.ImageSet):
            raise dsim.DsimError(f"{self.name} needs the target's images")
        card = self._card(source)
        key = dsim.stable_hash(
            {
                "measure": self.name,
                "checkpoint": {**card.to_dict(), "name": "", "provider": "", "title": ""},
                "data": target.fingerprint(),
                "config": self.config(ctx),
            }
        )
        if ctx.cache is not None and (hit := ctx.cache.get_value(key)) is not None:
            return hit
        ms = ctx.max_samples
        data = target.subsample(int(ms), seed=ctx.seed) if ms else target
        value = self.value(card, data, ctx)
        if ctx.cache is not None:
            ctx.cache.put_value(key, value, measure=self.name, source=card.name, target=target.name)
        return value

    def value(self, card, data: dsim.ImageSet, ctx) -> float:
        """The score of ``card``'s network on ``data`` (uncached): :meth:`score` of its features,
        the cached extraction of every image, read at ``max_images`` of them when set."""
        feats, logits = self.target_outputs(card, data, ctx)
        labels = data.labels
        if self.max_images and len(data) > int(self.max_images):
            idx = data.subsample_index(int(self.max_images), seed=ctx.seed)
            feats, labels = feats[idx], labels[idx]
            logits = None if logits is None else logits[idx]
        return self.score(feats, logits, labels, ctx)

    def score(self, feats, logits, labels, ctx) -> float:
        raise NotImplementedError


class LogME(_SourceModelScore):
    name = "logme"
    description = (
        "LogME: evidence of a Bayesian linear model on the source model's features (You et al. 2021)"
    )

    def score(self, feats, logits, labels, ctx):
        return logme(feats, labels)


class LEEP(_SourceModelScore):
    name = "leep"
    description = "LEEP: log expected empirical prediction of the source classifier (Nguyen et al. 2020)"
    uses_logits = True

    def score(self, feats, logits, labels, ctx):
        return leep(_softmax(logits), labels)


class NCE(_SourceModelScore):
    name = "nce"
    description = (
        "NCE: negative conditional entropy of target labels given source predictions (Tran et al. 2019)"
    )
    uses_logits = True

    def score(self, feats, logits, labels, ctx):
        return nce(np.argmax(logits, 1), labels)


class KNN(_SourceModelScore):
    name = "knn"
    description = "kNN proxy: leave-one-out k-NN AUC on the source model's features (Renggli et al. 2022)"

    def __init__(
        self, backbone="resnet18", image_size=None, source_checkpoints=None, source_num_classes=None, knn_k=10
    ):
        super().__init__(backbone, image_size, source_checkpoints, source_num_classes)
        self.knn_k = knn_k

    def config(self, ctx):
        return {**super().config(ctx), "k": int(self.knn_k)}

    def score(self, feats, logits, labels, ctx):
        return knn_auc(feats, labels, int(self.knn_k))


class HScore(_SourceModelScore):
    name = "h-score"
    description = "H-score: tr(cov(f)^-1 cov(E[f|y])) of the source model's features (Bao et al. 2019)"

    def score(self, feats, logits, labels, ctx):
        return h_score(feats, labels)


class NLEEP(_SourceModelScore):
    name = "nleep"
    description = "N-LEEP: LEEP over a Gaussian mixture of the source model's features (Li et al. 2021)"

    def score(self, feats, logits, labels, ctx):
        return score_functions.nleep(feats, labels, seed=ctx.seed)


class SFDA(_SourceModelScore):
    name = "sfda"
    description = "SFDA: self-challenging Fisher discriminant analysis of the features (Shao et al. 2022)"

    def score(self, feats, logits, labels, ctx):
        return score_functions.sfda(feats, labels)


class PARC(_SourceModelScore):
    name = "parc"
    description = "PARC: correlation of feature and label dissimilarities (Bolya et al. 2021)"

    def score(self, feats, logits, labels, ctx):
        return score_functions.parc(feats, labels)


class LP(_SourceModelScore):
    """``max_images`` (500): NCA's cost grows with the square of the images, so the score reads a
    seeded stratified part of the target's features (extracted once for every score)."""

    name = "lp"
    description = (
        "LP: NCA + 5-NN accuracy in the features, the forward half of Juodelyte et al. 2024's metric"
    )

    def __init__(
        self,
        backbone="resnet18",
        image_size=None,
        source_checkpoints=None,
        source_num_classes=None,
        max_images=500,
    ):
        super().__init__(backbone, image_size, source_checkpoints, source_num_classes)
        self.max_images = max_images

    def config(self, ctx):
        return {**super().config(ctx), "max_images": self.max_images}

    def score(self, feats, logits, labels, ctx):
        return score_functions.lp(feats, labels)


class FU(_SourceModelScore):
    """The backward half of Juodelyte et al. 2024's metric: the triplet-loss gradient norm of a
    deeper layer over the stem's, the network in eval mode, nothing updated. ``first``/``second``:
    layer names; ``auto`` takes the network's first and second convolution (a ResNet's ``conv1``
    and ``layer1.0.conv1``, as the study does). ``max_images`` (500): back-propagation costs
    about three forward passes, so the score reads a seeded stratified part of the target.

    Opt-in (runs when ``--measures`` names it): on the checkpoint zoo (docs/zoo.md) FU ranks the
    networks at weighted Kendall tau 0.04, no signal, and its back-propagation was 31 % of a
    ranking's time (``benchmarks/zoo_speed.py``)."""

    name = "fu"
    opt_in = True  # zoo: weighted tau 0.04 (no signal) for 31 % of the ranking's time
    description = (
        "FU: gradient-norm ratio of a deeper layer over the stem under a triplet loss (Juodelyte et al. 2024)"
    )

    def __init__(
        self,
        backbone="resnet18",
        image_size=None,
        source_checkpoints=None,
        source_num_classes=None,
        first="auto",
        second="auto",
        max_images=500,
    ):
        super().__init__(backbone, image_size, source_checkpoints, source_num_classes)
        self.first = first
        self.second = second
        self.max_images = max_images

    def config(self, ctx):
        return {
            **super().config(ctx),
            "first": self.first,
            "second": self.second,
            "max_images": self.max_images,
        }

    def value(self, card, data: dsim.ImageSet, ctx) -> float:
        """FU back-propagates through the network itself: no features, ``max_images`` images."""
        import torch

        if self.max_images:
            data = data.subsample(int(self.max_images), seed=ctx.seed)
        model = dsim.load_checkpoint(card, num_classes=0, seed=ctx.seed)
        convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
        if len(convs) < 2:
            raise ScoreError(f"fu: {card.architecture!r} has fewer than two convolutions")
        first = convs[0] if self.first == "auto" else self.first
        second = convs[1] if self.second == "auto" else self.second
        size = int(self.image_size or dsim.checkpoint_input_size(card, model))
        mean = torch.tensor(card.mean).view(1, 3, 1, 1)
        std = torch.tensor(card.std).view(1, 3, 1, 1)
        x = (dsim.to_tensor(data.images, size=size, channels=3, normalize=False) - mean) / std
        return score_functions.fu(
            model, x, data.labels, first=first, second=second, device=ctx.torch_device()
        )


@dsim.hookimpl
def dsim_register_measures():
    return [LogME(), LEEP(), NCE(), HScore(), KNN(), NLEEP(), SFDA(), PARC(), LP(), FU()]

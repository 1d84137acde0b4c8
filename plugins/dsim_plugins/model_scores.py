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

The source model comes from ``ctx.option("source_checkpoints")``: a dict source name -> checkpoint
path, created with ``dsim.create_backbone(option("backbone", "resnet18"), weights=path)``. LEEP
and NCE need the checkpoint's classifier: the number of source classes is read from the
checkpoint itself (a top-level ``num_classes`` entry if there is one, else the first dimension of
the classifier weight the architecture names, e.g. ``fc.weight`` for ResNets; an explicit
``source_num_classes`` option, an int or a dict per source, overrides both). Images are
preprocessed as everywhere in dsim (``dsim.to_tensor``, ``image_size`` option, default 64).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

import dsim
from dsim_plugins.score_functions import ScoreError, _softmax, h_score, knn_auc, leep, logme, nce  # noqa: F401

_FEATURES: OrderedDict[str, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()


# --------------------------------------------------------------------------------------------
# the source model
# --------------------------------------------------------------------------------------------


def _read_checkpoint(path: Path) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
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
    kind = "score"
    needs = "source-model"
    uses_logits = False

    def config(self, ctx):
        return {
            "backbone": ctx.option("backbone", "resnet18"),
            "image_size": int(ctx.option("image_size", 64)),
            "max_samples": ctx.option("max_samples"),
            "seed": ctx.seed,
            "version": 1,
        }

    def represent(self, data, ctx):  # pragma: no cover - these measures work per pair
        raise dsim.DsimError(f"{self.name} scores a source model on a target; use pair()")

    def _checkpoint(self, source, ctx) -> str:
        ckpts = ctx.option("source_checkpoints") or {}
        names = getattr(source, "all_names", None) or (getattr(source, "name", str(source)),)
        for n in names:
            if n in ckpts:
                path = str(Path(ckpts[n]).expanduser())
                if not Path(path).is_file():
                    raise ScoreError(f"{self.name}: checkpoint {path!r} of source {names[0]!r} not found")
                return path
        raise ScoreError(f"{self.name}: no source checkpoint for {names[0]!r} in option source_checkpoints")

    def _num_classes(self, source, path, ctx) -> int:
        opt = ctx.option("source_num_classes")
        name = getattr(source, "name", str(source))
        if isinstance(opt, int):
            return opt
        if isinstance(opt, dict) and name in opt:
            return int(opt[name])
        arch = ctx.option("backbone", "resnet18")
        model = dsim.create_backbone(arch, weights="random", num_classes=2)
        cls = model.default_cfg.get("classifier", "fc") if hasattr(model, "default_cfg") else "fc"
        k = source_num_classes(path, cls if isinstance(cls, str) else cls[0])
        if k is None:
            raise ScoreError(
                f"{self.name}: checkpoint {path!r} of source {name!r} has no classifier head "
                "(LEEP and NCE need the source model's class outputs; set source_num_classes if it has one)"
            )
        return k

    def target_outputs(self, source, target: dsim.ImageSet, ctx):
        """Penultimate features and (for LEEP/NCE) source-class logits of the target images."""
        import torch

        path = self._checkpoint(source, ctx)
        arch = ctx.option("backbone", "resnet18")
        size = int(ctx.option("image_size", 64))
        k = self._num_classes(source, path, ctx) if self.uses_logits else 0
        key = dsim.stable_hash(
            {
                "ckpt": str(path),
                "mtime": Path(path).stat().st_mtime,
                "arch": arch,
                "size": size,
                "k": k,
                "data": target.fingerprint(),
            }
        )
        if key in _FEATURES:
            _FEATURES.move_to_end(key)
            return _FEATURES[key]
        model = dsim.create_backbone(arch, weights=path, num_classes=k, seed=ctx.seed)
        device = ctx.torch_device()
        model = model.to(device).eval()
        feats, logits = [], []
        with torch.inference_mode():
            for s in range(0, len(target), 128):
                x = dsim.to_tensor(target.images[s : s + 128], size=size, channels=3).to(device)
                f = model.forward_head(model.forward_features(x), pre_logits=True)
                feats.append(f.float().cpu().numpy())
                if k:
                    logits.append(model.get_classifier()(f).float().cpu().numpy())
                ctx.progress(f"{self.name}: target features", min(s + 128, len(target)), len(target))
        out = (np.concatenate(feats), np.concatenate(logits) if k else None)
        _FEATURES[key] = out
        while len(_FEATURES) > 8:
            _FEATURES.popitem(last=False)
        return out

    def pair(self, source, target, ctx):
        if not isinstance(target, dsim.ImageSet):
            raise dsim.DsimError(f"{self.name} needs the target's images")
        path = self._checkpoint(source, ctx)
        from hashlib import sha256

        h = sha256(Path(path).read_bytes()).hexdigest()
        key = dsim.stable_hash(
            {"measure": self.name, "ckpt": h, "data": target.fingerprint(), "config": self.config(ctx)}
        )
        if ctx.cache is not None:
            hit = ctx.cache.get_value(key)
            if hit is not None:
                return hit
        data = target
        ms = ctx.option("max_samples")
        if ms and len(data) > int(ms):
            data = data.subsample(int(ms), seed=ctx.seed)
        feats, logits = self.target_outputs(source, data, ctx)
        value = self.score(feats, logits, data.labels, ctx)
        if ctx.cache is not None:
            ctx.cache.put_value(
                key, value, measure=self.name, source=getattr(source, "name", ""), target=target.name
            )
        return value

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

    def config(self, ctx):
        return {**super().config(ctx), "k": int(ctx.option("knn_k", 10))}

    def score(self, feats, logits, labels, ctx):
        return knn_auc(feats, labels, int(ctx.option("knn_k", 10)))


class HScore(_SourceModelScore):
    name = "h-score"
    description = "H-score: tr(cov(f)^-1 cov(E[f|y])) of the source model's features (Bao et al. 2019)"

    def score(self, feats, logits, labels, ctx):
        return h_score(feats, labels)


@dsim.hookimpl
def dsim_register_measures():
    return [LogME(), LEEP(), NCE(), HScore(), KNN()]

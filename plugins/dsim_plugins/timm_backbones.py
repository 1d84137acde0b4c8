"""Backbones from timm, created by any timm model name (``resnet18``, ``resnet50``,
``densenet121``, ``efficientnet_b0``, ``vgg16`` ...).

Weights, never downloaded silently:

* ``weights="imagenet"``: timm's pretrained weights from the local cache (Hugging Face hub cache
  or torch hub checkpoints). A download is tried only when the user allows it
  (``DSIM_ALLOW_DOWNLOAD=1`` / ``--allow-download``); otherwise a :class:`dsim.WeightsMissingError`
  says how to supply them.
* ``weights="/path/to/file"``: a local checkpoint (a state dict, a timm/``dsim pretrain``
  checkpoint with a ``state_dict`` key, ``.pth``/``.bin``/``.safetensors``); a classifier of
  another size is dropped.
* ``weights="random"``: seeded random initialisation, an explicit choice (tests, offline probes).
* ``weights="timm:<tag>"`` (as checkpoint cards write it): timm's pretrained weights ``<tag>``
  (e.g. ``densenet121.tv_in1k``) for the architecture named, as ``"imagenet"`` finds them.

Every model gets ``model.dsim_weights_id``, a content id of its weights (file hash, timm tag, or
architecture + seed) that caches built on it are keyed by.

Checkpoint cards (``dsim_register_checkpoints``): timm's ImageNet checkpoints for the nine
architecture families of Juodelyte et al. 2024's architecture study (``AUCs_model.csv``;
github.com/DovileDo/transferability-in-medical-imaging, ``src/fine-tuning_imagenet.py``, which
uses ``torchvision.models.<arch>(weights='IMAGENET1K_V1')``). Where timm carries torchvision's own
weights (``densenet121.tv_in1k``, ``vgg11.tv_in1k``, ``resnet18.tv_in1k``) the card is the study's
network and carries its short name as an alias; for efficientnet (``efficientnet_v2_s``), mnasnet
(``mnasnet1_0``), mobilenet (``mobilenet_v3_small``) and convnext (``convnext_tiny``) timm has the
same architecture (same parameter count) trained by others, so those cards carry no study alias:
the study's networks are in ``dsim_plugins.torchvision_backbones``, with googlenet and shufflenet,
which timm does not have. The cards need no weights; availability is checked when one is used.
"""

from __future__ import annotations

import os
from pathlib import Path

import dsim


def _file_sha256(path: Path) -> str:
    return dsim.file_digest(path)


def _no_cache_can_hold(model_name: str) -> bool:
    """True when neither cache timm loads from can hold ``model_name``'s weights, decided from the
    folders alone (no timm, no torch import; ``dsim zoo`` lists many cards): the Hugging Face hub
    cache has no ``timm/<architecture>...`` repository nor any other organisation's, and torch hub's
    ``checkpoints`` folder has no file. False means: ask timm."""
    home = Path.home() / ".cache"
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or home)
    hf = os.environ.get("HF_HUB_CACHE") or (
        str(Path(os.environ["HF_HOME"]) / "hub")
        if os.environ.get("HF_HOME")
        else str(xdg / "huggingface" / "hub")
    )
    arch = model_name.split(".")[0]
    try:
        repos = [p.name for p in Path(hf).iterdir() if p.name.startswith("models--")]
    except OSError:
        repos = []
    if any(r.startswith(f"models--timm--{arch}") or not r.startswith("models--timm--") for r in repos):
        return False
    torch_hub = (
        Path(os.environ["TORCH_HOME"]) / "hub" if os.environ.get("TORCH_HOME") else xdg / "torch" / "hub"
    )
    try:
        return not any((torch_hub / "checkpoints").iterdir())
    except OSError:
        return True


def _no_imagenet_weights(model_name: str) -> str:
    return (
        f"no ImageNet weights for timm model {model_name!r} in the local cache; pass a checkpoint "
        f"file as the weights (e.g. --probe-weights or --weights /path/to/{model_name}.pth), allow a "
        "download with DSIM_ALLOW_DOWNLOAD=1 (needs network), or choose the weights 'random' for a "
        "seeded random-init network"
    )


def _cached_pretrained_file(model_name: str) -> str | None:
    """Path of timm's pretrained weights for ``model_name`` in a local cache, or None."""
    if _no_cache_can_hold(model_name):
        return None
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(model_name) or {}
    except Exception:
        cfg = {}
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            for fname in ("model.safetensors", "pytorch_model.bin", cfg.get("hf_hub_filename")):
                if not fname:
                    continue
                p = try_to_load_from_cache(hub_id, fname, cache_dir=os.environ.get("HF_HUB_CACHE"))
                if isinstance(p, str) and os.path.exists(p):
                    return p
        except (ImportError, OSError, ValueError):  # no hub library or an unreadable cache: try torch hub
            p = None
    url = cfg.get("url")
    if url:
        import torch.hub

        p = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if p.exists():
            return str(p)
    return None


class TimmBackbones(dsim.BackboneFactory):
    name = "timm"
    catch_all = True  # handles() imports timm: asked after the other backbone factories
    description = (
        "any timm model; ImageNet weights from the local cache, a checkpoint file, or seeded random init"
    )

    def handles(self, model_name: str) -> bool:
        import timm

        return model_name.split(".")[0] in set(timm.list_models()) or bool(timm.list_models(model_name))

    def list_models(self, pattern: str = "*") -> list[str]:
        import timm

        return timm.list_models(pattern)

    def missing(self, model_name: str, weights: str) -> str | None:
        """ImageNet weights must be in the local cache (or a download allowed); a file must exist."""
        if str(weights).startswith("timm:"):  # a pretrained tag: that model's ImageNet weights
            model_name, weights = str(weights)[5:] or model_name, "imagenet"
        if weights == "random":
            return None
        if weights == "imagenet":
            if _cached_pretrained_file(model_name) or dsim.env_flag("DSIM_ALLOW_DOWNLOAD"):
                return None
            return _no_imagenet_weights(model_name)
        return None if Path(weights).expanduser().is_file() else f"checkpoint file {weights!r} not found"

    def create(self, model_name, *, weights="imagenet", num_classes=0, in_chans=3, seed=0):
        import timm
        import torch

        if str(weights).startswith("timm:"):
            tag = str(weights)[5:]
            if tag.split(".")[0] != model_name.split(".")[0]:
                raise dsim.DsimError(f"weights {weights!r} are not for timm model {model_name!r}")
            model_name, weights = tag, "imagenet"
        if not self.handles(model_name):
            raise dsim.UnknownNameError("backbone", model_name, timm.list_models())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # seeded init of whatever is not loaded (e.g. a new head)
            if weights == "random":
                model = timm.create_model(
                    model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans
                )
                model.dsim_weights_id = dsim.random_weights_id(
                    model_name, seed=seed, in_chans=in_chans, timm=timm.__version__
                )
                return model
            if weights == "imagenet":
                path = _cached_pretrained_file(model_name)
                if path is None and dsim.env_flag("DSIM_ALLOW_DOWNLOAD"):
                    import sys

                    print(f"downloading ImageNet weights for timm model {model_name!r}", file=sys.stderr)
                    try:
                        model = timm.create_model(
                            model_name, pretrained=True, num_classes=num_classes, in_chans=in_chans
                        )
                    except Exception as exc:
                        raise dsim.WeightsMissingError(
                            f"could not download ImageNet weights for {model_name!r}: {type(exc).__name__}"
                        ) from None
                    model.dsim_weights_id = dsim.stable_hash(
                        {"arch": model_name, "weights": "timm-pretrained"}
                    )
                    return model
                if path is None:
                    raise dsim.WeightsMissingError(_no_imagenet_weights(model_name))
            else:
                path = str(Path(weights).expanduser())
                if not Path(path).is_file():
                    raise dsim.WeightsMissingError(f"checkpoint file {weights!r} not found")
            model = timm.create_model(
                model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans
            )
            sd = dsim.read_state_dict(path)  # unreadable, no tensors: a dsim.CheckpointError
            own = model.state_dict()
            adapted = {}
            for k, v in sd.items():
                if k not in own:
                    continue
                if own[k].shape == v.shape:
                    adapted[k] = v
                elif (
                    v.ndim == 4
                    and own[k].ndim == 4
                    and own[k].shape[0] == v.shape[0]
                    and own[k].shape[2:] == v.shape[2:]
                ):
                    # first conv with another number of input channels (grey <-> RGB), as timm does
                    adapted[k] = _adapt_in_chans(v, own[k].shape[1])
            loaded = len(adapted)
            body = [k for k in own if not k.startswith(_head_prefixes(model))]
            missing_body = [k for k in body if k not in adapted and not k.endswith("num_batches_tracked")]
            if loaded == 0 or len(missing_body) > 0.1 * len(body):
                raise dsim.CheckpointError(
                    f"checkpoint {path!r} does not fit timm model {model_name!r}: "
                    f"{len(missing_body)} of {len(body)} backbone tensors missing or mis-shaped "
                    f"(e.g. {', '.join(missing_body[:3])})"
                )
            model.load_state_dict(adapted, strict=False)
            model.dsim_weights_id = _file_sha256(Path(path))
            return model

    def spec(self, model_name, model):
        """timm's own pretrained config of the model (input size, mean/std), ``num_features``."""
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
        base = dsim.BackboneSpec()
        return dsim.BackboneSpec(
            input_size=int((cfg.get("input_size") or (3, base.input_size, base.input_size))[-1]),
            mean=tuple(cfg.get("mean") or base.mean),
            std=tuple(cfg.get("std") or base.std),
            num_features=int(getattr(model, "num_features", 0) or 0),
        )


def _head_prefixes(model) -> tuple[str, ...]:
    cls = model.default_cfg.get("classifier", "fc") if hasattr(model, "default_cfg") else "fc"
    names = cls if isinstance(cls, (list, tuple)) else [cls]
    return tuple(f"{n}." for n in names)


def _adapt_in_chans(w, in_chans: int):
    if in_chans == 1:
        return w.sum(dim=1, keepdim=True)
    reps = -(-in_chans // w.shape[1])
    return w.repeat(1, reps, 1, 1)[:, :in_chans] * (w.shape[1] / in_chans)


@dsim.hookimpl
def dsim_register_backbones():
    return [TimmBackbones()]


_IMAGENET_TERMS = "ImageNet terms: non-commercial research"
#: timm tag -> (study alias or None, family, parameters with the 1000-class head, input size,
#: mean, std, licence as timm lists it, how it relates to the study's torchvision network)
_TIMM_CARDS = {
    "densenet121.tv_in1k": (
        "densenet",
        "densenet",
        7_978_856,
        224,
        None,
        "apache-2.0",
        "torchvision's densenet121 IMAGENET1K_V1 weights, as the study used them",
    ),
    "vgg11.tv_in1k": (
        "vgg",
        "vgg",
        132_863_336,
        224,
        None,
        "bsd-3-clause",
        "torchvision's vgg11 IMAGENET1K_V1 weights, as the study used them",
    ),
    "resnet18.tv_in1k": (
        "resnet",
        "resnet",
        11_689_512,
        224,
        None,
        "bsd-3-clause",
        "torchvision's resnet18 IMAGENET1K_V1 weights, as the study used them",
    ),
    "tf_efficientnetv2_s.in1k": (
        None,
        "efficientnet",
        21_458_488,
        300,
        (0.5, 0.5, 0.5),
        "apache-2.0",
        "EfficientNetV2-S with Google's ImageNet-1k weights; the study's "
        "'efficientnet' is torchvision's (tv-efficientnet_v2_s)",
    ),
    "mnasnet_100.rmsp_in1k": (
        None,
        "mnasnet",
        4_383_312,
        224,
        None,
        "apache-2.0",
        "MnasNet-B1 1.0 trained by timm; the study's 'mnasnet' is torchvision's (tv-mnasnet1_0)",
    ),
    "mobilenetv3_small_100.lamb_in1k": (
        None,
        "mobilenet",
        2_542_856,
        224,
        None,
        "apache-2.0",
        "MobileNetV3-Small 1.0 trained by timm; the study's 'mobilenet' "
        "is torchvision's (tv-mobilenet_v3_small)",
    ),
    "convnext_tiny.fb_in1k": (
        None,
        "convnext",
        28_589_128,
        224,
        None,
        "apache-2.0",
        "ConvNeXt-T with Facebook's ImageNet-1k weights; the study's 'convnext' "
        "is torchvision's (tv-convnext_tiny)",
    ),
}


@dsim.hookimpl
def dsim_register_checkpoints():
    cards = []
    for tag, (alias, family, params, size, norm, licence, note) in _TIMM_CARDS.items():
        arch = tag.split(".")[0]
        cards.append(
            dsim.CheckpointCard(
                name=tag,
                title=f"timm {tag} (ImageNet-1k)",
                architecture=arch,
                weights=f"timm:{tag}",
                aliases=(alias,) if alias else (),
                pretrained_on="imagenet",
                family=family,
                parameters=params,
                num_classes=1000,
                input_size=size,
                **({"mean": norm, "std": norm} if norm else {}),
                licence=f"{licence} (as timm lists it); {_IMAGENET_TERMS}",
                papers=(
                    ("Juodelyte et al. 2024, On dataset transferability in medical image classification",)
                    if alias
                    else ()
                ),
                notes=(note,),
                provider="timm_backbones",
            )
        )
    return cards

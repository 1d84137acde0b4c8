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

Every model gets ``model.dsim_weights_id``, a content id of its weights (file hash, timm tag, or
architecture + seed) that caches built on it are keyed by.
"""

from __future__ import annotations

import os
from pathlib import Path

import dsim


def _file_sha256(path: Path) -> str:
    return dsim.file_digest(path)


def _cached_pretrained_file(model_name: str) -> str | None:
    """Path of timm's pretrained weights for ``model_name`` in a local cache, or None."""
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


def _read_state_dict(path: Path):
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(sd, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in sd and isinstance(sd[key], dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not sd:
        raise dsim.DsimError(f"{path}: not a checkpoint (expected a state dict of tensors)")
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


class TimmBackbones(dsim.BackboneFactory):
    name = "timm"
    description = (
        "any timm model; ImageNet weights from the local cache, a checkpoint file, or seeded random init"
    )

    def handles(self, model_name: str) -> bool:
        import timm

        return model_name.split(".")[0] in set(timm.list_models()) or bool(timm.list_models(model_name))

    def list_models(self, pattern: str = "*") -> list[str]:
        import timm

        return timm.list_models(pattern)

    def create(self, model_name, *, weights="imagenet", num_classes=0, in_chans=3, seed=0):
        import timm
        import torch

        if not self.handles(model_name):
            raise dsim.UnknownNameError("backbone", model_name, timm.list_models())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # seeded init of whatever is not loaded (e.g. a new head)
            if weights == "random":
                model = timm.create_model(
                    model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans
                )
                model.dsim_weights_id = dsim.stable_hash(
                    {
                        "arch": model_name,
                        "init": "random",
                        "seed": seed,
                        "in_chans": in_chans,
                        "timm": timm.__version__,
                        "torch": torch.__version__.split("+")[0],
                    }
                )
                return model
            if weights == "imagenet":
                path = _cached_pretrained_file(model_name)
                if path is None and os.environ.get("DSIM_ALLOW_DOWNLOAD") == "1":
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
                    raise dsim.WeightsMissingError(
                        f"no ImageNet weights for timm model {model_name!r} in the local cache; "
                        f"pass a checkpoint file as the weights (e.g. --probe-weights or --weights "
                        f"/path/to/{model_name}.pth), allow a download with DSIM_ALLOW_DOWNLOAD=1 "
                        "(needs network), or choose the weights 'random' for a seeded random-init network"
                    )
            else:
                path = str(Path(weights).expanduser())
                if not Path(path).is_file():
                    raise dsim.WeightsMissingError(f"checkpoint file {weights!r} not found")
            model = timm.create_model(
                model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans
            )
            sd = _read_state_dict(Path(path))
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
                raise dsim.DsimError(
                    f"checkpoint {path!r} does not fit timm model {model_name!r}: "
                    f"{len(missing_body)} of {len(body)} backbone tensors missing or mis-shaped "
                    f"(e.g. {', '.join(missing_body[:3])})"
                )
            model.load_state_dict(adapted, strict=False)
            model.dsim_weights_id = _file_sha256(Path(path))
            return model


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

"""Backbones from torchvision with its own ImageNet weights (``IMAGENET1K_V1``), for the
architectures whose torchvision weights timm does not carry: ``tv-googlenet``,
``tv-shufflenet_v2_x0_5``, ``tv-efficientnet_v2_s``, ``tv-mnasnet1_0``, ``tv-mobilenet_v3_small``,
``tv-convnext_tiny``; and the cards of those checkpoints.

These are the exact networks of the architecture study of Juodelyte et al. 2024 ("On dataset
transferability in medical image classification", github.com/DovileDo/transferability-in-medical-imaging,
``src/fine-tuning_imagenet.py``: ``torchvision.models.<arch>(weights='IMAGENET1K_V1')``), so each
card carries the study's short name as an alias (``googlenet``, ``shufflenet``, ``efficientnet``,
``mnasnet``, ``mobilenet``, ``convnext``). The study's other three (densenet121, vgg11, resnet18)
are timm models with torchvision's weights (``*.tv_in1k``, see ``dsim_plugins.timm_backbones``).

Weights, never downloaded silently:

* ``"imagenet"`` (or ``"torchvision:<arch>.IMAGENET1K_V1"``): the file in torch hub's cache
  (``$TORCH_HOME/hub/checkpoints``, as ``torchvision`` stores it), its sha256 checked against the
  hash prefix in its published name; with ``DSIM_ALLOW_DOWNLOAD=1`` it is downloaded there.
* a checkpoint file (``file:NAME`` in ``$DSIM_WEIGHTS_DIR``, or a path), loaded strictly;
* ``"random"``: seeded random init.

The module keeps torchvision's parameter names (its files load key for key) and adds timm's
interface (``forward_features``, ``forward_head``, ``get_classifier``, ``reset_classifier``,
``num_features``, ``default_cfg``). ``in_chans=1`` sums the stem conv over its input channels
(timm's rule); for GoogLeNet, whose torchvision weights expect their own input rescaling
(``transform_input``), the per-channel scales are folded into the summed conv and the small
per-channel offsets are dropped.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path

import dsim

PREFIX = "tv-"
_HEAD_SEED_OFFSET = 7919  # a new head's init depends on the seed only, not on the loaded body

#: arch -> facts: the study's short name, family, the classifier Linear's path, its input width
#: (num_features), parameters of the network as used (torchvision's weights meta), training size,
#: ImageNet-1k top-1 (torchvision's weights meta)
ARCHS = {
    "googlenet": ("googlenet", "googlenet", "fc", 1024, 6_624_904, 224, 69.778),
    "shufflenet_v2_x0_5": ("shufflenet", "shufflenet", "fc", 1024, 1_366_792, 224, 60.552),
    "efficientnet_v2_s": ("efficientnet", "efficientnet", "classifier.1", 1280, 21_458_488, 384, 84.228),
    "mnasnet1_0": ("mnasnet", "mnasnet", "classifier.1", 1280, 4_383_312, 224, 73.456),
    "mobilenet_v3_small": ("mobilenet", "mobilenet", "classifier.3", 1024, 2_542_856, 224, 67.668),
    "convnext_tiny": ("convnext", "convnext", "classifier.2", 768, 28_589_128, 224, 82.52),
}

#: arch -> torchvision's published ImageNet-1k weights (``IMAGENET1K_V1``), declared so that
#: checking whether they are here (``dsim zoo``) imports neither torch nor torchvision; a test
#: compares them with torchvision's own.
URLS = {
    "googlenet": "https://download.pytorch.org/models/googlenet-1378be20.pth",
    "shufflenet_v2_x0_5": "https://download.pytorch.org/models/shufflenetv2_x0.5-f707e7126e.pth",
    "efficientnet_v2_s": "https://download.pytorch.org/models/efficientnet_v2_s-dd5fe13b.pth",
    "mnasnet1_0": "https://download.pytorch.org/models/mnasnet1.0_top1_73.512-f206786ef8.pth",
    "mobilenet_v3_small": "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
    "convnext_tiny": "https://download.pytorch.org/models/convnext_tiny-983f1562.pth",
}


def _arch_of(model_name: str) -> str | None:
    arch = model_name[len(PREFIX) :] if model_name.startswith(PREFIX) else None
    return arch if arch in ARCHS else None


# ------------------------------------------------------------------------ forward, per architecture
_GOOGLENET_BODY = (
    "conv1 maxpool1 conv2 conv3 maxpool2 inception3a inception3b maxpool3 inception4a inception4b "
    "inception4c inception4d inception4e maxpool4 inception5a inception5b"
).split()


def _features(m, x):
    arch = m.tv_arch
    if arch == "googlenet":
        if m.transform_input:  # torchvision's rescaling of ImageNet-normalised RGB
            import torch

            x = torch.cat(
                [
                    x[:, i : i + 1] * (s / 0.5) + (mu - 0.5) / 0.5
                    for i, (mu, s) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
                ],
                dim=1,
            )
        for name in _GOOGLENET_BODY:
            x = getattr(m, name)(x)
        return x
    if arch == "shufflenet_v2_x0_5":
        return m.conv5(m.stage4(m.stage3(m.stage2(m.maxpool(m.conv1(x))))))
    if arch == "mnasnet1_0":
        return m.layers(x)
    return m.features(x)


def _pre_logits(m, x):
    arch = m.tv_arch
    if arch == "googlenet":
        return m.avgpool(x).flatten(1)
    if arch in ("shufflenet_v2_x0_5", "mnasnet1_0"):
        return x.mean(dim=(2, 3))
    x = m.avgpool(x)
    if arch == "convnext_tiny":  # LayerNorm2d, Flatten before the Linear
        return m.classifier[1](m.classifier[0](x))
    x = x.flatten(1)
    if arch == "mobilenet_v3_small":  # Linear 576->1024, Hardswish (the dropout goes with the head)
        return m.classifier[1](m.classifier[0](x))
    return x


def _dropout(m):
    """The dropout torchvision applies right before the classifier Linear (identity in eval)."""
    arch = m.tv_arch
    if arch == "googlenet":
        return m.dropout
    if arch in ("efficientnet_v2_s", "mnasnet1_0"):
        return m.classifier[0]
    if arch == "mobilenet_v3_small":
        return m.classifier[2]
    return None


@functools.cache
def _model_class():
    import torch.nn as nn

    class TorchvisionBackbone(nn.Module):
        """A torchvision classification network (its children and parameter names kept) with
        timm's model interface."""

        def __init__(self, arch: str, net, *, transform_input: bool = False):
            super().__init__()
            for name, child in net.named_children():
                if child is not None:
                    self.add_module(name, child)
            _short, _family, head, nf, _params, size, _acc = ARCHS[arch]
            self.tv_arch, self.transform_input = arch, transform_input
            self.num_features = nf
            self._head_path = head
            self.num_classes = self.get_classifier().out_features
            self.default_cfg = {
                "architecture": PREFIX + arch,
                "num_classes": self.num_classes,
                "input_size": (3, size, size),
                "mean": (0.485, 0.456, 0.406),
                "std": (0.229, 0.224, 0.225),
                "first_conv": _first_conv_name(self),
                "classifier": head,
            }
            self.pretrained_cfg = self.default_cfg

        def get_classifier(self):
            return self.get_submodule(self._head_path)

        def reset_classifier(self, num_classes: int) -> None:
            parent, _, last = self._head_path.rpartition(".")
            owner = self.get_submodule(parent) if parent else self
            new = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
            if isinstance(owner, nn.Sequential):
                owner[int(last)] = new
            else:
                setattr(owner, last, new)
            self.num_classes = num_classes
            self.default_cfg["num_classes"] = num_classes

        def forward_features(self, x):
            return _features(self, x)

        def forward_head(self, x, pre_logits: bool = False):
            x = _pre_logits(self, x)
            if pre_logits:
                return x
            drop = _dropout(self)
            return self.get_classifier()(drop(x) if drop is not None else x)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    # picklable by reference, through the module's __getattr__
    TorchvisionBackbone.__module__, TorchvisionBackbone.__qualname__ = __name__, "TorchvisionBackbone"
    return TorchvisionBackbone


def __getattr__(name: str):
    if name == "TorchvisionBackbone":
        return _model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _first_conv_name(model) -> str:
    import torch.nn as nn

    return next(n for n, c in model.named_modules() if isinstance(c, nn.Conv2d))


# ------------------------------------------------------------------------------------ weights
def _published(arch: str):
    import torchvision.models as tvm

    return tvm.get_model_weights(arch).IMAGENET1K_V1


def hub_file(arch: str) -> tuple[Path, str, str]:
    """Where torchvision keeps ``arch``'s ImageNet weights in torch hub's cache, their URL and the
    sha256 prefix in the published file name. Found without importing torch (as
    ``torch.hub.get_dir()`` does: ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``)."""
    url = URLS[arch] if arch in URLS else _published(arch).url
    name = os.path.basename(url)
    m = re.search(r"-([0-9a-f]{6,})\.", name)
    if "torch.hub" in sys.modules:  # torch is here anyway: its answer (honours torch.hub.set_dir)
        hub = sys.modules["torch.hub"].get_dir()
    else:
        home = os.environ.get("TORCH_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch"
        )
        hub = os.path.join(home, "hub")
    return Path(hub) / "checkpoints" / name, url, m.group(1) if m else ""


def _imagenet_file(model_name: str, arch: str) -> Path:
    path, url, prefix = hub_file(arch)
    if not path.is_file():
        if not dsim.env_flag("DSIM_ALLOW_DOWNLOAD"):
            raise dsim.WeightsMissingError(
                f"no ImageNet weights for backbone {model_name!r} in torch hub's cache: put {path.name} "
                f"(from {url}) in {path.parent}, allow a download with DSIM_ALLOW_DOWNLOAD=1 "
                "(needs network), or choose the weights 'random' for a seeded random-init network"
            )
        import sys

        import torch.hub

        print(f"downloading ImageNet weights for {model_name!r} from {url}", file=sys.stderr)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix or None, progress=False)
        except (OSError, RuntimeError) as exc:
            raise dsim.WeightsMissingError(
                f"could not download ImageNet weights for {model_name!r} from {url}: {type(exc).__name__}"
            ) from None
    digest = dsim.file_digest(path)
    if prefix and not digest.startswith(prefix):
        raise dsim.WeightsChecksumError(
            f"{path}: sha256 {digest} does not start with {prefix}, the hash in its published name "
            "(a corrupted or different file; delete it and supply the published one)"
        )
    return path


def _resolve(model_name: str, arch: str, weights: str) -> Path | None:
    spec = str(weights)
    if spec in ("imagenet", f"torchvision:{arch}.IMAGENET1K_V1"):
        return _imagenet_file(model_name, arch)
    if spec.startswith("torchvision:"):
        raise dsim.WeightsMissingError(
            f"backbone {model_name!r} knows only torchvision's IMAGENET1K_V1 weights, not {spec[12:]!r}"
        )
    return dsim.resolve_weights(model_name, spec, {})


# ------------------------------------------------------------------------------------ factory
def _torchvision_version() -> str:
    import torchvision

    return torchvision.__version__.split("+")[0]


def _build(arch: str, *, aux: bool, random_init: bool, num_classes: int):
    import torchvision.models as tvm

    if arch == "googlenet":
        net = tvm.googlenet(
            weights=None,
            num_classes=num_classes or 1000,
            aux_logits=aux,
            transform_input=True,
            init_weights=random_init,
        )
        if not aux:
            net.aux1 = net.aux2 = None
        return net
    return tvm.get_model(arch, weights=None, num_classes=num_classes or 1000)


class TorchvisionBackbones(dsim.BackboneFactory):
    name = "torchvision"
    description = (
        "torchvision networks with torchvision's ImageNet weights (tv-googlenet, tv-shufflenet_v2_x0_5, ...), "
        "from torch hub's cache"
    )

    def handles(self, model_name: str) -> bool:
        return _arch_of(model_name) is not None

    def list_models(self, pattern: str = "*") -> list[str]:
        import fnmatch

        return [PREFIX + a for a in ARCHS if fnmatch.fnmatch(PREFIX + a, pattern)]

    def missing(self, model_name: str, weights: str) -> str | None:
        """ImageNet weights must be in torch hub's cache (or a download allowed)."""
        arch = _arch_of(model_name)
        if weights == "random" or arch is None:
            return None
        if weights in ("imagenet", f"torchvision:{arch}.IMAGENET1K_V1"):
            path, url, _ = hub_file(arch)
            if path.is_file() or dsim.env_flag("DSIM_ALLOW_DOWNLOAD"):
                return None
            return (
                f"no ImageNet weights for {model_name!r} in torch hub's cache: put {path.name} (from {url}) "
                f"in {path.parent}, or allow a download with DSIM_ALLOW_DOWNLOAD=1"
            )
        return None if Path(weights).expanduser().is_file() else f"checkpoint file {weights!r} not found"

    def create(self, model_name, *, weights="imagenet", num_classes=0, in_chans=3, seed=0):
        import torch

        arch = _arch_of(model_name)
        if arch is None:
            raise dsim.UnknownNameError("backbone", model_name, self.list_models())
        path = _resolve(model_name, arch, weights)
        head_path, cls = ARCHS[arch][2], _model_class()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if path is None:
                net = _build(arch, aux=False, random_init=True, num_classes=1000)
                model = cls(arch, net, transform_input=arch == "googlenet")
                model.dsim_weights_id = dsim.random_weights_id(
                    model_name, seed=seed, in_chans=in_chans, torchvision=_torchvision_version()
                )
                stored = 1000
            else:
                sd = dsim.read_state_dict(path)
                w = sd.get(f"{head_path}.weight")
                stored = int(w.shape[0]) if w is not None and w.ndim == 2 else 0
                aux = any(k.startswith("aux1.") for k in sd)
                net = _build(arch, aux=aux, random_init=False, num_classes=stored)
                if not stored:  # a headless body (e.g. from `dsim pretrain`)
                    model = cls(arch, net, transform_input=arch == "googlenet")
                    model.reset_classifier(0)
                    dsim.load_strict(model, sd, file=path, backbone=model_name)
                else:
                    dsim.load_strict(net, sd, file=path, backbone=model_name)
                    if aux:
                        net.aux1 = net.aux2 = None
                    model = cls(arch, net, transform_input=arch == "googlenet")
                model.dsim_weights_id = dsim.file_digest(path)
            if in_chans != 3:
                _adapt_stem(model, in_chans)
            if num_classes != stored:
                torch.manual_seed(seed + _HEAD_SEED_OFFSET)
                model.reset_classifier(num_classes)
        model.default_cfg.update(input_size=(in_chans, *model.default_cfg["input_size"][1:]))
        return model

    def spec(self, model_name, model):
        size = ARCHS[_arch_of(model_name)][5]
        return dsim.BackboneSpec(
            input_size=size,
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            num_features=model.num_features,
        )


def _adapt_stem(model, in_chans: int) -> None:
    import torch

    conv = model.get_submodule(model.default_cfg["first_conv"])
    w = conv.weight.detach()
    if model.transform_input:  # fold GoogLeNet's per-channel input scale into the stem
        scale = torch.tensor([s / 0.5 for s in (0.229, 0.224, 0.225)]).view(1, 3, 1, 1)
        w = w * scale
        model.transform_input = False
    conv.weight = torch.nn.Parameter(dsim.adapt_in_chans(w, in_chans))
    conv.in_channels = in_chans


@dsim.hookimpl
def dsim_register_backbones():
    return [TorchvisionBackbones()]


@dsim.hookimpl
def dsim_register_checkpoints():
    cards = []
    for arch, (short, family, _head, _nf, params, size, acc) in ARCHS.items():
        cards.append(
            dsim.CheckpointCard(
                name=f"{PREFIX}{arch}",
                title=f"torchvision {arch}, ImageNet-1k IMAGENET1K_V1 ({acc} % top-1)",
                architecture=f"{PREFIX}{arch}",
                weights=f"torchvision:{arch}.IMAGENET1K_V1",
                aliases=(short,),
                pretrained_on="imagenet",
                family=family,
                parameters=params,
                num_classes=1000,
                input_size=size,
                licence="BSD-3-Clause (torchvision); ImageNet terms: non-commercial research",
                papers=("Juodelyte et al. 2024, On dataset transferability in medical image classification",),
                notes=(
                    f"The {short!r} network of Juodelyte et al. 2024's architecture study "
                    f"(torchvision.models.{arch}(weights='IMAGENET1K_V1'), src/fine-tuning_imagenet.py).",
                ),
                provider="torchvision_backbones",
            )
        )
    return cards

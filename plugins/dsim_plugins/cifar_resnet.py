"""The CIFAR ResNets of He et al. 2016 (§4.2, "Deep Residual Learning for Image Recognition"):
``cifar-resnet20``, ``-32``, ``-44``, ``-56``, and the cards of their published CIFAR-10
checkpoints (``cifar10-resnet20`` ...; akamaster/pytorch_resnet_cifar10, BSD-2-Clause).

Architecture: ``conv1`` 3x3 3->16, ``bn1``, ReLU; ``layer1``/``layer2``/``layer3`` of n basic
blocks each (n = (depth - 2) / 6 = 3/5/7/9; widths 16/32/64; the first block of layer2 and layer3
at stride 2); block = conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU. Shortcuts are
option A: identity, or where the shape changes, stride-2 subsampling with zero-padded channels
(no parameters). Global average pool, ``linear`` 64->10; ``num_features`` = 64. Random init is
He (Kaiming) normal for convs and the linear layer, as in akamaster's code.

Weights: ``"cifar10"`` (the published file ``cifar10_resnet<depth>.pth``, found in
``$DSIM_WEIGHTS_DIR`` and checked by sha256), a checkpoint file (loaded strictly, key for key),
or ``"random"`` (seeded). The CIFAR-10 networks expect 32 px RGB normalised with ImageNet
mean/std. There are no ImageNet weights for them.
"""

from __future__ import annotations

import functools

import dsim

#: depth -> (published file, sha256, CIFAR-10 test accuracy % as published by akamaster)
_FILES = {
    20: ("cifar10_resnet20.pth", "105732e4b122834ca00b598e5ff7a0c3356d4034387201eb339b6a0551db0e7f", 91.78),
    32: ("cifar10_resnet32.pth", "012e756338f231ac3263e7d2f2fd0da65aeb597ee1c6a7712ebf58de128fc5c2", 92.78),
    44: ("cifar10_resnet44.pth", "735c713bec0c3264dc4b5a5867c062993545f0ea6baa6974908c5d2693e8b31e", 93.14),
    56: ("cifar10_resnet56.pth", "fc97384c3dc4f788de678af885486b3066b751bd0a12de5649c6bb521e12403a", 93.62),
}
DEPTHS = {f"cifar-resnet{d}": d for d in _FILES}
_HEAD_SEED_OFFSET = 7919  # a new head's init depends on the seed only, not on the loaded body


def published(depth: int) -> dict[str, tuple[str, str]]:
    """The published checkpoints of ``cifar-resnet<depth>``: weights name -> (file, sha256)."""
    file_name, sha, _acc = _FILES[depth]
    return {"cifar10": (file_name, sha)}


def _default_cfg(depth: int, num_classes: int) -> dict:
    """timm's ``default_cfg`` of ``cifar-resnet<depth>``."""
    return {
        "architecture": f"cifar-resnet{depth}",
        "num_classes": num_classes,
        "input_size": (3, 32, 32),
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "conv1",
        "classifier": "linear",
    }


@functools.cache
def _block_class():
    """The basic block (conv3x3-BN-ReLU-conv3x3-BN plus the option-A shortcut, then ReLU)."""
    import torch.nn as nn
    import torch.nn.functional as F

    class BasicBlock(nn.Module):
        def __init__(self, in_planes: int, planes: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.stride, self.pad = stride, planes - in_planes

        def shortcut(self, x):
            # option A: subsample, then zero-pad the new channels evenly on both sides
            if self.stride != 1:
                x = x[:, :, :: self.stride, :: self.stride]
            if self.pad:
                x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
            return x

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    return BasicBlock


@functools.cache
def _model_class():
    import torch.nn as nn
    import torch.nn.functional as F

    BasicBlock = _block_class()

    class CifarResNet(nn.Module):
        """He et al.'s CIFAR ResNet with timm's model interface (forward_features,
        forward_head, get_classifier, reset_classifier, num_features, default_cfg)."""

        def __init__(self, depth: int, num_classes: int = 10, in_chans: int = 3):
            super().__init__()
            if (depth - 2) % 6:
                raise ValueError(f"a CIFAR ResNet has depth 6n+2, not {depth}")
            n = (depth - 2) // 6
            self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            planes_in = 16
            for i, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
                blocks = []
                for j in range(n):
                    blocks.append(BasicBlock(planes_in, planes, stride if j == 0 else 1))
                    planes_in = planes
                setattr(self, f"layer{i}", nn.Sequential(*blocks))
            self.num_features = 64
            self.reset_classifier(num_classes)
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight)
            self.default_cfg = _default_cfg(depth, num_classes)
            self.pretrained_cfg = self.default_cfg

        def reset_classifier(self, num_classes: int) -> None:
            self.num_classes = num_classes
            self.linear = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
            if num_classes:
                nn.init.kaiming_normal_(self.linear.weight)

        def get_classifier(self):
            return self.linear

        def forward_features(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            return self.layer3(self.layer2(self.layer1(x)))

        def forward_head(self, x, pre_logits: bool = False):
            x = x.mean(dim=(2, 3))
            return x if pre_logits else self.linear(x)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    for cls in (CifarResNet, BasicBlock):  # picklable by reference, through the module's __getattr__
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return CifarResNet, BasicBlock


def __getattr__(name: str):
    if name in ("CifarResNet", "BasicBlock"):
        return dict(zip(("CifarResNet", "BasicBlock"), _model_class()))[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CifarResNetBackbones(dsim.BackboneFactory):
    name = "cifar-resnet"
    description = (
        "He et al.'s CIFAR ResNets (20/32/44/56, option-A shortcuts); CIFAR-10 weights from DSIM_WEIGHTS_DIR"
    )

    def handles(self, model_name: str) -> bool:
        return model_name in DEPTHS

    def list_models(self, pattern: str = "*") -> list[str]:
        import fnmatch

        return [n for n in DEPTHS if fnmatch.fnmatch(n, pattern)]

    def create(self, model_name, *, weights="imagenet", num_classes=0, in_chans=3, seed=0):
        import torch

        if model_name not in DEPTHS:
            raise dsim.UnknownNameError("backbone", model_name, DEPTHS)
        depth = DEPTHS[model_name]
        path = dsim.resolve_weights(model_name, weights, published(depth))
        cls, _ = _model_class()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if path is None:
                model = cls(depth, num_classes=10, in_chans=in_chans)
                stored = 10
                model.dsim_weights_id = dsim.random_weights_id(model_name, seed=seed, in_chans=in_chans)
            else:
                sd = dsim.read_state_dict(path)
                head = sd.get("linear.weight")
                stored = int(head.shape[0]) if head is not None and head.ndim == 2 else 0
                conv = sd.get("conv1.weight")
                file_chans = int(conv.shape[1]) if conv is not None and conv.ndim == 4 else 3
                model = cls(depth, num_classes=stored, in_chans=file_chans)
                dsim.load_strict(model, sd, file=path, backbone=model_name)
                if file_chans != in_chans:
                    model.conv1.weight = torch.nn.Parameter(
                        dsim.adapt_in_chans(model.conv1.weight.detach(), in_chans)
                    )
                    model.conv1.in_channels = in_chans
                model.dsim_weights_id = dsim.file_digest(path)
            if num_classes != stored:
                torch.manual_seed(seed + _HEAD_SEED_OFFSET)
                model.reset_classifier(num_classes)
        model.default_cfg.update(num_classes=num_classes, input_size=(in_chans, 32, 32))
        return model

    def spec(self, model_name, model):
        return dsim.BackboneSpec(
            input_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), num_features=64
        )


@dsim.hookimpl
def dsim_register_backbones():
    return [CifarResNetBackbones()]


def _parameters(depth: int) -> int:
    """Trainable parameters with the 10-class classifier (no shortcut parameters: option A)."""

    def conv_bn(cin: int, cout: int) -> int:  # a 3x3 conv without bias, then BN (weight, bias)
        return 9 * cin * cout + 2 * cout

    n = (depth - 2) // 6
    total = conv_bn(3, 16)
    cin = 16
    for planes in (16, 32, 64):
        for _ in range(n):
            total += conv_bn(cin, planes) + conv_bn(planes, planes)
            cin = planes
    return total + 64 * 10 + 10


@dsim.hookimpl
def dsim_register_checkpoints():
    cards = []
    for depth, (file_name, sha, acc) in _FILES.items():
        cards.append(
            dsim.CheckpointCard(
                name=f"cifar10-resnet{depth}",
                title=f"ResNet-{depth} for CIFAR-10 (He et al. 2016, option A; {acc} % test accuracy)",
                architecture=f"cifar-resnet{depth}",
                weights=f"file:{file_name}",
                sha256=sha,
                pretrained_on="cifar10",
                family="resnet",
                parameters=_parameters(depth),
                num_classes=10,
                input_size=32,
                licence="BSD-2-Clause (akamaster/pytorch_resnet_cifar10)",
                papers=("He, Zhang, Ren, Sun, Deep Residual Learning for Image Recognition, CVPR 2016",),
                notes=(
                    f"akamaster's published resnet{depth} file (state dict kept, 'module.' prefix "
                    f"stripped); {acc} % CIFAR-10 test accuracy as published.",
                ),
                provider="cifar_resnet",
            )
        )
    return cards

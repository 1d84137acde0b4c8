"""MobileNetV1 at width 0.25 (``mobilenetv1-x0.25``), the ImageNet backbone of RetinaFace
(Deng et al., CVPR 2020; the PyTorch port github.com/biubug6/Pytorch_Retinaface), and the card
of its published ImageNet checkpoint (``mobilenetv1-x0.25-imagenet``).

Architecture (Howard et al. 2017, width multiplier 0.25, with LeakyReLU(0.1) as RetinaFace uses
it): a 3x3 conv-BN 3->8 at stride 2, then depthwise-separable blocks (3x3 depthwise conv, BN,
LeakyReLU, 1x1 pointwise conv, BN, LeakyReLU) grouped as the checkpoint's keys are:
``stage1`` 8->16 (s1), 16->32 (s2), 32->32, 32->64 (s2), 64->64; ``stage2`` 64->128 (s2) and five
128->128; ``stage3`` 128->256 (s2), 256->256; global average pool; ``fc`` 256->1000. 470 072
parameters with the 1000-class classifier; ``num_features`` = 256.

Weights: ``"imagenet"`` (the published file ``mobilenetv1_x0.25_imagenet.pth``, found in
``$DSIM_WEIGHTS_DIR`` and checked by sha256), a checkpoint file (loaded strictly, key for key),
or ``"random"`` (seeded). The ImageNet network expects RGB normalised with ImageNet mean/std and
was trained at 224 px.
"""

from __future__ import annotations

import functools

import dsim

NAME = "mobilenetv1-x0.25"
#: the published checkpoints of this architecture: weights name -> (file name, sha256)
PUBLISHED = {
    "imagenet": (
        "mobilenetv1_x0.25_imagenet.pth",
        "582f95e33f5a7dace3e36854c7041756809d2feae8cdba5ef89c20dbcb9b1d5d",
    ),
}
PARAMETERS = 470_072  # with the 1000-class fc, as the checkpoint has it
_HEAD_SEED_OFFSET = 7919  # a new head's init depends on the seed only, not on the loaded body

# (in, out, stride) of the depthwise-separable blocks after the first conv-bn, per stage
_STAGES = (
    ((8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1)),
    ((64, 128, 2),) + ((128, 128, 1),) * 5,
    ((128, 256, 2), (256, 256, 1)),
)


@functools.cache
def _model_class():
    import torch.nn as nn

    def conv_bn(cin, cout, stride):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.1, inplace=True),
        )

    def conv_dw(cin, cout, stride):
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.1, inplace=True),
        )

    class MobileNetV1(nn.Module):
        """MobileNetV1 x0.25 with timm's model interface (forward_features, forward_head,
        get_classifier, reset_classifier, num_features, default_cfg)."""

        def __init__(self, num_classes: int = 1000, in_chans: int = 3):
            super().__init__()
            first, *rest = _STAGES
            self.stage1 = nn.Sequential(conv_bn(in_chans, 8, 2), *(conv_dw(*b) for b in first))
            self.stage2 = nn.Sequential(*(conv_dw(*b) for b in rest[0]))
            self.stage3 = nn.Sequential(*(conv_dw(*b) for b in rest[1]))
            self.avg = nn.AdaptiveAvgPool2d(1)
            self.num_features = 256
            self.reset_classifier(num_classes)
            self.default_cfg = {
                "architecture": NAME,
                "num_classes": num_classes,
                "input_size": (3, 224, 224),
                "mean": (0.485, 0.456, 0.406),
                "std": (0.229, 0.224, 0.225),
                "first_conv": "stage1.0.0",
                "classifier": "fc",
            }
            self.pretrained_cfg = self.default_cfg

        def reset_classifier(self, num_classes: int) -> None:
            self.num_classes = num_classes
            self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

        def get_classifier(self):
            return self.fc

        def forward_features(self, x):
            return self.stage3(self.stage2(self.stage1(x)))

        def forward_head(self, x, pre_logits: bool = False):
            x = self.avg(x).flatten(1)
            return x if pre_logits else self.fc(x)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    # picklable by reference, through the module's __getattr__
    MobileNetV1.__module__, MobileNetV1.__qualname__ = __name__, "MobileNetV1"
    return MobileNetV1


def __getattr__(name: str):
    if name == "MobileNetV1":
        return _model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class MobileNetV1Backbones(dsim.BackboneFactory):
    name = "mobilenet-v1"
    description = "MobileNetV1 x0.25 (RetinaFace's ImageNet backbone); ImageNet weights from DSIM_WEIGHTS_DIR"

    def handles(self, model_name: str) -> bool:
        return model_name == NAME

    def list_models(self, pattern: str = "*") -> list[str]:
        import fnmatch

        return [NAME] if fnmatch.fnmatch(NAME, pattern) else []

    def create(self, model_name, *, weights="imagenet", num_classes=0, in_chans=3, seed=0):
        import torch

        if model_name != NAME:
            raise dsim.UnknownNameError("backbone", model_name, [NAME])
        path = dsim.resolve_weights(model_name, weights, PUBLISHED)
        cls = _model_class()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if path is None:
                model = cls(num_classes=1000, in_chans=in_chans)
                stored = 1000
                model.dsim_weights_id = dsim.random_weights_id(NAME, seed=seed, in_chans=in_chans)
            else:
                sd = dsim.read_state_dict(path)
                fc = sd.get("fc.weight")
                stored = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else 0
                conv = sd.get("stage1.0.0.weight")
                file_chans = int(conv.shape[1]) if conv is not None and conv.ndim == 4 else 3
                model = cls(num_classes=stored, in_chans=file_chans)
                dsim.load_strict(model, sd, file=path, backbone=model_name)
                if file_chans != in_chans:
                    conv = model.stage1[0][0]
                    conv.weight = torch.nn.Parameter(dsim.adapt_in_chans(conv.weight.detach(), in_chans))
                    conv.in_channels = in_chans
                model.dsim_weights_id = dsim.file_digest(path)
            if num_classes != stored:
                torch.manual_seed(seed + _HEAD_SEED_OFFSET)
                model.reset_classifier(num_classes)
        model.default_cfg.update(num_classes=num_classes, input_size=(in_chans, 224, 224))
        return model

    def spec(self, model_name, model):
        return dsim.BackboneSpec(
            input_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), num_features=256
        )


@dsim.hookimpl
def dsim_register_backbones():
    return [MobileNetV1Backbones()]


@dsim.hookimpl
def dsim_register_checkpoints():
    file_name, sha = PUBLISHED["imagenet"]
    return [
        dsim.CheckpointCard(
            name="mobilenetv1-x0.25-imagenet",
            title="MobileNetV1 x0.25, ImageNet-1k (RetinaFace's backbone, 46.58 % top-1)",
            architecture=NAME,
            weights=f"file:{file_name}",
            sha256=sha,
            pretrained_on="imagenet",
            family="mobilenet",
            parameters=PARAMETERS,
            num_classes=1000,
            input_size=224,
            licence="MIT (Pytorch_Retinaface); ImageNet terms: non-commercial research",
            notes=(
                "From Pytorch_Retinaface's weights/mobilenetV1X0.25_pretrain.tar (state dict kept, "
                "'module.' prefix stripped); 46.58 % ImageNet top-1 as stored by its authors.",
            ),
            provider="mobilenet_v1",
        )
    ]

"""Small CNN backbones for CPU-scale transfer experiments at 28 px (``dsim validate`` on a laptop,
benchmarks/transfer_matrix.py).

``smallcnn`` (width 32) and ``smallcnn-w16``/``smallcnn-w64``: four 3x3 conv blocks
(conv-BN-ReLU, max-pool after the first three), global average pooling; ``num_features`` = 8 x
width. Measured on 2 CPU cores, a training step at 28 px costs a few percent of timm's resnet18 at
the same size (see docs/validate.md), which is what makes a sources x targets matrix fit in an hour.

Weights: ``"random"`` (seeded), a checkpoint file (a state dict, or a dict with ``state_dict``,
e.g. from ``dsim pretrain``; a classifier of another size is dropped) — there are no ImageNet
weights for these networks, and asking for them says so.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import dsim

_WIDTHS = {"smallcnn": 32, "smallcnn-w16": 16, "smallcnn-w64": 64}


def _make(width: int, in_chans: int, num_classes: int):
    import torch.nn as nn

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            chans = [in_chans, w, 2 * w, 4 * w, 8 * w]
            layers = []
            for i in range(4):
                layers += [
                    nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                    nn.BatchNorm2d(chans[i + 1]),
                    nn.ReLU(inplace=True),
                ]
                if i < 3:
                    layers.append(nn.MaxPool2d(2))
            self.features = nn.Sequential(*layers)
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.num_features = 8 * w
            self.num_classes = num_classes
            self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

        def forward_features(self, x):
            return self.features(x)

        def forward_head(self, x, pre_logits: bool = False):
            x = self.pool(x)
            return x if pre_logits else self.fc(x)

        def get_classifier(self):
            return self.fc

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    return SmallCNN()


class SmallCNNBackbones(dsim.BackboneFactory):
    name = "small-cnn"
    description = "small 4-block CNNs (smallcnn, smallcnn-w16, smallcnn-w64) for CPU-scale runs at 28 px"

    def handles(self, model_name: str) -> bool:
        return model_name in _WIDTHS

    def list_models(self, pattern: str = "*") -> list[str]:
        import fnmatch

        return [n for n in _WIDTHS if fnmatch.fnmatch(n, pattern)]

    def create(self, model_name, *, weights="imagenet", num_classes=0, in_chans=3, seed=0):
        import torch

        if model_name not in _WIDTHS:
            raise dsim.UnknownNameError("backbone", model_name, _WIDTHS)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _make(_WIDTHS[model_name], in_chans, num_classes)
        if weights == "random":
            model.dsim_weights_id = dsim.random_weights_id(model_name, seed=seed, in_chans=in_chans)
            return model
        if weights == "imagenet":
            raise dsim.WeightsMissingError(
                f"backbone {model_name!r} has no ImageNet weights; pretrain it on a source with "
                f"`dsim pretrain --source S --backbone {model_name}`, pass a checkpoint file, or use "
                "a timm backbone (e.g. resnet18) with ImageNet weights in the local cache"
            )
        path = Path(str(weights)).expanduser()
        if not path.is_file():
            raise dsim.WeightsMissingError(f"checkpoint file {str(weights)!r} not found")
        sd = dsim.read_state_dict(path)  # unreadable, no tensors: a dsim.CheckpointError
        own = model.state_dict()
        body = [k for k in own if not k.startswith("fc.")]
        bad = [k for k in body if k not in sd or tuple(sd[k].shape) != tuple(own[k].shape)]
        if bad:
            raise dsim.CheckpointError(
                f"checkpoint {str(path)!r} does not fit backbone {model_name!r} with {in_chans} input "
                f"channels: {len(bad)} of {len(body)} tensors missing or mis-shaped (e.g. {bad[0]})"
            )
        model.load_state_dict({k: sd[k] for k in body}, strict=False)
        h = hashlib.sha256(path.read_bytes()).hexdigest()
        model.dsim_weights_id = h
        return model

    def spec(self, model_name, model):
        # fully convolutional with global pooling: no native size of its own, dsim's default 224
        # stands unless the checkpoint's card gives its ``input_size`` (28 for these runs)
        return dsim.BackboneSpec(num_features=int(model.num_features))


@dsim.hookimpl
def dsim_register_backbones():
    return [SmallCNNBackbones()]

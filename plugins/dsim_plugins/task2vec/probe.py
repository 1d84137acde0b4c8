"""The probe network as the Task2Vec reference sees it: an ordered list of layers ending in the
classifier, split at ``task2vec_skip_layers``, and the batch-norm mode of the Fisher passes."""

from __future__ import annotations

from .settings import Task2VecError

#: the reference's ResNet layer list (models.py), mapped to timm's ResNet module names; the
#: reference's ``skip_layers`` indexes this list (6 = start at layer3).
_RESNET_LAYERS = (
    "conv1",
    "bn1",
    "act1",
    "maxpool",
    "layer1",
    "layer2",
    "layer3",
    "layer4",
    "global_pool",
    None,  # the reference's flatten; timm's global_pool already flattens
    "fc",
)


class _Probe:
    """A probe network as the reference sees it: an ordered list of layers ending in the
    classifier, so that a forward pass can start from any layer."""

    def __init__(self, model, skip: int):
        import torch.nn as nn

        self.model = model
        if all(hasattr(model, n) for n in ("layer1", "layer4", "fc", "global_pool")):
            self.layers = [getattr(model, n) if n else nn.Identity() for n in _RESNET_LAYERS]
        else:
            if skip != 0:
                raise Task2VecError(
                    f"task2vec_skip_layers={skip} is only defined for ResNet probes; use 0 with "
                    f"probe {type(model).__name__}"
                )
            self.layers = [_Body(model), model.get_classifier()]
        if not 0 <= skip < len(self.layers) - 1:
            raise Task2VecError(
                f"task2vec_skip_layers={skip} out of range 0..{len(self.layers) - 2} for this probe"
            )
        self.skip = skip
        self.classifier = self.layers[-1]
        tail = self.layers[skip:-1]
        tail_modules = {id(m) for layer in tail for m in layer.modules()}
        self.names, self.weights = [], []
        for name, mod in model.named_modules():
            if mod is self.classifier or id(mod) not in tail_modules:
                continue
            w = getattr(mod, "weight", None)
            if isinstance(w, nn.Parameter):
                self.names.append(name)
                self.weights.append(w)

    def forward_from(self, x, start: int, stop: int | None = None):
        for layer in self.layers[start:stop]:
            x = layer(x)
        return x


class _Body:
    """Generic timm model: pooled features (``forward_head(pre_logits=True)``)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def modules(self):
        return (m for m in self.model.modules() if m is not self.model.get_classifier())


def _set_bn(model, mode: str) -> None:
    """``train``: batch statistics, running statistics left untouched; ``eval``: stored ones."""
    import torch.nn as nn

    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if mode == "train":
                m.train()
                m.track_running_stats = False  # use batch stats, never update the buffers
            else:
                m.eval()

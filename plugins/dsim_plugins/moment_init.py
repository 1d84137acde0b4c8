"""``moment-init``: moment-preserving random initialisation (Romero et al., after Raghu et al.).

Every convolution and linear weight of the source-pretrained body is replaced by Gaussian noise
with that tensor's own mean and standard deviation (batch-norm parameters and biases are kept),
then the whole network is fine-tuned as in ``finetune``. It separates what transfer brings
through feature re-use from what it brings through a good weight scale.
"""

from __future__ import annotations

import dsim


def preserve_moments(model, seed: int = 0) -> None:
    """Re-draw the backbone's conv/linear weights of a ``dsim.train_and_evaluate`` model (its
    public ``model.backbone``) from N(mean, std) of each tensor; the head is left alone."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.backbone.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                w = module.weight
                mean, std = w.mean(), w.std()
                noise = torch.randn(w.shape, generator=gen, dtype=w.dtype)
                w.copy_(noise * std + mean)


class MomentInit(dsim.Strategy):
    name = "moment-init"
    description = (
        "source weights re-drawn at random with each layer's mean and std, then fine-tuned (Romero/Raghu)"
    )
    uses_source = True

    def run(self, spec, data, ctx):
        if data.source_checkpoint is None:
            raise dsim.DsimError(f"{spec.label}: no source checkpoint was given to strategy 'moment-init'")
        return dsim.train_and_evaluate(
            spec,
            data,
            ctx,
            weights=data.source_checkpoint,
            mode="all",
            transform_model=lambda m: preserve_moments(m, seed=spec.seed * 100 + spec.fold),
        )


@dsim.hookimpl
def dsim_register_strategies():
    return [MomentInit()]

"""Deep transfer strategies (``dsim validate --strategy ...``):

* ``finetune`` — pretrain on the source, replace the head, fine-tune the whole network on the
  target (cats-scans; Fok's "FT" without the SVM on top);
* ``scratch`` — the same network and training from seeded random init on the target only: the
  baseline AUC(T) that transferability T is measured against (stored with source == target);
* ``gradual-unfreeze`` — three layer groups with discriminative learning rates (lr/9, lr/3, lr),
  a one-cycle schedule, the middle group unfrozen after 10 % and the input-side group after 20 %
  of the iterations (Romero et al.);
* ``feature-extractor`` — the source network frozen, only the new head trained, one-cycle
  (Romero et al.'s "CNN as feature extractor").

All share dsim's train loop (``dsim.train_and_evaluate``): class weights, early stopping on the
validation loss, AMP + channels_last on CUDA.
"""

from __future__ import annotations

import dsim


def _weights(data: dsim.FoldData, spec) -> str:
    if data.source_checkpoint is None:
        raise dsim.DsimError(f"{spec.label}: no source checkpoint was given to strategy {spec.strategy!r}")
    return data.source_checkpoint


class FineTune(dsim.Strategy):
    name = "finetune"
    description = "pretrain on the source, fine-tune the whole network on the target (cats-scans)"
    uses_source = True

    def run(self, spec, data, ctx):
        return dsim.train_and_evaluate(spec, data, ctx, weights=_weights(data, spec), mode="all")


class Scratch(dsim.Strategy):
    name = "scratch"
    description = "from-scratch baseline AUC(T): the same network trained on the target only"
    uses_source = False

    def run(self, spec, data, ctx):
        return dsim.train_and_evaluate(spec, data, ctx, weights="random", mode="all")


class GradualUnfreeze(dsim.Strategy):
    name = "gradual-unfreeze"
    description = (
        "discriminative LRs (lr/9, lr/3, lr), one-cycle, gradual unfreezing of 3 layer groups (Romero et al.)"
    )
    uses_source = True

    def run(self, spec, data, ctx):
        return dsim.train_and_evaluate(
            spec, data, ctx, weights=_weights(data, spec), mode="gradual", schedule="one-cycle"
        )


class FeatureExtractor(dsim.Strategy):
    name = "feature-extractor"
    description = "frozen source network, only a new head trained with one-cycle (Romero et al.)"
    uses_source = True

    def run(self, spec, data, ctx):
        return dsim.train_and_evaluate(
            spec, data, ctx, weights=_weights(data, spec), mode="frozen", schedule="one-cycle"
        )


@dsim.hookimpl
def dsim_register_strategies():
    return [FineTune(), Scratch(), GradualUnfreeze(), FeatureExtractor()]

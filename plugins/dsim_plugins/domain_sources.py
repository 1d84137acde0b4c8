"""Aggregated-domain sources of Jindal & Singh ("Towards domain-aware transfer learning"):

* ``domain-ri`` / ``domain-in`` — pretrain on the domain source named as the run's source (or a
  union ``a+b``), from random init (RI) or from ImageNet weights (IN), then fine-tune;
* ``all-ri`` / ``all-in`` — pretrain on the union of **all** medical sources with data here (the
  paper's All_three: class sets concatenated, 15 + 2 + 5 = 22 labels), the target itself left out,
  from random or ImageNet init, then fine-tune.

The pretraining is dsim's cached :func:`dsim.pretrain` (keyed by the fingerprints of the union);
the ``*-in`` variants need ImageNet weights for the backbone and say how to supply them when absent.
Run them with ``dsim validate --target T --sources S --strategy domain-ri,domain-in``; for
``all-*`` the source name only labels the row (use ``--sources all``).
"""

from __future__ import annotations

import dsim


def medical_sources(exclude: str = "") -> list[str]:
    """Every registered medical dataset whose images are here, except ``exclude`` and its family:
    its parent, its children and its siblings (e.g. dermamnist for ham10000-8x8: both are isic)."""
    reg = dsim.get_registry()
    ex = reg.family(exclude) if exclude else set()
    return sorted(
        c.name
        for c in reg
        if c.origin == "medical" and c.name not in ex and c.loader and dsim.data_missing(c) is None
    )


class DomainSource(dsim.Strategy):
    """Pretrain from ``pretrain_init`` on the run's source, or on the union of all medical sources
    (``aggregate``), then fine-tune; dsim's pretraining stage reads both declarations."""

    uses_source = True

    def __init__(self, name: str, pretrain_init: str = "random", aggregate: bool = False):
        self.name = name
        self.pretrain_init = pretrain_init
        self.aggregate = aggregate
        what = "the union of all medical sources" if aggregate else "the domain source"
        self.description = f"pretrain on {what} from {'ImageNet' if pretrain_init == 'imagenet' else 'random'} init, then fine-tune (Jindal & Singh)"

    def pretrain_sources(self, source: str, target: str) -> str:
        if not self.aggregate:
            return source
        names = medical_sources(exclude=target)
        if not names:
            raise dsim.DsimError(
                f"strategy {self.name!r}: no medical source with data here besides {target!r}"
            )
        return "+".join(names)

    def run(self, spec, data, ctx):
        if data.source_checkpoint is None:
            raise dsim.DsimError(f"{spec.label}: no source checkpoint was given to strategy {self.name!r}")
        return dsim.train_and_evaluate(spec, data, ctx, weights=data.source_checkpoint, mode="all")


@dsim.hookimpl
def dsim_register_strategies():
    return [
        DomainSource("domain-ri", "random", False),
        DomainSource("domain-in", "imagenet", False),
        DomainSource("all-ri", "random", True),
        DomainSource("all-in", "imagenet", True),
    ]

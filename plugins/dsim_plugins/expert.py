"""Expert-feature Hamming distance ("Cats, not CAT scans", van den Brandt et al.).

Each card carries six categorical expert features (natural/medical, grey/colour,
objects/textures, type of object or texture, diversity, number of classes); the distance is the
number of features on which two datasets differ. A feature missing from either card is left out
and the distance is rescaled to six features, so partly described cards stay comparable; the
contributions say which features differed and which were missing.
"""

from __future__ import annotations

import dsim


class ExpertHamming(dsim.Measure):
    name = "expert"
    description = "Hamming distance between the six cats-scans expert features of two cards"
    kind = "distance"
    needs = "card"

    def config(self, ctx):
        return {"features": list(dsim.EXPERT_FEATURES), "version": 1}

    def represent(self, data, ctx):
        if not isinstance(data, dsim.DatasetCard):
            raise dsim.DsimError(f"expert measure needs a dataset card, got {type(data).__name__}")
        feats = {k: str(v).strip().lower() for k, v in dict(data.expert).items() if v not in (None, "")}
        unknown = sorted(set(feats) - set(dsim.EXPERT_FEATURES))
        if unknown:
            raise dsim.DsimError(f"dataset {data.name!r}: unknown expert feature(s) {', '.join(unknown)}")
        return self.representation(data, ctx, meta={"features": feats})

    def _diff(self, source, target):
        a, b = source.meta["features"], target.meta["features"]
        shared = [f for f in dsim.EXPERT_FEATURES if f in a and f in b]
        return {f: float(a[f] != b[f]) for f in shared}, shared

    def compare(self, source, target, ctx):
        diff, shared = self._diff(source, target)
        if not shared:
            raise dsim.DsimError(
                f"expert: {source.dataset!r} and {target.dataset!r} share no expert features"
            )
        return sum(diff.values()) * len(dsim.EXPERT_FEATURES) / len(shared)

    def contributions(self, source, target, ctx):
        diff, _ = self._diff(source, target)
        return diff

    def applicable(self, card: dsim.DatasetCard) -> str | None:
        """Why this card cannot be measured (None when it can)."""
        return None if card.expert else "card has no expert features"


@dsim.hookimpl
def dsim_register_measures():
    return [ExpertHamming()]

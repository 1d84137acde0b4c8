"""Fixed-rule predictors the meta-ranker is judged against: ImageNet first, the largest source,
the source with most classes, one measure alone, and the track record alone."""

from __future__ import annotations

import math

import dsim

from .features import _groups, _log10, track_record, track_table

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy

IMAGENET_NAMES = {"imagenet", "ilsvrc2012", "in1k", "imagenet-1k"}


class _Baseline(dsim.Predictor):
    """A fixed rule: score each candidate, rank by it (nothing is learned)."""

    def __init__(self, use_measured: bool = True):
        self.use_measured = use_measured

    def score(self, target, candidate, kinds) -> float | None:
        raise NotImplementedError

    def rank(self, target, candidates, history, measure_kinds):
        scores, contrib = {}, {}
        for c in candidates:
            v = self.score(target, c, measure_kinds)
            if v is not None and np.isfinite(v):
                scores[c.source.name] = float(v)
                contrib[c.source.name] = {self.name: {"value": float(v)}}
        return dsim.assemble_ranking(
            self,
            target,
            candidates,
            history if self.use_measured else [],
            scores,
            contributions=contrib,
            measures={m for c in candidates for m in c.values},
        )


class AlwaysImageNet(_Baseline):
    name = "always-imagenet"
    description = "baseline: ImageNet first, every other source tied"

    def score(self, target, c, kinds):
        names = {n.lower() for n in c.source.all_names}
        return 1.0 if names & IMAGENET_NAMES else 0.0


class _CardFact(_Baseline):
    """Rank by log10 of one number on the source's card (sources without it are left out)."""

    field = ""

    def score(self, target, c, kinds):
        v = _log10(getattr(c.source, self.field))
        return None if math.isnan(v) else v


class LargestSource(_CardFact):
    name = "largest-source"
    description = "baseline: sources with more images first (log10 images, from the card)"
    field = "size"


class MostClasses(_CardFact):
    name = "most-classes"
    description = "baseline: sources with more classes first (log10 classes, from the card)"
    field = "num_classes"


class SingleMeasure(_Baseline):
    name = "single-measure"
    description = "baseline: one similarity measure alone (most similar first)"

    def __init__(self, measure: str = "task2vec", use_measured: bool = True):
        self.measure = measure
        self.use_measured = use_measured

    def score(self, target, c, kinds):
        v = c.values.get(self.measure)
        if v is None or not np.isfinite(v):
            return None
        return -float(v) if kinds.get(self.measure, "distance") == "distance" else float(v)


class TrackRecord(_Baseline):
    """Each source's measured T z-scored among the sources of every *other* training target, and
    averaged (shrunk towards 0 by ``sum / (n + 1)``): target-agnostic, so it ranks a source the
    same for every target. Juodelyte et al. 2024's table shows how strong that is for choosing a
    source dataset; the held-out target's own results never enter its value."""

    name = "track-record"
    description = "baseline: how well each source transferred to the other targets (z-scored, averaged)"

    def __init__(self, use_measured: bool = True):
        self.use_measured = use_measured
        self.table_ = None

    def fit(self, results, values, cards, measure_kinds):
        self.table_ = track_table(_groups(results, [], cards))
        return self

    def get_state(self):
        return {"track": {k: [list(x) for x in v] for k, v in sorted((self.table_ or {}).items())}}

    def set_state(self, state):
        self.table_ = {k: [tuple(x) for x in v] for k, v in dict(state.get("track", {})).items()}
        return self

    def score(self, target, c, kinds):
        if self.table_ is None:
            raise dsim.DsimError("track-record is not fitted: it learns from measured results (fit() first)")
        v = track_record(self.table_, c.source.name, {target.name})
        return None if math.isnan(v) else v

"""Meta-learned source ranking, and the baselines it is judged against.

``meta-ranker`` learns, from measured fine-tuning results, which sources transfer better to a
target. Each (source, target) pair is described by:

* every available measure, oriented so that higher = more similar and z-scored within the
  target's candidate set (``sim:<measure>``; a measure missing for a source is imputed with the
  target's average, i.e. 0, and reported as missing);
* source properties from its card: log10 images, log10 classes, medical origin, grey-scale;
* target-relative properties: same origin, same channels, same modality, and agreement on each of
  the six cats-scans expert features (``expert_match:<feature>``, 0.5 when unknown).
* the source's track record (``track_record``): its measured T z-scored among the sources of
  every *other* target in the training history, averaged and shrunk towards 0 (sum / (n + 1));
  a target's own results never enter its own value (see :func:`track_record`).

Target-only properties are constant within one target's ranking, so a ranking objective cannot
use them on their own; they enter through the target-relative features above.

The objective is pairwise (RankNet / RankSVM with logistic loss): for every two sources of the
same training target (and setup), a logistic regression on the difference of their standardised
features predicts which transferred better. ``C`` (inverse L2 strength) is chosen by inner
leave-one-target-out over the training targets when ``C="auto"``. A bootstrap ensemble (sources
resampled within each target) gives the uncertainty.

Model selection (``select=True``, the default): fixed rules — each similarity measure alone,
their mean (rank aggregation), log source size, log source classes, the track record — are
scored by how well they rank the training targets (mean Spearman). Two rule-based models, the
*single best rule* and a *skill-weighted mix* (weights = skill, negatives at 0; on standardised
features), are scored by the same inner leave-one-target-out as the learned model (rules and
weights from the other training targets). The best of the three is kept, ties going to the
simpler (one rule, then the mix); ``state["model"]`` says which (``learned``, ``skill-weighted``
or ``best-rule``) and ``rule_spearman``, ``mix_spearman``, ``best_rule_spearman`` and
``inner_spearman`` give the scores. With few or inconsistent training targets a fitted linear
model can rank a new target worse than chance, and a mix can dilute one strong signal with
weak ones; the rule-based models only re-use known signals. Scores are put on the transferability
scale T (%) by a line fitted to the training targets (slope shared, intercept per target; a
target with measured sources gets its own intercept from them). Because the model is linear,
each row's ``contributions`` give, per feature, the raw value and its share of the predicted T.

The baselines (``always-imagenet``, ``largest-source``, ``most-classes``, ``single-measure``) are
predictors too, so ``dsim predictor evaluate`` and ``benchmarks/predictor.py`` treat every model
the same way. Sources with measured results for the target are always ranked by those
(*measured*); the predictor fills in the rest (*predicted*).
"""

from __future__ import annotations

import dsim

from .baselines import AlwaysImageNet, LargestSource, MostClasses, SingleMeasure, TrackRecord
from .features import _groups, card_features, measure_features, track_record, track_table
from .ranker import C_GRID, MetaRanker

__all__ = [
    "AlwaysImageNet",
    "C_GRID",
    "LargestSource",
    "MetaRanker",
    "MostClasses",
    "SingleMeasure",
    "TrackRecord",
    "_groups",
    "card_features",
    "measure_features",
    "track_record",
    "track_table",
]


@dsim.hookimpl
def dsim_register_predictors():
    return [MetaRanker, AlwaysImageNet, LargestSource, MostClasses, SingleMeasure, TrackRecord]

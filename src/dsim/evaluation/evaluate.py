"""Judging predictors on measured results: meta-datasets, leave-one-target-out with the registry's
family rule, noise ceilings over repeats, headroom diagnostics, paired bootstrap intervals, one
markdown renderer, and :func:`assemble_ranking`, which every predictor builds its Ranking with.

docs/evaluation.md explains the protocol and what few held-out targets can and cannot show.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dsim.kernel.catalog import (
    get_predictor,
    known_measure_values,
    list_measures,
    list_predictors,
    measure_kinds,
)
from dsim.kernel.defaults import DEFAULT_PREDICTOR, LEARNED_PREDICTOR, SUITE_MEASURES
from dsim.kernel.errors import DsimError, one_line
from dsim.kernel.interfaces import Candidate, Context, Predictor
from dsim.kernel.lazy import lazy_module
from dsim.kernel.metrics import (
    fold_transferability,
    measured_basis,
    measured_setups,
    measured_transferability,
    primary_setup,
    setup_baselines,
    target_baseline,
    transfer_summary,
)
from dsim.kernel.plugins import record_failure
from dsim.kernel.records import DatasetCard, MeasureValue, Ranking, RankingRow, TransferResult
from dsim.kernel.registry import get_registry

np = lazy_module("numpy")  # imported on first use: a card-only ranking needs no numpy

__all__ = [
    "PairRow",
    "Task",
    "MetaDataset",
    "transfer_table",
    "tasks",
    "pair_values",
    "meta_dataset",
    "ranking_metrics",
    "evaluate_loto",
    "evaluate_suite",
    "default_suite",
    "mean_metrics",
    "noise_ceiling",
    "hindsight",
    "in_sample",
    "paired_bootstrap",
    "parametric_ceiling",
    "render_table",
    "assemble_ranking",
]


# --------------------------------------------------------------------------- meta-dataset


@dataclass(frozen=True)
class PairRow:
    """Measured transfer of one (setup, target, source): mean score over folds and repeats.

    ``t`` is transferability T (%) against the target-only baseline when the setup has one
    (``basis == "T"``), else the AUC relative to the mean AUC of the setup's sources (%,
    ``basis == "AUC"``): a published table of AUCs alone still ranks its sources."""

    setup: str
    target: str
    source: str
    t: float
    t_sd: float
    auc: float
    n: int
    base_auc: float | None
    basis: str = "T"


def transfer_table(results: Iterable[TransferResult]) -> list[PairRow]:
    """One :class:`PairRow` per measured (setup, target, source).

    Each fold's AUC is compared with the same fold (and repeat) of the target-only baseline
    AUC(T), the mean baseline where that fold has none; a (setup, target) without any baseline
    is scored on AUC relative to the mean of its sources (``basis="AUC"``)."""
    table: dict[tuple[str, str], dict[str, dict[Any, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        table[(r.setup, r.target)][r.source][(r.repeat, r.fold)] = float(r.auc)
    rows = []
    for (setup, target), by_source in sorted(table.items()):
        base = by_source.get(target)
        if base:
            base_mean, basis = float(np.mean(list(base.values()))), "T"
        else:
            aucs = [a for s, f in by_source.items() for a in f.values()]
            base, base_mean, basis = {}, float(np.mean(aucs)), "AUC"
        for source in sorted(by_source):
            if source == target:
                continue
            folds = by_source[source]
            t, t_sd, auc, n = transfer_summary(
                fold_transferability(folds, base, base_mean, key=str), list(folds.values())
            )
            rows.append(
                PairRow(
                    setup=setup,
                    target=target,
                    source=source,
                    t=t,
                    t_sd=t_sd,
                    auc=auc,
                    n=n,
                    base_auc=base_mean if basis == "T" else None,
                    basis=basis,
                )
            )
    return rows


@dataclass
class Task:
    """One ranking task of a meta-dataset: the measured sources of one target under one setup."""

    setup: str
    target: str
    rows: list[PairRow] = field(default_factory=list)

    @property
    def basis(self) -> str:
        return self.rows[0].basis if self.rows else "T"


def tasks(results: Sequence[TransferResult], min_sources: int = 3) -> list[Task]:
    """The ranking tasks of ``results``: one per (setup, target) with ``min_sources`` or more."""
    out: dict[tuple[str, str], Task] = {}
    for row in transfer_table(results):
        out.setdefault((row.setup, row.target), Task(row.setup, row.target)).rows.append(row)
    return [t for t in out.values() if len(t.rows) >= min_sources]


def pair_values(
    pairs: Iterable[tuple[str, str]],
    known: Iterable[MeasureValue],
    cards: Mapping[str, DatasetCard] | None = None,
    measures: Mapping[str, Any] | None = None,
) -> list[MeasureValue]:
    """Measure values for ``pairs`` (source, target): every known value (averaged over folds)
    plus, where no value is known, card-only measures computed from the two cards.

    ``measures`` maps names to measure objects (default: every registered measure); only those
    with ``needs == "card"`` are computed here (image measures are looked up, never run)."""
    pairs = sorted(set(pairs))
    want = set(pairs)
    acc: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    kind: dict[str, str | None] = {}
    for v in known:
        if (v.source, v.target) in want and v.value is not None and np.isfinite(v.value):
            acc[(v.measure, v.source, v.target)].append(float(v.value))
            kind.setdefault(v.measure, v.kind)
    out = [
        MeasureValue(m, s, t, float(np.mean(xs)), None, "known", kind=kind.get(m))
        for (m, s, t), xs in sorted(acc.items())
    ]
    if cards is None:
        return out
    if measures is None:
        measures = list_measures()
    ctx = Context()
    for m in measures.values():
        if m.needs != "card":
            continue
        for s, t in pairs:
            if (m.name, s, t) in acc or s not in cards or t not in cards:
                continue
            if m.applicable(cards[s]) or m.applicable(cards[t]):
                continue
            try:
                value = float(m.pair(cards[s], cards[t], ctx))
            except DsimError:  # e.g. two cards that share no expert feature: no value for the pair
                continue
            except Exception as exc:  # a measure plugin's bug: said once, that measure left out
                record_failure(f"measure {m.name}", one_line(exc, f"raised on {s} -> {t}"))
                break
            out.append(MeasureValue(m.name, s, t, value, None, "computed"))
    return out


@dataclass
class MetaDataset:
    """Measured results plus the measure values and cards predictors learn from."""

    name: str
    results: list[TransferResult]
    values: list[MeasureValue]
    cards: dict[str, DatasetCard]
    kinds: dict[str, str]

    @property
    def tasks(self) -> list[Task]:
        return tasks(self.results)


def meta_dataset(
    name: str,
    results: Sequence[TransferResult],
    values: Sequence[MeasureValue] | None = None,
    *,
    cards: Mapping[str, DatasetCard] | None = None,
    measures: Mapping[str, Any] | None = None,
) -> MetaDataset:
    """A :class:`MetaDataset` from ``results``: known values for its pairs (default: every value
    the plugins bring) plus card-only measures, cards from the registry (bare ones for names it
    does not know)."""
    results = list(results)
    if cards is None:
        cards = {c.name: c for c in get_registry()}
    cards = dict(cards)
    for r in results:
        for n in (r.source, r.target):
            cards.setdefault(n, DatasetCard(name=n, provider="results"))
    measures = list_measures() if measures is None else measures
    pairs = {(r.source, r.target) for r in results if r.source != r.target}
    vals = pair_values(pairs, known_measure_values() if values is None else values, cards, measures)
    kinds = measure_kinds(measures)
    for v in vals:
        kinds.setdefault(v.measure, v.kind or "score")
    return MetaDataset(name=name, results=results, values=vals, cards=cards, kinds=kinds)


# --------------------------------------------------------------------------- metrics


def ranking_metrics(
    measured: Mapping[str, float],
    predicted_order: Sequence[str],
    scores: Mapping[str, float],
    aucs: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """How well a predicted ranking of sources matches the measured one.

    ``measured``: source -> measured score; ``predicted_order``: sources best first (ties
    broken as the predictor broke them); ``scores``: source -> predicted score (higher is
    better). Returns Spearman rho, weighted Kendall tau the way Juodelyte et al. (2024) report it
    (``scipy.stats.weightedtau(predicted, measured)``: the predictor's top ranks weigh most), top-1
    hit (1/0), regret in score points and in AUC (the true best's minus the predicted best's)."""
    names = [s for s in measured if s in scores]
    if len(names) < 2:
        raise DsimError(f"need at least two measured sources to score a ranking, got {len(names)}")
    y = np.array([measured[s] for s in names])
    p = np.array([scores[s] for s in names], dtype=float)
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        rho = tau = 0.0
    else:
        from scipy.stats import spearmanr, weightedtau

        rho = float(spearmanr(p, y).statistic)
        tau = float(weightedtau(p, y).statistic)
    top = next(s for s in predicted_order if s in measured)
    best = max(names, key=lambda s: measured[s])
    out: dict[str, Any] = {
        "spearman": rho,
        "weighted_tau": tau,
        "top1": float(measured[top] >= measured[best]),
        "regret_t": float(measured[best] - measured[top]),
        "n_sources": float(len(names)),
        "predicted_best": top,
        "true_best": best,
    }
    if aucs:
        out["regret_auc"] = float(aucs[best] - aucs[top])
    return out


def mean_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean of each metric over tasks (Spearman rho, weighted tau, top-1 rate, regret)."""
    out = {}
    for k in ("spearman", "weighted_tau", "top1", "regret_t", "regret_auc"):
        xs = [
            r[k] for r in rows if r.get(k) is not None and not (isinstance(r[k], float) and math.isnan(r[k]))
        ]
        if xs:
            out[k] = float(np.mean(xs))
    out["n_tasks"] = float(len(rows))
    return out


def _candidates_of(task: Task, values_of: Mapping[str, Mapping[str, float]], cards) -> list[Candidate]:
    out = []
    for row in task.rows:
        card = cards.get(row.source) or DatasetCard(name=row.source)
        vals = dict(values_of.get(row.source, {}))
        out.append(Candidate(source=card, values=vals, origins={m: "known" for m in vals}))
    return out


def _target_values(values: Sequence[MeasureValue], target: str) -> dict[str, dict[str, float]]:
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for v in values:
        if v.target == target:
            acc[v.source][v.measure].append(float(v.value))
    return {s: {m: float(np.mean(xs)) for m, xs in d.items()} for s, d in acc.items()}


def evaluate_loto(
    make_predictor: Callable[[], Predictor],
    results: Sequence[TransferResult],
    values: Sequence[MeasureValue],
    cards: Mapping[str, DatasetCard],
    measure_kinds: Mapping[str, str],
    *,
    targets: Sequence[str] | None = None,
    family: Callable[[str], set[str]] | None = None,
    on_fit: Callable[[str, Sequence[TransferResult], Sequence[MeasureValue]], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Leave-one-target-out: for each held-out target, fit ``make_predictor()`` on every result and
    measure value whose target is outside the held-out target's family (the registry's rule by
    default: the same images at another size are held out too), then rank the held-out target's
    measured sources (per setup) with an empty history for it.

    Returns one dict per (setup, target) task with the metrics of :func:`ranking_metrics` plus
    ``setup``, ``target``, ``predictor``, ``ranking`` (sources best first) and ``n_train``.
    ``on_fit`` is called with what each fit saw (tests use it to prove nothing leaked);
    ``progress(target, i, n)`` once per held-out target, before its fit."""
    if family is None:
        family = get_registry().family
    all_tasks = tasks(results)
    held = sorted({t.target for t in all_tasks} if targets is None else set(targets))
    # a predictor may share the work its folds have in common (fitted exactly as fit() would be)
    fit_without = make_predictor().fold_fitter(results, values, cards, measure_kinds)
    out = []
    for i, target in enumerate(held):
        if progress is not None:
            progress(target, i, len(held))
        fam = family(target) | {target}
        train_r = [r for r in results if r.target not in fam]
        train_v = [v for v in values if v.target not in fam]
        if on_fit is not None:
            on_fit(target, train_r, train_v)
        if fit_without is not None:
            pred = fit_without(fam)
        else:
            pred = make_predictor().fit(train_r, train_v, cards, measure_kinds)
        tvals = _target_values(values, target)
        tcard = cards.get(target) or DatasetCard(name=target)
        for task in (t for t in all_tasks if t.target == target):
            ranking = pred.rank(tcard, _candidates_of(task, tvals, cards), train_r, measure_kinds)
            if any(r.status == "measured" for r in ranking.rows):
                raise DsimError(
                    f"evaluation leak: {pred.name} marked a source of held-out {target!r} as measured"
                )
            scores = {r.source: r.score for r in ranking.rows}
            measured = {r.source: r.t for r in task.rows}
            aucs = {r.source: r.auc for r in task.rows}
            unranked = [s for s in measured if s not in scores]
            low = min(scores.values(), default=0.0) - 1.0
            for s in unranked:  # a source the predictor could not describe counts as its worst
                scores[s] = low
            order = list(ranking.sources) + sorted(unranked)
            m = ranking_metrics(measured, order, scores, aucs)
            m.update(
                setup=task.setup,
                target=target,
                predictor=pred.name,
                ranking=order,
                n_train=len(train_r),
                unranked=unranked,
                basis=task.basis,
            )
            out.append(m)
    return out


def default_suite(measures: Iterable[str] = SUITE_MEASURES) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, predictor name, params) of every model and baseline the evaluation reports."""

    suite = [
        (LEARNED_PREDICTOR, LEARNED_PREDICTOR, {}),
        ("meta-ranker", "meta-ranker", {}),
        (DEFAULT_PREDICTOR, DEFAULT_PREDICTOR, {}),
        ("track-record", "track-record", {}),
        ("fixed-blend", "fixed-blend", {}),
        ("always-imagenet", "always-imagenet", {}),
        ("largest-source", "largest-source", {}),
        ("most-classes", "most-classes", {}),
    ]
    suite += [(f"{m} alone", "single-measure", {"measure": m}) for m in measures]

    have = list_predictors()
    return [s for s in suite if s[1] in have]


def evaluate_suite(
    suite: Sequence[tuple[str, str, Mapping[str, Any]]],
    results: Sequence[TransferResult],
    values: Sequence[MeasureValue],
    cards: Mapping[str, DatasetCard],
    measure_kinds: Mapping[str, str],
    **kwargs: Any,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`evaluate_loto` for each (label, name, params) of ``suite``: label -> task rows."""

    out = {}
    for label, name, params in suite:
        rows = evaluate_loto(
            lambda name=name, params=params: get_predictor(name, **dict(params)),
            results,
            values,
            cards,
            measure_kinds,
            **kwargs,
        )
        for r in rows:
            r["label"] = label
        out[label] = rows
    return out


# --------------------------------------------------------------------------- reliability


def noise_ceiling(results: Sequence[TransferResult]) -> list[dict[str, Any]]:
    """Agreement of the measured ranking with itself, per (setup, target).

    With two or more independent repeats (``TransferResult.repeat``) the ranking of repeat A is
    compared with that of repeat B (Spearman rho, mean over pairs of repeats). Otherwise the folds
    are split into two halves in every way (5 folds: 2 vs 3, ten splits) and the rankings of the
    halves compared. ``split_half`` is that mean rho; ``reliability`` steps it up to the whole set
    (Spearman-Brown: 2r/(1+r) from fold halves to all folds; k r/(1+(k-1)r) from one repeat to the
    mean of all k repeats, ``n_units`` = k); ``ceiling`` = sqrt(reliability) is the rho that a
    predictor of the true ranking would reach against the measured one, in expectation: a predictor
    cannot be judged above it. A setup without repeats or folds (one number per pair) has none."""
    from scipy.stats import spearmanr

    groups: dict[tuple[str, str], list[TransferResult]] = defaultdict(list)
    for r in results:
        groups[(r.setup, r.target)].append(r)
    out = []
    for (setup, target), rs in sorted(groups.items()):
        reps = sorted({r.repeat for r in rs})
        if len(reps) >= 2:
            splits = [({a}, {b}) for a, b in itertools.combinations(reps, 2)]
            keyf, how, k_units = (lambda r: r.repeat), "repeats", len(reps)
        else:
            folds = sorted({r.fold for r in rs})
            if len(folds) < 2:
                continue
            k = len(folds) // 2
            splits = [(set(a), set(folds) - set(a)) for a in itertools.combinations(folds, k)]
            if len(folds) % 2 == 0:  # A/B and B/A are the same split
                splits = splits[: len(splits) // 2]
            keyf, how, k_units = (lambda r: r.fold), "fold halves", 2
        rhos = []
        for a, b in splits:
            ta = {p.source: p.t for p in transfer_table([r for r in rs if keyf(r) in a])}
            tb = {p.source: p.t for p in transfer_table([r for r in rs if keyf(r) in b])}
            common = sorted(set(ta) & set(tb))
            if len(common) >= 3:
                rhos.append(float(spearmanr([ta[s] for s in common], [tb[s] for s in common]).statistic))
        if not rhos:
            continue
        r = float(np.mean(rhos))
        rel = max(0.0, k_units * r / (1 + (k_units - 1) * r)) if r > -1 else 0.0  # no agreement: none
        out.append(
            {
                "setup": setup,
                "target": target,
                "method": how,
                "n_splits": len(rhos),
                "n_units": k_units,
                "split_half": r,
                "reliability": rel,
                "ceiling": float(math.sqrt(rel)) if rel > 0 else 0.0,
            }
        )
    return out


def parametric_ceiling(
    results: Sequence[TransferResult],
    sd: Callable[[str, str, str], float | None],
    *,
    draws: int = 2000,
    seed: int = 0,
    method: str = "parametric",
) -> list[dict[str, Any]]:
    """Noise ceilings of tasks measured once per pair, from each pair's known spread
    (``sd(setup, target, source)``, e.g. the sd of the test AUC over a study's near-best
    configurations): the measured AUCs are taken as the truth and redrawn ``draws`` times with
    Gaussian noise of that sd; the ceiling is the mean Spearman rho (``ceiling``) and weighted tau
    (``ceiling_tau``, the predictor's order first) of the truth against a redraw: what a predictor
    of the true ranking reaches against one noisy measurement of it. Pairs without an sd get the
    task's median."""
    from scipy.stats import spearmanr, weightedtau

    rng = np.random.default_rng(seed)
    out = []
    for task in tasks(results):
        auc = np.array([r.auc for r in task.rows])
        sds = [sd(task.setup, task.target, r.source) for r in task.rows]
        known = [s for s in sds if s is not None and np.isfinite(s)]
        if not known:
            continue
        fill = float(np.median(known))
        s = np.array([x if x is not None and np.isfinite(x) else fill for x in sds])
        rhos, taus = [], []
        for _ in range(draws):
            noisy = auc + rng.normal(0.0, 1.0, len(auc)) * s
            rhos.append(spearmanr(auc, noisy).statistic)
            taus.append(weightedtau(auc, noisy).statistic)
        out.append(
            {
                "setup": task.setup,
                "target": task.target,
                "method": method,
                "n_splits": draws,
                "n_units": 1,
                "split_half": float(np.nanmean(rhos)),
                "reliability": float(np.nanmean(rhos)) ** 2,
                "ceiling": float(np.nanmean(rhos)),
                "ceiling_tau": float(np.nanmean(taus)),
            }
        )
    return out


def paired_bootstrap(
    a: Sequence[Mapping[str, Any]],
    b: Sequence[Mapping[str, Any]],
    metric: str = "weighted_tau",
    *,
    n: int = 10000,
    seed: int = 0,
) -> dict[str, float]:
    """Mean of ``a - b`` over the tasks both predictors ranked, with a 95 % percentile interval
    from resampling the tasks (paired: both predictors on the same resampled tasks)."""
    ka = {(r["setup"], r["target"]): r[metric] for r in a}
    kb = {(r["setup"], r["target"]): r[metric] for r in b}
    keys = sorted(set(ka) & set(kb))
    if not keys:
        raise DsimError("paired bootstrap: the two predictors share no task")
    d = np.array([ka[k] - kb[k] for k in keys], float)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n, len(d)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {
        "mean": float(d.mean()),
        "low": float(lo),
        "high": float(hi),
        "n_tasks": len(keys),
        "better": int((d > 0).sum()),
        "worse": int((d < 0).sum()),
    }


# --------------------------------------------------------------------------- headroom


def hindsight(
    meta: MetaDataset, make_predictor: Callable[[], Predictor]
) -> list[tuple[str, str, str, float]]:
    """Per task, the single feature of the predictor's description of the candidates
    (:meth:`dsim.Predictor.describe`) whose ranking agrees best with the measured one, chosen WITH
    that task's answers: not a predictor, an upper bound on what picking one available signal per
    target could reach. Returns (setup, target, feature, rho)."""
    from scipy.stats import spearmanr

    pred = make_predictor()
    out = []
    for task in meta.tasks:
        tcard = meta.cards.get(task.target) or DatasetCard(name=task.target)
        cands = _candidates_of(task, _target_values(meta.values, task.target), meta.cards)
        desc = pred.describe(tcard, cands, [], meta.kinds)
        T = np.array([r.t for r in task.rows])
        cols: dict[str, list[float]] = defaultdict(list)
        for r in task.rows:
            for k in sorted({k for d in desc.values() for k in d}):
                cols[k].append(desc.get(r.source, {}).get(k, float("nan")))
        rhos = {
            k: float(spearmanr(v, T).statistic)
            for k, v in cols.items()
            if np.all(np.isfinite(v)) and np.ptp(v) > 0
        }
        if rhos:
            best = max(rhos, key=rhos.get)
            out.append((task.setup, task.target, best, rhos[best]))
    return out


def in_sample(meta: MetaDataset, make_predictor: Callable[[], Predictor]) -> list[tuple[str, str, float]]:
    """Fit on every target and rank the same targets: NOT an evaluation (the model has seen the
    answers); it separates "cannot represent" from "cannot extrapolate"."""
    pred = make_predictor().fit(meta.results, meta.values, meta.cards, meta.kinds)
    rows = []
    for task in meta.tasks:
        tcard = meta.cards.get(task.target) or DatasetCard(name=task.target)
        cands = _candidates_of(task, _target_values(meta.values, task.target), meta.cards)
        rk = pred.rank(tcard, cands, [], meta.kinds)
        m = ranking_metrics(
            {r.source: r.t for r in task.rows}, rk.sources, {r.source: r.score for r in rk.rows}
        )
        rows.append((task.setup, task.target, m["spearman"]))
    return rows


# --------------------------------------------------------------------------- rendering


def _num(x, digits=2):
    """A number for a table; 'n/a' where it is undefined (e.g. Spearman of a constant ranking)."""
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def render_table(
    out: Mapping[str, Sequence[Mapping[str, Any]]],
    ceiling: Sequence[Mapping[str, Any]],
    title: str,
    *,
    metric: str = "spearman",
) -> list[str]:
    """Markdown lines: one row per predictor, one column per held-out task (``metric``), then the
    means of Spearman rho, weighted tau, top-1 hits and regret, under a noise-ceiling row. Shared
    by ``dsim predictor evaluate --markdown`` and the benchmarks."""
    first = next(iter(out.values()))
    keys = [(r["setup"], r["target"]) for r in first]
    multi = len({s for s, _ in keys}) > 1
    name = (lambda s, t: f"{t} ({s})") if multi else (lambda s, t: t)
    cmap = {(c["setup"], c["target"]): c for c in ceiling}
    label = {"spearman": "Spearman rho", "weighted_tau": "weighted tau"}.get(metric, metric)
    lines = [f"**{title}** — {label} per held-out target (leave-one-target-out)", ""]
    head = [
        "predictor",
        *[name(s, t) for s, t in keys],
        "mean rho",
        "weighted tau",
        "top-1",
        "regret (pts)",
        "regret AUC",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    col = "ceiling_tau" if metric == "weighted_tau" else "ceiling"
    lines.append(
        "| *noise ceiling* | "
        + " | ".join(f"*{cmap[k].get(col, cmap[k]['ceiling']):.2f}*" if k in cmap else "n/a" for k in keys)
        + " | | | | | |"
    )
    nan = float("nan")
    for lab, rows in out.items():
        by = {(r["setup"], r["target"]): r for r in rows}
        sm = mean_metrics(rows)
        cells = [_num(by[k].get(metric)) if k in by else "" for k in keys]
        lines.append(
            f"| {lab} | " + " | ".join(cells) + f" | **{_num(sm.get('spearman', nan))}** | "
            f"{_num(sm.get('weighted_tau', nan))} | "
            f"{int(round(sm.get('top1', 0.0) * sm['n_tasks']))}/{int(sm['n_tasks'])} | "
            f"{_num(sm.get('regret_t', nan))} | {_num(sm.get('regret_auc', nan), 3)} |"
        )
    if ceiling:
        lines += [
            "",
            "Noise ceiling: "
            + "; ".join(
                f"{name(c['setup'], c['target'])}: split-half rho {c['split_half']:.2f} over {c['n_splits']} "
                f"{c['method']} splits, reliability {c['reliability']:.2f}, ceiling {c['ceiling']:.2f}"
                for c in ceiling
            ),
        ]
    return lines + [""]


# --------------------------------------------------------------------------- building a Ranking


def assemble_ranking(
    predictor: Predictor,
    target: DatasetCard,
    candidates: Sequence[Candidate],
    history: Sequence[TransferResult],
    scores: Mapping[str, float],
    *,
    uncertainty: Mapping[str, float] | None = None,
    contributions: Mapping[str, Mapping[str, Mapping[str, float | None]]] | None = None,
    calibrated: bool = False,
    measures: Iterable[str] = (),
    notes: Sequence[str] = (),
    unit: str | None = None,
) -> Ranking:
    """The :class:`dsim.Ranking` of ``candidates`` from per-source predicted ``scores``: the one
    way every predictor (built-in or third-party) builds its result.

    Sources with measured results for the target in ``history`` come first in status: their
    row carries the measured score (T, or AUC relative to the mean source where no setup has a
    baseline) and is marked *measured*. Predicted scores are used as they are when ``calibrated``
    (already on that scale); otherwise they are put on it by a least-squares line through the
    measured sources (two or more, with distinct scores), or left unitless (``unit`` names them)."""
    measured = measured_transferability(history, target.name) if history else {}
    basis = measured_basis(history, target.name) if history else None
    setups = measured_setups(history, target.name) if history else {}
    uncertainty = uncertainty or {}
    contributions = contributions or {}
    notes = list(notes)
    slope = intercept = spread = None
    if not calibrated and measured:
        xs = [scores[n] for n in measured if n in scores]
        ys = [measured[n][0] for n in measured if n in scores]
        if len(xs) >= 2 and np.ptp(xs) > 0:
            slope, intercept = np.polyfit(xs, ys, 1)
            resid = np.array(ys) - (slope * np.array(xs) + intercept)
            spread = float(np.sqrt(np.sum(resid**2) / max(1, len(xs) - 2)))
    on_scale = calibrated or slope is not None or (bool(measured) and not scores)
    rows = []
    for c in candidates:
        n = c.source.name
        contrib = {k: dict(v) for k, v in contributions.get(n, {}).items()}
        for m, v in c.values.items():
            contrib.setdefault(m, {})["value"] = float(v)
        kind = {"kind": c.kind, "architecture": c.checkpoint.architecture if c.checkpoint else None}
        if n in measured:
            t, sd, auc, k = measured[n]
            sd = sd if k > 1 else None  # one measurement: its spread is unknown, not zero
            rows.append(
                RankingRow(
                    n,
                    t,
                    "measured",
                    sd,
                    measured_auc=auc,
                    n_measured=k,
                    contributions=contrib,
                    setup=", ".join(setups.get(n, ())) or None,
                    **kind,
                )
            )
        elif n in scores:
            s = float(scores[n])
            unc = uncertainty.get(n)
            if slope is not None:
                s, unc = float(slope * s + intercept), spread
            rows.append(RankingRow(n, s, "predicted", unc, contributions=contrib, **kind))
    if measured and not calibrated and slope is None and any(r.status == "predicted" for r in rows):
        notes.append(
            "too few measured sources to put predicted scores on the measured scale; "
            "predicted rows are unitless"
        )
        on_scale = False
    rows.sort(key=lambda r: (-r.score, r.status != "measured", r.source))
    rows = tuple(dataclasses.replace(r, rank=i + 1) for i, r in enumerate(rows))
    if basis == "AUC":
        notes.append(
            "no setup has a target-only baseline for this target: measured rows are scored by AUC "
            "relative to the mean source of their setup (%), not transferability T"
        )
    scale = "AUC relative to the mean source %" if basis == "AUC" else "transferability %"
    base_setup = primary_setup(history or [], target.name)
    per_setup = setup_baselines(history or [], target.name)
    if len(per_setup) > 1:  # the header shows one; each measured row's T used its own
        notes.append(
            "target-only AUC per setup (each measured row's T is against its own setup's): "
            + ", ".join(f"{s} {a:.3f}" for s, a in per_setup.items())
        )
    return Ranking(
        target=target.name,
        rows=rows,
        predictor=predictor.name,
        measures=tuple(sorted(set(measures))),
        score_unit=scale if on_scale else (unit or "baseline score (higher is better)"),
        notes=tuple(notes),
        target_auc=target_baseline(history or [], target.name, base_setup),
        target_auc_setup=base_setup if base_setup and basis == "T" else None,
    )

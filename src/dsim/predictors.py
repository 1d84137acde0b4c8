"""Predictors as estimators: the meta-dataset they learn from, leave-one-target-out evaluation,
the noise ceiling of a measured matrix, and persistence of a fitted predictor.

* :func:`transfer_table` turns measured results (:class:`dsim.TransferResult`) into one row per
  (setup, target, source): mean transferability T over folds (each fold against the same fold's
  target-only baseline), its spread, the mean AUC.
* :func:`pair_values` gives, per (source, target), every measure value dsim knows without running
  a network: published values (mean over folds) and card-only measures (expert features).
* :func:`evaluate_loto` fits a fresh predictor once per held-out target on everything *except*
  that target's results and measure values, ranks the target's measured sources and scores the
  ranking (Spearman rho, weighted Kendall tau, top-1 hit, regret). The held-out target's results
  never reach ``fit`` and never appear in the ``history`` given to ``rank``.
* :func:`noise_ceiling` estimates how well the measured ranking agrees with itself (independent
  repeats when the results have them, else split halves of the folds).
* :func:`save_fitted` / :func:`load_fitted` keep one fitted predictor under the user data dir
  (``$DSIM_PREDICTOR_DIR`` or ``<user data dir>/predictors``) as JSON named by the hash of its
  content; ``current.json`` says which one ``dsim rank`` uses.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import DsimError
from .interfaces import Candidate, Predictor
from .metrics import transferability
from .records import DatasetCard, MeasureValue, TransferResult, stable_hash

__all__ = [
    "PairRow",
    "transfer_table",
    "pair_values",
    "evaluate_loto",
    "ranking_metrics",
    "noise_ceiling",
    "summarise",
    "predictor_dir",
    "save_fitted",
    "load_fitted",
    "fitted_info",
    "results_fingerprint",
    "fit_default",
    "default_suite",
    "evaluate_suite",
]

STATE_VERSION = 1


# --------------------------------------------------------------------------- meta-dataset


@dataclass(frozen=True)
class PairRow:
    """Measured transfer of one (setup, target, source): mean T (%) over folds and repeats."""

    setup: str
    target: str
    source: str
    t: float
    t_sd: float
    auc: float
    n: int
    base_auc: float


def _fold_key(r: TransferResult) -> Any:
    return r.fold


def transfer_table(
    results: Iterable[TransferResult], *, by_repeat: Callable[[TransferResult], Any] | None = None
) -> list[PairRow]:
    """One :class:`PairRow` per measured (setup, target, source) with a target-only baseline.

    Each fold's AUC is compared with the same fold's baseline AUC(T) (the mean baseline when that
    fold's is missing). ``by_repeat`` optionally keys results into independent repeats (their
    folds are kept apart)."""
    key = by_repeat or (lambda r: 0)
    table: dict[tuple[str, str], dict[str, dict[Any, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        table[(r.setup, r.target)][r.source][(key(r), _fold_key(r))] = float(r.auc)
    rows = []
    for (setup, target), by_source in sorted(table.items()):
        base = by_source.get(target)
        if not base:
            continue
        base_mean = float(np.mean(list(base.values())))
        for source in sorted(by_source):
            if source == target:
                continue
            folds = by_source[source]
            ts = [transferability(a, base.get(k, base_mean)) for k, a in sorted(folds.items(), key=str)]
            rows.append(
                PairRow(
                    setup=setup,
                    target=target,
                    source=source,
                    t=float(np.mean(ts)),
                    t_sd=float(np.std(ts, ddof=1)) if len(ts) > 1 else 0.0,
                    auc=float(np.mean(list(folds.values()))),
                    n=len(ts),
                    base_auc=base_mean,
                )
            )
    return rows


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
    for v in known:
        if (v.source, v.target) in want and v.value is not None and np.isfinite(v.value):
            acc[(v.measure, v.source, v.target)].append(float(v.value))
    out = [MeasureValue(m, s, t, float(np.mean(xs)), None, "known") for (m, s, t), xs in sorted(acc.items())]
    if cards is None:
        return out
    if measures is None:
        from .api import list_measures

        measures = list_measures()
    from .interfaces import Context

    ctx = Context()
    for m in measures.values():
        if getattr(m, "needs", "") != "card":
            continue
        for s, t in pairs:
            if (m.name, s, t) in acc or s not in cards or t not in cards:
                continue
            try:
                if m.applicable(cards[s]) or m.applicable(cards[t]):
                    continue
                value = float(m.pair(cards[s], cards[t], ctx))
            except Exception:
                continue
            out.append(MeasureValue(m.name, s, t, value, None, "computed"))
    return out


# --------------------------------------------------------------------------- evaluation


def ranking_metrics(
    measured: Mapping[str, float],
    predicted_order: Sequence[str],
    scores: Mapping[str, float],
    aucs: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """How well a predicted ranking of sources matches the measured transferability.

    ``measured``: source -> measured T; ``predicted_order``: sources best first (ties broken as
    the predictor broke them); ``scores``: source -> predicted score (higher is better).
    Returns Spearman rho, weighted Kendall tau (top ranks weigh more; scipy's hyperbolic
    weights), top-1 hit (1/0), regret in T points and in AUC (measured value of the true best
    minus that of the predicted best)."""
    from scipy.stats import spearmanr, weightedtau

    names = [s for s in measured if s in scores]
    if len(names) < 2:
        raise DsimError(f"need at least two measured sources to score a ranking, got {len(names)}")
    y = np.array([measured[s] for s in names])
    p = np.array([scores[s] for s in names], dtype=float)
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        rho = 0.0
        tau = 0.0
    else:
        rho = float(spearmanr(p, y).statistic)
        tau = float(weightedtau(y, p).statistic)
    top = next(s for s in predicted_order if s in measured)
    best = max(names, key=lambda s: measured[s])
    out = {
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


@dataclass
class Task:
    """One ranking task of a meta-dataset: the measured sources of one target under one setup."""

    setup: str
    target: str
    rows: list[PairRow] = field(default_factory=list)


def _tasks(results: Sequence[TransferResult], min_sources: int = 3) -> list[Task]:
    tasks: dict[tuple[str, str], Task] = {}
    for row in transfer_table(results):
        tasks.setdefault((row.setup, row.target), Task(row.setup, row.target)).rows.append(row)
    return [t for t in tasks.values() if len(t.rows) >= min_sources]


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
) -> list[dict[str, Any]]:
    """Leave-one-target-out: for each held-out target, fit ``make_predictor()`` on every result and
    measure value whose target is not the held-out one (nor derived from it, see ``family``),
    then rank the held-out target's measured sources (per setup) with an empty history for it.

    Returns one dict per (setup, target) task with the metrics of :func:`ranking_metrics` plus
    ``setup``, ``target``, ``predictor``, ``ranking`` (sources best first) and ``n_train``.
    ``on_fit`` is called with what each fit saw (tests use it to prove nothing leaked)."""
    if family is None:  # the registry's family rule: the held-out target's whole family is held out
        from .registry import get_registry

        family = get_registry().family
    tasks = _tasks(results)
    held = sorted({t.target for t in tasks} if targets is None else set(targets))
    out = []
    for target in held:
        fam = family(target) | {target}
        train_r = [r for r in results if r.target not in fam]
        train_v = [v for v in values if v.target not in fam]
        if on_fit is not None:
            on_fit(target, train_r, train_v)
        pred = make_predictor().fit(train_r, train_v, cards, measure_kinds)
        tvals: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for v in values:
            if v.target == target:
                tvals[v.source][v.measure].append(float(v.value))
        tcard = cards.get(target) or DatasetCard(name=target)
        for task in (t for t in tasks if t.target == target):
            cands = []
            for row in task.rows:
                card = cards.get(row.source) or DatasetCard(name=row.source)
                vals = {m: float(np.mean(xs)) for m, xs in tvals.get(row.source, {}).items()}
                cands.append(Candidate(source=card, values=vals, origins={m: "known" for m in vals}))
            ranking = pred.rank(tcard, cands, train_r, measure_kinds)
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
            )
            out.append(m)
    return out


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean of each metric over tasks (Spearman rho, weighted tau, top-1 rate, regret)."""
    keys = ["spearman", "weighted_tau", "top1", "regret_t", "regret_auc"]
    out = {}
    for k in keys:
        xs = [
            r[k]
            for r in rows
            if k in r and r[k] is not None and not (isinstance(r[k], float) and math.isnan(r[k]))
        ]
        if xs:
            out[k] = float(np.mean(xs))
    out["n_tasks"] = float(len(rows))
    return out


def noise_ceiling(
    results: Sequence[TransferResult], *, repeat_of: Callable[[TransferResult], Any] | None = None
) -> list[dict[str, Any]]:
    """Agreement of the measured ranking with itself, per (setup, target).

    With ``repeat_of`` (and at least two repeats) the ranking of repeat A is compared with that of
    repeat B (Spearman rho, mean over pairs of repeats). Otherwise the folds are split into two
    halves in every way (5 folds: 2 vs 3, ten splits) and the rankings of the halves compared.
    ``split_half`` is that mean rho; ``reliability`` steps it up to the whole set (Spearman-Brown:
    2r/(1+r) from fold halves to all folds; k r/(1+(k-1)r) from one repeat to the mean of all k
    repeats, ``n_units`` = k); ``ceiling`` = sqrt(reliability) is the rho that a predictor of the
    true ranking would reach against the measured one, in expectation: a predictor cannot be judged
    above it."""
    from scipy.stats import spearmanr

    groups: dict[tuple[str, str], list[TransferResult]] = defaultdict(list)
    for r in results:
        groups[(r.setup, r.target)].append(r)
    out = []
    for (setup, target), rs in sorted(groups.items()):
        if repeat_of is not None and len({repeat_of(r) for r in rs}) >= 2:
            reps = sorted({repeat_of(r) for r in rs}, key=str)
            splits = [({a}, {b}) for a, b in itertools.combinations(reps, 2)]
            keyf, how, k_units = repeat_of, "repeats", len(reps)
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


# --------------------------------------------------------------------------- persistence


def predictor_dir() -> Path:
    env = os.environ.get("DSIM_PREDICTOR_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("dsim")) / "predictors"


def results_fingerprint(results: Iterable[TransferResult]) -> str:
    return stable_hash(
        sorted((r.setup, r.source, r.target, r.fold, round(r.auc, 10), r.origin) for r in results)
    )


def _params(pred: Predictor) -> dict[str, Any]:
    sig = inspect.signature(type(pred).__init__)
    return {k: getattr(pred, k) for k in sig.parameters if k != "self" and hasattr(pred, k)}


def save_fitted(pred: Predictor, results: Sequence[TransferResult], *, make_current: bool = True) -> Path:
    """Write a fitted predictor as JSON under :func:`predictor_dir`, named by the hash of its
    content, and (by default) make it the one ``dsim rank`` uses. Returns the file path."""
    state = pred.get_state() if hasattr(pred, "get_state") else {}
    doc = {
        "version": STATE_VERSION,
        "predictor": pred.name,
        "params": _params(pred),
        "state": state,
        "trained_on": {
            "results": results_fingerprint(results),
            "n_results": len(results),
            "targets": sorted({r.target for r in results}),
            "setups": sorted({r.setup for r in results}),
        },
    }
    text = json.dumps(doc, sort_keys=True, indent=1)
    key = stable_hash(json.loads(text))[:16]
    d = predictor_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{pred.name}-{key}.json"
    _atomic_write(path, text)
    if make_current:
        _atomic_write(d / "current.json", json.dumps({"file": path.name}))
    return path


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def fitted_info(path: str | Path | None = None) -> dict[str, Any] | None:
    """The saved document of the current (or given) fitted predictor, or None when there is none."""
    if path is None:
        cur = predictor_dir() / "current.json"
        if not cur.exists():
            return None
        try:
            path = predictor_dir() / json.loads(cur.read_text())["file"]
        except (ValueError, KeyError, OSError):
            raise DsimError(f"{cur}: unreadable; delete it or run `dsim predictor fit` again") from None
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DsimError(f"{path}: fitted predictor file is missing; run `dsim predictor fit` again") from None
    except (ValueError, OSError) as exc:
        raise DsimError(f"{path}: not a fitted predictor ({exc})") from None
    if doc.get("version") != STATE_VERSION:
        raise DsimError(f"{path}: saved by another dsim version; run `dsim predictor fit` again")
    doc["path"] = str(path)
    return doc


def load_fitted(path: str | Path | None = None) -> Predictor | None:
    """The fitted predictor saved by :func:`save_fitted` (the current one by default), or None."""
    doc = fitted_info(path)
    if doc is None:
        return None
    from .api import get_predictor

    pred = get_predictor(doc["predictor"], **doc.get("params", {}))
    if hasattr(pred, "set_state"):
        pred.set_state(doc.get("state", {}))
    pred.fitted_from = doc  # type: ignore[attr-defined]
    return pred


def fit_default(
    name: str = "meta-ranker",
    params: Mapping[str, Any] | None = None,
    results: Sequence[TransferResult] | None = None,
):
    """Fit predictor ``name`` on every known result (published + ``dsim validate``), with the
    measure values known or computable from cards for those pairs. Returns (predictor, results,
    values)."""
    from .api import get_predictor, known_measure_values, known_results, list_measures
    from .registry import get_registry

    results = list(known_results() if results is None else results)
    if not results:
        raise DsimError(
            "no measured results to fit on (the published plugin is disabled and no `dsim validate` runs exist)"
        )
    reg = get_registry()
    cards = {c.name: c for c in reg}
    measures = list_measures()
    pairs = {(r.source, r.target) for r in results if r.source != r.target}
    values = pair_values(pairs, known_measure_values(), cards, measures)
    kinds = {m.name: m.kind for m in measures.values()}
    pred = get_predictor(name, **dict(params or {}))
    pred.fit(results, values, cards, kinds)
    return pred, results, values


# --------------------------------------------------------------------------- suites


def default_suite(measures: Iterable[str] = ("expert", "task2vec")) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, predictor name, params) of every model and baseline the evaluation reports."""
    suite = [
        ("meta-ranker", "meta-ranker", {}),
        ("meta-ranker (learned only)", "meta-ranker", {"select": False}),
        ("meta-ranker (uniform pairs)", "meta-ranker", {"pair_weight": "uniform"}),
        ("rank-aggregation", "rank-aggregation", {}),
        ("always-imagenet", "always-imagenet", {}),
        ("largest-source", "largest-source", {}),
        ("most-classes", "most-classes", {}),
    ]
    suite += [(f"{m} alone", "single-measure", {"measure": m}) for m in measures]
    return suite


def evaluate_suite(
    suite: Sequence[tuple[str, str, Mapping[str, Any]]],
    results: Sequence[TransferResult],
    values: Sequence[MeasureValue],
    cards: Mapping[str, DatasetCard],
    measure_kinds: Mapping[str, str],
    **kwargs: Any,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`evaluate_loto` for each (label, name, params) of ``suite``: label -> task rows."""
    from .api import get_predictor

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

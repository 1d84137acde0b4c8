"""``prior-evidence``: one ranking model, a prior from every source's track record plus the
target-specific evidence, each part weighed by how well it did on held-out targets.

For one target, every candidate source ``s`` gets, in units of a within-target z-score of
measured transferability (0 = an average source for that target):

* **prior** = the source's track record, ``sum(z) / (n + k)`` over the ``n`` other targets it
  was measured on (each target's measured T z-scored among its sources), shrunk towards 0 the
  empirical-Bayes way: ``k = sigma_w^2 / tau^2`` (spread of one source across targets over the
  spread of the sources' true means), estimated from the history in closed form; plus at most
  three card facts (log10 images, log10 classes, log10 parameters of a checkpoint), each
  z-scored among the target's candidates, with ridge weights.
* **evidence** = the target-specific signals present for this target (image measures such as
  OTDD, Task2Vec or the expert distance; model scores such as LogME, kNN, LP, SFDA), each
  z-scored among the target's candidates (oriented so higher = better) with ONE ridge weight
  per measure, fitted on what the prior leaves and multiplied by the evidence's reliability: the
  share of its in-sample gain that survives leave-one-target-out (0 to 1).

Facts and measures are added greedily, each judged by leave-one-target-out over the training
targets (the weights used on a target come from the sums of the others), and kept only while the
held-out gain in weighted tau clears :data:`MARGIN` standard errors over the targets: with a
dozen targets a smaller gain is a selection artefact that loses on the next target. A measure
without such a gain gets weight 0; :meth:`PriorEvidence.unused_measures` tells the ranking not to
compute it (one line per kind says why). Where no candidate has a track record (a user's own
checkpoints), the prior cannot tell them apart, and each measure instead ranks with its held-out
weighted tau *alone* on the training targets as its weight (those measures are still computed).
The user's own validated runs enter as *measured* rows (and put the others on their scale).

Every step is closed form on per-target sums: a fit on the shipped evidence takes a fraction of
a second, so a new result in the store is a refit the ranking barely notices. Each row's
uncertainty is the posterior sd of its prior (``sigma_w^2 / (n + k)``) plus the held-out
residual variance of the model; rows within 1.28 sd of the difference from the first
(one-sided 90 %) are marked as not told apart from it (``tied_with_first``).
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict

import dsim

np = dsim.lazy_module("numpy")  # imported on first use: `dsim --help` and listings need no numpy

#: card facts the prior may use (each kept only with a held-out gain)
FACTS = ("log10_size", "log10_classes", "log10_parameters")
#: ridge strength of the fact and evidence weights (in units of within-target z-scored rows)
RIDGE = 1.0
#: a fact or measure is kept when its held-out gain in weighted tau clears MARGIN standard errors
#: over the training targets (one-sided 99 %): a gain within the noise is a selection artefact
MARGIN = 2.326
#: one-sided normal quantile under which a row cannot be told apart from the first (90 %)
TIE_Z = 1.2816
#: what a measure kind is called in a note, by what it needs
KIND_LABEL = {
    "images": "image measures",
    "card": "card measures",
    "source-model": "model scores",
    "checkpoint": "checkpoint measures",
}


def _log10(x) -> float:
    try:
        return math.log10(float(x)) if x is not None and float(x) > 0 else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _same(a, b) -> float:
    if a in (None, "") or b in (None, ""):
        return float("nan")
    return float(str(a).strip().lower() == str(b).strip().lower())


def raw_facts(source: dsim.DatasetCard, target: dsim.DatasetCard) -> dict[str, float]:
    """The card facts of a (source, target) pair (NaN where a card does not say)."""
    net = dict(source.network or {})
    return {
        "log10_size": _log10(source.size),
        "log10_classes": _log10(source.num_classes),
        "log10_parameters": _log10(net.get("parameters")),
        "same_modality": _same(source.modality, target.modality),
        "same_channels": _same(source.channels, target.channels),
    }


def _zscore(vals: dict[str, float], sign: float = 1.0) -> dict[str, float]:
    """Within-target z-scores of the finite values (sign applied first); {} for fewer than two
    distinct values."""
    fin = {k: sign * v for k, v in vals.items() if v is not None and np.isfinite(v)}
    if len(fin) < 2:
        return {}
    x = np.array(list(fin.values()), float)
    sd = float(x.std())
    if sd == 0:
        return {}
    mu = float(x.mean())
    return {k: (v - mu) / sd for k, v in fin.items()}


def features(target, candidates, kinds, measures) -> dict[str, dict[str, float]]:
    """source -> {"fact:<f>" | "ev:<measure>": within-target z-score} (absent: unknown, counts 0)."""
    out: dict[str, dict[str, float]] = {c.source.name: {} for c in candidates}
    facts = {c.source.name: raw_facts(c.source, target) for c in candidates}
    for f in FACTS:
        for s, z in _zscore({s: v[f] for s, v in facts.items()}).items():
            out[s][f"fact:{f}"] = z
    for m in measures:
        sign = -1.0 if kinds.get(m, "distance") == "distance" else 1.0
        vals = {c.source.name: c.values.get(m) for c in candidates if m in c.values}
        for s, z in _zscore(vals, sign).items():
            out[s][f"ev:{m}"] = z
    return out


def _groups(results, values, cards, kinds):
    """One training group per (setup, target) with three or more measured sources: its sources,
    their z-scored measured T and their features."""
    vals = defaultdict(lambda: defaultdict(list))
    for v in values:
        if v.value is not None and np.isfinite(v.value):
            vals[(v.source, v.target)][v.measure].append(float(v.value))
    measures = sorted({v.measure for v in values})
    by_group = defaultdict(list)  # one target's rows of one setup (its baseline included)
    for r in results:
        by_group[(r.setup, r.target)].append(r)
    groups = []
    for (setup, target), rs in sorted(by_group.items()):
        measured = dsim.measured_transferability(rs, target)
        z = _zscore({s: m[0] for s, m in measured.items()})
        if len(z) < 3:
            continue
        tcard = cards.get(target) or dsim.DatasetCard(name=target)
        sources = sorted(z)
        cands = [
            dsim.Candidate(
                source=cards.get(s) or dsim.DatasetCard(name=s),
                values={m: float(np.mean(x)) for m, x in vals.get((s, target), {}).items()},
            )
            for s in sources
        ]
        feats = features(tcard, cands, kinds, measures)
        groups.append(
            {
                "setup": setup,
                "target": target,
                "sources": sources,
                "z": np.array([z[s] for s in sources]),
                "feats": [feats[s] for s in sources],
            }
        )
    # integer ids of each row's source and (source, target) pair, shared by every subset of groups
    ids: dict[str, int] = {}
    pairs: dict[tuple[str, str], int] = {}
    for g in groups:
        g["s_idx"] = np.array([ids.setdefault(s, len(ids)) for s in g["sources"]], int)
        g["p_idx"] = np.array([pairs.setdefault((s, g["target"]), len(pairs)) for s in g["sources"]], int)
    for g in groups:
        g["n_ids"] = (len(ids), len(pairs))
    return groups


def _shrinkage(table: dict[str, list[tuple[str, float]]]) -> tuple[float, float]:
    """Empirical-Bayes shrinkage of the track record: (k, sigma_w^2). sigma_w^2 is the pooled
    variance of one source's z across targets, tau^2 the variance of the sources' means less
    their sampling noise; k = sigma_w^2 / tau^2 (a source measured n times keeps n / (n + k) of
    its mean). Falls back to k = 1 where the history cannot say."""
    ss, dof, means, ns = 0.0, 0, [], []
    for zs in table.values():
        x = np.array([z for _, z in zs], float)
        if len(x) >= 2:
            ss += float(((x - x.mean()) ** 2).sum())
            dof += len(x) - 1
        if len(x):
            means.append(float(x.mean()))
            ns.append(len(x))
    sigma2 = ss / dof if dof else 1.0
    if len(means) < 3:
        return 1.0, sigma2
    tau2 = float(np.var(means, ddof=1)) - sigma2 * float(np.mean(1.0 / np.array(ns)))
    if tau2 <= 1e-6:
        return 25.0, sigma2  # no measurable difference between sources: shrink hard
    return float(min(25.0, max(0.1, sigma2 / tau2))), sigma2


def _prior(table, source, exclude, k) -> tuple[float, int]:
    zs = [z for t, z in table.get(source, ()) if t not in exclude]
    return (float(sum(zs) / (len(zs) + k)) if zs else 0.0), len(zs)


_PAIRS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _pairs(n: int):
    """The index pairs (i < j) of ``n`` rows (kept per ``n``: a fit asks thousands of times)."""
    if n not in _PAIRS:
        _PAIRS[n] = np.triu_indices(n, 1)
    return _PAIRS[n]


def _loo_priors(groups, k) -> list[np.ndarray]:
    """Per group, each source's :func:`_prior` leaving the group's own target out, in closed form
    (a source's sum less its sum on that target; ``np.add.at`` sums in the groups' order, as the
    track record does): a fold's fit computes it for every row."""
    if not groups:
        return []
    n_src, n_pair = groups[0]["n_ids"]
    s_idx = np.concatenate([g["s_idx"] for g in groups])
    p_idx = np.concatenate([g["p_idx"] for g in groups])
    z = np.concatenate([g["z"] for g in groups])
    z_all, z_own = np.zeros(n_src), np.zeros(n_pair)
    np.add.at(z_all, s_idx, z)
    np.add.at(z_own, p_idx, z)
    n_all = np.bincount(s_idx, minlength=n_src)
    n_own = np.bincount(p_idx, minlength=n_pair)
    out = []
    for g in groups:
        n = n_all[g["s_idx"]] - n_own[g["p_idx"]]
        with np.errstate(invalid="ignore", divide="ignore"):
            p = (z_all[g["s_idx"]] - z_own[g["p_idx"]]) / (n + k)
        out.append(np.where(n > 0, p, 0.0))
    return out


def _wtau_one(x: np.ndarray, y: np.ndarray) -> float:
    """Weighted tau of ``y`` against ``x`` with ``x``'s order (ties broken by ``y``) giving the
    importance: hyperbolic weigher 1/(r + 1), additive pair weights (Vigna 2015)."""
    n = len(x)
    rank = np.empty(n, int)
    rank[np.lexsort((y, x))[::-1]] = np.arange(n)
    w = 1.0 / (rank + 1)
    i, j = _pairs(n)
    pw = w[i] + w[j]
    dx = np.sign(x[i] - x[j])
    dy = np.sign(y[i] - y[j])
    tot, u, v = pw.sum(), pw[dx == 0].sum(), pw[dy == 0].sum()
    if tot == u or tot == v:
        return float("nan")
    return float((pw * dx * dy).sum() / np.sqrt((tot - u) * (tot - v)))


def _wtau_rows(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """:func:`_wtau_one` of each row of ``X`` against the same row of ``Y`` (all of one length)."""
    g, n = X.shape
    rank = np.empty((g, n), int)
    order = np.lexsort((Y, X), axis=-1)[:, ::-1]
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n), (g, n)), axis=1)
    w = 1.0 / (rank + 1)
    i, j = _pairs(n)
    pw = w[:, i] + w[:, j]
    dx = np.sign(X[:, i] - X[:, j])
    dy = np.sign(Y[:, i] - Y[:, j])
    tot = pw.sum(1)
    u = np.where(dx == 0, pw, 0.0).sum(1)
    v = np.where(dy == 0, pw, 0.0).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (pw * dx * dy).sum(1) / np.sqrt((tot - u) * (tot - v))
    return np.where((tot == u) | (tot == v), np.nan, t)


def _wtau_many(scores, zs) -> np.ndarray:
    """:func:`_wtau` of each (score, z) pair, the groups of one length in one array operation."""
    out = np.zeros(len(zs))
    by_n: dict[int, list[int]] = defaultdict(list)
    for k, (sc, z) in enumerate(zip(scores, zs)):
        if len(z) >= 2 and np.ptp(sc) != 0:
            by_n[len(z)].append(k)
    for idx in by_n.values():
        X = np.array([scores[k] for k in idx], float)
        Y = np.array([zs[k] for k in idx], float)
        t = (_wtau_rows(X, Y) + _wtau_rows(Y, X)) / 2
        out[idx] = np.where(np.isnan(t), 0.0, t)
    return out


def _wtau(score, z) -> float:
    """``scipy.stats.weightedtau(score, z).statistic`` (the evaluation's metric; equal to it to
    1e-15, tests check), in numpy: a fit computes it thousands of times and must not import
    scipy.stats; 0 for a constant score."""
    score, z = np.asarray(score, float), np.asarray(z, float)
    if len(z) < 2 or np.ptp(score) == 0:
        return 0.0
    t = (_wtau_one(score, z) + _wtau_one(z, score)) / 2
    return 0.0 if np.isnan(t) else t


class _Stage:
    """Greedy forward selection of columns on a residual, every weight ridge-fitted and judged by
    leave-one-target-out: the weights used on a target come from the sums of the other targets,
    and a column is added while it raises the mean held-out weighted tau of ``base + fit`` (the
    metric the rankings are judged by)."""

    def __init__(self, groups, resid, base, ridge=RIDGE, base_taus=None):
        self.groups = groups
        self.resid = resid  # per group: residual array (what the columns should explain)
        self.base = base  # per group: the held-out prediction so far
        self.ridge = ridge
        # per group: weighted tau of the base alone (given when another stage has the same base)
        self.base_taus = self.taus([np.zeros_like(r) for r in resid]) if base_taus is None else base_taus
        targets = sorted({g["target"] for g in groups})
        self.of = [targets.index(g["target"]) for g in groups]
        self.n_targets = len(targets)

    def column(self, g, name):
        # kept on the group: the folds of a leave-one-target-out share their groups
        cols = self.groups[g].setdefault("columns", {})
        if name not in cols:
            cols[name] = np.array([f.get(name, 0.0) for f in self.groups[g]["feats"]])
        return cols[name]

    def taus(self, pred) -> np.ndarray:
        return _wtau_many([b + p for b, p in zip(self.base, pred)], [g["z"] for g in self.groups])

    def tau(self, pred) -> float:
        return float(self.taus(pred).mean())

    def select(self, names, max_keep=None):
        """(columns kept in order, their report: joint weights on all targets, held-out and
        in-sample weighted tau, and the held-out prediction per group)."""
        n = len(self.groups)
        cols = {c: [self.column(g, c) for g in range(n)] for c in names}
        remaining = [c for c in names if any(np.any(x != 0) for x in cols[c])]
        kept: list[str] = []
        best_res = {"weights": {}, "pred_loo": [np.zeros_like(r) for r in self.resid]}
        best_res["taus_loo"] = self.base_taus
        best_res["tau_loo"] = best_res["tau_in"] = float(best_res["taus_loo"].mean())
        start = best_res["tau_loo"]
        while remaining and (max_keep is None or len(kept) < max_keep):
            tries = {c: self.fit(kept + [c], cols) for c in remaining}
            c = max(tries, key=lambda c: tries[c]["tau_loo"])
            # kept only when it measurably helps: the held-out gain clears its standard error
            # over the targets (a gain within the noise of 12 targets is a selection artefact)
            d = tries[c]["taus_loo"] - best_res["taus_loo"]
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("inf")
            if d.mean() <= max(MARGIN * se, 1e-9):
                break
            kept.append(c)
            remaining.remove(c)
            best_res = tries[c]
        best_res["tau_start"] = start
        if kept:  # the in-sample tau of the kept columns (the reliability's denominator)
            best_res["tau_in"] = self.tau(best_res["pred_in"])
        return kept, best_res

    def fit(self, use, cols):
        """Ridge of the residual on ``use`` (joint), on every target and leaving each out."""
        n = len(self.groups)
        X = [np.column_stack([cols[c][g] for c in use]) for g in range(n)]
        XtX = np.zeros((self.n_targets, len(use), len(use)))
        Xty = np.zeros((self.n_targets, len(use)))
        for g in range(n):
            XtX[self.of[g]] += X[g].T @ X[g]
            Xty[self.of[g]] += X[g].T @ self.resid[g]
        A, b = XtX.sum(0), Xty.sum(0)
        lam = self.ridge * np.eye(len(use))
        w = np.linalg.solve(A + lam, b)
        w_out = [np.linalg.solve(A - XtX[t] + lam, b - Xty[t]) for t in range(self.n_targets)]
        pred_loo = [X[g] @ w_out[self.of[g]] for g in range(n)]
        taus_loo = self.taus(pred_loo)
        return {
            "weights": dict(zip(use, w.tolist())),
            "pred_loo": pred_loo,
            "pred_in": [X[g] @ w for g in range(n)],
            "taus_loo": taus_loo,
            "tau_loo": float(taus_loo.mean()),
        }


class PriorEvidence(dsim.Predictor):
    """A prior (shrunk track record + a few card facts) plus target-specific evidence, each part
    weighed by its held-out reliability; closed form, leave-one-target-out inside."""

    name = "prior-evidence"
    description = (
        "track record shrunk by history + card facts (prior) plus measures/model scores weighed by "
        "held-out reliability (evidence); per-row prior, evidence and uncertainty"
    )

    def __init__(
        self,
        ridge: float = RIDGE,
        max_facts: int = 3,
        shrink="auto",
        evidence: bool = True,
        use_measured: bool = True,
    ):
        self.ridge = ridge
        self.shrink = shrink
        self.evidence = evidence
        self.max_facts = max_facts
        self.use_measured = use_measured
        self.state_: dict | None = None

    # ---- fitting
    def fit(self, results, values, cards, measure_kinds):
        kinds = dict(measure_kinds)
        return self._fit_groups(_groups(results, values, cards, kinds), kinds)

    def fold_fitter(self, results, values, cards, measure_kinds):
        """Each target's rows (its z-scored T and features) depend on that target's results and
        values alone: built once, and each fold fits on the targets outside its held-out set,
        exactly as :meth:`fit` on the remaining results would."""
        kinds = dict(measure_kinds)
        groups = _groups(results, values, cards, kinds)

        def fit_without(held_out):
            clone = copy.copy(self)
            clone.state_ = None
            return clone._fit_groups([g for g in groups if g["target"] not in held_out], kinds)

        return fit_without

    def _fit_groups(self, groups, kinds):
        table: dict[str, list[list]] = defaultdict(list)  # source -> [[target, z], ...] (the state's form)
        for g in groups:
            t = g["target"]
            for s, z in zip(g["sources"], g["z"].tolist()):
                table[s].append([t, z])
        k, sigma2 = _shrinkage(table)
        if self.shrink != "auto":
            k = float(self.shrink)
        # the prior of a training row leaves its own target out (as it will be for a new target)
        priors = _loo_priors(groups, k)
        resid = [g["z"] - p for g, p in zip(groups, priors)]
        loo_base = priors
        stage = _Stage(groups, resid, loo_base, self.ridge)
        track_taus = stage.base_taus
        facts, frep = stage.select([f"fact:{f}" for f in FACTS], max_keep=self.max_facts)
        fact_w = frep["weights"]
        fpred = frep["pred_loo"]
        # the evidence explains what the prior leaves; judged on top of the held-out prior
        fit_f = [np.zeros(len(g["z"])) for g in groups]
        for g in range(len(groups)):
            for f, w in fact_w.items():
                fit_f[g] = fit_f[g] + w * stage.column(g, f)
        resid2 = [r - p for r, p in zip(resid, fit_f)]
        base2 = [p + f for p, f in zip(priors, fpred)]
        ev_stage = _Stage(groups, resid2, base2, self.ridge, base_taus=None if facts else track_taus)
        ev_names = sorted({k for g in groups for f in g["feats"] for k in f if k.startswith("ev:")})
        evs, erep = ev_stage.select(ev_names if self.evidence else [])
        ev_w = erep["weights"]
        epred = erep["pred_loo"]
        # reliability: the share of the evidence's in-sample gain that survives held out
        gain_in = erep["tau_in"] - erep["tau_start"]
        gain_loo = erep["tau_loo"] - erep["tau_start"]
        reliability = float(np.clip(gain_loo / gain_in, 0.0, 1.0)) if evs and gain_in > 0 else 0.0
        # held-out weighted-tau gain of each measure alone over the prior (what a note says)
        gains = {}
        tau0 = ev_stage.base_taus
        for m in ev_names:
            col = {m: [ev_stage.column(g, m) for g in range(len(groups))]}
            have = [g for g in range(len(groups)) if np.any(col[m][g] != 0)]
            res = ev_stage.fit([m], col)
            t0 = [tau0[g] for g in have]
            t1 = [_wtau(base2[g] + res["pred_loo"][g], groups[g]["z"]) for g in have]
            gains[m[3:]] = {
                "tau_gain": float(np.mean(t1) - np.mean(t0)) if have else 0.0,
                "n_targets": len({groups[g]["target"] for g in have}),
                # the measure alone (no weight to fit: its sign is its kind): what it is worth
                # where no candidate has a track record
                "tau_alone": float(np.mean([_wtau(col[m][g], groups[g]["z"]) for g in have]))
                if have
                else 0.0,
            }
        # held-out residual variance of the whole model, per row (z units)
        final_loo = [r - fp - ep for r, fp, ep in zip(resid, fpred, epred)]
        n_rows = sum(len(r) for r in resid)
        sigma2_res = float(sum((r**2).sum() for r in final_loo) / max(1, n_rows))
        taus = {
            "track": float(np.mean(track_taus)) if groups else 0.0,
            "prior": frep["tau_loo"],
            "model": erep["tau_loo"],
        }
        self.state_ = {
            "track": dict(sorted(table.items())),
            "k": k,
            "sigma2_w": sigma2,
            "sigma2_res": sigma2_res,
            "facts": {f[5:]: float(w) for f, w in fact_w.items()},
            "evidence": {m[3:]: float(w) * reliability for m, w in ev_w.items()},
            "evidence_raw": {m[3:]: float(w) for m, w in ev_w.items()},
            "reliability": reliability,
            "gains": gains,
            "kinds": {m[3:]: kinds.get(m[3:], "distance") for m in ev_names},
            "loo_tau": taus,
            "n_targets": len({g["target"] for g in groups}),
            "n_groups": len(groups),
        }
        return self

    def get_state(self):
        return dict(self.state_ or {})

    def set_state(self, state):
        self.state_ = dict(state)
        self._table = None
        return self

    def _track_table(self):
        """The state's track record as source -> [(target, z)] (built once per state)."""
        st = self._state()
        if getattr(self, "_table", None) is None or self._table[0] is not st:
            self._table = (st, {s: [tuple(x) for x in v] for s, v in st["track"].items()})
        return self._table[1]

    def _state(self):
        if self.state_ is None:
            raise dsim.DsimError(
                "prior-evidence is not fitted: it learns from measured results (fit() first)"
            )
        return self.state_

    def summary(self):
        st = self._state()
        ev = ", ".join(f"{m} {w:+.2f}" for m, w in st["evidence"].items()) or "none"
        fa = ", ".join(f"{f} {w:+.2f}" for f, w in st["facts"].items()) or "none"
        return [
            f"prior: track record of {len(st['track'])} sources shrunk by k = {st['k']:.2f} "
            f"(n / (n + k)); card facts: {fa}",
            f"evidence (weight x reliability {st['reliability']:.2f}): {ev}",
            f"held-out weighted tau on the training targets: track record {st['loo_tau']['track']:.2f}, "
            f"prior {st['loo_tau']['prior']:.2f}, prior + evidence {st['loo_tau']['model']:.2f}",
        ]

    # ---- what to compute
    def unused_measures(self, measures):
        """Measures given no weight, one reason per kind (image measures, model scores, ...): the
        ranking does not compute them and says so in one line per kind."""
        st = self._state()
        by_kind: dict[str, list[str]] = defaultdict(list)
        for name, m in measures.items():
            if name not in st["evidence"]:
                by_kind[KIND_LABEL.get(getattr(m, "needs", ""), "measures")].append(name)
        out = {}
        for label, names in list(by_kind.items()):
            # a measure that ranks on its own (tau alone > 0) stays: it ranks candidates
            # without a track record (a user's own checkpoints)
            names = [n for n in names if st["gains"].get(n, {}).get("tau_alone", 0.0) <= 0]
            if not names:
                continue
            seen = [st["gains"][n] for n in names if n in st["gains"]]
            if seen:
                best = max(seen, key=lambda g: g["tau_gain"])
                why = (
                    f"{label} add nothing measurable on held-out targets (weighted tau "
                    f"{best['tau_gain']:+.2f} at best, over {best['n_targets']} target(s))"
                )
            else:
                why = (
                    f"{label} were never measured beside the fine-tuning results this predictor learned from"
                )
            reason = f"not computed: {why}; --measures {','.join(names)} to compute them anyway"
            out.update({n: reason for n in names})
        return out

    # ---- ranking
    def evidence_weights(self, target, candidates) -> dict[str, float]:
        """measure -> weight for this target. Where some candidate has a track record: the fitted
        weights (each times the evidence's held-out reliability; what the evidence adds to the
        prior). Where none has (a user's own checkpoints): each measure the candidates carry
        weighted by its held-out weighted tau alone on the training targets (0 when it ranked
        them no better than chance); a measure never judged (asked for with --measures) gets
        the mean of the others' positive weights, or 0.25."""
        st = self._state()
        table = st["track"]
        if any(
            c.source.name in table and any(t != target.name for t, _ in table[c.source.name])
            for c in candidates
        ):
            return dict(st["evidence"])
        present = sorted({m for c in candidates for m in c.values})
        known = {m: max(0.0, st["gains"][m].get("tau_alone", 0.0)) for m in present if m in st["gains"]}
        pos = [w for w in known.values() if w > 0]
        default = float(np.mean(pos)) if pos else 0.25
        out = {m: known.get(m, default) for m in present}
        return {m: w for m, w in out.items() if w > 0}

    def explain(self, target, candidates, measure_kinds=None):
        """source -> (prior, evidence, {prior part: {value, weight, contribution}}, {evidence
        part: ...}, uncertainty), in within-target z units."""
        st = self._state()
        weights = self.evidence_weights(target, candidates)
        feats = features(target, candidates, {**st["kinds"], **dict(measure_kinds or {})}, sorted(weights))
        table = self._track_table()
        out = {}
        for c in candidates:
            s = c.source.name
            f = feats[s]
            track, n = _prior(table, s, {target.name}, st["k"])
            parts = {"track_record": {"value": track, "weight": 1.0, "contribution": track, "n": float(n)}}
            prior = track
            for fact, w in st["facts"].items():
                x = f.get(f"fact:{fact}", 0.0)
                parts[fact] = {"value": x, "weight": w, "contribution": w * x}
                prior += w * x
            ev_parts, ev = {}, 0.0
            for m, w in weights.items():
                if f"ev:{m}" in f:
                    x = f[f"ev:{m}"]
                    ev_parts[m] = {"value": x, "weight": w, "contribution": w * x}
                    ev += w * x
            unc = math.sqrt(st["sigma2_res"] + st["sigma2_w"] / (n + st["k"]))
            out[s] = (prior, ev, parts, ev_parts, unc)
        return out

    def rank(self, target, candidates, history, measure_kinds):
        st = self._state()
        exp = self.explain(target, candidates, measure_kinds)
        history = history if self.use_measured else []
        measured = dsim.measured_transferability(history, target.name) if history else {}
        raw = {s: p + e for s, (p, e, *_rest) in exp.items()}
        # put the model's z units on the measured scale by a line through the measured sources
        # (the line assemble_ranking would draw), so each row keeps its own uncertainty
        slope, intercept = 1.0, 0.0
        xs = [raw[s] for s in measured if s in raw]
        ys = [measured[s][0] for s in measured if s in raw]
        calibrated = len(xs) >= 2
        if calibrated and np.ptp(xs) > 0:
            slope, intercept = (float(v) for v in np.polyfit(xs, ys, 1))
            if slope <= 0:  # measured sources disagree with the model: keep the spread of T
                slope = float(np.std(ys) or 1.0)
                intercept = float(np.mean(ys))
        elif calibrated:  # the model gives the measured sources one score (e.g. none has a track
            # record): one z of the model is taken as the spread of their T, their mean T its level
            slope = float(np.std(ys) or 1.0)
            intercept = float(np.mean(ys)) - slope * float(np.mean(xs))
        scores = {s: intercept + slope * v for s, v in raw.items()}
        unc = {s: abs(slope) * e[4] for s, e in exp.items()}
        contrib = {}
        for s, (_p, _e, parts, ev_parts, _u) in exp.items():
            contrib[s] = {
                **{f"prior:{k}": {kk: float(vv) for kk, vv in v.items()} for k, v in parts.items()},
                **{f"evidence:{k}": {kk: float(vv) for kk, vv in v.items()} for k, v in ev_parts.items()},
            }
        notes = []
        weights = self.evidence_weights(target, candidates)
        used = sorted(weights)
        if used and weights == st["evidence"]:
            notes.append(
                "prior-evidence: evidence "
                + ", ".join(f"{m} (weight {weights[m]:+.2f})" for m in used)
                + f", reliability {st['reliability']:.2f} on held-out targets"
            )
        elif used:
            notes.append(
                "prior-evidence: no candidate has a track record, so the evidence ranks alone: "
                + ", ".join(
                    f"{m} (weight {weights[m]:.2f}"
                    + (
                        ", its held-out weighted tau alone)"
                        if m in st["gains"]
                        else ", never judged held-out)"
                    )
                    for m in used
                )
            )
        ranking = dsim.assemble_ranking(
            self,
            target,
            candidates,
            history,
            scores,
            uncertainty=unc,
            contributions=contrib,
            calibrated=calibrated,
            measures=[m for m in used if any(m in c.values for c in candidates)],
            notes=notes,
            unit=None if calibrated else "prior + evidence (within-target z, higher is better)",
        )
        return self._explained(ranking, exp, slope, intercept)

    @staticmethod
    def _explained(ranking, exp, slope, intercept):
        import dataclasses

        rows = []
        first = ranking.rows[0] if ranking.rows else None
        for r in ranking.rows:
            p, e, _parts, ev_parts, _u = exp.get(r.source, (None, None, {}, {}, None))
            extra = {}
            if p is not None:
                extra = {
                    "prior": intercept + slope * p,
                    "evidence": slope * e,
                    "evidence_parts": {
                        m: {
                            "weight": v["weight"],
                            "value": v["value"],
                            "contribution": slope * v["contribution"],
                        }
                        for m, v in ev_parts.items()
                    },
                }
            if first is not None and r is not first:
                u1, u2 = first.uncertainty or 0.0, r.uncertainty or 0.0
                sd = math.sqrt(u1**2 + u2**2)
                extra["tied_with_first"] = bool(sd > 0 and first.score - r.score < TIE_Z * sd)
            rows.append(dataclasses.replace(r, **extra))
        return dataclasses.replace(ranking, rows=tuple(rows))


class FixedBlend(dsim.Predictor):
    """The track record (shrunk ``sum / (n + 1)``) plus the mean within-target z-score of a few
    fixed measures, equal weights, nothing learned beyond the track record: the blend
    prior-evidence must beat to show that weighing the evidence by its reliability pays."""

    name = "fixed-blend"
    description = "baseline: track record + mean z-score of fixed measures (default the study's LP and FU)"

    def __init__(self, measures=("lp", "fu"), use_measured: bool = True):
        self.measures = tuple(measures.split(",")) if isinstance(measures, str) else tuple(measures)
        self.use_measured = use_measured
        self.track_: dict | None = None

    def fit(self, results, values, cards, measure_kinds):
        table: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for g in _groups(results, [], cards, {}):
            for s, z in zip(g["sources"], g["z"]):
                table[s].append((g["target"], float(z)))
        self.track_ = dict(table)
        return self

    def get_state(self):
        return {"track": {s: [list(x) for x in v] for s, v in sorted((self.track_ or {}).items())}}

    def set_state(self, state):
        self.track_ = {s: [tuple(x) for x in v] for s, v in dict(state.get("track", {})).items()}
        return self

    def rank(self, target, candidates, history, measure_kinds):
        if self.track_ is None:
            raise dsim.DsimError("fixed-blend is not fitted: it learns from measured results (fit() first)")
        f = features(target, candidates, measure_kinds, self.measures)
        scores, contrib = {}, {}
        for c in candidates:
            s = c.source.name
            track, _n = _prior(self.track_, s, {target.name}, 1.0)
            ev = [f[s][f"ev:{m}"] for m in self.measures if f"ev:{m}" in f[s]]
            scores[s] = track + (float(np.mean(ev)) if ev else 0.0)
            contrib[s] = {"track_record": {"value": track}}
        return dsim.assemble_ranking(
            self,
            target,
            candidates,
            history if self.use_measured else [],
            scores,
            contributions=contrib,
            measures=[m for m in self.measures if any(m in c.values for c in candidates)],
            unit="track record + mean measure z-score (higher is better)",
        )


@dsim.hookimpl
def dsim_register_predictors():
    return [PriorEvidence, FixedBlend]

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

import math
from collections import defaultdict

import numpy as np

import dsim

IMAGENET_NAMES = {"imagenet", "ilsvrc2012", "in1k", "imagenet-1k"}
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


# --------------------------------------------------------------------------- features


def _log10(x):
    try:
        return math.log10(float(x)) if x is not None and float(x) > 0 else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _flag(cond, known):
    return float(cond) if known else float("nan")


def card_features(source: dsim.DatasetCard, target: dsim.DatasetCard) -> dict[str, float]:
    """Features of a (source, target) pair taken from the two cards (NaN where a fact is missing)."""
    s_med = source.origin in ("medical", "natural")
    t_med = target.origin in ("medical", "natural")
    f = {
        "log10_size": _log10(source.size),
        "log10_classes": _log10(source.num_classes),
        "source_medical": _flag(source.origin == "medical", s_med),
        "source_grey": _flag(source.channels == 1, source.channels is not None),
        "same_origin": _flag(source.origin == target.origin, s_med and t_med),
        "same_channels": _flag(
            source.channels == target.channels, source.channels is not None and target.channels is not None
        ),
        "same_modality": _flag(
            source.modality.strip().lower() == target.modality.strip().lower(),
            bool(source.modality and target.modality),
        ),
    }
    se, te = dict(source.expert or {}), dict(target.expert or {})
    for k in dsim.EXPERT_FEATURES:
        a, b = se.get(k), te.get(k)
        f[f"expert_match:{k}"] = (
            0.5
            if a in (None, "") or b in (None, "")
            else float(str(a).strip().lower() == str(b).strip().lower())
        )
    return f


def measure_features(candidates, measures, kinds) -> dict[str, dict[str, float]]:
    """source -> {"sim:<m>": z-score within the candidates, oriented so higher = more similar}."""
    out = {c.source.name: {} for c in candidates}
    for m in measures:
        vals = {
            c.source.name: float(c.values[m])
            for c in candidates
            if m in c.values and c.values[m] is not None and np.isfinite(c.values[m])
        }
        sign = -1.0 if kinds.get(m, "distance") == "distance" else 1.0
        if vals:
            v = np.array(list(vals.values())) * sign
            mu, sd = float(v.mean()), float(v.std())
            for name, x in vals.items():
                out[name][f"sim:{m}"] = (sign * x - mu) / sd if sd > 0 else 0.0
        for name in out:
            out[name].setdefault(f"sim:{m}", float("nan"))
    return out


#: shrinkage of the track record towards "average source": a source measured on n other targets
#: gets sum(z) / (n + TRACK_SHRINK), so one lucky target does not make a source look reliable
TRACK_SHRINK = 1.0


def track_table(groups) -> dict[str, list[tuple[str, float]]]:
    """source -> [(target, z)]: the source's measured T z-scored among the sources of each
    training group (setup, target) it was measured in."""
    out = defaultdict(list)
    for g in groups:
        T = np.array([t for _, t, _ in g["members"]], float)
        sd = float(T.std())
        if len(T) < 2 or sd == 0:
            continue
        for (s, _t, _), z in zip(g["members"], (T - T.mean()) / sd):
            out[s].append((g["target"], float(z)))
    return dict(out)


def track_record(table, source: str, exclude=()) -> float:
    """How well ``source`` transferred to the targets of ``table`` other than ``exclude``: the
    shrunk mean of its within-target z-scores (NaN when it has no such history). A target's own
    results never enter its own track-record feature, in training or ranking."""
    zs = [z for t, z in table.get(source, ()) if t not in exclude]
    return float(sum(zs) / (len(zs) + TRACK_SHRINK)) if zs else float("nan")


def _groups(results, values, cards):
    """Training groups: one per (setup, target) with at least two measured sources, as lists of
    (source, T, candidate)."""
    vals = defaultdict(lambda: defaultdict(list))
    for v in values:
        if v.value is not None and np.isfinite(v.value):
            vals[(v.source, v.target)][v.measure].append(float(v.value))
    by_setup = defaultdict(list)
    for r in results:
        by_setup[r.setup].append(r)
    groups = []
    for setup, rs in sorted(by_setup.items()):
        for target in sorted({r.target for r in rs}):
            measured = dsim.measured_transferability(rs, target)
            if len(measured) < 2:
                continue
            tcard = cards.get(target) or dsim.DatasetCard(name=target)
            members = []
            for source in sorted(measured):
                card = cards.get(source) or dsim.DatasetCard(name=source)
                v = {m: float(np.mean(xs)) for m, xs in vals.get((source, target), {}).items()}
                members.append((source, measured[source][0], dsim.Candidate(source=card, values=v)))
            groups.append({"setup": setup, "target": target, "tcard": tcard, "members": members})
    return groups


# --------------------------------------------------------------------------- shared ranking


def assemble(
    predictor,
    target,
    candidates,
    history,
    scores,
    *,
    uncertainty=None,
    contributions=None,
    calibrated=False,
    measures=(),
    notes=(),
):
    """Build a :class:`dsim.Ranking` from per-source predicted ``scores``.

    Measured sources (history for this target) come with their measured T. Predicted scores are
    used as they are when ``calibrated`` (already in T %); otherwise they are put on the T scale
    by a least-squares line through the measured sources (two or more, with distinct scores) or
    left unitless."""
    measured = dsim.measured_transferability(history, target.name) if history else {}
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
    on_t = calibrated or slope is not None or (bool(measured) and not scores)
    rows = []
    for c in candidates:
        n = c.source.name
        contrib = {k: dict(v) for k, v in contributions.get(n, {}).items()}
        for m, v in c.values.items():
            contrib.setdefault(m, {})["value"] = float(v)
        if n in measured:
            t, sd, auc, k = measured[n]
            rows.append(
                dsim.RankingRow(n, t, "measured", sd, measured_auc=auc, n_measured=k, contributions=contrib)
            )
        elif n in scores:
            s = float(scores[n])
            unc = uncertainty.get(n)
            if slope is not None:
                s, unc = float(slope * s + intercept), spread
            rows.append(dsim.RankingRow(n, s, "predicted", unc, contributions=contrib))
    if measured and not calibrated and slope is None and any(r.status == "predicted" for r in rows):
        notes.append(
            "too few measured sources to put predicted scores on the T scale; predicted rows are unitless"
        )
        on_t = False
    rows.sort(key=lambda r: (-r.score, r.status != "measured", r.source))
    rows = tuple(dsim.RankingRow(**{**r.to_dict(), "rank": i + 1}) for i, r in enumerate(rows))
    return dsim.Ranking(
        target=target.name,
        rows=rows,
        predictor=predictor.name,
        measures=tuple(sorted(measures)),
        score_unit="transferability %" if on_t else "baseline score (higher is better)",
        notes=tuple(notes),
        target_auc=dsim.target_baseline(history or [], target.name),
    )


# --------------------------------------------------------------------------- meta-ranker


def _rho(scores, T) -> float:
    """Spearman of scores with measured T on one training group; 0 (no skill) for a constant
    score or fewer than three sources."""
    from scipy.stats import spearmanr

    return 0.0 if np.ptp(scores) == 0 or len(T) < 3 else float(spearmanr(scores, T).statistic)


class MetaRanker(dsim.Predictor):
    """Pairwise logistic ranking over measure values and card features, bootstrap ensemble."""

    name = "meta-ranker"
    description = "learned pairwise ranker over measures + source/target card features (bootstrap ensemble)"

    def __init__(
        self,
        C="auto",
        n_members: int = 25,
        pair_weight: str = "delta",
        measures=None,
        seed: int = 0,
        select: bool = True,
        track: bool = True,
    ):
        self.C = C
        self.n_members = n_members
        self.pair_weight = pair_weight
        self.measures = measures
        self.seed = seed
        self.select = select
        self.track = track
        self.state_ = None

    @staticmethod
    def _mix(rules, mats) -> tuple[np.ndarray | None, dict[str, float]]:
        """Rules weighted by their skill on the groups ``mats`` (mean Spearman, negatives at 0),
        and those skills; the weights are None when no rule ranked the groups better than chance."""
        skill = {
            r: float(np.mean([_rho(Z @ w, T) for Z, T in mats])) if mats else 0.0 for r, w in rules.items()
        }
        total = sum(max(0.0, v) for v in skill.values())
        if total <= 0:
            return None, skill
        return sum(max(0.0, skill[r]) / total * rules[r] for r in rules), skill

    @staticmethod
    def _rules(feats, keep) -> dict[str, np.ndarray]:
        """Fixed rules the learned model must beat: each similarity measure alone, the mean of
        the similarity measures (rank aggregation), log source size, log source classes, and the
        source's track record on the other training targets."""
        rules = {}
        n = len(feats)
        sims = [i for i, f in enumerate(feats) if keep[i] and f.startswith("sim:")]
        for i, f in enumerate(feats):
            if keep[i] and (f.startswith("sim:") or f in ("log10_size", "log10_classes", "track_record")):
                w = np.zeros(n)
                w[i] = 1.0
                rules[f"rule:{f}"] = w
        if len(sims) > 1:
            w = np.zeros(n)
            w[sims] = 1.0 / len(sims)
            rules["rule:mean-similarity"] = w
        return rules

    # ---- fitting
    def _design(self, groups, measures, kinds, table=None):
        """Per group: (names, T array, feature dicts); ``track_record`` from ``table`` leaves the
        group's own target out."""
        out = []
        for g in groups:
            cands = [c for _, _, c in g["members"]]
            mf = measure_features(cands, measures, kinds)
            rows = []
            for s, _t, c in g["members"]:
                f = card_features(c.source, g["tcard"])
                f.update(mf[s])
                if table is not None:
                    f["track_record"] = track_record(table, s, {g["target"]})
                rows.append(f)
            out.append(([s for s, _, _ in g["members"]], np.array([t for _, t, _ in g["members"]]), rows))
        return out

    @staticmethod
    def _pairs(Z, T, weight, rng=None):
        idx = np.arange(len(T))
        if rng is not None:
            idx = rng.choice(idx, len(idx), replace=True)
        sd = float(np.std(T)) or 1.0
        D, y, w = [], [], []
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                i, j = idx[a], idx[b]
                if T[i] == T[j]:
                    continue
                d = Z[i] - Z[j]
                lab = T[i] > T[j]
                ww = min(abs(T[i] - T[j]) / sd, 3.0) if weight == "delta" else 1.0
                D += [d, -d]
                y += [lab, not lab]
                w += [ww, ww]
        return D, y, w

    def _fit_w(self, mats, C, rng=None):
        from sklearn.linear_model import LogisticRegression

        D, y, w = [], [], []
        for Z, T in mats:
            d, yy, ww = self._pairs(Z, T, self.pair_weight, rng)
            D += d
            y += yy
            w += ww
        if len(set(y)) < 2:
            return np.zeros(mats[0][0].shape[1])
        m = LogisticRegression(C=C, fit_intercept=False, max_iter=2000)
        m.fit(np.array(D), np.array(y), sample_weight=np.array(w))
        return m.coef_[0]

    def fit(self, results, values, cards, measure_kinds):
        groups = _groups(results, values, cards)
        if not groups:
            raise dsim.DsimError("meta-ranker: no target with two or more measured sources to learn from")
        present = sorted({v.measure for v in values})
        measures = sorted(self.measures) if self.measures else present
        table = track_table(groups) if self.track else None
        design = self._design(groups, measures, measure_kinds, table)
        feats = sorted({k for _, _, rows in design for r in rows for k in r})
        X = np.array([[r.get(k, np.nan) for k in feats] for _, _, rows in design for r in rows], float)
        finite = np.isfinite(X)
        counts = finite.sum(axis=0)
        mean = np.where(counts > 0, np.where(finite, X, 0.0).sum(axis=0) / np.maximum(counts, 1), 0.0)
        Xf = np.where(np.isfinite(X), X, mean)
        scale = Xf.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        # features identical (or mirror images) on the training pairs carry one piece of
        # information; keep one of each such group so L2 does not weigh it several times
        Zall = (Xf - mean) / scale
        keep = np.ones(len(feats), bool)
        for i in range(len(feats)):
            if not keep[i] or Zall[:, i].std() == 0:
                keep[i] = keep[i] and Zall[:, i].std() > 0
                continue
            for j in range(i + 1, len(feats)):
                if (
                    keep[j]
                    and Zall[:, j].std() > 0
                    and abs(np.corrcoef(Zall[:, i], Zall[:, j])[0, 1]) > 0.999
                ):
                    keep[j] = False
        scale = np.where(keep, scale, np.inf)  # dropped features: standardised value 0
        mats, start = [], 0
        for _names, T, rows in design:
            Z = (Xf[start : start + len(rows)] - mean) / scale
            start += len(rows)
            mats.append((Z, T))
        jt = feats.index("track_record") if "track_record" in feats else None
        targets = sorted({g["target"] for g in groups})

        def split(t):
            """Inner leave-one-target-out fold for target ``t``: (the other training groups, with
            track records that leave ``t`` out too, since ``t`` plays the new target; ``t``'s groups)."""
            train, held = [], []
            for (Z, T), (names, _, _), g in zip(mats, design, groups):
                if g["target"] == t:
                    held.append((Z, T))
                    continue
                if jt is not None:
                    Z = Z.copy()
                    raw = np.array([track_record(table, s, {g["target"], t}) for s in names])
                    Z[:, jt] = (np.where(np.isfinite(raw), raw, mean[jt]) - mean[jt]) / scale[jt]
                train.append((Z, T))
            return train, held

        folds = {t: split(t) for t in targets} if len(targets) >= 2 else {}
        # C: inner leave-one-target-out over the training targets
        chosen, inner = self.C, {}
        if self.C == "auto":
            if folds:
                for C in C_GRID:
                    rhos = []
                    for tr, te in folds.values():
                        w = self._fit_w(tr, C)
                        rhos += [_rho(Z @ w, T) for Z, T in te]
                    inner[C] = float(np.mean(rhos))
                best = max(inner.values())
                chosen = min(C for C in C_GRID if inner[C] >= best - 1e-9)  # ties: stronger L2
            else:
                chosen = 0.1
        chosen = float(chosen)
        # model selection: the learned weights, the skill-weighted rule mix and the single best
        # rule are each scored by inner leave-one-target-out; the best generalising one is kept
        # (ties to the simpler). With few or inconsistent targets a fitted linear model can rank a
        # new target worse than chance, and a mix can dilute one strong rule with weak ones.
        rule_scores, model, w_fixed, mix_score, best_rule, best_score = {}, "learned", None, None, None, None
        if self.select and inner and folds:
            rules = self._rules(feats, keep)
            rhos, best_rhos = [], []
            for tr, te in folds.values():
                w_t, skill_t = self._mix(rules, tr)
                top_t = max(skill_t, key=skill_t.get) if skill_t else None
                for Z, T in te:
                    rhos.append(_rho(Z @ w_t if w_t is not None else np.zeros(len(T)), T))
                    best_rhos.append(_rho(Z @ rules[top_t], T) if top_t and skill_t[top_t] > 0 else 0.0)
            mix_score, best_score = float(np.mean(rhos)), float(np.mean(best_rhos))
            w_mix, rule_scores = self._mix(rules, mats)
            best_rule = max(rule_scores, key=rule_scores.get) if rule_scores else None
            # ties go to the simpler model: one rule, then the mix, then the learned weights
            if (
                best_rule
                and rule_scores[best_rule] > 0
                and best_score >= max(mix_score, inner[chosen]) - 1e-9
            ):
                model, w_fixed = "best-rule", rules[best_rule]
            elif w_mix is not None and mix_score >= inner[chosen] - 1e-9:
                model, w_fixed = "skill-weighted", w_mix
        if model == "learned":
            rng = np.random.default_rng(self.seed)
            W = [self._fit_w(mats, chosen)]
            for _ in range(max(0, self.n_members - 1)):
                W.append(self._fit_w(mats, chosen, rng))
            W = np.array(W)
        else:
            W = np.array([w_fixed])
        w = W.mean(axis=0)
        # calibration: T = a * score + b_group
        num = den = 0.0
        for Z, T in mats:
            s = Z @ w
            num += float(((s - s.mean()) * (T - T.mean())).sum())
            den += float(((s - s.mean()) ** 2).sum())
        a = num / den if den > 0 else 0.0
        bs, resid = [], []
        for Z, T in mats:
            s = Z @ w
            b = float((T - a * s).mean())
            bs.append(b)
            resid += list(T - (a * s + b))
        dof = max(1, len(resid) - len(mats) - 1)
        self.state_ = {
            "features": feats,
            "mean": mean.tolist(),
            "scale": [float(x) if np.isfinite(x) else None for x in scale],
            "dropped": [f for f, k in zip(feats, keep) if not k],
            "members": W.tolist(),
            "measures": measures,
            "C": chosen,
            "inner_spearman": {str(k): v for k, v in inner.items()},
            "model": model,
            "rule_spearman": rule_scores,
            "mix_spearman": mix_score,
            "best_rule": best_rule if model == "best-rule" else None,
            "best_rule_spearman": best_score,
            "slope": a,
            "intercept": float(np.mean(bs)),
            "resid_sd": float(np.sqrt(np.sum(np.square(resid)) / dof)),
            "kinds": {m: measure_kinds.get(m, "distance") for m in measures},
            "targets": targets,
            "n_pairs": int(sum(len(T) for _, T in mats)),
            "track": {k: [list(x) for x in v] for k, v in sorted(table.items())}
            if table is not None
            else None,
        }
        return self

    # ---- persistence (dsim.predictors.save_fitted / load_fitted)
    def get_state(self):
        if self.state_ is None:
            raise dsim.DsimError("meta-ranker is not fitted; run `dsim predictor fit` first")
        return self.state_

    def set_state(self, state):
        self.state_ = dict(state)
        return self

    def coefficients(self) -> dict[str, float]:
        """Mean ensemble weight per feature (on standardised features; > 0 = helps transfer)."""
        st = self.get_state()
        return dict(zip(st["features"], np.mean(st["members"], axis=0).tolist()))

    # ---- ranking
    def rank(self, target, candidates, history, measure_kinds):
        st = self.get_state()
        feats, mean = st["features"], np.array(st["mean"])
        scale = np.array([np.inf if x is None else x for x in st["scale"]], float)
        W = np.array(st["members"])
        w = W.mean(axis=0)
        kinds = {**st["kinds"], **dict(measure_kinds)}
        mf = measure_features(candidates, st["measures"], kinds)
        track = st.get("track")  # source -> [[target, z], ...], as track_table made it
        names, raw = [], []
        for c in candidates:
            f = card_features(c.source, target)
            f.update(mf[c.source.name])
            if track is not None:
                f["track_record"] = track_record(track, c.source.name, {target.name})
            names.append(c.source.name)
            raw.append([f.get(k, np.nan) for k in feats])
        X = np.array(raw, float).reshape(len(names), len(feats))
        missing = ~np.isfinite(X)
        Z = (np.where(missing, mean, X) - mean) / scale
        s = Z @ w
        member_s = Z @ W.T  # (n, members)
        a = st["slope"]
        notes = []
        if st.get("model") == "best-rule":
            r = st["best_rule"]
            notes.append(
                f"meta-ranker: one rule, {r.removeprefix('rule:')} (Spearman {st['rule_spearman'][r]:.2f} on its "
                "training targets), because it ranked held-out training targets at least as well as the "
                "rule mix and the learned model"
            )
        if st.get("model") == "skill-weighted":
            top = sorted(((v, k) for k, v in (st.get("rule_spearman") or {}).items() if v > 0), reverse=True)[
                :3
            ]
            notes.append(
                "meta-ranker: a skill-weighted mix of rules ("
                + ", ".join(f"{k.removeprefix('rule:')} {v:.2f}" for v, k in top)
                + "), because the learned model did not generalise across its training targets"
            )
        measured = dsim.measured_transferability(history, target.name) if history else {}
        known = [i for i, n in enumerate(names) if n in measured]
        b = st["intercept"]
        if a > 0 and known:
            b = float(np.mean([measured[names[i]][0] - a * s[i] for i in known]))
            notes.append(f"meta-ranker: intercept set from {len(known)} measured source(s) of {target.name}")
        calibrated = a > 0
        scores, unc, contrib = {}, {}, {}
        for i, n in enumerate(names):
            if calibrated:
                scores[n] = float(a * s[i] + b)
                unc[n] = float(math.sqrt((a * member_s[i].std()) ** 2 + st["resid_sd"] ** 2))
            else:
                scores[n] = float(s[i])
                unc[n] = float(member_s[i].std())
            unit = a if calibrated else 1.0
            cc = {}
            for k, fname in enumerate(feats):
                cc[fname] = {
                    "value": None if missing[i, k] else float(X[i, k]),
                    "contribution": float(unit * w[k] * Z[i, k]),
                }
            for m in st["measures"]:
                key = f"sim:{m}"
                if key in cc:
                    cc[m] = {"contribution": cc[key]["contribution"]}
            contrib[n] = cc
        unused = sorted({m for c in candidates for m in c.values} - set(st["measures"]))
        if unused:
            notes.append(
                f"meta-ranker was not trained with {', '.join(unused)}; those values are shown, not used"
            )
        lacking = sorted(m for m in st["measures"] if not any(m in c.values for c in candidates))
        if lacking:
            notes.append(f"no {', '.join(lacking)} values for this target; imputed with the target's average")
        if not calibrated:
            notes.append("meta-ranker could not be put on the T scale (non-positive slope on training data)")
        return assemble(
            self,
            target,
            candidates,
            history,
            scores,
            uncertainty=unc,
            contributions=contrib,
            calibrated=calibrated,
            measures=set(st["measures"]) | {m for c in candidates for m in c.values},
            notes=notes,
        )


# --------------------------------------------------------------------------- baselines


class _Baseline(dsim.Predictor):
    """A fixed rule: score each candidate, rank by it (nothing is learned)."""

    def __init__(self, use_measured: bool = True):
        self.use_measured = use_measured

    def score(self, target, candidate, kinds) -> float | None:
        raise NotImplementedError

    def get_state(self):
        return {}

    def set_state(self, state):
        return self

    def rank(self, target, candidates, history, measure_kinds):
        scores, contrib = {}, {}
        for c in candidates:
            v = self.score(target, c, measure_kinds)
            if v is not None and np.isfinite(v):
                scores[c.source.name] = float(v)
                contrib[c.source.name] = {self.name: {"value": float(v)}}
        return assemble(
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


@dsim.hookimpl
def dsim_register_predictors():
    return [MetaRanker, AlwaysImageNet, LargestSource, MostClasses, SingleMeasure]

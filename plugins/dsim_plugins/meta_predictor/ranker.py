"""The ``meta-ranker``: a pairwise logistic ranking model over the features of
:mod:`.features`, with inner leave-one-target-out choice of C and of the model (learned weights,
skill-weighted rule mix or the single best rule), and a bootstrap ensemble for uncertainty."""

from __future__ import annotations

import math

import dsim

from .features import TRACK_SHRINK, _groups, card_features, measure_features, track_record, track_table

np = dsim.lazy_module("numpy")  # imported on first use: the listings need no numpy

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


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
        interactions: bool = False,
    ):
        self.C = C
        self.n_members = n_members
        self.pair_weight = pair_weight
        self.measures = measures
        self.seed = seed
        self.select = select
        self.track = track
        self.interactions = interactions
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
        sims = [i for i, f in enumerate(feats) if keep[i] and f.startswith("sim:") and " x " not in f]
        for i, f in enumerate(feats):
            if " x " in f:  # a target-fact correction is no rule of its own
                continue
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

    #: target facts the corrections are made of, and the source-side features they multiply
    TARGET_FACTS = ("target_grey", "target_log10_classes", "target_log10_size")
    CORRECTED = ("track_record", "log10_size", "log10_classes", "source_medical", "source_grey")

    def _interaction_spec(self, feats, keep, groups):
        """Which features get target corrections, and the target facts' mean and scale over the
        training groups (so a new target is standardised the same way)."""
        src = [i for i, f in enumerate(feats) if keep[i] and (f.startswith("sim:") or f in self.CORRECTED)]
        raw = np.array([self._raw_facts(g["tcard"]) for g in groups], float)
        mu = np.nanmean(raw, axis=0) if len(raw) else np.zeros(len(self.TARGET_FACTS))
        mu = np.where(np.isfinite(mu), mu, 0.0)
        sd = np.nanstd(raw, axis=0) if len(raw) else np.ones(len(self.TARGET_FACTS))
        sd = np.where(
            np.isfinite(sd) & (sd > 0), sd, np.inf
        )  # a fact constant over the targets: no correction
        names = [f"{feats[i]} x {t}" for i in src for t in self.TARGET_FACTS]
        return {
            "src": src,
            "mean": mu.tolist(),
            "scale": [float(x) if np.isfinite(x) else None for x in sd],
            "names": names,
        }

    @staticmethod
    def _raw_facts(tcard):
        return [
            float(tcard.channels == 1) if tcard.channels else np.nan,
            math.log10(tcard.num_classes) if tcard.num_classes else np.nan,
            math.log10(tcard.size) if tcard.size else np.nan,
        ]

    def _target_facts(self, tcard, inter):
        raw = np.array(self._raw_facts(tcard), float)
        mu = np.array(inter["mean"], float)
        sd = np.array([np.inf if x is None else x for x in inter["scale"]], float)
        return (np.where(np.isfinite(raw), raw, mu) - mu) / sd

    @staticmethod
    def _expand(Z, tf, inter):
        cols = [Z[:, i] * tf[k] for i in inter["src"] for k in range(len(tf))]
        return np.hstack([Z, np.column_stack(cols)]) if cols else Z

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

    @staticmethod
    def _standardise(design):
        """The training table: feature names, imputed values, their mean and scale, and which
        features are kept (one of each group identical or mirrored on the training pairs)."""
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
        return feats, mean, scale, keep, mats

    @staticmethod
    def _folds(mats, design, groups, targets, feats, mean, scale, table):
        """Inner leave-one-target-out folds, one per training target (none with fewer than two)."""
        jt = feats.index("track_record") if "track_record" in feats else None

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

        return {t: split(t) for t in targets} if len(targets) >= 2 else {}

    def _add_interactions(self, inter, groups, folds, mats, feats, keep, mean, scale):
        """Target-specific corrections: each source-side feature times each (standardised) target
        fact, so that a feature may weigh differently for grey or colour, small or large targets.
        Rewrites ``folds`` in place; returns the widened (mats, feats, keep, mean, scale)."""
        tfs = [self._target_facts(g["tcard"], inter) for g in groups]
        for t, (tr, te) in list(folds.items()):
            tr_tf = [f for f, g in zip(tfs, groups) if g["target"] != t]
            te_tf = [f for f, g in zip(tfs, groups) if g["target"] == t]
            folds[t] = (
                [(self._expand(Z, f, inter), T) for (Z, T), f in zip(tr, tr_tf)],
                [(self._expand(Z, f, inter), T) for (Z, T), f in zip(te, te_tf)],
            )
        mats = [(self._expand(Z, f, inter), T) for (Z, T), f in zip(mats, tfs)]
        feats = feats + inter["names"]
        keep = np.concatenate([keep, np.ones(len(inter["names"]), bool)])
        mean = np.concatenate([mean, np.zeros(len(inter["names"]))])
        scale = np.concatenate([scale, np.ones(len(inter["names"]))])
        return mats, feats, keep, mean, scale

    def _choose_C(self, folds):
        """C by inner leave-one-target-out over the training targets: (chosen C, Spearman per C)."""
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
        return float(chosen), inner

    def _select_model(self, feats, keep, folds, mats, inner, chosen):
        """Model selection: the learned weights, the skill-weighted rule mix and the single best
        rule are each scored by inner leave-one-target-out; the best generalising one is kept
        (ties to the simpler). With few or inconsistent targets a fitted linear model can rank a
        new target worse than chance, and a mix can dilute one strong rule with weak ones.
        Returns (rule_scores, model, w_fixed, mix_score, best_rule, best_score)."""
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
        return rule_scores, model, w_fixed, mix_score, best_rule, best_score

    def _ensemble(self, model, mats, chosen, w_fixed, feats, keep):
        """The bootstrap ensemble's member weights W and the point weights w."""
        rng = np.random.default_rng(self.seed)
        if model == "learned":
            W = [self._fit_w(mats, chosen)]
            for _ in range(max(0, self.n_members - 1)):
                W.append(self._fit_w(mats, chosen, rng))
            W = np.array(W)
            return W, W.mean(axis=0)
        # the rule model refitted on bootstrap resamples of the training groups: the spread of
        # its scores across the members is each row's own uncertainty; the point is the fit on all
        W = [w_fixed]
        rules = self._rules(feats, keep)
        for _ in range(max(0, self.n_members - 1)):
            boot = [mats[i] for i in rng.integers(0, len(mats), len(mats))]
            w_b, skill_b = self._mix(rules, boot)
            if model == "best-rule":
                top_b = max(skill_b, key=skill_b.get) if skill_b else None
                w_b = rules[top_b] if top_b and skill_b[top_b] > 0 else w_fixed
            W.append(w_fixed if w_b is None else w_b)
        return np.array(W), np.asarray(w_fixed, float)

    @staticmethod
    def _calibrate(mats, w):
        """Calibration T = a * score + b_group: (slope a, mean intercept, residual sd)."""
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
        return a, float(np.mean(bs)), float(np.sqrt(np.sum(np.square(resid)) / dof))

    def fit(self, results, values, cards, measure_kinds):
        groups = _groups(results, values, cards)
        if not groups:
            raise dsim.DsimError("meta-ranker: no target with two or more measured sources to learn from")
        present = sorted({v.measure for v in values})
        measures = sorted(self.measures) if self.measures else present
        table = track_table(groups) if self.track else None
        design = self._design(groups, measures, measure_kinds, table)
        feats, mean, scale, keep, mats = self._standardise(design)
        targets = sorted({g["target"] for g in groups})
        folds = self._folds(mats, design, groups, targets, feats, mean, scale, table)
        inter = self._interaction_spec(feats, keep, groups) if self.interactions else None
        if inter is not None:
            mats, feats, keep, mean, scale = self._add_interactions(
                inter, groups, folds, mats, feats, keep, mean, scale
            )
        chosen, inner = self._choose_C(folds)
        rule_scores, model, w_fixed, mix_score, best_rule, best_score = self._select_model(
            feats, keep, folds, mats, inner, chosen
        )
        W, w = self._ensemble(model, mats, chosen, w_fixed, feats, keep)
        a, intercept, resid_sd = self._calibrate(mats, w)
        self.state_ = {
            "features": feats,
            "mean": mean.tolist(),
            "scale": [float(x) if np.isfinite(x) else None for x in scale],
            "dropped": [f for f, k in zip(feats, keep) if not k],
            "members": W.tolist(),
            "weights": w.tolist(),
            "interactions": inter,
            "measures": measures,
            "C": chosen,
            "inner_spearman": {str(k): v for k, v in inner.items()},
            "model": model,
            "rule_spearman": rule_scores,
            "mix_spearman": mix_score,
            "best_rule": best_rule if model == "best-rule" else None,
            "best_rule_spearman": best_score,
            "slope": a,
            "intercept": intercept,
            "resid_sd": resid_sd,
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

    def summary(self) -> list[str]:
        """The weights, and which model the inner leave-one-target-out kept and why."""
        st = self.get_state()
        coefs = sorted(self.coefficients().items(), key=lambda kv: -abs(kv[1]))
        lines = [
            "weights (standardised features, > 0 = transfers better): "
            + ", ".join(f"{k} {v:+.3f}" for k, v in coefs if abs(v) > 1e-4)
        ]
        if st.get("inner_spearman"):
            nan = float("nan")
            learned = max(st["inner_spearman"].values())
            mix, best = st.get("mix_spearman"), st.get("best_rule_spearman")
            kept = {
                "learned": "the learned weights",
                "skill-weighted": "the skill-weighted rule mix",
                "best-rule": f"one rule, {str(st.get('best_rule', '')).removeprefix('rule:')}",
            }[st["model"]]
            lines.append(
                f"model: {kept} — inner leave-one-target-out Spearman: learned {learned:.2f}, rule mix "
                f"{mix if mix is not None else nan:.2f}, best single rule {best if best is not None else nan:.2f}"
            )
        return lines

    # ---- ranking
    def describe(self, target, candidates, history, measure_kinds):
        """The features of each candidate as the model sees them (before standardisation): card
        facts, z-scored measure values and, once fitted, the track record."""
        st = self.state_ or {}
        measures = st.get("measures") or sorted({m for c in candidates for m in c.values})
        kinds = {**st.get("kinds", {}), **dict(measure_kinds)}
        mf = measure_features(candidates, measures, kinds)
        track = st.get("track")  # source -> [[target, z], ...], as track_table made it
        out = {}
        for c in candidates:
            f = card_features(c.source, target)
            f.update(mf[c.source.name])
            if track is not None:
                f["track_record"] = track_record(track, c.source.name, {target.name})
            out[c.source.name] = f
        return out

    def _member_scores(self, Z, W, feats, mean, scale, names, target, st):
        """Each member's scores: member b's weights on the features, with the track record recomputed
        from a bootstrap resample b of the training targets (member 0: all of them), so that a source
        measured on few or disagreeing targets gets a wider spread than one measured consistently."""
        out = Z @ W.T
        track, targets = st.get("track"), [t for t in st.get("targets", ()) if t != target.name]
        if track is None or "track_record" not in feats or not targets:
            return out
        j = feats.index("track_record")
        if not np.isfinite(scale[j]):
            return out
        rng = np.random.default_rng([self.seed, len(names)])
        for b in range(1, W.shape[0]):
            draw = [targets[i] for i in rng.integers(0, len(targets), len(targets))]
            count = {t: draw.count(t) for t in set(draw)}
            col = np.empty(len(names))
            for i, n in enumerate(names):
                zs = [z * count[t] for t, z in track.get(n, ()) if t in count]
                k = sum(count[t] for t, _ in track.get(n, ()) if t in count)
                raw = sum(zs) / (k + TRACK_SHRINK) if k else np.nan
                col[i] = (raw if np.isfinite(raw) else mean[j]) - mean[j]
            Zb = Z.copy()
            Zb[:, j] = col / scale[j]
            inter = st.get("interactions")
            if inter:
                nb = len(feats) - len(inter["names"])
                Zb = self._expand(Zb[:, :nb], self._target_facts(target, inter), inter)
            out[:, b] = Zb @ W[b]
        return out

    def _standardised(self, st, target, candidates, history, measure_kinds):
        """The candidates' features as the fitted model sees them: (names, raw X, which values
        are missing, standardised Z with the target-fact corrections)."""
        feats, mean = st["features"], np.array(st["mean"])
        scale = np.array([np.inf if x is None else x for x in st["scale"]], float)
        desc = self.describe(target, candidates, history, measure_kinds)
        names, raw = [], []
        for c in candidates:
            names.append(c.source.name)
            raw.append([desc[c.source.name].get(k, np.nan) for k in feats])
        X = np.array(raw, float).reshape(len(names), len(feats))
        missing = ~np.isfinite(X)
        Z = (np.where(missing, mean, X) - mean) / scale
        inter = st.get("interactions")
        if inter:  # the target-fact corrections, from the standardised base features
            nb = len(feats) - len(inter["names"])
            Z = self._expand(Z[:, :nb], self._target_facts(target, inter), inter)
        return names, X, missing, Z

    @staticmethod
    def _model_notes(st) -> list[str]:
        """Why a rule model, not the learned weights, ranks (nothing for the learned model)."""
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
        return notes

    @staticmethod
    def _scored(st, names, X, missing, Z, w, s, member_s, a, b, calibrated):
        """Per source: the score, its uncertainty and each feature's value and contribution."""
        feats = st["features"]
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
        return scores, unc, contrib

    @staticmethod
    def _data_notes(st, candidates, calibrated) -> list[str]:
        """Measures the model was not trained with or has no values for, and a failed calibration."""
        notes = []
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
        return notes

    def rank(self, target, candidates, history, measure_kinds):
        st = self.get_state()
        feats, mean = st["features"], np.array(st["mean"])
        scale = np.array([np.inf if x is None else x for x in st["scale"]], float)
        W = np.array(st["members"])
        w = np.array(st["weights"]) if "weights" in st else W.mean(axis=0)
        names, X, missing, Z = self._standardised(st, target, candidates, history, measure_kinds)
        s = Z @ w
        member_s = self._member_scores(Z, W, feats, mean, scale, names, target, st)  # (n, members)
        a = st["slope"]
        notes = self._model_notes(st)
        measured = dsim.measured_transferability(history, target.name) if history else {}
        known = [i for i, n in enumerate(names) if n in measured]
        b = st["intercept"]
        if a > 0 and known:
            b = float(np.mean([measured[names[i]][0] - a * s[i] for i in known]))
            notes.append(f"meta-ranker: intercept set from {len(known)} measured source(s) of {target.name}")
        calibrated = a > 0
        scores, unc, contrib = self._scored(st, names, X, missing, Z, w, s, member_s, a, b, calibrated)
        notes += self._data_notes(st, candidates, calibrated)
        return dsim.assemble_ranking(
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

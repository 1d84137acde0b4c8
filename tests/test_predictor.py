"""Predictors: leave-one-target-out without leaks, baselines, persistence, missing measures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import dsim
from dsim.evaluation.evaluate import evaluate_loto, mean_metrics, noise_ceiling, ranking_metrics
from dsim.kernel.defaults import LEARNED_PREDICTOR
from dsim.ranking.predictors import fitted_info, load_fitted, save_fitted

KINDS = {"expert": "distance", "task2vec": "distance"}


def published():
    res = [r for r in dsim.known_results() if r.origin == "published:cats-scans"]
    vals = [v for v in dsim.known_measure_values() if v.origin == "published:cats-scans"]
    return res, vals


def registry_cards():
    return {c.name: c for c in dsim.get_registry()}


class Oracle(dsim.Predictor):
    """Memorises the measured T of every (source, target) it is fit on and ranks by it: perfect
    if the held-out target's results reach fit, uninformative (all ties) otherwise."""

    name = "oracle"

    def fit(self, results, values, cards, measure_kinds):
        from dsim.evaluation.evaluate import transfer_table

        self.t = {(r.source, r.target): r.t for r in transfer_table(results)}
        return self

    def rank(self, target, candidates, history, measure_kinds):
        rows = [
            dsim.RankingRow(c.source.name, self.t.get((c.source.name, target.name), 0.0), "predicted")
            for c in candidates
        ]
        rows.sort(key=lambda r: -r.score)
        return dsim.Ranking(target=target.name, rows=tuple(rows), predictor=self.name)


# --------------------------------------------------------------------------- leave-one-target-out


def test_loto_never_leaks_the_held_out_target():
    res, vals = published()
    seen = {}

    def on_fit(target, train_r, train_v):
        seen[target] = ({r.target for r in train_r}, {v.target for v in train_v})

    rows = evaluate_loto(Oracle, res, vals, registry_cards(), KINDS, on_fit=on_fit)
    assert sorted(seen) == ["chest", "isic", "pcam-middle"]
    for target, (rt, vt) in seen.items():
        assert target not in rt and target not in vt
        assert rt == {"chest", "isic", "pcam-middle"} - {target}
    # the oracle knows nothing about a held-out target: every score ties, rho 0, tau 0
    for r in rows:
        assert r["spearman"] == 0.0 and r["weighted_tau"] == 0.0


def test_the_oracle_would_expose_a_leak():
    """Guard for the test above: fit on everything (a leak) and the oracle is perfect."""
    res, vals = published()
    oracle = Oracle().fit(res, vals, {}, KINDS)
    rows = evaluate_loto(lambda: oracle, res, vals, registry_cards(), KINDS)  # fit() refits on train only
    assert all(r["spearman"] == 0.0 for r in rows)

    class Leaky(Oracle):
        def fit(self, results, values, cards, measure_kinds):
            return super().fit(res, values, cards, measure_kinds)  # ignores the split: leaks

    rows = evaluate_loto(Leaky, res, vals, registry_cards(), KINDS)
    assert all(r["spearman"] == pytest.approx(1.0) for r in rows)


def test_loto_family_excludes_derived_datasets():
    res = [
        dsim.TransferResult(s, t, f, auc, setup="x")
        for t in ("a", "a-small", "b")
        for s, auc in (("s1", 0.9), ("s2", 0.8), ("s3", 0.7), (t, 0.85))
        for f in (1, 2)
    ]
    seen = {}
    evaluate_loto(
        Oracle,
        res,
        [],
        {},
        {},
        targets=["a"],
        family=lambda t: {t, f"{t}-small"},
        on_fit=lambda t, r, v: seen.setdefault(t, {x.target for x in r}),
    )
    assert seen["a"] == {"b"}


def test_loto_holds_out_the_registry_family_by_default():
    """Holding out chest must hold out pneumoniamnist (derived from it) too, with no family
    argument: the rule comes from the registry, as `dsim predictor evaluate` uses it."""
    res = [
        dsim.TransferResult(s, t, f, auc, setup="x")
        for t in ("chest", "pneumoniamnist", "breastmnist")
        for s, auc in (("s1", 0.9), ("s2", 0.8), ("s3", 0.7), (t, 0.85))
        for f in (1, 2)
    ]
    seen = {}
    evaluate_loto(
        Oracle,
        res,
        [],
        {},
        {},
        targets=["chest"],
        on_fit=lambda t, r, v: seen.setdefault(t, {x.target for x in r}),
    )
    assert seen["chest"] == {"breastmnist"}


# --------------------------------------------------------------------------- metrics


def test_ranking_metrics_by_hand():
    measured = {"a": 3.0, "b": 1.0, "c": -2.0}
    aucs = {"a": 0.95, "b": 0.93, "c": 0.90}
    m = ranking_metrics(measured, ["b", "a", "c"], {"b": 3, "a": 2, "c": 1}, aucs)
    assert m["top1"] == 0.0 and m["regret_t"] == pytest.approx(2.0) and m["regret_auc"] == pytest.approx(0.02)
    assert m["spearman"] == pytest.approx(0.5)  # ranks (2,1,3) vs (1,2,3): 1 - 6*2/24
    perfect = ranking_metrics(measured, ["a", "b", "c"], {"a": 3, "b": 2, "c": 1}, aucs)
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["weighted_tau"] == pytest.approx(1.0)
    assert perfect["top1"] == 1.0 and perfect["regret_t"] == 0.0


def test_baselines_reproduce_the_issue_numbers_from_registry_cards():
    """Per-target Spearman of one feature, mean over isic/chest/pcam-middle (issue 6): number of
    classes 0.53, log size 0.37, Task2Vec 0.25, expert -0.16."""
    cards = registry_cards()
    need = ["imagenet", "stl10", "sti10", "textures", "isic", "chest", "pcam-middle", "pcam-small", "kimia"]
    if any(n not in cards or not cards[n].size or not cards[n].num_classes for n in need):
        pytest.skip("registry lacks the cats-scans cards' size/classes")
    res, vals = published()
    want = {
        ("most-classes", ()): 0.53,
        ("largest-source", ()): 0.37,
        ("single-measure", ("task2vec",)): 0.25,
        ("single-measure", ("expert",)): -0.16,
    }
    for (name, args), value in want.items():
        params = {"measure": args[0]} if args else {}
        rows = evaluate_loto(
            lambda name=name, params=params: dsim.get_predictor(name, **params), res, vals, cards, KINDS
        )
        assert mean_metrics(rows)["spearman"] == pytest.approx(value, abs=0.005), (name, args)
    rows = evaluate_loto(lambda: dsim.get_predictor("always-imagenet"), res, vals, cards, KINDS)
    assert all(r["predicted_best"] == "imagenet" and r["top1"] == 1.0 for r in rows)


def test_noise_ceiling_split_halves_and_repeats():
    rng = np.random.default_rng(0)
    true = {"s1": 0.95, "s2": 0.9, "s3": 0.85, "s4": 0.8}
    clean = [
        dsim.TransferResult(s, "t", f, a, setup="x")
        for s, a in {**true, "t": 0.88}.items()
        for f in range(1, 5)
    ]
    c = noise_ceiling(clean)[0]
    assert c["split_half"] == pytest.approx(1.0) and c["ceiling"] == pytest.approx(1.0) and c["n_splits"] == 3
    noisy = [
        dsim.TransferResult(s, "t", f, a + rng.normal(0, 0.2), setup="x")
        for s, a in {**true, "t": 0.88}.items()
        for f in range(1, 5)
    ]
    assert noise_ceiling(noisy)[0]["split_half"] < 1.0
    # repeats: repeat 1 reverses the order -> the two repeats disagree completely
    rep = clean + [
        dsim.TransferResult(s, "t", f, a, setup="x", repeat=1)
        for s, a in {"s1": 0.8, "s2": 0.85, "s3": 0.9, "s4": 0.95, "t": 0.88}.items()
        for f in range(1, 5)
    ]
    c = noise_ceiling(rep)[0]
    assert c["method"] == "repeats" and c["split_half"] == pytest.approx(-1.0) and c["ceiling"] == 0.0
    # four repeats that agree at rho = 0.8 pairwise: the mean of all four has reliability
    # 4 * 0.8 / (1 + 3 * 0.8) (Spearman-Brown), higher than two halves would give
    orders = [(0.95, 0.9, 0.85, 0.8), (0.9, 0.95, 0.85, 0.8), (0.95, 0.9, 0.8, 0.85), (0.9, 0.95, 0.8, 0.85)]
    four = [
        dsim.TransferResult(s, "t", f, a, setup="x", repeat=k)
        for k, o in enumerate(orders)
        for s, a in {**dict(zip(true, o)), "t": 0.7}.items()
        for f in range(1, 3)
    ]
    c = noise_ceiling(four)[0]
    r = c["split_half"]
    assert c["n_units"] == 4 and 0 < r < 1
    assert c["reliability"] == pytest.approx(4 * r / (1 + 3 * r))


# --------------------------------------------------------------------------- the meta-ranker


def _synthetic(n_targets=5, seed=0, measure_weight=0.0):
    """Targets whose measured T is set by the sources' size (plus noise) and, with
    ``measure_weight`` > 0, as much by the task2vec distance (closer = better)."""
    rng = np.random.default_rng(seed)
    sizes = {f"s{i}": int(10 ** (3 + i * 0.5)) for i in range(7)}
    cards = {
        s: dsim.DatasetCard(name=s, origin="natural", channels=3, num_classes=10, size=n)
        for s, n in sizes.items()
    }
    res, vals = [], []
    for j in range(n_targets):
        t = f"t{j}"
        cards[t] = dsim.DatasetCard(name=t, origin="medical", channels=3, num_classes=2, size=1000)
        dist = {s: float(rng.uniform(0, 1)) for s in sizes}
        for f in range(1, 4):
            res.append(dsim.TransferResult(t, t, f, 0.8, setup="syn"))
            for s, n in sizes.items():
                auc = 0.8 + 0.01 * math.log10(n) - measure_weight * 0.03 * dist[s] + rng.normal(0, 0.002)
                res.append(dsim.TransferResult(s, t, f, auc, setup="syn"))
        vals += [dsim.MeasureValue("task2vec", s, t, dist[s]) for s in sizes]
    return res, vals, cards


def test_meta_ranker_learns_a_planted_signal_under_loto():
    res, vals, cards = _synthetic()
    rows = evaluate_loto(lambda: dsim.get_predictor("meta-ranker", n_members=5), res, vals, cards, KINDS)
    assert len(rows) == 5
    assert mean_metrics(rows)["spearman"] > 0.9
    assert all(r["predicted_best"] == "s6" for r in rows)
    pred = dsim.get_predictor("meta-ranker", n_members=5).fit(res, vals, cards, KINDS)
    coefs = pred.coefficients()
    assert coefs["log10_size"] > 0 and abs(coefs["sim:task2vec"]) < coefs["log10_size"]


def _backwards(monkeypatch):
    """Force the learner to learn the opposite of what it would (as an overfitted model on
    inconsistent targets would): model selection must notice from the training data alone."""
    from dsim_plugins.meta_predictor import MetaRanker

    real_fit = MetaRanker._fit_w
    monkeypatch.setattr(MetaRanker, "_fit_w", lambda self, mats, C, rng=None: -real_fit(self, mats, C, rng))


def test_meta_ranker_falls_back_to_one_rule_when_learning_does_not_generalise(monkeypatch):
    """Model selection: if the fitted weights rank left-out training targets worse than a fixed
    rule does, the rule is the model; with one planted signal the single best rule (not a mix
    diluted by the uninformative measure) is kept."""
    res, vals, cards = _synthetic(n_targets=4)
    _backwards(monkeypatch)
    pred = dsim.get_predictor("meta-ranker", n_members=3).fit(res, vals, cards, KINDS)
    st = pred.get_state()
    assert st["model"] == "best-rule" and st["best_rule"] == "rule:log10_size"
    assert st["rule_spearman"]["rule:log10_size"] > 0.9 > max(st["inner_spearman"].values())
    assert st["best_rule_spearman"] > 0.9 and st["best_rule_spearman"] >= st["mix_spearman"]
    coefs = pred.coefficients()
    assert coefs["log10_size"] == 1.0 and sum(abs(v) for v in coefs.values()) == 1.0
    cands = [dsim.Candidate(source=cards[s], values={"task2vec": 0.5}) for s in ("s0", "s3", "s6")]
    rk = pred.rank(cards["t0"], cands, [], KINDS)
    assert rk.sources[0] == "s6" and any("one rule, log10_size" in n for n in rk.notes)
    rows = evaluate_loto(lambda: dsim.get_predictor("meta-ranker", n_members=3), res, vals, cards, KINDS)
    assert mean_metrics(rows)["spearman"] > 0.9
    learned = evaluate_loto(
        lambda: dsim.get_predictor("meta-ranker", n_members=3, select=False), res, vals, cards, KINDS
    )
    assert mean_metrics(learned)["spearman"] < 0  # what the selection saved us from
    assert (
        dsim.get_predictor("meta-ranker", select=False).fit(res, vals, cards, KINDS).get_state()["model"]
        == "learned"
    )


def test_meta_ranker_falls_back_to_the_rule_mix_when_two_signals_matter(monkeypatch):
    # size and task2vec each set half of T: the mix of the two ranks better than either alone
    res, vals, cards = _synthetic(n_targets=4, measure_weight=1.0)
    _backwards(monkeypatch)
    pred = dsim.get_predictor("meta-ranker", n_members=3).fit(res, vals, cards, KINDS)
    st = pred.get_state()
    assert st["model"] == "skill-weighted"
    assert st["mix_spearman"] > st["best_rule_spearman"] and st["mix_spearman"] > max(
        st["inner_spearman"].values()
    )
    coefs = pred.coefficients()
    assert coefs["log10_size"] > 0.2 and coefs["sim:task2vec"] > 0.2  # both carry the mix
    cands = [dsim.Candidate(source=cards[s], values={"task2vec": 0.5}) for s in ("s0", "s3", "s6")]
    assert any("skill-weighted mix" in n for n in pred.rank(cards["t0"], cands, [], KINDS).notes)


def _track_synthetic(consistent: bool, n_targets=5, seed=0):
    """Sources alike on every card fact and measure; their T on a target is a per-source quality
    (the same on every target when ``consistent``, drawn anew per target otherwise) plus noise."""
    rng = np.random.default_rng(seed)
    names = [f"s{i}" for i in range(6)]
    cards = {
        s: dsim.DatasetCard(name=s, origin="natural", channels=3, num_classes=10, size=1000) for s in names
    }
    quality = dict(zip(names, np.linspace(0, 0.05, 6)))
    res, vals = [], []
    for j in range(n_targets):
        t = f"t{j}"
        cards[t] = dsim.DatasetCard(name=t, origin="medical", channels=3, num_classes=2, size=500)
        q = quality if consistent else dict(zip(names, rng.permutation(list(quality.values()))))
        for f in range(1, 4):
            res.append(dsim.TransferResult(t, t, f, 0.8, setup="syn"))
            for s in names:
                res.append(dsim.TransferResult(s, t, f, 0.8 + q[s] + rng.normal(0, 0.002), setup="syn"))
        vals += [dsim.MeasureValue("task2vec", s, t, float(rng.uniform(0, 1))) for s in names]
    return res, vals, cards


def test_track_record_leaves_the_targets_own_results_out():
    from dsim_plugins.meta_predictor import track_record, track_table

    table = track_table(
        [
            {"target": "a", "members": [("s", 3.0, None), ("u", 1.0, None)]},  # s: z = +1
            {"target": "b", "members": [("s", 1.0, None), ("u", 3.0, None)]},  # s: z = -1
            {"target": "c", "members": [("s", 2.0, None), ("u", 1.0, None), ("v", 0.0, None)]},
        ]
    )
    z_c = (2.0 - 1.0) / np.std([2.0, 1.0, 0.0])
    assert track_record(table, "s") == pytest.approx((1 - 1 + z_c) / (3 + 1))  # shrunk towards 0
    assert track_record(table, "s", {"a"}) == pytest.approx((-1 + z_c) / (2 + 1))
    assert track_record(table, "s", {"a", "c"}) == pytest.approx(-1 / 2)
    assert math.isnan(track_record(table, "v", {"c"})) and math.isnan(track_record(table, "new"))


def test_meta_ranker_learns_a_source_track_record_and_only_when_it_holds():
    # consistent per-source quality that no card or measure shows: only the track record can rank
    res, vals, cards = _track_synthetic(consistent=True)
    rows = evaluate_loto(lambda: dsim.get_predictor("meta-ranker", n_members=3), res, vals, cards, KINDS)
    assert mean_metrics(rows)["spearman"] > 0.9 and all(r["predicted_best"] == "s5" for r in rows)
    blind = evaluate_loto(
        lambda: dsim.get_predictor("meta-ranker", n_members=3, track=False), res, vals, cards, KINDS
    )
    assert mean_metrics(blind)["spearman"] < 0.5
    pred = dsim.get_predictor("meta-ranker", n_members=3).fit(res, vals, cards, KINDS)
    assert pred.coefficients()["track_record"] == max(pred.coefficients().values())
    # a source's history on the target being ranked is never its track record there: ranking
    # t0 (whose results the model was fit on) uses only t1..t4
    cands = [dsim.Candidate(source=cards[s], values={}) for s in ("s0", "s5")]
    rk = pred.rank(cards["t0"], cands, [], KINDS)
    from dsim_plugins.meta_predictor import _groups, track_record, track_table

    table = track_table(_groups(res, vals, cards))
    got = {r.source: r.contributions["track_record"]["value"] for r in rk.rows}
    assert got == pytest.approx({s: track_record(table, s, {"t0"}) for s in ("s0", "s5")})
    # qualities drawn anew per target: the (shrunk, own-target-free) track record carries no
    # signal in training either, so the model does not learn to trust it
    res, vals, cards = _track_synthetic(consistent=False)
    pred = dsim.get_predictor("meta-ranker", n_members=3, select=False).fit(res, vals, cards, KINDS)
    st = pred.get_state()
    inconsistent = evaluate_loto(
        lambda: dsim.get_predictor("meta-ranker", n_members=3), res, vals, cards, KINDS
    )
    assert abs(mean_metrics(inconsistent)["spearman"]) < 0.5
    assert st["track"] is not None and max(st["inner_spearman"].values()) < 0.5


def test_meta_ranker_round_trips_to_disk_with_identical_rankings(tmp_path, monkeypatch):
    monkeypatch.setenv("DSIM_PREDICTOR_DIR", str(tmp_path))
    res, vals = published()
    cards = registry_cards()
    pred = dsim.get_predictor("meta-ranker", n_members=7, seed=3).fit(res, vals, cards, KINDS)
    path = save_fitted(pred, res)
    assert (
        path.parent == tmp_path and json.loads((tmp_path / "current.json").read_text())["file"] == path.name
    )
    again = dsim.get_predictor("meta-ranker", n_members=7, seed=3).fit(res, vals, cards, KINDS)
    assert save_fitted(again, res) == path  # same content, same key: deterministic with a seed
    loaded = load_fitted()
    assert loaded is not pred and loaded.name == "meta-ranker" and loaded.seed == 3
    target = cards["chest"]
    cands = [
        dsim.Candidate(source=cards[s], values={"expert": e, "task2vec": t})
        for s, e, t in (("imagenet", 6, 0.85), ("kimia", 3, 0.6), ("stl10", 6, 0.85), ("isic", 2, 0.86))
    ]
    a = pred.rank(target, cands, [], KINDS)
    b = loaded.rank(target, cands, [], KINDS)
    assert a.to_dict() == b.to_dict()
    assert all(r.status == "predicted" and r.uncertainty > 0 for r in a.rows)
    assert fitted_info()["trained_on"]["n_results"] == len(res)


def test_meta_ranker_contributions_explain_the_scores():
    res, vals = published()
    cards = registry_cards()
    pred = dsim.get_predictor("meta-ranker", n_members=3).fit(res, vals, cards, KINDS)
    cands = [
        dsim.Candidate(source=cards[s], values={"expert": e})
        for s, e in (("imagenet", 6), ("kimia", 3), ("isic", 2))
    ]
    rk = pred.rank(cards["chest"], cands, [], KINDS)
    feats = pred.get_state()["features"]
    sums = {r.source: sum(r.contributions[f]["contribution"] for f in feats) for r in rk.rows}
    # score = sum of feature contributions + one shared intercept
    offsets = [r.score - sums[r.source] for r in rk.rows]
    assert max(offsets) - min(offsets) < 1e-9
    assert rk.rows[0].contributions["expert"]["value"] in (6.0, 3.0, 2.0)
    assert any("task2vec" in n and "imputed" in n for n in rk.notes)


def test_measured_sources_stay_measured_and_imagenet_first_for_chest(tmp_path, monkeypatch):
    monkeypatch.setenv("DSIM_PREDICTOR_DIR", str(tmp_path))
    ranking = dsim.rank("chest")  # the default: the learned predictor fitted on the shipped evidence
    assert ranking.predictor == LEARNED_PREDICTOR and ranking.sources[0] == "imagenet"
    assert any("fitted on the evidence" in n and "published:juodelyte2024" in n for n in ranking.notes)
    with pytest.raises(dsim.DsimError, match="no fitted predictor yet"):
        dsim.rank("chest", predictor="fitted")
    res, vals = published()
    save_fitted(dsim.get_predictor("meta-ranker", n_members=3).fit(res, vals, registry_cards(), KINDS), res)
    assert not any("fitted meta-ranker" in n for n in dsim.rank("chest").notes)  # not read unasked
    ranking = dsim.rank("chest", predictor="fitted")
    assert ranking.predictor == "meta-ranker" and ranking.sources[0] == "imagenet"
    assert ranking.rows[0].status == "measured"
    assert any("fitted meta-ranker" in n for n in ranking.notes)
    measured = {r.source for r in ranking.rows if r.status == "measured"}
    assert measured == {"imagenet", "textures", "stl10", "pcam-middle", "sti10", "pcam-small", "isic"}
    (tmp_path / "current.json").write_text("{not json")
    with pytest.raises(dsim.DsimError, match="current.json: unreadable"):
        dsim.rank("chest", predictor="fitted")


# --------------------------------------------------------------------------- missing measures


def _cand(name, **values):
    return dsim.Candidate(source=dsim.DatasetCard(name=name, size=1000, num_classes=2), values=values)


def test_rank_aggregation_handles_missing_measures():
    agg = dsim.get_predictor("rank-aggregation")
    cands = [
        _cand("a", expert=1.0, task2vec=0.2),
        _cand("b", expert=3.0),
        _cand("c", task2vec=0.9),
        _cand("d"),
    ]
    rk = agg.rank(dsim.DatasetCard(name="t"), cands, [], KINDS)
    assert rk.sources == ["a", "b", "c"]  # d has no measure: left out, not ranked worst by accident
    scores = {r.source: r.score for r in rk.rows}
    assert scores["a"] == pytest.approx(1.0)  # best on both
    assert scores["b"] == pytest.approx(0.0) and scores["c"] == pytest.approx(
        0.0
    )  # worst on the one each has


def test_meta_ranker_handles_missing_measures_and_cards():
    res, vals = published()
    pred = dsim.get_predictor("meta-ranker", n_members=3).fit(res, vals, registry_cards(), KINDS)
    cands = [_cand("a", expert=1.0), _cand("b"), dsim.Candidate(source=dsim.DatasetCard(name="bare"))]
    rk = pred.rank(dsim.DatasetCard(name="new-target"), cands, [], KINDS)
    assert set(rk.sources) == {"a", "b", "bare"}
    assert all(np.isfinite(r.score) for r in rk.rows)
    bare = next(r for r in rk.rows if r.source == "bare")
    assert bare.contributions["log10_size"]["value"] is None


def test_single_measure_and_card_baselines_skip_what_they_cannot_score():
    cands = [_cand("a", task2vec=0.1), _cand("b", task2vec=0.5), _cand("c")]
    rk = dsim.get_predictor("single-measure", measure="task2vec").rank(
        dsim.DatasetCard(name="t"), cands, [], KINDS
    )
    assert rk.sources == ["a", "b"]
    rk = dsim.get_predictor("largest-source").rank(
        dsim.DatasetCard(name="t"),
        [_cand("x"), dsim.Candidate(source=dsim.DatasetCard(name="big", size=10**6))],
        [],
        KINDS,
    )
    assert rk.sources == ["big", "x"]


def test_cli_fit_show_evaluate(tmp_path, monkeypatch, capsys):
    from dsim.cli import main

    monkeypatch.setenv("DSIM_PREDICTOR_DIR", str(tmp_path))
    assert main(["predictor", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["fitted"] is None  # nothing saved yet; rank uses the default fitted on the evidence
    used = shown["used_by_rank"]
    assert used["predictor"] == LEARNED_PREDICTOR and "fitted on the evidence" in used["note"]
    assert used["n_results"] == len(dsim.known_results())
    assert main(["predictor", "fit", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["predictor"] == LEARNED_PREDICTOR and (tmp_path / "current.json").exists()
    assert main(["predictor", "fit"]) == 0  # the default's summary: its prior and its evidence
    assert "prior: track record" in " ".join(capsys.readouterr().out.split())
    # the meta-ranker by name: the table form says which model was kept, and why
    assert main(["predictor", "fit", "--predictor", "meta-ranker"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "model: " in text and "inner leave-one-target-out Spearman" in text
    assert main(["predictor", "evaluate", "--predictors", "most-classes,always-imagenet", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["summary"]) == {"most-classes", "always-imagenet"}
    assert {c["target"] for c in out["noise_ceiling"]} >= {"chest", "isic", "pcam-middle"}
    assert main(["predictor", "evaluate", "--predictors", "nope"]) == 2


def test_the_shipped_default_predictor_is_the_one_for_the_shipped_evidence():
    """A fresh install ranks with the learned predictor shipped in dsim/fitted/, fitted on the
    evidence dsim ships; it is stale as soon as that evidence, a card or the learned predictor
    changes."""
    from dsim.ranking.predictors import _evidence_key, _shipped_dir

    key = _evidence_key(LEARNED_PREDICTOR, {})[:24]
    assert (_shipped_dir() / f"{key}.json").is_file(), (
        "the shipped default predictor is stale: run "
        "`python -c 'from dsim.ranking.predictors import ship_evidence_predictor as s; s()'`"
    )
    ranking = dsim.rank("chest")
    assert ranking.predictor == LEARNED_PREDICTOR
    assert any(n.endswith("shipped with dsim") for n in ranking.notes)
    unc = {round(r.uncertainty, 6) for r in ranking.rows if r.status == "predicted"}
    assert len(unc) > 1  # each predicted row has its own spread


@pytest.mark.slow
def test_other_evidence_is_fitted_once_and_cached(fresh_plugins, tmp_path, monkeypatch):
    monkeypatch.setenv("DSIM_CACHE_DIR", str(tmp_path))

    class Lab:
        @dsim.hookimpl
        def dsim_known_results(self):
            return [
                dsim.TransferResult(s, "chest", f, a, origin="my-lab", setup="lab")
                for s, a in (("imagenet", 0.9), ("stl10", 0.85), ("chest", 0.8), ("isic", 0.7))
                for f in (0, 1)
            ]

    fresh_plugins.register(Lab(), "my-lab")
    try:
        first = dsim.rank("chest", measures="expert")
        assert any("fitted now" in n and "and cached" in n and "my-lab" in n for n in first.notes)
        again = dsim.rank("chest", measures="expert")
        assert any(n.endswith("; cached") for n in again.notes)
        assert [r.source for r in again.rows] == [r.source for r in first.rows]
    finally:
        fresh_plugins.unregister("my-lab")

"""The default predictor, prior-evidence: a shrunk track record plus evidence weighed by its
held-out reliability, explained per row."""

from __future__ import annotations

import numpy as np
import pytest

import dsim
from dsim.evaluation.evaluate import evaluate_loto, meta_dataset
from dsim.ranking.predictors import evidence_predictor


def _table(n_sources=8, n_targets=9, signal=0.0, seed=0, track=1.0):
    """A realistic generated table: each source has a true quality (its track record), each
    target adds noise; measure ``sig`` carries ``signal`` x the target-specific part, measure
    ``junk`` is noise. Returns (results, values, cards, kinds)."""
    rng = np.random.default_rng(seed)
    quality = rng.normal(0, 1, n_sources) * track
    results, values = [], []
    for t in range(n_targets):
        specific = rng.normal(0, 1, n_sources)
        base = 0.8
        results.append(dsim.TransferResult(f"t{t}", f"t{t}", 0, base, origin="test", setup="tab"))
        for s in range(n_sources):
            auc = base + 0.02 * (quality[s] + specific[s])
            results.append(dsim.TransferResult(f"s{s}", f"t{t}", 0, float(auc), origin="test", setup="tab"))
            values.append(
                dsim.MeasureValue("sig", f"s{s}", f"t{t}", float(signal * specific[s] + 0.1 * rng.normal()))
            )
            values.append(dsim.MeasureValue("junk", f"s{s}", f"t{t}", float(rng.normal())))
    names = [f"s{s}" for s in range(n_sources)] + [f"t{t}" for t in range(n_targets)]
    cards = {n: dsim.DatasetCard(name=n, size=1000, num_classes=2) for n in names}
    return results, values, cards, {"sig": "score", "junk": "score"}


def _fit(results, values, cards, kinds, **params):
    return dsim.get_predictor("prior-evidence", **params).fit(results, values, cards, kinds)


def test_ranks_chest_with_prior_evidence_and_uncertainty_per_row(tmp_path, monkeypatch):
    monkeypatch.setenv("DSIM_PREDICTOR_DIR", str(tmp_path))
    ranking = dsim.rank("chest")  # the default, fitted on the shipped evidence
    assert ranking.predictor == "prior-evidence"
    pred = [r for r in ranking.rows if r.status == "predicted"]
    assert pred and all(r.prior is not None and r.evidence is not None for r in pred)
    for r in pred:  # score = prior + evidence, on the measured scale
        assert r.score == pytest.approx(r.prior + r.evidence)
        assert r.uncertainty and r.uncertainty > 0
    assert len({round(r.uncertainty, 6) for r in pred}) > 1  # a source with more history is surer
    d = ranking.to_dict()["rows"][1]
    assert {"prior", "evidence", "evidence_parts", "tied_with_first"} <= set(d)
    assert any(r.tied_with_first for r in ranking.rows) and not ranking.rows[0].tied_with_first


def test_shrinkage_pulls_a_source_with_one_result_toward_zero():
    results, values, cards, kinds = _table()
    # "lucky" was measured once and came out best by far; "steady" as good on every target
    extra = [
        dsim.TransferResult("lucky", "t0", 0, 0.95, origin="test", setup="tab"),
    ]
    pred = _fit(results + extra, values, cards, kinds)
    st = pred.get_state()
    lucky = dict(st["track"]["lucky"])
    assert lucky["t0"] > 1.5  # its one z-score is high
    c = [dsim.Candidate(source=dsim.DatasetCard(name=n)) for n in ("lucky", "s0")]
    exp = pred.explain(dsim.DatasetCard(name="new"), c)
    prior_lucky, *_rest, unc_lucky = exp["lucky"]
    assert prior_lucky == pytest.approx(lucky["t0"] / (1 + st["k"]))  # n / (n + k) of its mean
    assert 0 < prior_lucky < lucky["t0"]
    assert unc_lucky > exp["s0"][4]  # one result: less sure than a source with nine


def test_evidence_with_held_out_gain_is_weighed_and_junk_is_skipped_with_a_note():
    results, values, cards, kinds = _table(signal=1.0, track=0.3)
    pred = _fit(results, values, cards, kinds)
    st = pred.get_state()
    assert st["evidence"].get("sig", 0) > 0 and "junk" not in st["evidence"]
    assert 0 < st["reliability"] <= 1

    class M:
        needs = "images"

    why = pred.unused_measures({"junk": M(), "otdd": M(), "sig": M()})
    assert set(why) == {"junk", "otdd"}  # sig is used: computed
    assert "image measures add nothing measurable on held-out targets" in why["junk"]
    assert "--measures junk,otdd" in why["junk"]
    tcard = dsim.DatasetCard(name="new")
    rng = np.random.default_rng(5)
    cands = [
        dsim.Candidate(source=cards[f"s{s}"], values={"sig": float(v), "junk": float(rng.normal())})
        for s, v in enumerate(rng.normal(0, 1, 8))
    ]
    rk = pred.rank(tcard, cands, [], kinds)
    assert all(set(r.evidence_parts) == {"sig"} for r in rk.rows)
    assert all(r.score == pytest.approx(r.prior + r.evidence) for r in rk.rows)


def test_no_evidence_gain_no_evidence_and_the_ranking_skips_those_measures(tmp_path, monkeypatch):
    monkeypatch.setenv("DSIM_PREDICTOR_DIR", str(tmp_path))
    results, values, cards, kinds = _table(signal=0.0)
    pred = _fit(results, values, cards, kinds)
    assert pred.get_state()["evidence"] == {}
    ranking = dsim.rank("chest")  # shipped evidence: which measures it skips, one line per kind
    skipped = [s for s in ranking.skipped if s.get("measure") and s["reason"].startswith("not computed")]
    assert "otdd" in {s["measure"] for s in skipped}  # never judged beside fine-tuning results
    # the expert distance ranks above chance alone on the held-out targets of the shipped evidence
    # (dsim's CPU matrices carry it): computed, for candidates without a track record
    gains = evidence_predictor()[0].get_state()["gains"]
    assert gains["expert"]["tau_alone"] > 0 and "expert" not in {s["measure"] for s in skipped}
    assert all("--measures" in s["reason"] for s in skipped)
    assert len({s["reason"] for s in skipped}) <= 4  # one reason per kind of measure
    otdd = next(s["reason"] for s in skipped if s["measure"] == "otdd")
    assert otdd.startswith("not computed: image measures")


def test_loto_evaluation_runs_with_progress_and_is_level_with_track_record():
    results, values, cards, kinds = _table(n_targets=7)
    seen = []
    rows = evaluate_loto(
        lambda: dsim.get_predictor("prior-evidence"),
        results,
        values,
        cards,
        kinds,
        family=lambda t: set(),
        progress=lambda t, i, n: seen.append((t, i, n)),
    )
    assert len(rows) == 7 and [i for _, i, _ in seen] == list(range(7))
    track = evaluate_loto(
        lambda: dsim.get_predictor("track-record"), results, values, cards, kinds, family=lambda t: set()
    )
    mean = lambda rs: float(np.mean([r["weighted_tau"] for r in rs]))  # noqa: E731
    assert mean(rows) > mean(track) - 0.1


def test_juodelyte_table_evaluates_against_track_record():
    res = [r for r in dsim.known_results() if r.setup == "juodelyte2024:resnet18:224px"]
    meta = meta_dataset("j", res, [v for v in dsim.known_measure_values() if v.origin == res[0].origin])
    rows = evaluate_loto(
        lambda: dsim.get_predictor("prior-evidence"), meta.results, meta.values, meta.cards, meta.kinds
    )
    assert len(rows) == 12 and all(-1 <= r["weighted_tau"] <= 1 for r in rows)


def test_a_new_result_refits_the_default_and_the_ranking_says_so(fresh_plugins, tmp_path, monkeypatch):
    from dsim.validation.store import ORIGIN, ResultsStore

    monkeypatch.setenv("DSIM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DSIM_RESULTS", str(tmp_path / "results.sqlite"))
    before = dsim.rank("chest")
    assert any("shipped with dsim" in n for n in before.notes)
    with ResultsStore(tmp_path / "results.sqlite") as store:
        store.import_results([dsim.TransferResult("kimia", "chest", 0, 0.97, origin=ORIGIN, setup="lab")])
    fresh_plugins.reset()  # a new process reads the store afresh
    after = dsim.rank("chest")
    note = next(n for n in after.notes if n.startswith("predictor:"))
    n = len(dsim.known_results())  # the shipped evidence plus the new result
    assert "fitted now" in note and f"{n} results" in note and " s " in note.replace(" s;", " s ")


def test_weighted_tau_is_scipys():
    from scipy.stats import weightedtau

    from dsim_plugins.prior_evidence import _wtau

    rng = np.random.default_rng(1)
    for i in range(200):
        n = int(rng.integers(3, 25))
        x = rng.integers(0, 4, n).astype(float) if i % 2 else rng.normal(size=n)
        y = rng.normal(size=n)
        if np.ptp(x) == 0:  # a constant score: no ranking (0 here, NaN in scipy)
            assert _wtau(x, y) == 0.0
            continue
        assert _wtau(x, y) == pytest.approx(weightedtau(x, y).statistic, abs=1e-12)


def test_candidates_without_track_record_are_ranked_by_evidence_alone():
    """A user's own checkpoints have no history: the prior cannot tell them apart, so each
    measure ranks with its held-out weighted tau alone as weight, and the note says so."""
    results, values, cards, kinds = _table(signal=1.0, track=0.3)
    pred = _fit(results, values, cards, kinds)
    assert pred.get_state()["gains"]["sig"]["tau_alone"] > 0.3
    cands = [
        dsim.Candidate(source=dsim.DatasetCard(name=f"mine{i}"), values={"sig": float(i)}) for i in range(5)
    ]
    rk = pred.rank(dsim.DatasetCard(name="new"), cands, [], kinds)
    assert rk.sources == [f"mine{i}" for i in (4, 3, 2, 1, 0)]
    assert rk.rows[0].evidence_parts["sig"]["weight"] == pytest.approx(
        pred.get_state()["gains"]["sig"]["tau_alone"]
    )
    assert any("no candidate has a track record" in n for n in rk.notes)

    # a measure ranking on its own is not skipped by default, though it adds nothing to a prior
    class M:
        needs = "source-model"

    assert "sig" not in pred.unused_measures({"sig": M()})


def test_rank_table_shows_prior_evidence_and_marks_rows_not_told_apart(capsys, monkeypatch):
    from dsim.cli import main

    monkeypatch.setenv("COLUMNS", "120")
    assert main(["rank", "--target", "chest"]) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if "source" in line and "status" in line)
    assert "prior" in head and "evid." in head and "≈" in head
    assert "≈: not told apart from #1" in out
    rows = [line for line in out.splitlines() if line.strip()[:2].strip().isdigit()]
    assert rows[0].rstrip()[-1] != "≈" and any(r.rstrip().endswith("≈") for r in rows[1:])


def test_learned_predictors_by_name_are_fitted_on_the_evidence(tmp_path, monkeypatch):
    """The track record (and the meta-ranker) stay available by name: fitted on the evidence
    like the default, not a fresh unfitted instance."""
    monkeypatch.setenv("DSIM_CACHE_DIR", str(tmp_path))
    ranking = dsim.rank("chest", predictor="track-record")
    assert ranking.predictor == "track-record" and ranking.rows[0].source == "imagenet"
    assert any(n.startswith("predictor: track-record fitted on the evidence") for n in ranking.notes)
    assert dsim.rank("chest", predictor="rank-aggregation").predictor == "rank-aggregation"


def test_fold_fitter_fits_each_fold_exactly_as_fit_on_the_rest():
    """Leave-one-target-out shares the folds' work (each target's rows built once) and must give
    the very fit that fit() on the remaining results gives, on the shipped evidence (every table,
    its measures and cards) and on a table with evidence that is kept."""
    shipped = meta_dataset("shipped", dsim.known_results())
    gen = _table(n_targets=9, signal=1.0)
    for results, values, cards, kinds, held in (
        (shipped.results, shipped.values, shipped.cards, shipped.kinds, ["chest", "isic", "pathmnist"]),
        (*gen, ["t0", "t4"]),
    ):
        fit_without = dsim.get_predictor("prior-evidence").fold_fitter(results, values, cards, kinds)
        for t in held:
            fam = dsim.get_registry().family(t) | {t}
            rest_r = [r for r in results if r.target not in fam]
            rest_v = [v for v in values if v.target not in fam]
            fresh = _fit(rest_r, rest_v, cards, kinds).get_state()
            shared = fit_without(fam).get_state()
            assert shared == fresh and fresh["n_targets"] > 0
    assert _fit(*gen).get_state()["evidence"]  # the generated table's evidence is kept (not a no-op)


def test_cpu_matrices_ship_as_evidence_each_setup_with_its_baseline():
    """dsim's own CPU matrices are known results (origin dsim:cpu-matrix): every setup has a
    from-scratch baseline per target, so each (setup, target) is a task with a measured T, and
    no (setup, source, target, fold, repeat) is measured twice (two experiments never share a
    setup name); the default is fitted on them."""
    from collections import Counter

    own = [r for r in dsim.known_results() if r.origin == "dsim:cpu-matrix"]
    assert len(own) > 1000
    keys = Counter((r.setup, r.source, r.target, r.fold, r.repeat) for r in own)
    assert max(keys.values()) == 1
    setups = {r.setup for r in own}
    for setup, target in {(r.setup, r.target) for r in own if r.source != r.target}:
        assert any(r.setup == setup and r.source == r.target == target for r in own), (setup, target)
    assert any(s.endswith(":per-repeat-pretraining") for s in setups)
    pred, note = evidence_predictor()
    assert "dsim:cpu-matrix" in note
    assert any(
        t in {"cifar10-sample", "usps", "coil20"} for s in pred.get_state()["track"].values() for t, _ in s
    )

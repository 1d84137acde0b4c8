"""The results store: one row per finished fold keyed by RunSpec content, WAL, import, export."""

from __future__ import annotations

import sqlite3

import pytest

import dsim
from dsim.validation.store import ResultsStore, setup_of


def _spec(**kw):
    d = dict(
        source="usps",
        target="breastmnist",
        backbone="smallcnn",
        strategy="finetune",
        fold=0,
        seed=0,
        folds=3,
        hyperparameters={"epochs": 3, "train_size": 100},
        fingerprints={"target": "abc"},
    )
    d.update(kw)
    return dsim.RunSpec(**d)


def test_put_get_roundtrip_and_key_by_content(tmp_path):
    st = ResultsStore(tmp_path / "r.sqlite")
    s = _spec()
    assert not st.has(s.key)
    r = dsim.RunResult(
        spec=s,
        metrics={"auc": 0.8, "accuracy": 0.7, "kappa": 0.4},
        timings={"total_s": 1.0},
        checkpoint="c" * 64,
        notes=("retried",),
    )
    st.put(r)
    assert st.has(s.key) and len(st) == 1
    back = st.get(s.key)
    assert back.spec == s and back.metrics["auc"] == 0.8 and back.notes == ("retried",)
    # the same content is the same key: a second put replaces, never duplicates
    st.put(r)
    assert len(st) == 1
    # any change of content is another key
    assert _spec(hyperparameters={"epochs": 4, "train_size": 100}).key != s.key
    assert _spec(fingerprints={"target": "abd"}).key != s.key
    row = st.rows(target="breastmnist")[0]
    assert row["setup"] == "dsim:smallcnn:28px:n100" and row["origin"] == "dsim validate"
    assert st.rows(target="other") == []


def test_wal_mode_and_concurrent_reader(tmp_path):
    path = tmp_path / "r.sqlite"
    st = ResultsStore(path)
    mode = sqlite3.connect(str(path)).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"
    reader = ResultsStore(path)
    for f in range(3):
        st.put(dsim.RunResult(spec=_spec(fold=f), metrics={"auc": 0.6 + f / 10}))
        assert len(reader) == f + 1  # a second connection sees every committed row at once


def test_scratch_baseline_is_source_equals_target(tmp_path):
    st = ResultsStore(tmp_path / "r.sqlite")
    base = _spec(source="breastmnist", strategy="scratch")
    st.put(dsim.RunResult(spec=base, metrics={"auc": 0.7}))
    st.put(dsim.RunResult(spec=_spec(), metrics={"auc": 0.77}))
    st.put(dsim.RunResult(spec=_spec(strategy="linear-probe"), metrics={"auc": 0.75}))
    tr = {(r.source, r.setup): r for r in st.transfer_results()}
    assert tr[("breastmnist", "dsim:smallcnn:28px:n100")].auc == 0.7
    assert tr[("usps", "dsim:smallcnn:28px:n100")].auc == 0.77
    # other strategies are another protocol: their own setup
    assert ("usps", "dsim:smallcnn:28px:n100:linear-probe") in tr
    assert setup_of(base) == setup_of(_spec())


def test_failures_are_recorded_and_cleared_by_success(tmp_path):
    st = ResultsStore(tmp_path / "r.sqlite")
    s = _spec()
    st.put_failure(s, f"{s.label}: loss became nan")
    assert st.failures()[0]["label"] == s.label
    st.put(dsim.RunResult(spec=s, metrics={"auc": 0.9}))
    assert st.failures() == []


def test_import_published_table(tmp_path):
    st = ResultsStore(tmp_path / "r.sqlite")
    published = [r for r in dsim.known_results() if r.origin.startswith("published")]
    assert published, "the published plugin brings the cats-scans table"
    n = st.import_published()
    assert n == len(published) == len(st)
    assert st.import_published() == n and len(st) == n  # idempotent
    rows = st.rows(origin="published")
    assert {r["target"] for r in rows} >= {"chest", "bloodmnist"}
    assert all(r["backbone"] == "resnet50" for r in st.rows(origin="published:cats-scans"))
    assert all(r["backbone"] == "resnet18" for r in rows if r["setup"] == "juodelyte2024:resnet18:224px")
    assert st.transfer_results() == []  # only dsim's own runs (and imported tables) by default
    assert len(st.transfer_results(include_published=True)) == n
    assert len(st.transfer_results(include_imported=True)) == n  # the older name


def test_results_store_plugin_marks_validated_results_known(tmp_path, monkeypatch, fresh_plugins):
    path = tmp_path / "r.sqlite"
    monkeypatch.setenv("DSIM_RESULTS", str(path))
    fresh_plugins.reset()
    before = [r for r in dsim.known_results() if r.origin == "dsim validate"]
    assert before == []
    assert not path.exists()  # reading does not create a store
    st = ResultsStore(path)
    st.put(dsim.RunResult(spec=_spec(), metrics={"auc": 0.81}))
    st.import_published()
    fresh_plugins.reset()
    mine = [r for r in dsim.known_results() if r.origin == "dsim validate"]
    assert [(r.source, r.target, r.auc) for r in mine] == [("usps", "breastmnist", 0.81)]
    # published rows come once (from the published plugin), not twice
    pub = [r for r in dsim.known_results() if r.origin.startswith("published")]
    assert len(pub) == len({(r.setup, r.source, r.target, r.fold, r.repeat) for r in pub})


def test_a_result_written_in_this_process_is_seen_by_the_next_rank(tmp_path, monkeypatch, fresh_plugins):
    """No ``reset()`` between the write and the rank: the known results follow the store."""
    monkeypatch.setenv("DSIM_RESULTS", str(tmp_path / "r.sqlite"))
    fresh_plugins.reset()  # this test's store path, before anything is read
    spec = _spec(source="organamnist", target="chest")

    def status():
        return {r.source: r.status for r in dsim.rank("chest").rows}["organamnist"]

    assert status() == "predicted"
    assert not [r for r in dsim.known_results() if r.origin == "dsim validate"]
    with ResultsStore() as st:
        st.put(dsim.RunResult(spec=spec, metrics={"auc": 0.5}))
        st.put(
            dsim.RunResult(
                spec=_spec(source="chest", target="chest", strategy="scratch"), metrics={"auc": 0.9}
            )
        )
        mine = [(r.source, r.auc) for r in dsim.known_results() if r.origin == "dsim validate"]
        assert sorted(mine) == [("chest", 0.9), ("organamnist", 0.5)]  # seen while the store is open
    assert status() == "measured"
    st = ResultsStore()
    st.put(dsim.RunResult(spec=_spec(source="organamnist", target="chest", fold=1), metrics={"auc": 0.6}))
    assert len([r for r in dsim.known_results() if r.origin == "dsim validate"]) == 3


def test_unreadable_store_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(dsim.DsimError) as e:
        ResultsStore(bad)
    assert "bad.sqlite" in str(e.value) and "\n" not in str(e.value)

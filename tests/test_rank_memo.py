"""A ranking remembered by its content (dsim.ranking.memo): the same ranking asked again is read
back equal to a fresh one; a new result in the store is another key, ranked again."""

from __future__ import annotations

import dsim

RULE = "rank-aggregation"  # a fixed rule: nothing is fitted, so the test stays fast


def test_a_remembered_ranking_equals_a_fresh_one_and_a_new_store_result_is_ranked_again(
    tmp_path, monkeypatch
):
    cache, store = tmp_path / "cache", tmp_path / "results.sqlite"
    monkeypatch.setenv("DSIM_CACHE_DIR", str(cache))
    monkeypatch.setenv("DSIM_RESULTS", str(store))
    cls = type(dsim.get_predictor(RULE))
    calls = []
    real = cls.rank

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "rank", counted)

    first = dsim.rank("chest", predictor=RULE)
    again = dsim.rank("chest", predictor=RULE)
    assert len(calls) == 1  # the second was read back
    assert len(list((cache / "rankings").rglob("*.json"))) == 1
    fresh = dsim.rank("chest", predictor=dsim.get_predictor(RULE))  # an object: never remembered
    assert len(calls) == 2
    assert again == first == fresh
    assert again.to_dict() == fresh.to_dict()

    last = first.rows[-1]
    assert last.status == "measured" and last.setup
    with dsim.ResultsStore(store) as st:
        st.import_table(  # a user's results table, as `dsim results import` writes it
            [
                dsim.TransferResult(
                    source=last.source,
                    target="chest",
                    fold=99,
                    auc=0.999,
                    origin="imported:test",
                    setup=last.setup,
                )
            ],
            table_id="test",
        )
    after = dsim.rank("chest", predictor=RULE)
    assert len(calls) == 3  # the store changed: ranked again, not read back
    assert len(list((cache / "rankings").rglob("*.json"))) == 2
    row = next(r for r in after.rows if r.source == last.source)
    assert row.n_measured == last.n_measured + 1 and row.measured_auc > last.measured_auc
    assert after == dsim.rank("chest", predictor=dsim.get_predictor(RULE))


def test_an_unreadable_remembered_ranking_is_ranked_again(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DSIM_CACHE_DIR", str(cache))
    monkeypatch.setenv("DSIM_RESULTS", str(tmp_path / "results.sqlite"))
    first = dsim.rank("chest", predictor=RULE)
    (entry,) = (cache / "rankings").rglob("*.json")
    entry.write_text('{"key": "')  # a torn write from elsewhere
    assert dsim.rank("chest", predictor=RULE) == first
    assert dsim.rank("chest", predictor=RULE) == first  # rewritten, read back

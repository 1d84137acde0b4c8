"""`dsim results import FILE.csv --setup NAME`: a results table of one's own, checked row by row and
imported in one transaction; the store's repeat column and the migration of an older file."""

from __future__ import annotations

import json
import sqlite3

import pytest

import dsim
from dsim.cli import main
from dsim.validation.store import ResultsStore

SETUP = "my-lab:resnet50:224px"


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def _table(tmp_path):
    """A study dsim has never seen: two targets of its own, one with a baseline, sources named by
    card names, aliases and names of its own; two folds x two repeats; a hyper-parameter."""
    rows = ["source,target,auc,fold,repeat,accuracy,kappa,lr,note"]
    aucs = {"ImageNet": 0.90, "chest-xray": 0.86, "lab-ct-scans": 0.84, "knee-mri": 0.80}
    for f in (0, 1):
        for rep in (0, 1):
            for s, a in aucs.items():
                a2 = a + 0.01 * f - 0.005 * rep
                rows.append(f"{s},knee-mri,{a2:.4f},{f},{rep},0.7,0.4,0.01,run {f}{rep}")
            rows.append(f"imagenet,pneumoniamnist,{0.95 - 0.01 * f:.3f},{f},{rep},,,0.001,")
    return _write(tmp_path / "my_study.csv", rows)


def _store_rows(path):
    with ResultsStore(path) as st:
        return sorted((r["key"], r["auc"]) for r in st.rows())


def test_import_a_table_dsim_has_never_seen(tmp_path, monkeypatch, capsys, fresh_plugins):
    store = tmp_path / "r.sqlite"
    f = _table(tmp_path)
    assert main(["results", "import", str(f), "--setup", SETUP, "--store", str(store), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["imported"] == 4 * 4 + 4 and s["replaced"] == 0
    assert s["origin"] == "imported:my_study.csv" and s["setup"] == SETUP
    # aliases are stored under their card's name; names no card knows are the table's own
    assert s["renamed"] == {"ImageNet": "imagenet", "chest-xray": "chest"}
    assert s["unknown_names"] == ["knee-mri", "lab-ct-scans"]
    assert s["has_baselines"] and s["baseline_targets"] == ["knee-mri"]
    assert s["targets_without_baseline"] == ["pneumoniamnist"]
    assert s["hyperparameters"] == ["lr", "note"]
    assert any("ranked on AUC" in line for line in s["lines"])

    with ResultsStore(store) as st:
        rows = st.rows(target="knee-mri")
        assert {r["repeat"] for r in rows} == {0, 1} and {r["fold"] for r in rows} == {0, 1}
        base = [r for r in rows if r["source"] == "knee-mri"]
        assert len(base) == 4 and {r["strategy"] for r in base} == {"scratch"}
        assert rows[0]["hyperparameters"]["lr"] == 0.01 and rows[0]["hyperparameters"]["note"].startswith(
            "run"
        )
        tr = st.transfer_results()  # imported tables are the store's own results
    assert len(tr) == s["imported"] and {r.setup for r in tr} == {SETUP}
    assert {(r.repeat, r.fold) for r in tr if r.target == "knee-mri"} == {(0, 0), (0, 1), (1, 0), (1, 1)}

    # the results_store plugin brings them to dsim.known_results (published ones stay with their plugins)
    monkeypatch.setenv("DSIM_RESULTS", str(store))
    fresh_plugins.reset()
    known = dsim.known_results()
    mine = [r for r in known if r.origin == "imported:my_study.csv"]
    assert len(mine) == s["imported"]
    pub = [r for r in known if r.origin.startswith("published")]
    assert len(pub) == len({(r.setup, r.source, r.target, r.fold, r.repeat) for r in pub})

    # importing the same table again replaces it: nothing is counted twice
    assert main(["results", "import", str(f), "--setup", SETUP, "--store", str(store), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["replaced"] == s["imported"]
    with ResultsStore(store) as st:
        assert len(st) == s["imported"]


def test_a_table_without_baselines_is_ranked_on_auc(tmp_path, capsys):
    f = _write(tmp_path / "t.csv", ["source,target,auc", "imagenet,breastmnist,0.8", "usps,breastmnist,0.7"])
    assert main(["results", "import", str(f), "--setup", "x", "--store", str(tmp_path / "r.sqlite")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "no target-only baselines" in out and "ranked on AUC" in out


BAD = {
    "missing column": (["source,target,fold", "a,b,0"], "line 1", "'auc'"),
    "not a number": (["source,target,auc", "a,b,0.8", "c,b,high"], "line 3", "'auc'"),
    "nan": (["source,target,auc", "a,b,nan"], "line 2", "'auc'"),
    "auc above 1": (["source,target,auc", "a,b,0.8", "c,b,87.5"], "line 3", "'auc'"),
    "auc below 0": (["source,target,auc", "a,b,-0.1"], "line 2", "'auc'"),
    "duplicate": (["source,target,auc,fold", "a,b,0.8,0", "c,b,0.7,0", "a,b,0.81,0"], "line 4", "line 2"),
    "duplicate via an alias": (
        ["source,target,auc", "imagenet,b,0.8", "ILSVRC2012,b,0.7"],
        "line 3",
        "line 2",
    ),
    "fractional fold": (["source,target,auc,fold", "a,b,0.8,1.5"], "line 2", "'fold'"),
    "negative repeat": (["source,target,auc,repeat", "a,b,0.8,-1"], "line 2", "'repeat'"),
    "accuracy above 1": (["source,target,auc,accuracy", "a,b,0.8,80"], "line 2", "'accuracy'"),
    "empty source": (["source,target,auc", ",b,0.8"], "line 2", "'source'"),
    "ragged row": (["source,target,auc", "a,b,0.8,extra"], "line 2", "values"),
    "reserved origin": (["source,target,auc,origin", "a,b,0.8,published:mine"], "line 2", "'origin'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_table_is_one_line_naming_line_and_column_and_nothing_is_imported(case, tmp_path, capsys):
    store = tmp_path / "r.sqlite"
    good = _write(tmp_path / "good.csv", ["source,target,auc", "imagenet,breastmnist,0.8"])
    assert main(["results", "import", str(good), "--setup", "s", "--store", str(store)]) == 0
    before = _store_rows(store)
    capsys.readouterr()
    lines, where, what = BAD[case]
    bad = _write(tmp_path / "bad.csv", lines)
    assert main(["results", "import", str(bad), "--setup", "s", "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: bad.csv"), err
    assert where in err[0] and what in err[0], err[0]
    assert "Traceback" not in err[0]
    assert _store_rows(store) == before  # nothing of the bad table landed


def test_missing_file_and_missing_setup_are_one_line(tmp_path, capsys):
    assert main(["results", "import", str(tmp_path / "nope.csv"), "--setup", "s"]) == 2
    assert "nope.csv" in capsys.readouterr().err
    f = _write(tmp_path / "t.csv", ["source,target,auc", "a,b,0.8"])
    assert main(["results", "import", str(f), "--setup", " ", "--store", str(tmp_path / "r.sqlite")]) == 2
    assert "--setup" in capsys.readouterr().err


def test_the_import_is_one_transaction(tmp_path):
    """A failure while writing (here: a result the store cannot write) rolls back everything,
    including the removal of the earlier import it was replacing."""
    path = tmp_path / "r.sqlite"
    ok = [dsim.TransferResult("a", "b", fold=f, auc=0.8, origin="imported:t", setup="s") for f in range(3)]
    with ResultsStore(path) as st:
        assert st.import_table(ok, table_id="t") == (3, 0)
        broken = [*ok[:2], dsim.TransferResult("a", "b", fold="x", auc=0.7, origin="imported:t", setup="s")]
        with pytest.raises(ValueError):
            st.import_table(broken, table_id="t")
        assert sorted(r.fold for r in st.transfer_results()) == [0, 1, 2]
        assert {r.auc for r in st.transfer_results()} == {0.8}


OLD_SCHEMA = """
CREATE TABLE runs (
    key TEXT PRIMARY KEY, source TEXT NOT NULL, target TEXT NOT NULL, backbone TEXT NOT NULL,
    strategy TEXT NOT NULL, fold INTEGER NOT NULL, seed INTEGER NOT NULL, setup TEXT NOT NULL,
    auc REAL, accuracy REAL, kappa REAL, metrics TEXT NOT NULL, timings TEXT NOT NULL, spec TEXT,
    checkpoint TEXT, notes TEXT NOT NULL DEFAULT '[]', origin TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE failures (key TEXT PRIMARY KEY, label TEXT NOT NULL, error TEXT NOT NULL, created REAL NOT NULL);
"""


def test_an_older_store_file_gains_the_repeat_column(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(str(path))
    con.executescript(OLD_SCHEMA)
    con.execute(
        "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        ("k1", "usps", "breastmnist", "smallcnn", "finetune", 2, 1, "dsim:smallcnn:28px", 0.77, 0.7, 0.3,
         '{"auc": 0.77}', "{}", None, None, "[]", "dsim validate", 1.0),
    )  # fmt: skip
    con.execute(
        "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        ("ext:1", "imagenet", "chest", "resnet50", "finetune", 1, 0, "cats-scans:resnet50", 0.98, None, None,
         '{"auc": 0.98}', "{}", None, None, "[]", "published:cats-scans", 1.0),
    )  # fmt: skip
    con.commit()
    con.close()
    with ResultsStore(path) as st:
        cols = {r[1] for r in st._con.execute("PRAGMA table_info(runs)")}
        assert {"repeat", "hyperparameters"} <= cols
        (old,) = st.transfer_results()  # the copied published row stays with its plugin
        # an old dsim validate row: its seed is its repetition
        assert (old.source, old.fold, old.auc, old.repeat) == ("usps", 2, 0.77, 1)
        assert [r.repeat for r in st.transfer_results(include_published=True) if r.source == "imagenet"] == [
            0
        ]
        # both old and new rows read and write through the same columns
        spec = dsim.RunSpec("usps", "breastmnist", "smallcnn", "finetune", fold=0, seed=3)
        st.put(dsim.RunResult(spec=spec, metrics={"auc": 0.81}))
        assert sorted((r.repeat, r.auc) for r in st.transfer_results()) == [(1, 0.77), (3, 0.81)]
    with ResultsStore(path) as st:  # opening a migrated file again changes nothing
        assert len(st) == 3
        assert sorted(r.repeat for r in st.transfer_results()) == [1, 3]

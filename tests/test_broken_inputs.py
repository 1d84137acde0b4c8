"""Broken inputs, generated here, against every command: broken checkpoints of every kind, bad zoo
files, bad options of rank, measure, validate, pretrain, results import, zoo and filters, stores
and caches that cannot be written, environment variables naming nothing.

Each case asserts what a user must see: exit code != 0, one line on stderr naming the input at
fault, no traceback, and the results store (which holds rows before every case) unchanged. Most
cases fail before any work starts, so the whole corpus runs in seconds; the corpus itself is
listed by ``python -m pytest tests/test_broken_inputs.py -q -rA``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import dsim
import dsim.kernel.plugins
from dsim.cli import main
from dsim.validation.store import ResultsStore

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root ignores file permissions


@dataclass
class Case:
    id: str
    argv: list[str]
    needles: tuple[str, ...]  # each must be in the error line
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The broken files, generated: checkpoints, zoo files, data sets, a results table."""
    import torch

    d = tmp_path_factory.mktemp("broken")
    net = dsim.create_backbone("smallcnn", weights="random", seed=0)
    good = d / "good_smallcnn.pth"
    torch.save(net.state_dict(), good)
    blob = good.read_bytes()
    (d / "truncated.pth").write_bytes(blob[: len(blob) // 2])
    (d / "empty.pth").write_bytes(b"")
    (d / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save({"epoch": 3, "note": "no tensors here"}, d / "no_tensors.pth")
    torch.save([torch.zeros(3)], d / "a_list.pth")
    torch.save({}, d / "empty_dict.pth")
    (d / "weights").mkdir()
    (d / "weights" / "good_smallcnn.pth").write_bytes(blob)

    def zoo(name: str, text: str) -> Path:
        p = d / name
        p.write_text(text)
        return p

    zoo(
        "zoo_unknown_arch.yaml",
        "checkpoints:\n  - {name: weird, architecture: no-such-net, weights: random}\n",
    )
    zoo(
        "zoo_missing_file.yaml",
        "checkpoints:\n  - {name: ghost, architecture: smallcnn, weights: 'file:ghost.pth'}\n",
    )
    zoo("zoo_not_yaml.yaml", "checkpoints: [unclosed\n  - : :\n")
    zoo("zoo_not_mapping.yaml", "checkpoints:\n  - just a string\n")
    zoo(
        "zoo_unknown_field.yaml",
        "checkpoints:\n  - {name: x, architecture: smallcnn, weights: random, colour: red}\n",
    )
    zoo("zoo_no_weights.yaml", "checkpoints:\n  - {name: x, architecture: smallcnn}\n")
    zoo(
        "zoo_wrong_arch.yaml",
        f"checkpoints:\n  - {{name: mislabelled, architecture: cifar-resnet20, weights: 'file:{d / 'weights' / 'good_smallcnn.pth'}'}}\n",
    )
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (40, 16, 16), dtype=np.uint8)
    np.savez(d / "target.npz", images=imgs, labels=np.arange(40) % 2)
    other = rng.integers(0, 255, (40, 16, 16), dtype=np.uint8)  # not the target's images
    np.savez(d / "one_class.npz", images=other, labels=np.zeros(40, dtype=int))
    np.savez(d / "same_images.npz", images=imgs, labels=np.arange(40) % 2)
    (d / "table.csv").write_text("source,target,auc,fold\nimagenet,lab-knee,0.8,0\nlab-knee,lab-knee,0.7,0\n")
    (d / "bad_table.csv").write_text("src,tgt\nimagenet,knee\n")
    (d / "a_file").write_text("not a folder")
    (d / "a_folder").mkdir()
    return d


@pytest.fixture(scope="module")
def _store_file(corpus):
    """A results store with rows in it (written once); every case must leave them as they are."""
    path = corpus / "results.sqlite"
    assert main(["results", "import", str(corpus / "table.csv"), "--setup", "lab", "--store", str(path)]) == 0
    return path


@pytest.fixture()
def store(_store_file, corpus, monkeypatch):
    monkeypatch.setenv("DSIM_RESULTS", str(_store_file))
    monkeypatch.setenv("DSIM_WEIGHTS_DIR", str(corpus / "weights"))
    return _store_file


def _rows(path: Path) -> list:
    with ResultsStore(path) as st:
        return sorted((r["key"], r["auc"]) for r in st.rows())


def cases(d: Path) -> list[Case]:
    t = str(d / "target.npz")
    rank = ["rank", "--target", t]
    ck = ["--arch", "smallcnn", "-m", "logme", "--max-samples", "40"]
    out: list[Case] = []
    # ------------------------------------------------------------ broken checkpoints (rank)
    for f in ("truncated", "empty", "random", "no_tensors", "a_list", "empty_dict"):
        out.append(Case(f"rank-ckpt-{f}", [*rank, "--sources", str(d / f"{f}.pth"), *ck], (f"{f}.pth",)))
    out += [
        Case(
            "rank-ckpt-other-architecture",
            [*rank, "--sources", str(d / "good_smallcnn.pth"), "--arch", "cifar-resnet20", "-m", "logme"],
            ("good_smallcnn.pth", "does not fit backbone 'cifar-resnet20'", "of the model's"),
        ),
        Case("rank-ckpt-missing-file", [*rank, "--sources", str(d / "nope.pth"), *ck], ("nope.pth",)),
        Case("rank-ckpt-without-arch", [*rank, "--sources", str(d / "good_smallcnn.pth")], ("--arch",)),
        Case(
            "rank-ckpt-unknown-arch",
            [*rank, "--sources", str(d / "good_smallcnn.pth"), "--arch", "nonsense"],
            ("--arch", "nonsense"),
        ),
        Case("rank-timm-unknown", [*rank, "--sources", "timm:does-not-exist"], ("does-not-exist",)),
        Case("rank-timm-empty", [*rank, "--sources", "timm:"], ("timm:",)),
    ]
    # ------------------------------------------------------------ zoo files (rank, zoo)
    zoo_needles = {
        "unknown_arch": ("no-such-net",),
        "missing_file": ("ghost.pth", "DSIM_WEIGHTS_DIR"),
        "not_yaml": ("zoo_not_yaml.yaml",),
        "not_mapping": ("zoo_not_mapping.yaml",),
        "unknown_field": ("colour",),
        "no_weights": ("weights",),
        "wrong_arch": ("good_smallcnn.pth", "cifar-resnet20"),
    }
    for name, needles in zoo_needles.items():
        z = str(d / f"zoo_{name}.yaml")
        out.append(
            Case(f"rank-zoo-{name}", [*rank, "--zoo", z, "-m", "logme", "--max-samples", "40"], needles)
        )
        if name in ("not_yaml", "not_mapping", "unknown_field", "no_weights"):
            out.append(Case(f"zoo-{name}", ["zoo", "--zoo", z], needles))
    out += [
        Case("zoo-missing-file", ["zoo", "--zoo", str(d / "nope.yaml")], ("nope.yaml",)),
        Case(
            "rank-weights-dir-nothing",
            [*rank, "--zoo", str(d / "zoo_missing_file.yaml")],
            ("ghost.pth", "/nowhere/at/all"),
            {"DSIM_WEIGHTS_DIR": "/nowhere/at/all"},
        ),
    ]
    # ------------------------------------------------------------ rank options
    for argv, needles in [
        (["--sources", ",,"], ("--sources", "',,'")),
        (["--sources", "usps,,mnist-test"], ("--sources",)),
        (["--measures", "expert,"], ("--measures",)),
        (["--measures", "no-such-measure"], ("no-such-measure",)),
        (["--top", "0"], ("--top", "0")),
        (["--max-samples", "1"], ("--max-samples", "1")),
        (["--seed", "-1"], ("--seed", "-1")),
        (["-m", "knn", "-o", "knn_k=-5"], ("knn_k", "-5", ">= 1")),
        (["-m", "otdd", "-o", "otdd_max_samples=abc"], ("otdd_max_samples", "'abc'")),
        (["-m", "otdd", "-o", "otdd_max_samples=-5"], ("otdd_max_samples", "-5")),
        (["-m", "otdd", "-o", "otdd_inner=cubic"], ("otdd_inner", "cubic")),
        (["-m", "otdd", "-o", "otdd_entreg=0"], ("otdd_entreg",)),
        (["-m", "expert", "-o", "task2vec_threads=1"], ("task2vec_threads",)),
        (["-o", "no_such_option=1"], ("no_such_option",)),
        (["-o", "novalue"], ("--option", "novalue")),
        (["--predictor", "no-such-predictor"], ("no-such-predictor",)),
        (["--sources", "no-such-dataset"], ("no-such-dataset",)),
    ]:
        out.append(Case("rank" + "".join(argv).replace("-", "_")[:40], [*rank, *argv], needles))
    out += [
        Case("rank-target-empty", ["rank", "--target", ""], ("--target",)),
        Case("rank-target-missing", ["rank", "--target", str(d / "nope.npz")], ("nope.npz",)),
        Case("rank-target-one-class", ["rank", "--target", str(d / "one_class.npz")], ("one_class",)),
        Case("rank-target-folder-empty", ["rank", "--target", str(d / "a_folder")], ("a_folder",)),
    ]
    # ------------------------------------------------------------ measure
    m = ["measure", "--source", "usps", "--target", t]
    out += [
        Case("measure-unknown", [*m, "--measure", "nope"], ("nope",)),
        Case("measure-max-samples", [*m, "--measure", "otdd", "--max-samples", "0"], ("--max-samples",)),
        Case("measure-option-range", [*m, "--measure", "knn", "-o", "knn_k=0"], ("knn_k",)),
        Case(
            "measure-option-type",
            [*m, "--measure", "otdd", "-o", "otdd_image_size=big"],
            ("otdd_image_size", "big"),
        ),
        Case("measure-option-unknown", [*m, "--measure", "otdd", "-o", "otdd_nope=1"], ("otdd_nope",)),
        Case(
            "measure-source-empty",
            ["measure", "--source", "", "--target", t, "--measure", "otdd"],
            ("--source",),
        ),
    ]
    # ------------------------------------------------------------ validate (before the plan)
    v = ["validate", "--target", t, "--measures", "expert", "--folds", "2"]
    src = ["--sources", "usps"]
    for argv, needles in [
        (["--epochs", "-1"], ("--epochs", "-1")),
        (["--pretrain-epochs", "0"], ("--pretrain-epochs", "0")),
        (["--target-max", "0"], ("--target-max", "0")),
        (["--source-max", "1"], ("--source-max", "1")),
        (["--image-size", "3"], ("--image-size", "3")),
        (["--backbone", "no-such-net"], ("--backbone", "no-such-net")),
        (["--strategy", "no-such-strategy"], ("no-such-strategy",)),
        (["--strategy", "finetune,"], ("--strategy",)),
        (["--folds", "1"], ("folds",)),
        (["--top", "0"], ("--top",)),
        (["--train-sizes", "1"], ("--train-sizes",)),
        (["--hp", "no_such_hp=1"], ("no_such_hp",)),
        (["--hp", "lr=abc"], ("lr", "abc")),
        (["--hp", "batch_size=0"], ("batch_size",)),
        (["--data-placement", "nowhere"], ("nowhere",)),
    ]:
        out.append(Case("validate" + "".join(argv).replace("-", "_")[:40], [*v, *src, *argv], needles))
    out += [
        Case("validate-sources-empty", [*v, "--sources", ",,"], ("--sources",)),
        Case("validate-source-unknown", [*v, "--sources", "no-such-dataset"], ("no-such-dataset",)),
        Case(
            "validate-source-one-class",
            [*v, "--sources", str(d / "one_class.npz")],
            ("one_class", "single class"),
        ),
        Case(
            "validate-source-holds-the-target",
            [*v, "--sources", str(d / "same_images.npz")],
            ("same_images", "holds the target's images"),
        ),
        Case(
            "validate-zoo-unknown-arch",
            [*v, "--zoo", str(d / "zoo_unknown_arch.yaml"), "--sources", "weird"],
            ("weird", "no-such-net"),
        ),
        Case(
            "validate-zoo-missing-file",
            [*v, "--zoo", str(d / "zoo_missing_file.yaml"), "--sources", "ghost"],
            ("ghost.pth", "DSIM_WEIGHTS_DIR"),
        ),
        Case("validate-ckpt-truncated", [*v, "--sources", str(d / "truncated.pth")], ("truncated.pth",)),
        Case("validate-target-empty", ["validate", "--target", ""], ("--target",)),
        Case(
            "validate-store-under-a-file", [*v, *src, "--store", str(d / "a_file" / "r.sqlite")], ("a_file",)
        ),
        Case("validate-store-a-folder", [*v, *src, "--store", str(d / "a_folder")], ("a_folder",)),
    ]
    # ------------------------------------------------------------ pretrain
    p = ["pretrain", "--source", "usps"]
    out += [
        Case("pretrain-epochs", [*p, "--epochs", "0"], ("--epochs",)),
        Case("pretrain-backbone", [*p, "--backbone", "no-such-net"], ("--backbone", "no-such-net")),
        Case("pretrain-init", [*p, "--init", "pretrained"], ("--init", "pretrained")),
        Case("pretrain-image-size", [*p, "--image-size", "3"], ("--image-size",)),
        Case("pretrain-max-samples", [*p, "--max-samples", "1"], ("--max-samples",)),
        Case("pretrain-hp", [*p, "--hp", "momentum=0.9"], ("momentum",)),
        Case("pretrain-source-empty", ["pretrain", "--source", ""], ("--source",)),
        Case(
            "pretrain-cache-under-a-file",
            [*p, "--epochs", "1"],
            ("checkpoint folder", "a_file", "DSIM_CACHE_DIR"),
            {"DSIM_CACHE_DIR": str(d / "a_file" / "cache")},
        ),
        Case(
            "validate-cache-under-a-file",
            [*v, *src],
            ("checkpoint folder", "a_file", "DSIM_CACHE_DIR"),
            {"DSIM_CACHE_DIR": str(d / "a_file" / "cache")},
        ),
        Case("pretrain-source-one-class", ["pretrain", "--source", str(d / "one_class.npz")], ("one_class",)),
    ]
    # ------------------------------------------------------------ environment variables
    for var, value, argv in [
        ("DSIM_DEBUG", "maybe", [*rank, "-m", "expert"]),
        ("DSIM_ALLOW_DOWNLOAD", "sometimes", [*v, *src]),
        ("DSIM_OFFLINE", "2", [*m, "--measure", "otdd"]),
        ("DSIM_TRACE", "on", [*p, "--epochs", "1"]),
        ("DSIM_QUIET_PLUGIN_ERRORS", "quiet", [*rank, "-m", "expert"]),
    ]:
        out.append(Case(f"env-{var}-{argv[0]}", argv, (var, repr(value), "0, false, no"), {var: value}))
    out += [
        Case(
            "env-results-a-folder",
            [*rank, "-m", "expert"],
            ("DSIM_RESULTS", "a_folder", "folder"),
            {"DSIM_RESULTS": str(d / "a_folder")},
        ),
        Case(
            "env-results-under-a-file",
            [*v, *src],
            ("DSIM_RESULTS", "a_file"),
            {"DSIM_RESULTS": str(d / "a_file" / "r.sqlite")},
        ),
        Case(
            "env-predictor-dir-a-file",
            [*rank, "-m", "expert"],
            ("DSIM_PREDICTOR_DIR", "a_file"),
            {"DSIM_PREDICTOR_DIR": str(d / "a_file")},
        ),
        Case(
            "env-predictor-dir-fit",
            ["predictor", "fit"],
            ("DSIM_PREDICTOR_DIR", "a_file"),
            {"DSIM_PREDICTOR_DIR": str(d / "a_file" / "predictors")},
        ),
    ]
    # ------------------------------------------------------------ results import
    imp = ["results", "import"]
    out += [
        Case("import-missing", [*imp, str(d / "nope.csv"), "--setup", "x"], ("nope.csv",)),
        Case(
            "import-bad-columns",
            [*imp, str(d / "bad_table.csv"), "--setup", "x"],
            ("bad_table.csv", "source"),
        ),
        Case(
            "import-store-under-a-file",
            [*imp, str(d / "table.csv"), "--setup", "x", "--store", str(d / "a_file" / "r.sqlite")],
            ("a_file",),
        ),
        Case(
            "import-store-a-folder",
            [*imp, str(d / "table.csv"), "--setup", "x", "--store", str(d / "a_folder")],
            ("a_folder",),
        ),
    ]
    # ------------------------------------------------------------ filters
    fl = ["filters", "--out", str(d / "f.png")]
    out += [
        Case("filters-arch", [*fl, "--arch", "no-such-net", "--weights", "random"], ("no-such-net",)),
        Case("filters-weights", [*fl, "--arch", "smallcnn", "--weights", str(d / "nope.pth")], ("nope.pth",)),
        Case(
            "filters-weights-random-bytes",
            [*fl, "--arch", "smallcnn", "--weights", str(d / "random.pth")],
            ("random.pth",),
        ),
        Case(
            "filters-n-null", [*fl, "--arch", "smallcnn", "--weights", "random", "--n-null", "0"], ("n_null",)
        ),
        Case(
            "filters-threshold",
            [*fl, "--arch", "smallcnn", "--weights", "random", "--threshold", "2"],
            ("threshold",),
        ),
    ]
    return out


def _ids(d: Path) -> list[str]:
    return [c.id for c in cases(d)]


CASE_IDS = _ids(Path("/placeholder"))
assert len(CASE_IDS) == len(set(CASE_IDS)), "case ids must be unique"


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_broken_input_is_refused_in_one_line(case_id, corpus, store, monkeypatch, capsys):
    case = next(c for c in cases(corpus) if c.id == case_id)
    for k, val in case.env.items():
        monkeypatch.setenv(k, val)
    before = _rows(store)
    rc = main(case.argv)
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc != 0, f"{case.argv} exited 0; stderr: {err}"
    assert "Traceback" not in err, err
    assert len(errors) == 1, err  # one line, and a warning at most besides it
    assert all(n in errors[0] for n in case.needles), (case.needles, errors[0])
    assert _rows(store) == before  # nothing stored was lost or changed


# ------------------------------------------------------------------ not errors: warned, work goes on
def test_unwritable_cache_works_uncached_with_one_warning(corpus, store, monkeypatch, capsys):
    monkeypatch.setenv("DSIM_CACHE_DIR", str(corpus / "a_file" / "cache"))  # a file where a folder should be
    rc = main(
        [
            "rank",
            "--target",
            str(corpus / "target.npz"),
            "--sources",
            "usps",
            "-m",
            "otdd",
            "--max-samples",
            "40",
            "--json",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning: cache")]
    assert len(warnings) == 1 and "a_file" in warnings[0] and "DSIM_CACHE_DIR" in warnings[0], err


def test_a_data_dir_entry_that_is_not_a_folder_is_named(corpus, store, monkeypatch, capsys):
    monkeypatch.setenv(
        "DSIM_DATA_DIR", os.pathsep.join([str(corpus / "a_file"), os.environ.get("DSIM_DATA_DIR", "")])
    )
    rc = main(["rank", "--target", "chest", "--json"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert any(ln.startswith("warning: DSIM_DATA_DIR") and "a_file" in ln for ln in err.splitlines()), err


@pytest.mark.skipif(AS_ROOT, reason="root ignores file permissions; the store-as-a-folder cases stand in")
def test_read_only_store_is_named_before_any_work(corpus, store, capsys):
    before = _rows(store)
    os.chmod(store, 0o444)
    try:
        rc = main(["results", "import", str(corpus / "table.csv"), "--setup", "other", "--store", str(store)])
    finally:
        os.chmod(store, 0o644)
    err = capsys.readouterr().err
    assert rc != 0 and str(store) in err and "cannot be written" in err and "Traceback" not in err, err
    assert _rows(store) == before


def test_a_store_that_cannot_be_written_is_refused_by_the_api(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as st:
        st.check_writable()  # a fresh store can be written
    ro = ResultsStore.__new__(ResultsStore)  # the same file opened read-only, as a read-only mount does
    import sqlite3

    ro.path = path
    ro._con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    with pytest.raises(dsim.StorageError, match=r"r\.sqlite.*cannot be written.*--store"):
        ro.check_writable()
    ro._con.close()


# ------------------------------------------------------------------ failed candidates beside the ranking
def test_failed_candidates_are_listed_apart_not_ranked(corpus, store, capsys):
    import json

    good, bad = str(corpus / "good_smallcnn.pth"), str(corpus / "truncated.pth")
    argv = ["rank", "--target", str(corpus / "target.npz"), "--sources", f"{good},{bad}"]
    argv += ["--arch", "smallcnn", "-m", "logme", "--max-samples", "40"]
    rc = main([*argv, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [r["source"] for r in out["rows"]] == ["good_smallcnn"]
    (failed,) = out["failed"]
    assert (
        failed["source"] == "truncated"
        and failed["status"] == "failed"
        and "truncated.pth" in failed["reason"]
    )
    rc = main(argv)
    table = capsys.readouterr().out
    assert rc == 0 and "failed truncated (not ranked)" in " ".join(table.split())


# ------------------------------------------------------------------ parameters declare their ranges
def test_every_declared_range_is_checked_where_parameters_are_set():
    for name, m in dsim.list_measures().items():
        for p, r in type(m).param_ranges.items():
            if p not in m.param_names() or r.choices:
                continue
            bad = (r.min - 1) if r.min is not None else (r.max + 1)
            with pytest.raises(dsim.OptionValueError, match=f"option '{p}' of measure '{name}'"):
                m.with_params(**{p: bad})
    # a predictor's numeric parameter takes a number (its default's type) even without a range
    with pytest.raises(dsim.OptionValueError, match="option 'n_members' of predictor 'meta-ranker': 'many'"):
        dsim.get_predictor("meta-ranker", n_members="many")


def test_the_run_context_refuses_parameters_it_would_drop():
    with pytest.raises(
        dsim.DsimError, match=r"'otdd_inner' would be ignored.*create_measure\(name, otdd_inner="
    ):
        dsim.Context(options={"otdd_inner": "exact"})
    with pytest.raises(dsim.DsimError, match="'nope' would be ignored"):
        dsim.Context().with_options(nope=1)
    assert dsim.Context(options={"label": "run 1"}).option("label") == "run 1"


def test_one_line_is_the_one_error_format():
    assert dsim.one_line(ValueError("bad\n  shape")) == "ValueError: bad shape"
    assert dsim.one_line(KeyError()) == "KeyError"
    assert dsim.one_line(dsim.DsimError("x.pth: not readable"), "run 1") == "run 1: x.pth: not readable"


def test_validate_exits_non_zero_unless_every_source_measured_something():
    from dsim.cli.validate import _not_measured
    from dsim.validation.report import SourceRow, ValidationReport

    def row(source, folds, failed, auc):
        return SourceRow(source, "finetune", None, folds, auc, None, None, None, None, None, failed=failed)

    def report(*rows, failures=()):
        return ValidationReport(
            target="t",
            backbone="smallcnn",
            setup="s",
            rows=tuple(rows),
            baseline_auc=0.8,
            spearman=None,
            spearman_n=0,
            runs_total=4,
            runs_done=4 - len(failures),
            runs_skipped=0,
            failures=failures,
        )

    base = row("t", 2, 0, 0.8)
    fail = ({"run": "a->t fold 0", "error": "a->t [finetune, smallcnn, fold 0]: boom"},)
    assert _not_measured(report(base, row("a", 2, 0, 0.9))) is None
    assert "no source run succeeded" in _not_measured(report(base, row("a", 2, 2, None), failures=fail))
    assert "baseline alone" in _not_measured(report(base))  # the baseline alone is never a success
    assert "for b" in _not_measured(report(base, row("a", 2, 0, 0.9), row("b", 2, 2, None), failures=fail))


def test_a_failure_in_every_fold_is_one_line():
    from dsim.validation.validate import same_failure

    errs = [f"usps->t [finetune, smallcnn, fold {i}]: loss became nan" for i in range(5)]
    assert len({same_failure(e) for e in errs}) == 1


def test_a_flag_variable_is_read_one_way(monkeypatch, capsys):
    """1/true/yes are on, 0/false/no/empty off, in any case; anything else is one warning naming
    the variable where it is read on its own (and an error before a command's work)."""
    for value, on in [("1", True), ("TRUE", True), ("yes", True), ("0", False), ("no", False), ("", False)]:
        monkeypatch.setenv("DSIM_ALLOW_DOWNLOAD", value)
        assert dsim.env_flag("DSIM_ALLOW_DOWNLOAD") is on, value
    monkeypatch.setenv("DSIM_ALLOW_DOWNLOAD", "yess")
    assert dsim.env_flag("DSIM_ALLOW_DOWNLOAD") is False
    err = capsys.readouterr().err
    assert err.startswith("warning: DSIM_ALLOW_DOWNLOAD='yess'") and len(err.splitlines()) == 1, err


def test_disabling_an_unknown_plugin_is_a_warning_naming_it(monkeypatch, capsys):
    monkeypatch.setenv("DSIM_DISABLE_PLUGINS", "otdd,no_such_plugin")
    dsim.kernel.plugins.reset()
    try:
        pm = dsim.kernel.plugins.get_plugin_manager()
        assert not pm.has_plugin("otdd") and pm.has_plugin("task2vec")
    finally:
        monkeypatch.delenv("DSIM_DISABLE_PLUGINS")
        dsim.kernel.plugins.reset()
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "DSIM_DISABLE_PLUGINS" in ln]
    assert len(warnings) == 1 and "'no_such_plugin'" in warnings[0], warnings
    assert "otdd" in warnings[0].split("the plugins are:")[1] and "'otdd'" not in warnings[0]

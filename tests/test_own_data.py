"""A user's own data, end to end: the target resolved once (a path, arrays, an ImageSet, a torch
Dataset) is ranked and validated as the same object; its own images are never a candidate for
it (near-duplicates at another resolution, by registered name or by path); facts given with
--fact or a YAML card give it expert features."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import data_file
from gen_data import gratings, one_torch_thread  # noqa: F401 (autouse fixture)
from PIL import Image

import dsim


def run_dsim(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "dsim", *args], capture_output=True, text=True, env=env, timeout=600
    )


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Each image resized with PIL's bilinear filter (another resolution of the same images)."""
    out = [
        np.asarray(
            Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).resize((size, size), Image.BILINEAR)
        )
        for im in images
    ]
    return np.stack(out)


@pytest.fixture(scope="module")
def breast_test(tmp_path_factory):
    """BreastMNIST's test split as a user's .npz (156 ultrasound images, 2 classes)."""
    z = np.load(data_file("breastmnist.npz"))
    path = tmp_path_factory.mktemp("own") / "my_scans.npz"
    np.savez(path, images=z["test_images"], labels=z["test_labels"].reshape(-1))
    return path


@pytest.fixture(scope="module")
def chest64(tmp_path_factory):
    """300 PneumoniaMNIST test images resized to 64 px: a registered set's images at another size."""
    z = np.load(data_file("pneumoniamnist.npz"))
    x, y = z["test_images"][:300], z["test_labels"][:300].reshape(-1)
    path = tmp_path_factory.mktemp("own") / "xrays64.npz"
    np.savez(path, images=_resize(x, 64), labels=y)
    return path, x, y


# ------------------------------------------------------------------ item 3: validate any target
def test_validate_a_npz_path_with_top_2_shows_predicted_beside_measured(breast_test, tmp_path):
    """`dsim validate --target ./file.npz --top 2` ranks that very file (not its stem as a
    name), validates the two best-ranked trainable sources and reports predicted score and rank
    beside measured T, with a Spearman and the top-1 regret."""
    r = run_dsim(
        "validate",
        "--target",
        str(breast_test),
        "--top",
        "2",
        "--backbone",
        "smallcnn-w16",
        "--folds",
        "2",
        "--epochs",
        "1",
        "--pretrain-epochs",
        "1",
        "--target-max",
        "100",
        "--source-max",
        "100",
        "--image-size",
        "16",
        "--measures",
        "expert",
        "--fact",
        "origin=medical",
        "--fact",
        "subject=breast",
        "--store",
        str(tmp_path / "r.sqlite"),
        "--json",
        env_extra={"DSIM_PREDICTOR_DIR": str(tmp_path / "pred")},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["target"] == "my_scans"
    validated = [row for row in rep["rows"] if row["source"] != "my_scans"]
    assert len(validated) == 2 and not rep["failures"], rep
    assert "breastmnist" not in {row["source"] for row in validated}  # holds the target's images
    for row in validated:  # predicted beside measured, for every validated source
        assert row["predicted"] is not None and row["predicted_rank"] >= 1
        assert row["transferability"] is not None and row["measured_rank"] in (1, 2)
    assert rep["spearman_n"] == 2
    if len({row["predicted"] for row in validated}) == 2:
        assert abs(rep["spearman"]) == pytest.approx(1.0)
    else:  # sources the ranking cannot tell apart: no rank correlation, and the report says why
        assert rep["spearman"] is None and any("Spearman undefined" in n for n in rep["notes"])
    best = max(row["auc"] for row in validated)
    first = min(validated, key=lambda row: row["predicted_rank"])
    assert rep["regret_auc"] == pytest.approx(best - first["auc"])
    assert not any("ranking failed" in n for n in rep["notes"]), rep["notes"]


#: the smallest validation that trains every run (a CPU check, not a measurement)
_CHEAP = dict(
    backbone="smallcnn-w16", folds=2, epochs=1, pretrain_epochs=1, image_size=16, source_max=100, device="cpu"
)


def test_validate_ranks_the_same_in_memory_target(tmp_path):
    """dsim.validate on arrays: the ranking it compares with is of those arrays (the in-memory
    sources are not in the registry, so the prediction is for the registered ones)."""
    t = gratings(80, k=2, seed=3, name="g")
    rep = dsim.validate(
        t.images,
        labels=t.labels,
        sources=["usps"],
        measures="expert",
        facts={"origin": "natural", "content": "textures"},
        store=tmp_path / "r.sqlite",
        **_CHEAP,
    )
    assert rep.target.startswith("target-") and not rep.failures
    usps = next(r for r in rep.rows if r.source == "usps")
    assert usps.predicted is not None and usps.predicted_rank == 1 and usps.measured_rank == 1
    assert rep.regret_auc == 0.0


def test_validate_unknown_keyword_lists_the_valid_ones():
    with pytest.raises(dsim.DsimError) as e:
        dsim.validate("breastmnist", epoch=3)
    msg = str(e.value)
    assert "'epoch'" in msg and "did you mean epochs" in msg
    for k in ("epochs", "image_size", "pretrain_epochs", "source_max", "target_max", "folds", "facts"):
        assert k in msg
    assert "\n" not in msg


# ------------------------------------------------------------------ item 6: notebook targets
def _rank_small(target, *args, **kw):
    return dsim.rank(target, *args, measures=["expert"], sources=["usps", "breastmnist"], **kw)


def test_rank_arrays_in_every_layout_is_one_target():
    """dsim.rank(images, labels) on (N,H,W), (N,H,W,1) and (N,C,H,W): the same content, the same
    target (named by its content), ranked."""
    t = gratings(60, k=3, seed=1)
    x = t.images[..., 0]
    names = set()
    for imgs in (x, x[..., None], x[:, None]):
        rt = dsim.resolve_target(imgs, t.labels)
        assert rt.data.images.shape == (60, 28, 28, 1) and rt.card.num_classes == 3
        names.add(rt.name)
    assert len(names) == 1 and names.pop().startswith("target-")
    ranking = dsim.rank(x, t.labels, measures=["expert"], facts={"origin": "natural"})
    assert ranking.rows and ranking.target.startswith("target-")
    rgb = np.repeat(x[:, None], 3, axis=1)  # channel-first colour
    assert dsim.resolve_target(rgb, t.labels).data.images.shape == (60, 28, 28, 3)
    with pytest.raises(dsim.DsimError, match="needs its labels"):
        dsim.resolve_target(x)


def test_rank_an_imageset_and_a_torch_dataset():
    import torch
    from torch.utils.data import TensorDataset

    t = gratings(60, k=2, seed=2, name="grat")
    r1 = _rank_small(t)
    assert r1.target == "grat" and r1.rows
    # torchvision style: (C,H,W) float tensors in [0, 1] and integer labels
    ds = TensorDataset(
        torch.from_numpy(t.images).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(t.labels)
    )
    rt = dsim.resolve_target(ds, name="grat")
    assert rt.data.images.dtype == np.uint8 and np.array_equal(rt.data.images, t.images)  # the same pixels
    assert np.array_equal(rt.data.labels, t.labels) and rt.name == "grat"
    r2 = _rank_small(ds)
    assert r2.rows and r2.target.startswith("target-")


# ------------------------------------------------------------------ item 1: own images excluded
def test_a_registered_source_holding_the_target_at_another_size_is_excluded(chest64):
    path, _, _ = chest64
    ranking = dsim.rank(str(path), sources=["pneumoniamnist", "usps", "breastmnist"], measures=["expert"])
    why = {s["source"]: s["reason"] for s in ranking.skipped if "measure" not in s}
    assert why["pneumoniamnist"].startswith("holds the target's images (100%")
    assert "pneumoniamnist" not in ranking.sources
    assert {"usps", "breastmnist"} <= set(ranking.sources)  # unrelated: kept, not flagged
    assert not any("holds" in n for n in ranking.notes)


def test_a_path_source_with_the_target_images_is_excluded_and_a_partial_one_flagged(chest64, tmp_path):
    """By path too: a copy of the target at 28 px is excluded; a set whose images are 30 % the
    target's (the rest unrelated chest X-rays) stays, flagged with its share."""
    _, x, y = chest64
    copy = tmp_path / "copy28.npz"
    np.savez(copy, images=x, labels=y)
    z = np.load(data_file("pneumoniamnist.npz"))
    other = z["train_images"][:210]
    mix = tmp_path / "mixed.npz"
    np.savez(mix, images=np.concatenate([x[:90], other]), labels=np.r_[y[:90], z["train_labels"][:210, 0]])
    target = tmp_path / "target64.npz"
    np.savez(target, images=_resize(x, 64), labels=y)
    ranking = dsim.rank(str(target), sources=[str(copy), str(mix), "usps"], measures=["expert"])
    why = {s["source"]: s["reason"] for s in ranking.skipped if "measure" not in s}
    assert why["copy28"].startswith("holds the target's images")
    flagged = [n for n in ranking.notes if n.startswith("mixed holds")]
    assert len(flagged) == 1 and "mixed" in ranking.sources
    share = int(flagged[0].split("holds ")[1].split("%")[0])
    assert 25 <= share <= 35  # 90 of the target's 300 images: 30 %


def test_near_duplicate_fingerprints_are_cached_by_content(tmp_path):
    from dsim_plugins.near_duplicates import ThumbnailMatch

    cache = dsim.Cache(tmp_path / "c")
    ctx = dsim.Context(cache=cache)
    t = gratings(50, seed=4, name="a")
    m = ThumbnailMatch()
    assert m.share(t, t, ctx) == 1.0
    renamed = dsim.ImageSet("b", t.images, t.labels)
    before = cache.hits
    assert m.share(renamed, t, ctx) == 1.0 and cache.hits > before  # same content: cached


# ------------------------------------------------------------------ item 2: facts
def test_fact_gives_a_user_target_expert_features(breast_test):
    base = ["rank", "--target", str(breast_test), "--sources", "usps,cifar10-sample", "--measures", "expert"]
    r = run_dsim(*base, "--json")
    assert r.returncode != 0 or "card has no expert features" in r.stdout
    r = run_dsim(
        *base, "--fact", "origin=medical", "--fact", "subject=breast", "--fact", "content=both", "--json"
    )
    assert r.returncode == 0, r.stderr
    rows = {row["source"]: row for row in json.loads(r.stdout)["rows"]}
    expert = rows["usps"]["contributions"]["expert"]
    assert expert["value"] is not None
    assert any("facts: " in n and "subject=breast" in n for n in json.loads(r.stdout)["notes"])
    bad = run_dsim(*base, "--fact", "organ=brain")
    assert bad.returncode != 0 and "unknown fact 'organ'" in bad.stderr and "subject" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    bad = run_dsim(*base, "--fact", "colour=purple")
    assert bad.returncode != 0 and "grey, colour" in bad.stderr


def test_a_yaml_card_beside_the_data_and_facts_in_python(tmp_path, breast_test):
    data = tmp_path / "scans.npz"
    data.write_bytes(breast_test.read_bytes())
    (tmp_path / "scans.dsim.yaml").write_text(
        "origin: medical\nmodality: breast ultrasound\nsubject: breast\n"
    )
    rt = dsim.resolve_target(str(data))
    assert rt.card.origin == "medical" and rt.card.modality == "breast ultrasound"
    assert rt.card.expert == {"origin": "medical", "subject": "breast"}
    rt = dsim.resolve_target(str(data), facts={"Color": "grey", "classes": "few"})
    assert rt.card.expert["colour"] == "grey" and rt.card.expert["subject"] == "breast"
    (tmp_path / "bad.yaml").write_text("origin: medical\nshape: round\n")
    with pytest.raises(dsim.DsimError, match="bad.yaml: unknown fact 'shape'"):
        dsim.resolve_target(str(data), card=str(tmp_path / "bad.yaml"))
    ranking = _rank_small(str(data), facts={"content": "both"})
    assert "expert" in ranking.rows[0].contributions


def test_validate_a_multilabel_array_target_compares_with_its_ranking(tmp_path):
    """Multi-label alike: an (N, L) label matrix is ranked and validated as one target, runs
    scored by the mean per-label AUC, the prediction beside the measurement."""
    from multilabel_data import BLOOD_CLASSES, blood_mosaics

    x, y = blood_mosaics(data_file("blood_pbc_28.npz"), 100, seed=3)
    t = dsim.ImageSet("cells", x, y, class_names=BLOOD_CLASSES)
    rep = dsim.validate(
        t,
        sources=["usps"],
        measures="expert",
        facts={"origin": "medical", "subject": "blood"},
        store=tmp_path / "r.sqlite",
        **_CHEAP,
    )
    assert rep.target == "cells" and not rep.failures, rep.failures
    usps = next(r for r in rep.rows if r.source == "usps")
    assert usps.predicted is not None and usps.predicted_rank == 1 and 0 < usps.auc <= 1
    assert usps.kappa is None  # scored as multi-label


def test_validate_never_trains_on_a_named_source_holding_the_target(chest64, tmp_path):
    """--sources naming a copy of the target's images (another size, another path): not
    validated, with the ranking's reason in the notes; the others run."""
    path, x, y = chest64
    copy = tmp_path / "copy28.npz"
    np.savez(copy, images=x, labels=y)
    rep = dsim.validate(
        str(path),
        sources=[str(copy), "usps"],
        target_max=100,
        measures="expert",
        facts={"origin": "medical"},
        store=tmp_path / "r.sqlite",
        **_CHEAP,
    )
    assert {r.source for r in rep.rows} == {"xrays64", "usps"} and not rep.failures
    assert any(
        n.startswith(f"source {str(copy)!r} not validated: holds the target's images") for n in rep.notes
    )


# ------------------------------------------------------------------ re-validation and ties
def test_revalidation_predicts_blind_to_the_targets_own_results(breast_test, tmp_path, monkeypatch):
    """Validating the same target twice: the second report's predictions are the first's (made
    as if the target's own results were unknown), not its measured T read back from the store;
    the ranking says how many results it held out; a plain `dsim.rank` afterwards shows the
    validated sources as measured."""
    monkeypatch.setenv("DSIM_RESULTS", str(tmp_path / "r.sqlite"))
    srcs = ["pneumoniamnist", "retinamnist"]  # both have a track record: distinct predictions
    reps = [
        dsim.validate(str(breast_test), sources=srcs, measures="expert", target_max=100, **_CHEAP)
        for _ in range(2)
    ]
    first, second = ({r.source: r for r in rep.rows if r.source in srcs} for rep in reps)
    assert reps[1].runs_skipped == reps[1].runs_total  # every run came from the store
    for s in srcs:
        assert second[s].predicted == pytest.approx(first[s].predicted)
        assert second[s].predicted_status == "predicted"
        assert second[s].predicted != pytest.approx(second[s].transferability)
    assert not any("predicted without" in n for n in reps[0].notes)
    assert any("predicted without this target's own 6 results" in n for n in reps[1].notes), reps[1].notes
    after = dsim.rank(str(breast_test), sources=srcs, measures="expert")
    assert {r.source: r.status for r in after.rows} == dict.fromkeys(srcs, "measured")
    assert {r.source: r.score for r in after.rows} == pytest.approx(
        {s: second[s].transferability for s in srcs}
    )
    blind = dsim.rank(str(breast_test), sources=srcs, measures="expert", holdout_target=True)
    assert {r.status for r in blind.rows} == {"predicted"}
    assert {r.source: r.score for r in blind.rows} == pytest.approx({s: second[s].predicted for s in srcs})
    r = run_dsim(
        *("rank", "--target", str(breast_test), "--sources", ",".join(srcs), "--measures", "expert"),
        *("--holdout-target", "--json"),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert {row["status"] for row in doc["rows"]} == {"predicted"}
    assert any(n.startswith("predicted without this target's own 6 results") for n in doc["notes"])


def test_rank_says_when_sources_without_a_track_record_tie_and_how_to_compare():
    """Local sources with no track record and no evidence with held-out gain get the same
    score: one note names them, says why and gives the flags that compare the target's images
    with theirs; those flags do tell them apart."""
    t = gratings(60, k=3, seed=5)
    local = ["blood-pbc-28", "busi-64", "dtd10"]  # local sets no shipped table measured as a source
    ranking = dsim.rank(t.images, labels=t.labels, sources=["imagenet", *local], max_samples=60)
    scores = {r.source: r.score for r in ranking.rows}
    assert len({scores[s] for s in local}) == 1 and scores["imagenet"] != scores["dtd10"]
    note = next(n for n in ranking.notes if "sources tie at" in n)
    assert note.startswith("3 sources tie at") and "no track record" in note, note
    hint = f"--sources {','.join(local)} --measures otdd"
    assert hint in note
    compared = dsim.rank(t.images, labels=t.labels, sources=local, measures="otdd", max_samples=60)
    assert len({r.score for r in compared.rows}) == 3
    assert not any("sources tie at" in n for n in compared.notes)


def test_validate_top_among_tied_sources_is_deterministic_and_said(breast_test, tmp_path, monkeypatch):
    """`--top 2` where the ranking ties the trainable sources: the first two by name that can
    be trained here, and a note saying the choice is not a prediction (with the tie-break). The
    next ranking puts its predictions on the measured T scale (the tied sources at the mean T of
    the measured ones), not in z units beside measured T."""
    monkeypatch.setenv("DSIM_RESULTS", str(tmp_path / "r.sqlite"))
    # without dsim's own CPU matrices every local source is without a track record: they tie
    monkeypatch.setenv("DSIM_DISABLE_PLUGINS", "own_matrices")
    dsim.kernel.plugins.reset()
    try:
        _tied_validation_and_next_ranking(breast_test)
    finally:
        monkeypatch.delenv("DSIM_DISABLE_PLUGINS")
        dsim.kernel.plugins.reset()


def _tied_validation_and_next_ranking(breast_test) -> None:
    rep = dsim.validate(str(breast_test), top=2, target_max=100, **_CHEAP)
    chosen = sorted(r.source for r in rep.rows if r.source != "my_scans")
    note = next(n for n in rep.notes if "chosen among" in n)
    assert note.startswith(", ".join(chosen) + " chosen among"), note
    tied = note.split("(also ")[1].split(")")[0].split(", ")
    assert chosen[-1] < min(t for t in tied if " " not in t), note  # the first by name
    assert "taken first, by name" in note and "not a prediction" in note
    assert len({r.predicted for r in rep.rows if r.source in chosen}) == 1
    # better-ranked sources that cannot be trained here: one grouped note, not one note each
    assert sum("passed over:" in n for n in rep.notes) == 1
    assert not any(n.startswith("ranked source") for n in rep.notes)
    after = dsim.rank(str(breast_test), sources=[*chosen, "usps", "coil20", "imagenet"])
    assert after.score_unit == "transferability %"
    rows = {r.source: r for r in after.rows}
    measured = [rows[s].score for s in chosen]
    assert [rows[s].status for s in chosen] == ["measured", "measured"]
    assert rows["usps"].score == pytest.approx(np.mean(measured))
    assert rows["coil20"].score == pytest.approx(np.mean(measured))
    assert rows["imagenet"].score != pytest.approx(np.mean(measured))

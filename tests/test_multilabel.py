"""Multi-label targets end to end, on mosaics of the shared blood-cell images (tests/
multilabel_data.py): records and their splits, the loaders (npz, csv, medmnist's chestmnist), BCE
training and the per-label metrics (recomputed by hand), the strategies, every measure's reading of a
label matrix, and `dsim rank` / `dsim validate` from the command line as a new user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import data_file
from gen_data import BACKBONE, TINY, TINY_PRETRAIN, one_torch_thread  # noqa: F401 (autouse fixture)
from multilabel_data import BLOOD_CLASSES, blood_mosaics

import dsim
from dsim import DatasetError


def _one_line(exc: BaseException, *words: str) -> str:
    msg = str(exc)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


@pytest.fixture(scope="module")
def blood() -> Path:
    return data_file("blood_pbc_28.npz")


@pytest.fixture(scope="module")
def mosaics(blood) -> dsim.ImageSet:
    """300 two-cell mosaics (28 x 56), about one in fifty without any cell ("no finding")."""
    x, y = blood_mosaics(blood, 300, seed=0)
    return dsim.ImageSet("mosaics", x, y, class_names=BLOOD_CLASSES)


def _npz(path: Path, data: dsim.ImageSet) -> Path:
    np.savez(path, images=data.images, labels=data.labels, label_names=np.array(data.class_names))
    return path


# ------------------------------------------------------------------ records
def test_a_label_matrix_is_a_multilabel_imageset(mosaics):
    assert mosaics.task == "multi-label" and mosaics.multilabel
    assert mosaics.num_classes == 8 and mosaics.class_names == BLOOD_CLASSES
    assert mosaics.labels.shape == (300, 8) and mosaics.labels.dtype == np.int64
    np.testing.assert_array_equal(mosaics.class_counts(), mosaics.labels.sum(0))
    counts = np.bincount(mosaics.labels.sum(1))
    assert counts[0] > 0 and counts[2] > 0  # images without a finding and with two are both there
    # single-label data says what it is, as before
    grades = dsim.ImageSet("r", np.zeros((3, 4, 4)), [0, 1, 2], class_names=("grade 0", "grade 1", "grade 2"))
    assert grades.task == "ordinal" and not grades.multilabel
    assert dsim.ImageSet("b", np.zeros((2, 4, 4)), [0, 1]).task == "multi-class"
    # bad label matrices: one line naming the row and the label
    bad = mosaics.labels.copy()
    bad[7, 2] = 2
    with pytest.raises(DatasetError) as e:
        dsim.ImageSet("m", mosaics.images, bad, class_names=BLOOD_CLASSES)
    _one_line(e.value, "row 7", "'erythroblast'", "0 or 1")
    with pytest.raises(ValueError, match="3 label names for 8 label columns"):
        dsim.ImageSet("m", mosaics.images, mosaics.labels, class_names=("a", "b", "c"))
    with pytest.raises(ValueError, match="multi-label"):
        dsim.ImageSet("m", mosaics.images, mosaics.labels, task="ordinal")


def test_the_fingerprint_covers_the_label_matrix(mosaics):
    other = mosaics.labels.copy()
    other[0, int(np.argmax(other[0] == 0))] = 1  # one more finding on one image
    changed = dsim.ImageSet("m", mosaics.images, other, class_names=BLOOD_CLASSES)
    assert changed.fingerprint() != mosaics.fingerprint()
    # one-hot classes as a multi-label matrix are another target than the same classes
    single = dsim.ImageSet("s", mosaics.images[:8], np.arange(8))
    assert single.with_task("multi-label").fingerprint() != single.fingerprint()
    np.testing.assert_array_equal(single.with_task("multi-label").labels, np.eye(8, dtype=np.int64))
    # the fingerprint of single-label data is what it was: pixels, labels, names, nothing else
    import hashlib

    h = hashlib.sha256()
    h.update(str((single.images.shape, str(single.images.dtype))).encode())
    h.update(np.ascontiguousarray(single.images).tobytes())
    h.update(np.ascontiguousarray(single.labels).tobytes())
    h.update("\x00".join(single.class_names).encode())
    assert single.fingerprint() == h.hexdigest()


def test_iterative_stratification_keeps_every_label_in_every_fold(blood):
    x, y = blood_mosaics(blood, 600, seed=3, grid=(2, 2))
    y[:, 7] = 0
    y[[5, 40, 77, 300, 555], 7] = 1  # a rare finding: five positives for five folds
    data = dsim.ImageSet("quad", x, y, class_names=BLOOD_CLASSES)
    folds = list(data.kfold(k=5, seed=0))
    tests = [te for _, _, te in folds]
    assert sorted(np.concatenate(tests).tolist()) == list(range(600))  # a partition
    assert {len(te) for te in tests} == {120}
    for tr, va, te in folds:
        assert not (set(tr) & set(va)) and not (set(tr) | set(va)) & set(te)
        assert len(tr) + len(va) + len(te) == 600 and len(va) == 60
        assert (y[te].sum(0) > 0).all()  # every label, the rare one too, in every test fold
        assert (y[tr].sum(0) > 0).all()

    # label frequencies of the folds stay closer to the whole set's than a seeded random split's
    def spread(parts):
        whole = y.mean(0)
        return float(np.mean([np.abs(y[p].mean(0) - whole).mean() for p in parts]))

    random_parts = np.array_split(np.random.default_rng(0).permutation(600), 5)
    assert spread(tests) < spread(random_parts)
    # seeded: the same seed the same folds, another seed others
    again = [te for _, _, te in data.kfold(k=5, seed=0)]
    assert all((a == b).all() for a, b in zip(tests, again))
    assert any((a != b).any() for a, b in zip(tests, [te for _, _, te in data.kfold(k=5, seed=1)]))
    # a subsample keeps exactly n images and every label, the rare one included
    sub = data.subsample(40, seed=0)
    assert len(sub) == 40 and (sub.class_counts() > 0).all() and sub.multilabel
    assert data.subsample(40, seed=0).fingerprint() == sub.fingerprint()
    assert data.per_class(10, seed=0).class_counts().min() >= 5  # the rare label has only 5


def test_union_of_a_multilabel_and_a_single_label_source_is_multilabel(mosaics):
    from dsim.data.loading import union

    grey = dsim.ImageSet("g", np.zeros((4, 28, 28, 1), np.uint8), [0, 1, 1, 0], class_names=("a", "b"))
    u = union([mosaics.take(range(10)), grey], "u")
    assert u.multilabel and u.num_classes == 10 and len(u) == 14
    np.testing.assert_array_equal(u.labels[:10, :8], mosaics.labels[:10])
    np.testing.assert_array_equal(u.labels[10:, 8:], [[1, 0], [0, 1], [0, 1], [1, 0]])
    assert not u.labels[:10, 8:].any() and not u.labels[10:, :8].any()


def test_cards_say_their_task():
    reg = dsim.get_registry()
    for name in ("chestmnist", "chestxray14", "chexpert"):
        assert reg.get(name).task == "multi-label"
    assert reg.get("pneumoniamnist").task == ""  # decided from the data
    with pytest.raises(ValueError) as e:
        dsim.DatasetCard.from_dict({"name": "x", "task": "multilabel"})
    _one_line(e.value, "'x'", "task 'multilabel'", "multi-label")


# ------------------------------------------------------------------ loaders
def test_npz_with_a_label_matrix_loads_as_multilabel(tmp_path, mosaics):
    p = _npz(tmp_path / "mosaics.npz", mosaics)
    data = dsim.load_dataset(str(p))
    assert data.multilabel and data.class_names == BLOOD_CLASSES
    np.testing.assert_array_equal(data.labels, mosaics.labels)
    assert data.fingerprint() == mosaics.take(range(300), name="mosaics").fingerprint()
    # splits: a split whose rows all happen to be one-hot stays multi-label with the others
    single = mosaics.labels.sum(1) == 1  # rows with one finding, two of every finding
    one_hot_rows = np.concatenate(
        [np.flatnonzero(single & (mosaics.labels[:, j] == 1))[:2] for j in range(8)]
    )
    one_hot_rows = np.concatenate([one_hot_rows, np.flatnonzero(single)[:4]])
    split = tmp_path / "split.npz"
    np.savez(
        split,
        train_images=mosaics.images[:100],
        train_labels=mosaics.labels[:100],
        test_images=mosaics.images[one_hot_rows],
        test_labels=mosaics.labels[one_hot_rows],
    )
    data = dsim.load_dataset(str(split))
    # one-hot rows alone are one class per image, unless the card says multi-label
    onehot = tmp_path / "onehot.npz"
    np.savez(onehot, images=mosaics.images[one_hot_rows], labels=mosaics.labels[one_hot_rows])
    assert not dsim.load_dataset(str(onehot)).multilabel
    card = dsim.DatasetCard(name="oh", loader="npz", loader_args={"file": str(onehot)}, task="multi-label")
    assert dsim.load_dataset(card).multilabel
    forced = dsim.DatasetCard(
        name="oh", loader="npz", loader_args={"file": str(onehot), "task": "multi-label"}
    )
    assert dsim.load_dataset(forced).labels.shape == (20, 8)
    assert data.multilabel and len(data) == 120 and set(data.split) == {"train", "test"}


@pytest.mark.parametrize(
    "case, words",
    [
        ("uncertain", ["row 3", "label 'ig'", "-1", "CheXpert"]),
        ("two", ["row 3", "label 'ig'", "is 2"]),
        ("nan", ["NaN", "row 3"]),
        ("never positive", ["'platelet'", "never positive"]),
        ("names", ["3 label names", "8 label columns"]),
        ("single-label card", ["card says task 'multi-class'", "multi-label"]),
    ],
)
def test_npz_bad_multilabel_input_is_one_line(tmp_path, mosaics, case, words):
    y = mosaics.labels.astype(np.float64)
    names = np.array(BLOOD_CLASSES)
    card_task = ""
    if case == "uncertain":
        y[3, 3] = -1
    elif case == "two":
        y[3, 3] = 2
    elif case == "nan":
        y[3, 3] = np.nan
    elif case == "never positive":
        y[:, 7] = 0
    elif case == "names":
        names = names[:3]
    else:
        card_task = "multi-class"
    p = tmp_path / "bad.npz"
    np.savez(p, images=mosaics.images, labels=y, label_names=names)
    card = dsim.DatasetCard(name="bad", loader="npz", loader_args={"file": str(p)}, task=card_task)
    with pytest.raises(DatasetError) as e:
        dsim.load_dataset(card)
    _one_line(e.value, *words)
    if case != "single-label card":
        _one_line(e.value, "bad.npz")


def _pngs(folder: Path, data: dsim.ImageSet) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, img in enumerate(data.images):
        Image.fromarray(img).save(folder / f"{i:04d}.png")
        names.append(f"img/{i:04d}.png")
    return names


def test_csv_multilabel_conventions(tmp_path, mosaics):
    data = mosaics.take(range(60))
    files = _pngs(tmp_path / "img", data)
    # one 0/1 column per label (every column but path and split)
    header = "path," + ",".join(BLOOD_CLASSES) + ",split"
    rows = [
        f"{f}," + ",".join(map(str, y)) + f",{'train' if i < 40 else 'test'}"
        for i, (f, y) in enumerate(zip(files, data.labels))
    ]
    (tmp_path / "cols.csv").write_text("\n".join([header, *rows]) + "\n")
    got = dsim.load_dataset(str(tmp_path / "cols.csv"))
    assert got.multilabel and got.class_names == BLOOD_CLASSES and list(got.split[:2]) == ["train"] * 2
    np.testing.assert_array_equal(got.labels, data.labels)
    np.testing.assert_array_equal(got.images, data.images)
    # named label columns; the other columns (CheXpert's Sex, Age) ignored
    header2 = "Path,Sex,Age," + ",".join(BLOOD_CLASSES)
    rows2 = [f"{f},F,{20 + i}," + ",".join(map(str, y)) for i, (f, y) in enumerate(zip(files, data.labels))]
    (tmp_path / "named.csv").write_text("\n".join([header2, *rows2]) + "\n")
    card = dsim.DatasetCard(
        name="named",
        loader="csv",
        loader_args={"path": str(tmp_path / "named.csv"), "label_columns": ",".join(BLOOD_CLASSES)},
    )
    np.testing.assert_array_equal(dsim.load_dataset(card).labels, data.labels)
    # a labels column of |-separated names, NIH's "No Finding" and an empty cell = no finding
    cells = ["|".join(BLOOD_CLASSES[j] for j in np.flatnonzero(y)) for y in data.labels]
    none_rows = [i for i, c in enumerate(cells) if not c]
    cells = [c or ("No Finding" if i % 2 else "") for i, c in enumerate(cells)]
    (tmp_path / "nih.csv").write_text("path,labels\n" + "".join(f"{f},{c}\n" for f, c in zip(files, cells)))
    nih = dsim.load_dataset(str(tmp_path / "nih.csv"))
    order = [nih.class_names.index(n) for n in BLOOD_CLASSES]  # sorted names there
    np.testing.assert_array_equal(nih.labels[:, order], data.labels)
    assert not nih.labels[none_rows].any()


@pytest.mark.parametrize(
    "cell, words",
    [("-1", ["line 5", "column 'ig'", "'-1'", "CheXpert"]), ("", ["line 5", "column 'ig'", "empty"])],
)
def test_csv_bad_label_cell_is_one_line(tmp_path, mosaics, cell, words):
    data = mosaics.take(range(10))
    files = _pngs(tmp_path / "img", data)
    rows = [[f, *map(str, y)] for f, y in zip(files, data.labels)]
    rows[3][4] = cell  # csv line 5 (header + 4 rows), column ig
    text = "path," + ",".join(BLOOD_CLASSES) + "\n" + "".join(",".join(r) + "\n" for r in rows)
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DatasetError) as e:
        dsim.load_dataset(str(tmp_path / "bad.csv"))
    _one_line(e.value, "bad.csv", *words)


def test_chestmnist_loads_as_multilabel(tmp_path, monkeypatch, mosaics):
    """A file in MedMNIST's layout (28 px grey, (N, 14) labels, some images without a finding)
    under the registry's chestmnist card: loaded multi-label with the 14 finding names."""
    rng = np.random.default_rng(0)
    grey = mosaics.images[:, :, :28].mean(-1).astype(np.uint8)
    labels = (rng.random((300, 14)) < 0.12).astype(np.uint8)
    labels[0] = 1  # every finding has a positive image
    np.savez(
        tmp_path / "chestmnist.npz",
        train_images=grey[:200],
        train_labels=labels[:200],
        val_images=grey[200:240],
        val_labels=labels[200:240],
        test_images=grey[240:],
        test_labels=labels[240:],
    )
    monkeypatch.setenv("DSIM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DSIM_OFFLINE", "1")
    data = dsim.load_dataset("chestmnist")
    card = dsim.get_registry().get("chestmnist")
    assert data.multilabel and data.class_names == card.class_names and data.labels.shape == (300, 14)
    assert (data.labels.sum(1) == 0).any()  # "no finding" images
    from dsim.data.loading import check_card

    check_card(card, data)


# ------------------------------------------------------------------ metrics and training
def _auc_by_hand(y: np.ndarray, s: np.ndarray) -> float:
    """The probability that a positive scores above a negative (ties count half)."""
    pos, neg = s[y == 1], s[y == 0]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def test_multilabel_metrics_recomputed_by_hand(mosaics):
    rng = np.random.default_rng(1)
    y = mosaics.labels[:120].copy()
    y[:, 5] = 0  # a label without positives in this test fold: not scored
    p = np.clip(0.6 * y + rng.normal(0.2, 0.25, y.shape), 0, 1).round(2)  # ties too
    m = dsim.classification_metrics(y, p, class_names=BLOOD_CLASSES)
    by_hand = {n: _auc_by_hand(y[:, j], p[:, j]) for j, n in enumerate(BLOOD_CLASSES) if j != 5}
    for n, a in by_hand.items():
        assert m[f"auc:{n}"] == pytest.approx(a)
    assert "auc:monocyte" not in m and m["labels_scored"] == 7
    assert m["auc"] == pytest.approx(sum(by_hand.values()) / 7)  # macro mean
    assert m["accuracy"] == pytest.approx(float(np.mean((p >= 0.5) == (y == 1))))
    assert "kappa" not in m
    assert dsim.mean_label_auc(y, p) == pytest.approx(m["auc"])


def test_bce_loss_with_per_label_pos_weight():
    import torch

    from dsim.networks.training import _loss, _pos_weight

    y = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 1.0]])
    w = _pos_weight(y)
    assert w.tolist() == pytest.approx([1.0, 1.0, 3.0])  # negatives / positives per label
    z = torch.tensor([[2.0, -1, 0.5], [0.1, 0.3, -2], [-1, 1, 0], [0.7, -0.4, 1.2]])
    sig = torch.sigmoid(z)
    by_hand = -(w * y * torch.log(sig) + (1 - y) * torch.log(1 - sig)).mean()
    assert float(_loss(z, y, w)) == pytest.approx(float(by_hand), rel=1e-5)
    assert float(_loss(z, y, w, reduction="sum")) == pytest.approx(float(by_hand) * 4, rel=1e-5)


def test_training_a_multilabel_target_predicts_per_label_probabilities(mosaics):
    from dsim.networks.training import TrainConfig, build_classifier, fit, predict_proba

    cfg = TrainConfig(**TINY)
    model = build_classifier(BACKBONE, weights="random", num_classes=8, seed=0)
    train, val, test = (mosaics.take(i) for i in next(mosaics.kfold(k=3, seed=0)))
    res = fit(model, train, val, cfg, seed=0, device="cpu")
    assert res.epochs_run >= 1 and np.isfinite(res.best_val_loss)
    p = predict_proba(model, test, cfg, device="cpu")
    assert p.shape == (len(test), 8) and ((p > 0) & (p < 1)).all()
    assert not np.allclose(p.sum(1), 1.0)  # sigmoids, not a softmax


def _fold(data: dsim.ImageSet, k: int = 3) -> dsim.FoldData:
    tr, va, te = next(data.kfold(k=k, seed=0))
    return dsim.FoldData(train=data.take(tr), val=data.take(va), test=data.take(te))


def test_execute_run_refuses_a_fold_it_cannot_score_and_names_what_it_cannot_learn(mosaics):
    from dsim.validation.runs import execute_run

    def spec(fold):
        return dsim.RunSpec(
            source="thin", target="thin", backbone=BACKBONE, strategy="scratch", fold=fold, folds=2,
            hyperparameters={**TINY, "epochs": 1},
        )  # fmt: skip

    y = np.zeros((40, 8), np.int64)
    y[0, 0] = 1  # one image with one finding: neither fold can both learn and score it
    data = dsim.ImageSet("thin", mosaics.images[:40], y, class_names=BLOOD_CLASSES)
    msgs = []
    for fold in (0, 1):
        with pytest.raises(dsim.DsimError) as e:
            execute_run(spec(fold), device="cpu", target=data)
        msgs.append(_one_line(e.value, f"fold {fold}"))
    assert any("test split has no label with both positive and negative" in m for m in msgs)
    assert any("training split has no positive image of any label" in m for m in msgs)
    y[1:9, 1] = 1  # a second finding in both folds: the fold runs, and names what it cannot learn
    data = dsim.ImageSet("thin", mosaics.images[:40], y, class_names=BLOOD_CLASSES)
    results = [execute_run(spec(fold), device="cpu", target=data) for fold in (0, 1)]
    notes = [n for r in results for n in r.notes]
    assert any("no positive image of label(s) basophil" in n for n in notes), notes
    assert all(r.metrics["labels_scored"] >= 1 for r in results)


def test_feature_strategies_fit_one_classifier_per_label(mosaics, tmp_path):
    """linear-probe and linear-svm one-vs-rest per label, radiomics a model search per label:
    each fold scored by the mean per-label AUC; a label without training positives gets a
    constant."""
    import torch

    ckpt = tmp_path / "body.pth"
    torch.save(dsim.create_backbone(BACKBONE, weights="random", num_classes=0, seed=0).state_dict(), ckpt)
    data = _fold(mosaics.take(range(150)))
    data.source_checkpoint = str(ckpt)
    spec = dsim.RunSpec(
        source="s", target="mosaics", backbone=BACKBONE, strategy="x", fold=0, hyperparameters=TINY
    )
    ctx = dsim.Context(device="cpu")
    for name in ("linear-probe", "linear-svm"):
        m = dsim.get_strategy(name).run(spec, data, ctx)
        assert 0 <= m["auc"] <= 1 and m["labels_scored"] == 8 and "kappa" not in m
        assert set(k for k in m if k.startswith("auc:")) == {f"auc:{n}" for n in BLOOD_CLASSES}
    rad = dsim.get_strategy("radiomics").with_params(models="l2", n_iter=1, cv=2)
    m = rad.run(spec, data, ctx)
    assert m["chosen_l2"] == 8 and 0 <= m["cv_auc"] <= 1 and m["auc"] > 0.5
    assert "8 label(s) fitted" in m["notes"][0]


# ------------------------------------------------------------------ measures
def _signal_features(y: np.ndarray, seed: int = 0, noise: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(y.shape[1], 16))
    return y @ mix + noise * rng.normal(size=(len(y), 16))


def test_model_scores_read_a_label_matrix(mosaics):
    from dsim_plugins import score_functions as sf

    y = mosaics.labels[:160, :4]  # four findings keep the per-label fits quick
    f = _signal_features(y)
    # LogME over a one-hot matrix is the single-label LogME of its classes
    classes = np.random.default_rng(2).integers(0, 3, 160)
    onehot = np.eye(3, dtype=np.int64)[classes]
    assert sf.logme(f, onehot) == pytest.approx(sf.logme(f, classes))
    # kNN, H-score and N-LEEP are the mean of their binary per-label values
    cols = [y[:, j] for j in range(4)]
    assert sf.knn_auc(f, y) == pytest.approx(np.mean([sf.knn_auc(f, c) for c in cols]))
    assert sf.h_score(f, y) == pytest.approx(np.mean([sf.h_score(f, c) for c in cols]))
    assert sf.nleep(f, y, seed=0) == pytest.approx(np.mean([sf.nleep(f, c, seed=0) for c in cols]))
    probs = sf._softmax(np.random.default_rng(3).normal(size=(160, 5)))
    assert sf.leep(probs, y) == pytest.approx(np.mean([sf.leep(probs, c) for c in cols]))
    # a label constant here is left out
    y2 = y.copy()
    y2[:, 0] = 0
    assert sf.h_score(f, y2) == pytest.approx(np.mean([sf.h_score(f, c) for c in cols[1:]]))
    # features that carry the findings score better than features that do not, for every score
    noise = _signal_features(np.random.default_rng(9).permutation(y), seed=1)
    for name in ("logme", "knn", "h-score", "nleep", "sfda", "parc", "lp"):
        assert sf.SCORES[name](f, y) > sf.SCORES[name](noise, y), name
    with pytest.raises(sf.ScoreError) as e:
        sf.ncti(f, y)
    _one_line(e.value, "ncti", "multi-label")


def test_otdd_reads_label_sets(mosaics):
    from dsim_plugins.otdd import label_sets

    sets = label_sets(mosaics)
    combos = {tuple(r) for r in mosaics.labels.tolist()}
    assert sets.num_classes == len(combos) and not sets.multilabel
    assert ("(none)" in sets.class_names) == bool((mosaics.labels.sum(1) == 0).any())
    for i in range(0, 300, 37):
        names = [n for n, v in zip(BLOOD_CLASSES, mosaics.labels[i]) if v]
        assert sets.class_names[sets.labels[i]] == ("+".join(names) or "(none)")
    m = dsim.create_measure("otdd", otdd_max_samples=150)
    ctx = dsim.Context(device="cpu", cache=None)
    rep = m.represent(mosaics, ctx)
    assert rep.meta["label_sets"] and rep.meta["left_out"] >= 0
    half = mosaics.take(range(150, 300), name="other half")
    shuffled = dsim.ImageSet("shuffled", half.images, np.random.default_rng(0).permutation(half.labels))
    near = m.pair(mosaics.take(range(150)), half, ctx)
    far = m.pair(mosaics.take(range(150)), shuffled, ctx)
    assert 0 < near < far  # labels that go with the images make the sets closer


def test_task2vec_fits_a_bce_head_and_bernoulli_fisher(mosaics, monkeypatch):
    import torch

    from dsim_plugins.task2vec import fisher

    calls = {"bce": 0, "bernoulli": 0}
    real_bce, real_bernoulli = fisher.bce_loss, torch.bernoulli

    def bce(out, y):
        calls["bce"] += 1
        return real_bce(out, y)

    def bernoulli(*a, **k):
        calls["bernoulli"] += 1
        return real_bernoulli(*a, **k)

    monkeypatch.setattr(fisher, "bce_loss", bce)
    monkeypatch.setattr(torch, "bernoulli", bernoulli)
    m = dsim.create_measure(
        "task2vec", probe_weights="random", image_size=32, task2vec_fisher_samples=128, task2vec_epochs=1
    )
    ctx = dsim.Context(device="cpu", cache=None, max_samples=96)
    rep = m.represent(mosaics, ctx)
    assert calls["bce"] > 0 and calls["bernoulli"] > 0
    h = rep.arrays["hessian"]
    assert np.isfinite(h).all() and (h >= 0).all() and h.sum() > 0
    assert 0 <= rep.meta["train_error"] <= 1
    # the same images read as label sets (one class each) give another embedding
    from dsim_plugins.otdd import label_sets

    other = m.represent(label_sets(mosaics.subsample(96, seed=0)), ctx)
    assert not np.allclose(other.arrays["hessian"], h)


# ------------------------------------------------------------------ the command line
def run_dsim(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "dsim", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=900,
    )


def _user_files(tmp_path: Path, blood: Path, n: int = 240) -> tuple[Path, Path]:
    """The mosaics as a new user has them: an .npz with label names, and a csv of PNGs."""
    x, y = blood_mosaics(blood, n, seed=5)
    data = dsim.ImageSet("mosaics", x, y, class_names=BLOOD_CLASSES)
    npz = _npz(tmp_path / "cells.npz", data)
    files = _pngs(tmp_path / "img", data)
    rows = [f"{f}," + ",".join(map(str, r)) for f, r in zip(files, y)]
    csv = tmp_path / "cells.csv"
    csv.write_text("path," + ",".join(BLOOD_CLASSES) + "\n" + "\n".join(rows) + "\n")
    return npz, csv


def test_cli_rank_a_multilabel_csv(tmp_path, blood):
    _, csv = _user_files(tmp_path, blood, n=120)
    r = run_dsim(
        "rank", "--target", str(csv), "--sources", "usps,pneumoniamnist", "--measures", "otdd",
        "--max-samples", "100", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    ranking = json.loads(r.stdout)
    assert {row["source"] for row in ranking["rows"]} == {"usps", "pneumoniamnist"}
    assert all(np.isfinite(row["contributions"]["otdd"]["value"]) for row in ranking["rows"])


@pytest.mark.slow
def test_cli_rank_a_multilabel_npz_with_every_kind_of_measure(tmp_path, blood):
    import torch

    npz, _ = _user_files(tmp_path, blood)
    ckpt = tmp_path / "usps.pth"
    torch.save(dsim.create_backbone(BACKBONE, weights="random", num_classes=0, seed=0).state_dict(), ckpt)
    r = run_dsim(
        "rank", "--target", str(npz), "--sources", "usps,pneumoniamnist",
        "--measures", "otdd,task2vec,logme,h-score,knn,nleep,sfda,parc,lp",
        "--max-samples", "120", "-o", "probe_weights=random", "-o", "image_size=32",
        "-o", "task2vec_fisher_samples=128", "-o", "task2vec_epochs=1", "-o", f"backbone={BACKBONE}",
        "-o", json.dumps({"usps": str(ckpt)}).join(["source_checkpoints=", ""]), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = {row["source"]: row for row in json.loads(r.stdout)["rows"]}
    assert set(rows["usps"]["contributions"]) >= {"otdd", "task2vec", "logme", "knn", "lp"}
    assert set(rows["pneumoniamnist"]["contributions"]) >= {"otdd", "task2vec"}


def _validate_args(target: Path, tmp_path: Path) -> list[str]:
    return [
        "validate", "--target", str(target), "--sources", "usps", "--backbone", BACKBONE,
        "--folds", "2", "--epochs", "2", "--pretrain-epochs", "1", "--source-max", "200",
        "--image-size", "16", "--cpus-per-run", "1", "--strategy", "finetune", "--json",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("form", ["npz", "csv"])
def test_cli_validate_a_multilabel_target(tmp_path, blood, form):
    npz, csv = _user_files(tmp_path, blood, n=200)
    env = {"DSIM_RESULTS": str(tmp_path / "r.sqlite")}
    r = run_dsim(*_validate_args(npz if form == "npz" else csv, tmp_path), env=env)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["runs_done"] == rep["runs_total"] == 4 and not rep["failures"]
    rows = {row["source"]: row for row in rep["rows"]}
    assert rows["usps"]["kappa"] is None and 0 < rows["usps"]["auc"] <= 1
    from dsim.validation.store import ResultsStore

    runs = ResultsStore(tmp_path / "r.sqlite").rows()
    for run in runs:  # every fold keeps the AUC of each label, and the auc is their mean
        metrics = json.loads(run["metrics"]) if isinstance(run["metrics"], str) else run["metrics"]
        per = [v for k, v in metrics.items() if k.startswith("auc:")]
        assert len(per) == metrics["labels_scored"] == 8
        assert run["auc"] == pytest.approx(np.mean(per))


def test_validate_every_deep_strategy_on_a_multilabel_target(tmp_path, blood):
    """finetune, gradual-unfreeze, feature-extractor and moment-init (and the scratch baseline)
    on in-memory mosaics: each fold scored by the mean per-label AUC."""
    x, y = blood_mosaics(blood, 120, seed=7)
    target = dsim.ImageSet("cells", x, y, class_names=BLOOD_CLASSES)
    pool = np.load(blood)
    src = dsim.ImageSet("blood", pool["val_images"][:120], pool["val_labels"][:120, 0])
    rep = dsim.validate(
        "cells",
        sources=["blood"],
        strategy="finetune,gradual-unfreeze,feature-extractor,moment-init",
        backbone=BACKBONE,
        folds=2,
        hyperparameters={**TINY, "epochs": 1},
        pretrain_hyperparameters={**TINY_PRETRAIN, "epochs": 1},
        store=dsim.ResultsStore(tmp_path / "r.sqlite"),
        inline={"cells": target, "blood": src},
        predict=False,
        device="cpu",
    )
    assert rep.runs_done == rep.runs_total == 10 and not rep.failures, rep.failures
    assert {r.strategy for r in rep.rows} == {
        "scratch",
        "finetune",
        "gradual-unfreeze",
        "feature-extractor",
        "moment-init",
    }
    assert all(0 < r.auc <= 1 and r.kappa is None for r in rep.rows)


def test_a_multilabel_checkpoint_ranking_runs_one_feature_pass(tmp_path, mosaics, monkeypatch):
    """Every default model score of every label reads one forward pass of each network over the
    target (the features, cached by content), and each per-label score is the mean of its
    single-label values on the label columns."""
    import torch

    import dsim.networks.checkpoints as ck

    monkeypatch.setenv("DSIM_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "net.pth"
    torch.save(dsim.create_backbone("smallcnn-w16", weights="random", num_classes=0, seed=1).state_dict(), f)
    zoo = tmp_path / "z.yaml"
    zoo.write_text(
        f"checkpoints:\n  - {{name: net, architecture: smallcnn-w16, weights: 'file:{f}', input_size: 28}}\n"
    )
    target = _npz(tmp_path / "t.npz", mosaics.subsample(90, seed=0))
    passes = []
    real = ck.load_checkpoint

    def counting(card, **kw):
        model = real(card, **kw)
        forward = model.forward_features
        model.forward_features = lambda x: passes.append(len(x)) or forward(x)
        return model

    monkeypatch.setattr(ck, "load_checkpoint", counting)
    rk = dsim.rank(str(target), zoo=str(zoo), max_samples=90, measures="logme,knn,h-score,lp")
    scores = [m for m, v in rk.rows[0].contributions.items() if (v or {}).get("value") is not None]
    assert {"logme", "knn", "h-score", "lp"} <= set(scores)
    assert sum(passes) == 90  # the 90 images through the network once, for every score and label

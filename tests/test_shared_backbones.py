"""The backbone plugins for the real checkpoints of ../shared/weights (MobileNetV1 x0.25 on
ImageNet, the CIFAR-10 ResNets): strict loading, what the loaded networks can do on real images,
the one-line errors for a wrong, corrupted or missing file, timm's model interface, and the
checkpoint cards. Skipped where the files are absent."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_file

import dsim
import dsim.kernel.plugins

REPO = Path(__file__).resolve().parents[1]
SHARED_FILES = ("cifar10_resnet20.pth", "cifar10_resnet32.pth", "mobilenetv1_x0.25_imagenet.pth")


def _shared_weights_dir() -> Path | None:
    candidates = [Path(d) for d in os.environ.get("DSIM_WEIGHTS_DIR", "").split(os.pathsep) if d]
    candidates.append(REPO.parent / "shared" / "weights")
    candidates += [
        Path(d).parent / "weights" for d in os.environ.get("DSIM_DATA_DIR", "").split(os.pathsep) if d
    ]
    for d in candidates:
        if (d / "SHA256SUMS").is_file() and all((d / f).is_file() for f in SHARED_FILES):
            return d.resolve()
    return None


@pytest.fixture(autouse=True)
def _one_thread():
    """The networks are tiny: on a small shared CPU, torch's intra-op threads cost more (waiting
    for each other) than they give."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def weights_dir(monkeypatch, tmp_path) -> Path:
    d = _shared_weights_dir()
    if d is None:
        pytest.skip("../shared/weights not found (set DSIM_WEIGHTS_DIR to it)")
    monkeypatch.setenv("DSIM_WEIGHTS_DIR", str(d))
    _no_user_weights(monkeypatch, tmp_path)
    return d


def _no_user_weights(monkeypatch, tmp_path):
    """The user data dir (the last place looked in) points at an empty folder."""
    import platformdirs

    monkeypatch.setattr(platformdirs, "user_data_dir", lambda *a, **k: str(tmp_path / "user-data"))


def _sums(d: Path) -> dict[str, str]:
    rows = (line.split() for line in (d / "SHA256SUMS").read_text().splitlines() if line.strip())
    return {name: digest for digest, name in rows}


def _shared_cards():
    return [
        c
        for _p, c in dsim.kernel.plugins.collect("dsim_register_checkpoints")
        if c.weights.startswith("file:")
    ]


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def _cifar_test():
    z = np.load(data_file("cifar10_sample.npz"))
    # channels first in the file; dsim.to_tensor takes (N, H, W, C) and normalises with ImageNet
    # mean/std, as the checkpoints were trained (../shared/weights/README.md)
    return (
        z["x_train"].transpose(0, 2, 3, 1),
        z["y_train"],
        z["x_test"].transpose(0, 2, 3, 1),
        z["y_test"],
    )


def _predict(model, images, size=None):
    model.eval()
    with torch.inference_mode():
        return model(dsim.to_tensor(images, size=size)).argmax(1).numpy()


# ---------------------------------------------------------------------------------- strict loading
def test_every_shared_checkpoint_loads_strictly_from_its_card(weights_dir):
    sums = _sums(weights_dir)
    cards = _shared_cards()
    assert sorted(c.weights[5:] for c in cards) == sorted(sums)  # one card per shared file
    for card in cards:
        file = weights_dir / card.weights[5:]
        assert card.sha256 == sums[file.name], card.name
        model = dsim.create_backbone(card.architecture, weights=card.weights, num_classes=card.num_classes)
        assert model.dsim_weights_id == sums[file.name], card.name
        assert sum(p.numel() for p in model.parameters()) == card.parameters, card.name
        stored = torch.load(file, map_location="cpu", weights_only=True)
        own = model.state_dict()
        assert set(stored) <= set(own), card.name
        assert all(torch.equal(own[k], v) for k, v in stored.items()), card.name
        # the rest of the model are the BN counters that files of old PyTorch versions lack
        assert all(k.endswith("num_batches_tracked") for k in set(own) - set(stored)), card.name
        # the pretraining-set name resolves to the same file
        by_name = dsim.create_backbone(card.architecture, weights=card.pretrained_on, num_classes=0)
        assert by_name.dsim_weights_id == model.dsim_weights_id


def test_cifar_resnet20_classifies_cifar10_test_images(weights_dir):
    """akamaster's ResNet-20 reaches 91.78 % on CIFAR-10's test set. On the 150 test images of
    cifar10_sample one binomial standard deviation is about 2.2 points, so >= 80 % is more than
    five deviations below the published figure and eight times chance (10 %, balanced classes);
    a wrong shortcut, layer order or normalisation drops the network to chance, as a random-init
    copy is."""
    _xtr, _ytr, x, y = _cifar_test()
    model = dsim.create_backbone("cifar-resnet20", weights="cifar10", num_classes=10)
    acc = float((_predict(model, x) == y).mean())
    assert acc >= 0.80, acc
    rand = dsim.create_backbone("cifar-resnet20", weights="random", num_classes=10)
    assert float((_predict(rand, x) == y).mean()) < 0.3


def test_imagenet_mobilenet_features_separate_cifar_classes_better_than_random_init(weights_dir):
    """A linear classifier (ridge, its penalty chosen by leave-one-out) on pooled 256-d features of
    400 training images, scored on 150 test images, all upsampled to 64 px: ImageNet features
    beat the same network at random init by at least 15 points. With 150 test images the
    difference of two accuracies has a standard deviation of at most 5.8 points, so the margin
    is well beyond noise."""
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, ytr, xte, yte = _cifar_test()
    acc = {}
    for weights in ("imagenet", "random"):
        model = dsim.create_backbone("mobilenetv1-x0.25", weights=weights, num_classes=0)
        ftr = dsim.extract_features(model, xtr, size=64)
        fte = dsim.extract_features(model, xte, size=64)
        assert ftr.shape == (len(xtr), 256)
        clf = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=np.logspace(-2, 4, 13)))
        acc[weights] = clf.fit(ftr, ytr).score(fte, yte)
    assert acc["imagenet"] >= acc["random"] + 0.15, acc


# --------------------------------------------------------------------------------------- errors
def _expected_mismatches(own: dict, stored: dict) -> tuple[int, int, int]:
    missing = [k for k in own if k not in stored and not k.endswith("num_batches_tracked")]
    shape = [k for k in own if k in stored and tuple(own[k].shape) != tuple(stored[k].shape)]
    return len(missing), len(shape), len([k for k in stored if k not in own])


def test_a_file_of_another_architecture_is_refused_in_one_line(weights_dir):
    cases = [
        ("cifar10_resnet20.pth", "cifar-resnet32", "layer1.3.conv1.weight"),
        ("mobilenetv1_x0.25_imagenet.pth", "cifar-resnet20", "conv1.weight"),
        ("cifar10_resnet20.pth", "mobilenetv1-x0.25", "stage1.0.0.weight"),
    ]
    for file_name, backbone, first in cases:
        file = weights_dir / file_name
        with pytest.raises(dsim.CheckpointError) as e:
            dsim.create_backbone(backbone, weights=str(file))
        msg = _one_line(e)
        stored = torch.load(file, weights_only=True)
        head = "fc.weight" if "mobile" in backbone else "linear.weight"
        # a file without the backbone's classifier is compared with the headless network
        classes = (1000 if "mobile" in backbone else 10) if head in stored else 0
        own = dsim.create_backbone(backbone, weights="random", num_classes=classes).state_dict()
        missing, shape, unexpected = _expected_mismatches(own, stored)
        assert str(file) in msg and repr(backbone) in msg and f"(model: {first}" in msg, msg
        # counted on each side: never more of the model's tensors than it has
        assert f"{missing} of the model's {len(own)} tensors missing" in msg, msg
        assert missing <= len(own)
        if unexpected:
            assert f"{unexpected} of the file's {len(stored)} tensors not in the model (file: " in msg, msg
        if shape:
            assert f"{shape} with another shape" in msg, msg


def test_an_extra_or_misshaped_tensor_is_refused(weights_dir, tmp_path):
    sd = torch.load(weights_dir / "cifar10_resnet20.pth", weights_only=True)
    extra = tmp_path / "extra.pth"
    torch.save({**sd, "head2.weight": torch.zeros(3)}, extra)
    with pytest.raises(
        dsim.CheckpointError, match=r"1 of the file's \d+ tensors not in the model \(file: head2\.weight\)"
    ):
        dsim.create_backbone("cifar-resnet20", weights=str(extra))
    bad = tmp_path / "bad.pth"
    torch.save({**sd, "layer2.1.conv2.weight": torch.zeros(32, 32, 5, 5)}, bad)
    with pytest.raises(dsim.DsimError) as e:
        dsim.create_backbone("cifar-resnet20", weights=f"file:{bad}")
    assert "layer2.1.conv2.weight (32, 32, 5, 5) vs (32, 32, 3, 3)" in _one_line(e)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(dsim.DsimError, match="not a readable checkpoint"):
        dsim.create_backbone("cifar-resnet20", weights=str(junk))


def test_a_corrupted_copy_fails_the_sha256_check(weights_dir, tmp_path, monkeypatch):
    name = "mobilenetv1_x0.25_imagenet.pth"
    expected = _sums(weights_dir)[name]
    copy = tmp_path / "w" / name
    copy.parent.mkdir()
    shutil.copyfile(weights_dir / name, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    found = hashlib.sha256(bytes(data)).hexdigest()
    monkeypatch.setenv("DSIM_WEIGHTS_DIR", str(copy.parent))
    with pytest.raises(dsim.WeightsChecksumError) as e:
        dsim.create_backbone("mobilenetv1-x0.25", weights="imagenet")
    msg = _one_line(e)
    assert str(copy) in msg and expected in msg and found in msg, msg
    assert isinstance(e.value, dsim.WeightsMissingError)  # the right weights are not available here
    assert dsim.check_sha256(weights_dir / name, expected.upper()) == expected


def test_a_missing_file_says_which_file_to_put_where(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DSIM_WEIGHTS_DIR", str(empty))
    _no_user_weights(monkeypatch, tmp_path)
    for backbone, weights, file_name in (
        ("cifar-resnet56", "cifar10", "cifar10_resnet56.pth"),
        ("mobilenetv1-x0.25", "imagenet", "mobilenetv1_x0.25_imagenet.pth"),
        ("mobilenetv1-x0.25", "file:mobilenetv1_x0.25_imagenet.pth", "mobilenetv1_x0.25_imagenet.pth"),
    ):
        with pytest.raises(dsim.WeightsMissingError) as e:
            dsim.create_backbone(backbone, weights=weights)
        msg = _one_line(e)
        assert file_name in msg and "DSIM_WEIGHTS_DIR" in msg and str(empty) in msg, msg
    assert dsim.find_weights_file("cifar10_resnet20.pth") is None
    with pytest.raises(dsim.WeightsMissingError, match="no 'imagenet' weights; choose 'cifar10', 'random'"):
        dsim.create_backbone("cifar-resnet20", weights="imagenet")
    with pytest.raises(dsim.WeightsMissingError, match="not found"):
        dsim.create_backbone("cifar-resnet20", weights=str(tmp_path / "nope.pth"))


def test_weights_dirs_are_searched_in_order(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
    (b / "w.pth").write_bytes(b"b")
    monkeypatch.setenv("DSIM_WEIGHTS_DIR", os.pathsep.join([str(a), str(b)]))
    _no_user_weights(monkeypatch, tmp_path)
    assert dsim.weights_dirs()[:2] == [a, b]
    assert dsim.weights_dirs()[2] == tmp_path / "user-data" / "weights"
    assert dsim.find_weights_file("w.pth") == b / "w.pth"
    (a / "w.pth").write_bytes(b"a")
    assert dsim.find_weights_file("w.pth") == a / "w.pth"
    assert dsim.find_weights_file(b / "w.pth") == b / "w.pth"  # an absolute path as is
    assert dsim.find_weights_file(tmp_path / "none.pth") is None
    assert dsim.resolve_weights("some-net", "w.pth", {}) == a / "w.pth"
    assert dsim.resolve_weights("some-net", "file:w.pth", {}) == a / "w.pth"
    assert dsim.resolve_weights("some-net", "random", {}) is None


# ------------------------------------------------------------------------------ timm's interface
def test_timm_interface_shapes_grey_input_and_heads(weights_dir):
    stored = torch.load(weights_dir / "cifar10_resnet20.pth", weights_only=True)
    x = torch.randn(2, 3, 32, 32)
    m = dsim.create_backbone("cifar-resnet20", weights="cifar10", num_classes=10).eval()
    assert {"classifier", "input_size", "mean", "std"} <= set(m.default_cfg)
    assert m.default_cfg["classifier"] == "linear" and m.default_cfg["input_size"] == (3, 32, 32)
    with torch.no_grad():
        f = m.forward_features(x)
        assert f.shape == (2, 64, 8, 8)
        assert m.forward_head(f, pre_logits=True).shape == (2, m.num_features) == (2, 64)
        assert torch.allclose(m.forward_head(f), m(x)) and m(x).shape == (2, 10)
    assert m.get_classifier() is m.linear and torch.equal(m.linear.weight, stored["linear.weight"])

    feats = dsim.create_backbone("cifar-resnet20", weights="cifar10", num_classes=0).eval()
    assert isinstance(feats.get_classifier(), torch.nn.Identity)
    with torch.no_grad():
        assert torch.allclose(feats(x), m.forward_head(f, pre_logits=True), atol=1e-6)

    grey = dsim.create_backbone("cifar-resnet20", weights="cifar10", in_chans=1, num_classes=0).eval()
    assert torch.allclose(grey.conv1.weight, stored["conv1.weight"].sum(1, keepdim=True))
    with torch.no_grad():
        assert grey(torch.randn(2, 1, 32, 32)).shape == (2, 64)

    mob = dsim.create_backbone("mobilenetv1-x0.25", weights="imagenet", in_chans=1, num_classes=0).eval()
    with torch.no_grad():
        g = mob.forward_features(torch.randn(2, 1, 64, 64))
        assert g.shape == (2, 256, 2, 2) and mob(torch.randn(2, 1, 64, 64)).shape == (2, 256)
    assert mob.default_cfg["input_size"] == (1, 224, 224) and mob.default_cfg["classifier"] == "fc"
    # what dsim reads is the contract the factories declare (the same terms as their default_cfg)
    assert (dsim.backbone_spec(m).input_size, dsim.backbone_spec(m).num_features) == (32, 64)
    assert (dsim.backbone_spec(mob).input_size, dsim.backbone_spec(mob).num_features) == (224, 256)

    # the loaded model pickles by reference and computes the same afterwards
    again = pickle.loads(pickle.dumps(m))
    with torch.no_grad():
        assert torch.equal(again(x), m(x))


def test_a_new_head_is_seeded_and_independent_of_the_body(weights_dir):
    a = dsim.create_backbone("cifar-resnet20", weights="cifar10", num_classes=3, seed=5)
    b = dsim.create_backbone("cifar-resnet20", weights="cifar10", num_classes=3, seed=5)
    c = dsim.create_backbone("cifar-resnet20", weights="cifar10", num_classes=3, seed=6)
    r = dsim.create_backbone("cifar-resnet20", weights="random", num_classes=3, seed=5)
    assert a.get_classifier().out_features == 3
    assert torch.equal(a.linear.weight, b.linear.weight) and not torch.equal(a.linear.weight, c.linear.weight)
    assert torch.equal(a.linear.weight, r.linear.weight)  # same seed, same head, whatever the body
    assert torch.equal(a.conv1.weight, c.conv1.weight)  # the body is the file's
    assert not torch.equal(a.conv1.weight, r.conv1.weight)
    assert a.dsim_weights_id == c.dsim_weights_id != r.dsim_weights_id
    r2 = dsim.create_backbone("cifar-resnet20", weights="random", num_classes=3, seed=6)
    assert r2.dsim_weights_id != r.dsim_weights_id
    # torch's global RNG is left alone
    torch.manual_seed(0)
    x = torch.rand(1)
    torch.manual_seed(0)
    dsim.create_backbone("mobilenetv1-x0.25", weights="random", seed=9)
    assert torch.equal(torch.rand(1), x)


def test_a_headless_body_file_loads_with_a_new_head(weights_dir, tmp_path):
    body = dsim.create_backbone("mobilenetv1-x0.25", weights="imagenet", num_classes=0)
    path = tmp_path / "body.pth"
    torch.save({"state_dict": body.state_dict(), "meta": {"source": "x"}}, path)  # as `dsim pretrain` writes
    m = dsim.create_backbone("mobilenetv1-x0.25", weights=str(path), num_classes=4)
    assert m.fc.out_features == 4
    assert torch.equal(m.stage3[1][3].weight, body.stage3[1][3].weight)

"""The dataset loader plugins (npz, medmnist, image-folder, csv) on the shared real data files and
on small generated folders, CSVs and archives: shapes, labels, splits, every bad input, and the
public loading path (dsim.load_dataset / the registry picking the loader for a path)."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from conftest import data_file
from PIL import Image

import dsim
import dsim.kernel.plugins  # the tests look loaders up on the plugin manager directly
from dsim import DataMissingError, DatasetCard, DatasetError

# --------------------------------------------------------------------------- helpers

# file -> (N, H, W, C, num_classes, split counts or None), from shared/data/README.md
SHARED = {
    "pneumoniamnist.npz": (3166, 28, 28, 1, 2, {"train": 2428, "val": 270, "test": 468}),
    "breastmnist.npz": (780, 28, 28, 1, 2, {"train": 546, "val": 78, "test": 156}),
    "ham10000_hmnist_8x8_L.npz": (10015, 8, 8, 1, 7, None),
    "cifar10_sample.npz": (550, 32, 32, 3, 10, {"train": 400, "test": 150}),
    "coil20_32x32.npz": (1440, 32, 32, 1, 20, None),
    "usps_16x16.npz": (11000, 16, 16, 1, 10, None),
    "mnist_test.npz": (10000, 28, 28, 1, 10, None),
}


def loader(name: str):
    return dsim.kernel.plugins.named("dsim_register_loaders", "dataset loader", name)


def one_line_naming(exc: BaseException, *names: object) -> str:
    msg = str(exc)
    assert "\n" not in msg
    for n in names:
        assert str(n) in msg, f"{n!r} not in {msg!r}"
    return msg


def save_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def png(path: Path, size=(8, 8), value=None, colour=False, seed=0, mode=None) -> Path:
    """A small random image (``size`` is (width, height))."""
    rng = np.random.default_rng(seed)
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    if colour:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        im = Image.fromarray(a, "RGB")
    else:
        a = (
            rng.integers(0, 256, (h, w), dtype=np.uint8)
            if value is None
            else np.full((h, w), value, np.uint8)
        )
        im = Image.fromarray(a, "L")
    if mode:
        im = im.convert(mode)
    im.save(path)
    return path


def make_folder(root: Path, counts=None, size=(8, 8)) -> Path:
    counts = counts or {"normal": 3, "pneumonia": 2}
    for c, n in counts.items():
        for i in range(n):
            png(root / c / f"{i}.png", size=size, seed=hash((c, i)) % 1000)
    return root


def test_loader_plugins_load_without_failures():
    failed = {p for p, _ in dsim.kernel.plugins.failures()}
    assert not failed & {"npz_datasets", "medmnist_datasets", "folder_datasets"}
    names = set(dsim.kernel.plugins.named("dsim_register_loaders", "dataset loader"))
    assert {"npz", "medmnist", "image-folder", "csv"} <= names


# --------------------------------------------------------------------------- npz: shared files


@pytest.mark.parametrize("fname", sorted(SHARED))
def test_npz_reads_every_shared_file(fname):
    path = data_file(fname)
    n, h, w, c, k, splits = SHARED[fname]
    data = loader("npz").load({"file": fname}, fname)
    assert data.images.shape == (n, h, w, c)
    assert data.images.dtype == np.uint8
    assert data.labels.shape == (n,) and data.labels.dtype == np.int64
    assert data.labels.min() == 0 and data.labels.max() == k - 1
    assert data.num_classes == k
    assert data.source == str(path)
    if splits is None:
        assert data.split is None
    else:
        got = dict(zip(*np.unique(data.split, return_counts=True)))
        assert {str(s): int(v) for s, v in got.items()} == splits
        # concatenated in train, val, test order
        order = [s for s in ("train", "val", "test") if s in splits]
        assert list(dict.fromkeys(data.split.tolist())) == order


def test_npz_by_absolute_path_and_through_public_path():
    path = data_file("cifar10_sample.npz")
    card = dsim.get_registry().resolve(str(path))
    assert card.loader == "npz" and Path(card.loader_args["file"]) == path.resolve()
    data = dsim.load_dataset(str(path))
    assert data.images.shape == (550, 32, 32, 3)
    # channel-first was transposed, not reshaped
    with np.load(path) as z:
        np.testing.assert_array_equal(data.images[0], z["x_train"][0].transpose(1, 2, 0))


def test_npz_card_built_in_test():
    data_file("coil20_32x32.npz")
    card = DatasetCard(name="coil", loader="npz", loader_args={"file": "coil20_32x32.npz"})
    data = dsim.load_dataset(card)
    assert len(data) == 1440 and data.name == "coil"
    sub = dsim.load_dataset(card, max_samples=100)
    assert len(sub) == 100


def test_npz_split_arg():
    data_file("breastmnist.npz")
    data = loader("npz").load({"file": "breastmnist.npz", "split": "val"}, "b")
    assert len(data) == 78 and set(data.split.tolist()) == {"val"}
    with pytest.raises(DatasetError) as e:
        loader("npz").load({"file": "coil20_32x32.npz", "split": "train"}, "c")
    one_line_naming(e.value, "coil20_32x32.npz", "no splits")


def test_npz_large_files_load_fast():
    data_file("usps_16x16.npz")
    t = time.perf_counter()
    for f in ("usps_16x16.npz", "mnist_test.npz", "ham10000_hmnist_8x8_L.npz"):
        loader("npz").load({"file": f}, f)
    assert time.perf_counter() - t < 1.5  # three ~10k-image files


# --------------------------------------------------------------------------- npz: layouts


def test_npz_generated_layouts(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 3, 5, 7), dtype=np.uint8)  # channel first, non-square
    lab = np.array([0, 1, 2, 0, 1, 2])
    ld = loader("npz")

    d = ld.load({"file": str(save_npz(tmp_path / "cf.npz", images=imgs, labels=lab))}, "cf")
    assert d.images.shape == (6, 5, 7, 3)
    np.testing.assert_array_equal(d.images[2], imgs[2].transpose(1, 2, 0))

    # (N,1) float labels with integer values, channel-last images kept as they are
    hwc = imgs.transpose(0, 2, 3, 1)
    d = ld.load({"file": str(save_npz(tmp_path / "f.npz", x=hwc, y=lab[:, None].astype(np.float32)))}, "f")
    assert d.images.shape == (6, 5, 7, 3) and d.labels.tolist() == lab.tolist()

    # one-hot labels -> argmax
    onehot = np.eye(3, dtype=np.float32)[lab]
    d = ld.load({"file": str(save_npz(tmp_path / "oh.npz", images=imgs[:, :1], labels=onehot))}, "oh")
    assert d.images.shape == (6, 5, 7, 1) and d.labels.tolist() == lab.tolist()

    # string labels -> sorted class names
    names = np.array(["cat", "dog", "cat", "ant", "dog", "cat"])
    d = ld.load({"file": str(save_npz(tmp_path / "s.npz", images=imgs, labels=names))}, "s")
    assert d.class_names == ("ant", "cat", "dog") and d.labels.tolist() == [1, 2, 1, 0, 2, 1]

    # own key names, float images in 0..1 kept as float32
    fl = rng.random((6, 4, 4)).astype(np.float64)
    p = save_npz(tmp_path / "k.npz", pixels=fl, target=lab)
    d = ld.load({"file": str(p), "images_key": "pixels", "labels_key": "target"}, "k")
    assert d.images.dtype == np.float32 and d.images.shape == (6, 4, 4, 1)

    # uint16 within 0..255 -> uint8; class names stored in the file
    p = save_npz(
        tmp_path / "cn.npz", images=imgs.astype(np.uint16), labels=lab, class_names=np.array(["a", "b", "c"])
    )
    d = ld.load({"file": str(p)}, "cn")
    assert d.images.dtype == np.uint8 and d.class_names == ("a", "b", "c")

    # x_train/y_train/x_test/y_test with (N,1) labels
    p = save_npz(
        tmp_path / "kt.npz", x_train=imgs[:4], y_train=lab[:4, None], x_test=imgs[4:], y_test=lab[4:, None]
    )
    d = ld.load({"file": str(p)}, "kt")
    assert d.split.tolist() == ["train"] * 4 + ["test"] * 2


def test_npz_claims_and_missing(tmp_path):
    ld = loader("npz")
    p = save_npz(tmp_path / "a.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 1]))
    assert ld.claims(p) == {"file": str(p.resolve())}
    assert ld.claims(tmp_path) is None
    (tmp_path / "b.csv").write_text("path,label\n")
    assert ld.claims(tmp_path / "b.csv") is None
    assert ld.missing({"file": str(p)}, "a") is None
    assert ld.missing({"file": "coil20_32x32.npz"}, "c") is None
    reason = ld.missing({"file": "no_such_set.npz"}, "x")
    assert "no_such_set.npz" in reason and "DSIM_DATA_DIR" in reason and "\n" not in reason
    for d in dsim.data_dirs():
        assert str(d) in reason


# --------------------------------------------------------------------------- npz: bad input


def test_npz_missing_file_is_data_missing():
    with pytest.raises(DataMissingError) as e:
        loader("npz").load({"file": "no_such_set"}, "x")
    one_line_naming(e.value, "no_such_set.npz", "DSIM_DATA_DIR", dsim.data_dirs()[0])
    with pytest.raises(DataMissingError) as e:
        dsim.load_dataset(
            DatasetCard(name="gone", loader="npz", loader_args={"file": "/nonexistent/gone.npz"})
        )
    one_line_naming(e.value, "/nonexistent/gone.npz")


def _bad_npz_cases(tmp_path: Path):
    imgs = np.zeros((4, 6, 6), np.uint8)
    lab = np.array([0, 1, 0, 1])
    nan = np.zeros((4, 6, 6), np.float32)
    nan[1, 2, 3] = np.nan
    text = tmp_path / "text.npz"
    text.write_text("this is not a zip archive\n")
    good = save_npz(tmp_path / "good.npz", images=imgs, labels=lab)
    trunc = tmp_path / "truncated.npz"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, imgs)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    return {
        "not a zip": (text, "not an .npz"),
        "truncated": (trunc, "npz"),
        "empty file": (empty, "empty file"),
        "single npy": (npy, ".npy"),
        "no keys": (save_npz(tmp_path / "nokeys.npz", foo=imgs, bar=lab), "keys found: foo, bar"),
        "labels only": (save_npz(tmp_path / "onlylab.npz", labels=lab), "keys found: labels"),
        "count mismatch": (save_npz(tmp_path / "count.npz", images=imgs, labels=lab[:3]), "4 images"),
        "rank 2": (save_npz(tmp_path / "flat.npz", images=imgs.reshape(4, 36), labels=lab), "rank"),
        "rank 5": (
            save_npz(tmp_path / "vol.npz", images=np.zeros((4, 1, 5, 6, 6), np.uint8), labels=lab),
            "rank",
        ),
        "channels": (
            save_npz(tmp_path / "chan.npz", images=np.zeros((4, 6, 6, 5), np.uint8), labels=lab),
            "channels",
        ),
        "nan pixels": (save_npz(tmp_path / "nan.npz", images=nan, labels=lab), "NaN"),
        "negative": (save_npz(tmp_path / "neg.npz", images=imgs, labels=np.array([0, -1, 0, 1])), "-1"),
        "fractional": (
            save_npz(tmp_path / "frac.npz", images=imgs, labels=np.array([0, 0.5, 0, 1])),
            "fractional",
        ),
        "nan labels": (
            save_npz(tmp_path / "nanlab.npz", images=imgs, labels=np.array([0, np.nan, 0, 1])),
            "NaN",
        ),
        "multi-label values": (
            save_npz(tmp_path / "multi.npz", images=imgs, labels=np.array([[1, 1], [0, 2], [1, 0], [0, 0]])),
            "row 1, column 1 is 2; multi-label targets take 0 or 1",
        ),
        "pickled": (
            save_npz(tmp_path / "obj.npz", images=imgs, labels=np.array([0, "a", None, 1], dtype=object)),
            "pickle",
        ),
        "missing split labels": (save_npz(tmp_path / "split.npz", train_images=imgs), "labels"),
        "split shapes": (
            save_npz(
                tmp_path / "shapes.npz",
                x_train=imgs,
                y_train=lab,
                x_test=np.zeros((2, 5, 5), np.uint8),
                y_test=lab[:2],
            ),
            "different image shapes",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "not a zip",
        "truncated",
        "empty file",
        "single npy",
        "no keys",
        "labels only",
        "count mismatch",
        "rank 2",
        "rank 5",
        "channels",
        "nan pixels",
        "negative",
        "fractional",
        "nan labels",
        "multi-label values",
        "pickled",
        "missing split labels",
        "split shapes",
    ],
)
def test_npz_bad_input(tmp_path, case):
    path, words = _bad_npz_cases(tmp_path)[case]
    with pytest.raises(DatasetError) as e:
        loader("npz").load({"file": str(path)}, "bad")
    msg = one_line_naming(e.value, path.name)
    assert words.lower() in msg.lower()
    # the public path gives the same kind of error, still naming the file
    with pytest.raises(DatasetError) as e:
        dsim.load_dataset(str(path))
    one_line_naming(e.value, path.name)


def test_npz_wrong_key_args(tmp_path):
    p = save_npz(tmp_path / "k.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(DatasetError) as e:
        loader("npz").load({"file": str(p), "images_key": "pixels"}, "k")
    one_line_naming(e.value, "k.npz", "pixels", "images, labels")


# --------------------------------------------------------------------------- medmnist


@pytest.mark.parametrize(
    "flag,names",
    [("pneumoniamnist", ("normal", "pneumonia")), ("breastmnist", ("malignant", "normal, benign"))],
)
def test_medmnist_reads_shared_files(flag, names):
    data_file(f"{flag}.npz")
    n, h, w, c, k, splits = SHARED[f"{flag}.npz"]
    card = DatasetCard(name=flag, loader="medmnist", loader_args={"flag": flag, "size": 28})
    assert loader("medmnist").missing(card.loader_args, flag) is None
    data = dsim.load_dataset(card)
    assert data.images.shape == (n, h, w, c) and data.class_names == names
    assert set(np.unique(data.labels).tolist()) == set(range(k))
    got = {str(s): int(v) for s, v in zip(*np.unique(data.split, return_counts=True))}
    assert got == splits
    # same pixels as through the generic npz loader; no MD5 check on a local subset
    plain = loader("npz").load({"file": f"{flag}.npz"}, flag)
    assert plain.fingerprint() != data.fingerprint()  # class names differ ...
    np.testing.assert_array_equal(plain.images, data.images)  # ... the pixels do not


def test_registry_pneumoniamnist_card_loads():
    data_file("pneumoniamnist.npz")
    reg = dsim.get_registry()
    if "pneumoniamnist" not in reg or reg.get("pneumoniamnist").loader != "medmnist":
        pytest.skip("registry.yaml has no medmnist card for pneumoniamnist")
    data = dsim.load_dataset("pneumoniamnist")
    assert data.num_classes == 2 and len(data) == 3166


def test_medmnist_bad_args():
    ld = loader("medmnist")
    for args, words in [
        ({}, "flag"),
        ({"flag": "pneumonia"}, "did you mean pneumoniamnist"),
        ({"flag": "pneumoniamnist", "size": 100}, "size"),
        ({"flag": "organmnist3d"}, "3-D"),
    ]:
        with pytest.raises(DatasetError) as e:
            ld.load(args, "m")
        one_line_naming(e.value, words)
        assert words in ld.missing(args, "m")


@pytest.fixture
def no_local_data(tmp_path, monkeypatch):
    """An empty DSIM_DATA_DIR and a user data dir under tmp_path."""
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("DSIM_DATA_DIR", str(empty))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DSIM_OFFLINE", raising=False)
    assert dsim.data_dirs()[-1] == tmp_path / "xdg" / "dsim"
    return dsim.data_dirs()


@pytest.fixture
def mm(monkeypatch):
    import dsim_plugins.medmnist_datasets as mm

    def no_network(url, dest):  # every test that forgets to fake the fetch fails loudly
        raise AssertionError(f"network used: {url}")

    monkeypatch.setattr(mm, "fetch", no_network)
    return mm


_DATA_DIRS_AT_IMPORT = os.environ.get("DSIM_DATA_DIR", "")


def shared_file(name: str) -> Path:
    """A shared data file, found where DSIM_DATA_DIR pointed before a test emptied it."""
    for d in _DATA_DIRS_AT_IMPORT.split(os.pathsep):
        if d and (Path(d) / name).exists():
            return Path(d) / name
    pytest.skip(f"{name} not found in DSIM_DATA_DIR (point it at ../shared/data)")


def serve(served: Path, calls: list):
    def fake_fetch(url, dest):
        calls.append((url, Path(dest)))
        shutil.copyfile(served, dest)

    return fake_fetch


def test_medmnist_absent_offline_says_what_to_put_where(no_local_data, mm, monkeypatch):
    monkeypatch.setenv("DSIM_OFFLINE", "1")
    ld = loader("medmnist")
    info = mm.medmnist_info("pneumoniamnist")
    reason = ld.missing({"flag": "pneumoniamnist"}, "p")
    with pytest.raises(DataMissingError) as e:
        dsim.load_dataset(DatasetCard(name="p", loader="medmnist", loader_args={"flag": "pneumoniamnist"}))
    msg = one_line_naming(
        e.value,
        "pneumoniamnist.npz",
        info["url"],
        info["MD5"],
        "DSIM_DATA_DIR",
        "DSIM_OFFLINE",
        *no_local_data,
    )
    assert msg.startswith(reason)
    assert reason.startswith("pneumoniamnist.npz not found in " + os.pathsep.join(map(str, no_local_data)))
    assert not no_local_data[-1].exists()  # nothing downloaded, not even a folder made


def test_medmnist_larger_size_file_name(no_local_data, mm, monkeypatch):
    monkeypatch.setenv("DSIM_OFFLINE", "1")
    info = mm.medmnist_info("breastmnist")
    reason = loader("medmnist").missing({"flag": "breastmnist", "size": 64}, "b")
    assert (
        reason.startswith("breastmnist_64.npz not found")
        and info["url_64"] in reason
        and info["MD5_64"] in reason
    )


def test_medmnist_download_verified(no_local_data, mm, monkeypatch, capsys):
    served = shared_file("breastmnist.npz")
    real = mm.medmnist_info("breastmnist")
    md5 = hashlib.md5(served.read_bytes()).hexdigest()
    fake_info = {**real, "url": "https://example.invalid/breastmnist.npz", "MD5": md5}
    monkeypatch.setattr(mm, "medmnist_info", lambda flag: fake_info if flag == "breastmnist" else real)
    calls: list = []
    monkeypatch.setattr(mm, "fetch", serve(served, calls))
    data = loader("medmnist").load({"flag": "breastmnist"}, "breast")
    dest = no_local_data[-1] / "breastmnist.npz"
    assert calls and calls[0][0] == fake_info["url"]
    assert dest.exists() and not list(dest.parent.glob("*.part"))
    assert data.images.shape == (780, 28, 28, 1) and data.class_names == ("malignant", "normal, benign")
    assert data.source == str(dest)
    assert "downloading" in capsys.readouterr().err  # never silent
    # second time it is local: no fetch
    monkeypatch.setattr(mm, "fetch", lambda url, dest: pytest.fail("fetched twice"))
    assert loader("medmnist").missing({"flag": "breastmnist"}, "b") is None
    assert len(loader("medmnist").load({"flag": "breastmnist"}, "breast")) == 780


def test_medmnist_download_md5_mismatch(no_local_data, mm, monkeypatch):
    # the shared file is a subset of the release, so it does not match the release MD5
    served = shared_file("pneumoniamnist.npz")
    calls: list = []
    monkeypatch.setattr(mm, "fetch", serve(served, calls))
    with pytest.raises(DatasetError) as e:
        loader("medmnist").load({"flag": "pneumoniamnist"}, "p")
    assert not isinstance(e.value, DataMissingError)
    info = mm.medmnist_info("pneumoniamnist")
    one_line_naming(
        e.value, "pneumoniamnist.npz", "md5", info["MD5"], hashlib.md5(served.read_bytes()).hexdigest()
    )
    assert len(calls) == 1
    assert not list(no_local_data[-1].glob("*"))  # nothing kept


def test_medmnist_network_unreachable(no_local_data, mm, monkeypatch):
    def unreachable(url, dest):
        Path(dest).write_bytes(b"partial")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(mm, "fetch", unreachable)
    with pytest.raises(DataMissingError) as e:
        loader("medmnist").load({"flag": "breastmnist"}, "b")
    one_line_naming(e.value, "breastmnist.npz", "download failed", "name resolution", "DSIM_DATA_DIR")
    assert not list(no_local_data[-1].glob("*"))


# --------------------------------------------------------------------------- image folder


def test_image_folder_basic(tmp_path):
    root = tmp_path / "xray"
    png(root / "pneumonia" / "a.png", seed=1)
    png(root / "pneumonia" / "sub" / "b.jpg", seed=2)  # nested, JPEG
    png(root / "normal" / "c.bmp", seed=3)
    png(root / "normal" / "d.tiff", seed=4)
    png(root / "normal" / "e.TIF", seed=5)
    png(root / "normal" / "big.png", size=(16, 12), seed=6)  # resized to the common 8x8
    (root / "normal" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    png(root / ".hidden" / "x.png")
    data = loader("image-folder").load({"path": str(root)}, "xray")
    assert data.class_names == ("normal", "pneumonia")
    assert data.images.shape == (6, 8, 8, 1) and data.images.dtype == np.uint8
    assert data.labels.tolist() == [0, 0, 0, 0, 1, 1]
    assert data.source == str(root)
    # image_size and mode args
    d = loader("image-folder").load({"path": str(root), "image_size": 12, "mode": "RGB"}, "x")
    assert d.images.shape == (6, 12, 12, 3)
    d = loader("image-folder").load({"path": str(root), "image_size": "6x10"}, "x")
    assert d.images.shape == (6, 6, 10, 1)
    with pytest.raises(DatasetError) as e:
        loader("image-folder").load({"path": str(root), "mode": "CMYK"}, "x")
    one_line_naming(e.value, root, "mode")


def test_image_folder_pixels_and_resize(tmp_path):
    root = tmp_path / "f"
    png(root / "a" / "0.png", size=(4, 4), value=10)
    png(root / "a" / "1.png", size=(4, 4), value=20)
    png(root / "b" / "2.png", size=(8, 8), value=200)
    data = loader("image-folder").load({"path": str(root)}, "f")
    assert data.images.shape == (3, 4, 4, 1)
    assert (data.images[0] == 10).all() and (data.images[2] == 200).all()


def test_image_folder_auto_mode(tmp_path):
    root = make_folder(tmp_path / "grey")
    png(root / "normal" / "rgb_but_grey.png", seed=9, mode="RGB")  # RGB file, grey content
    assert loader("image-folder").load({"path": str(root)}, "g").channels == 1
    png(root / "pneumonia" / "colour.png", colour=True)
    data = loader("image-folder").load({"path": str(root)}, "g")
    assert data.channels == 3
    # a grey image becomes three equal channels
    i = int(np.flatnonzero(data.labels == 0)[0])
    assert (data.images[i, ..., 0] == data.images[i, ..., 2]).all()
    assert loader("image-folder").load({"path": str(root), "mode": "L"}, "g").channels == 1


def test_image_folder_16_bit(tmp_path):
    root = tmp_path / "ct"
    a = np.full((4, 4), 65535, np.uint16)
    a[0, 0] = 0
    (root / "a").mkdir(parents=True)
    Image.fromarray(a).save(root / "a" / "x.png")
    png(root / "b" / "y.png", size=(4, 4), value=7)
    data = loader("image-folder").load({"path": str(root)}, "ct")
    assert data.images.dtype == np.uint8 and data.images[0, 1, 1, 0] == 255 and data.images[0, 0, 0, 0] == 0


def test_image_folder_split_layout(tmp_path):
    root = tmp_path / "chest_xray"
    make_folder(root / "train", {"NORMAL": 3, "PNEUMONIA": 2})
    make_folder(root / "test", {"NORMAL": 1, "PNEUMONIA": 1})
    make_folder(root / "val", {"PNEUMONIA": 1})
    assert loader("image-folder").claims(root) is not None
    data = dsim.load_dataset(str(root))
    assert data.class_names == ("NORMAL", "PNEUMONIA")
    assert data.split.tolist() == ["train"] * 5 + ["val"] + ["test"] * 2
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1, 0, 1]


def test_image_folder_single_class_loads(tmp_path):
    root = make_folder(tmp_path / "one", {"only": 3})
    data = loader("image-folder").load({"path": str(root)}, "one")
    assert data.num_classes == 1 and len(data) == 3


def test_image_folder_claims(tmp_path):
    ld = loader("image-folder")
    root = make_folder(tmp_path / "ok")
    assert ld.claims(root) == {"path": str(root.resolve())}
    (tmp_path / "flat").mkdir()
    png(tmp_path / "flat" / "a.png")  # images but no class sub-folders
    assert ld.claims(tmp_path / "flat") is None
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "sub" / "a.txt").write_text("x")
    assert ld.claims(tmp_path / "docs") is None
    assert ld.claims(root / "normal" / "0.png") is None
    assert ld.missing({"path": str(root)}, "ok") is None
    assert "nope" in ld.missing({"path": str(tmp_path / "nope")}, "n")


def test_image_folder_bad_input(tmp_path):
    ld = loader("image-folder")
    # missing folder
    with pytest.raises(DataMissingError) as e:
        ld.load({"path": str(tmp_path / "nope")}, "n")
    one_line_naming(e.value, tmp_path / "nope")
    # empty folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as e:
        ld.load({"path": str(tmp_path / "empty")}, "e")
    one_line_naming(e.value, tmp_path / "empty", "no class sub-folders")
    # a class folder without images
    root = make_folder(tmp_path / "noimg")
    (root / "zzz_empty").mkdir()
    (root / "zzz_empty" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError) as e:
        ld.load({"path": str(root)}, "x")
    one_line_naming(e.value, "zzz_empty", "no images")
    # corrupt image: garbage bytes and a truncated PNG
    for bad, payload in [("garbage.png", b"not a png at all"), ("cut.png", None)]:
        root = make_folder(tmp_path / f"corrupt_{bad}")
        target = root / "normal" / bad
        if payload is None:
            whole = png(tmp_path / "whole.png", size=(64, 64)).read_bytes()
            payload = whole[: len(whole) // 2]
        target.write_bytes(payload)
        with pytest.raises(DatasetError) as e:
            ld.load({"path": str(root), "strict": True}, "c")
        one_line_naming(e.value, target)
        with pytest.raises(DatasetError) as e:
            dsim.load_dataset(str(root), strict=True)
        one_line_naming(e.value, target)
        # by default the unreadable file is left out, named, and the good ones load
        data = dsim.load_dataset(str(root))
        assert len(data) == 5 and [w for w, _ in data.skipped] == [str(target)]
        note = data.skipped_note()
        assert "skipped 1 unreadable file(s) of 6" in note and str(target) in note and "\n" not in note


def test_image_folder_public_path(tmp_path):
    root = make_folder(tmp_path / "mine")
    card = dsim.get_registry().resolve(str(root))
    assert card.loader == "image-folder" and card.name == "mine"
    data = dsim.load_dataset(str(root))
    assert len(data) == 5 and data.class_names == ("normal", "pneumonia")
    card = DatasetCard(
        name="kvasir-like", loader="image-folder", loader_args={"path": str(root), "mode": "RGB"}
    )
    assert dsim.load_dataset(card).channels == 3


# --------------------------------------------------------------------------- csv


def test_csv_int_and_string_labels(tmp_path):
    imgs = [png(tmp_path / "img" / f"{i}.png", seed=i) for i in range(4)]
    elsewhere = png(tmp_path / "other" / "abs.png", seed=9)
    (tmp_path / "ints.csv").write_text(
        "path,label\nimg/0.png,1\nimg/1.png,0\n\nimg/2.png,2\n" + f"{elsewhere},1\n"
    )
    d = loader("csv").load({"path": str(tmp_path / "ints.csv")}, "ints")
    assert d.labels.tolist() == [1, 0, 2, 1] and d.class_names == ("0", "1", "2")
    assert d.images.shape == (4, 8, 8, 1)
    with Image.open(imgs[1]) as im:
        np.testing.assert_array_equal(d.images[1, ..., 0], np.asarray(im))

    (tmp_path / "names.csv").write_text(
        "Label, Path ,split\npneumonia,img/0.png,train\nnormal,img/1.png,train\nnormal,img/2.png,test\n"
    )
    d = loader("csv").load({"path": str(tmp_path / "names.csv")}, "names")
    assert d.class_names == ("normal", "pneumonia") and d.labels.tolist() == [1, 0, 0]
    assert d.split.tolist() == ["train", "train", "test"]


def test_csv_claims_and_public_path(tmp_path):
    png(tmp_path / "a.png")
    png(tmp_path / "b.png", seed=1)
    p = tmp_path / "set.csv"
    p.write_text("path,label\na.png,cat\nb.png,dog\n")
    assert loader("csv").claims(p) == {"path": str(p.resolve())}
    assert loader("csv").claims(tmp_path) is None
    assert loader("image-folder").claims(p) is None
    card = dsim.get_registry().resolve(str(p))
    assert card.loader == "csv" and card.name == "set"
    data = dsim.load_dataset(str(p))
    assert data.class_names == ("cat", "dog")
    assert dsim.load_dataset(
        DatasetCard(name="c", loader="csv", loader_args={"path": str(p)})
    ).labels.tolist() == [0, 1]


def test_csv_bad_input(tmp_path):
    ld = loader("csv")
    png(tmp_path / "a.png")
    cases = {
        "empty.csv": ("", ["empty"]),
        "header_only.csv": ("path,label\n", ["empty", "no rows"]),
        "no_label.csv": ("path,class\na.png,1\n", ["missing column 'label'", "path, class"]),
        "no_path.csv": ("file,label\na.png,1\n", ["missing column 'path'", "file, label"]),
        "empty_label.csv": ("path,label\na.png,\n", ["line 2", "empty label"]),
        "negative.csv": ("path,label\na.png,-1\n", ["line 2", "-1"]),
    }
    for name, (text, words) in cases.items():
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(DatasetError) as e:
            ld.load({"path": str(p)}, name)
        one_line_naming(e.value, name, *words)
    # a missing and a corrupt image, named with their csv lines: left out, or an error with strict
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    png(tmp_path / "c.png", seed=2)
    p = tmp_path / "corrupt.csv"
    p.write_text("path,label\na.png,0\nbad.png,1\n\nmissing.png,1\nc.png,1\n")
    with pytest.raises(DatasetError) as e:
        dsim.load_dataset(str(p), strict=True)
    one_line_naming(e.value, "corrupt.csv line", "png")
    data = dsim.load_dataset(str(p))
    assert data.labels.tolist() == [0, 1] and len(data.skipped) == 2
    where = " ".join(w for w, _ in data.skipped)
    assert "corrupt.csv line 3" in where and "corrupt.csv line 5" in where
    assert "missing.png not found" in " ".join(why for _, why in data.skipped)
    # nothing readable at all: one error naming the table
    p.write_text("path,label\nbad.png,1\nmissing.png,0\n")
    with pytest.raises(DatasetError) as e:
        dsim.load_dataset(str(p))
    one_line_naming(e.value, "corrupt.csv", "no readable image")
    with pytest.raises(DataMissingError):
        ld.load({"path": str(tmp_path / "absent.csv")}, "a")


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_follows_content_not_file_name(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (10, 6, 6), dtype=np.uint8)
    lab = np.arange(10) % 2
    a = save_npz(tmp_path / "a.npz", images=imgs, labels=lab)
    b = tmp_path / "copy" / "renamed.npz"
    b.parent.mkdir()
    shutil.copyfile(a, b)
    fa = dsim.load_dataset(str(a)).fingerprint()
    assert dsim.load_dataset(str(b)).fingerprint() == fa
    imgs2 = imgs.copy()
    imgs2[3, 2, 1] ^= 1  # one pixel
    c = save_npz(tmp_path / "a2.npz", images=imgs2, labels=lab)
    assert dsim.load_dataset(str(c)).fingerprint() != fa

    # the same holds for image folders
    root = make_folder(tmp_path / "f")
    fr = dsim.load_dataset(str(root)).fingerprint()
    copy = shutil.copytree(root, tmp_path / "g" / "other_name")
    assert dsim.load_dataset(str(copy)).fingerprint() == fr
    px = Image.open(copy / "normal" / "0.png")
    arr = np.asarray(px).copy()
    px.close()
    arr[0, 0] ^= 1
    Image.fromarray(arr).save(copy / "normal" / "0.png")
    assert dsim.load_dataset(str(copy)).fingerprint() != fr

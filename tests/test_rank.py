"""dsim rank end to end: the embedded default (published results), user data, bad input, the
content-keyed cache, and the CLI as a thin shell that keeps heavy imports lazy."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import dsim
import dsim.kernel.plugins


def run_dsim(*args, env_extra=None, cwd=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "dsim", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def _published_T(target):
    """Transferability per source computed here, independently, from the shipped CSV."""
    import csv
    from importlib import resources

    rows = list(
        csv.DictReader(
            (resources.files("dsim_plugins") / "published_data" / "cats_scans_transfer_auc.csv")
            .read_text()
            .splitlines()
        )
    )
    base = np.mean([float(r["auc"]) for r in rows if r["source"] == target == r["target"]])
    out = {}
    for s in {r["source"] for r in rows if r["target"] == target and r["source"] != target}:
        aucs = [float(r["auc"]) for r in rows if r["source"] == s and r["target"] == target]
        out[s] = (np.mean(aucs) - base) / base * 100
    return out


def test_rank_chest_offline_puts_imagenet_first_and_marks_measured():
    ranking = dsim.rank("chest")
    assert ranking.sources[0] == "imagenet"
    by = {r.source: r for r in ranking.rows}
    expected = _published_T("chest")
    for source, _t in expected.items():
        assert by[source].status == "measured"
        # per-fold pairing vs mean-of-folds differ slightly; the order must agree
    measured = [r for r in ranking.rows if r.status == "measured"]
    assert [r.source for r in measured] == sorted(expected, key=lambda s: -expected[s])
    # kimia->chest did not converge in the paper: it can only be predicted
    assert by["kimia"].status == "predicted"
    assert ranking.target_auc == pytest.approx(
        np.mean([r.auc for r in dsim.known_results() if r.source == r.target == "chest"])
    )
    assert [r.rank for r in ranking.rows] == list(range(1, len(ranking.rows) + 1))


def test_rank_cli_json_matches_api():
    r = run_dsim("rank", "--target", "chest", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["rows"][0]["source"] == "imagenet" and d["rows"][0]["status"] == "measured"
    assert {row["status"] for row in d["rows"]} == {"measured", "predicted"}
    api = dsim.rank("chest")
    assert [row["source"] for row in d["rows"]] == api.sources
    assert dsim.Ranking.from_dict(d).sources == api.sources


def test_rank_cli_table_and_top():
    r = run_dsim("rank", "--target", "chest", "--top", "3")
    assert r.returncode == 0, r.stderr
    assert "imagenet" in r.stdout and "measured" in r.stdout
    rows = [line.split() for line in r.stdout.splitlines() if re.match(r"\s*\d+\s", line)]
    assert [row[0] for row in rows] == ["1", "2", "3"]  # one line a row: no row wraps
    assert rows[0][1] == "imagenet"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["rank", "--target", "chestt"], "unknown dataset 'chestt'; did you mean chest"),
        (["rank", "--target", "chest", "--measures", "task2vek"], "unknown measure 'task2vek'"),
        (["rank", "--target", "./no/such/folder"], "./no/such/folder: no such file or folder"),
        (["rank", "--target", "chest", "--sources", "imagenett"], "unknown dataset 'imagenett'"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, needle):
    r = run_dsim(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and needle in err[0], r.stderr


def test_corrupt_npz_target_names_the_file(tmp_path):
    bad = tmp_path / "mydata.npz"
    bad.write_bytes(b"this is not a zip file at all")
    r = run_dsim("rank", "--target", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "mydata.npz" in r.stderr.strip().splitlines()[-1]


def test_wrong_shapes_npz_names_the_field(tmp_path):
    p = tmp_path / "shapes.npz"
    np.savez(p, images=np.zeros((10, 8, 8), np.uint8), labels=np.zeros(7, np.int64))
    r = run_dsim("rank", "--target", str(p))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "shapes.npz" in last and ("10" in last and "7" in last)


def test_help_and_listings_do_not_import_torch(tmp_path):
    """The listings give card facts and declared metadata: ``dsim zoo`` checks every card's
    weights (shared files, empty timm and torch hub caches) without building a network, and no
    listing imports numpy (half their start-up; modules use ``dsim.lazy_module("numpy")``)."""
    code = (
        "import sys; from dsim.cli import main; "
        "rc = main(sys.argv[1:]); "
        "heavy = [m for m in ('torch', 'torchvision', 'timm', 'ot', 'sklearn', 'numpy') if m in sys.modules]; "
        "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc)"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    env.pop("DSIM_ALLOW_DOWNLOAD", None)
    for args in (["--help"], ["datasets"], ["plugins"], ["measures"], ["zoo"], ["zoo", "--json"]):
        r = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env
        )
        assert r.returncode == 0, r.stderr
        assert "HEAVY []" in r.stderr, (args, r.stderr)


class CountingMeasure(dsim.Measure):
    """Mean intensity; counts how often it really computes (to check cache honesty)."""

    name = "counting-mean"
    kind = "distance"
    needs = "images"
    computed = 0

    def represent(self, data, ctx):
        CountingMeasure.computed += 1
        return self.representation(data, ctx, meta={"mean": float(data.images.mean())})

    def compare(self, source, target, ctx):
        return abs(source.meta["mean"] - target.meta["mean"])


@pytest.fixture
def counting_measure(fresh_plugins):
    """CountingMeasure registered as an in-process plugin for one test."""

    class P:
        @dsim.hookimpl
        def dsim_register_measures(self):
            return [CountingMeasure()]

    fresh_plugins.register(P(), "counting")
    yield CountingMeasure
    fresh_plugins.unregister("counting")


def test_cache_is_keyed_by_content_not_file_name(tmp_path, counting_measure):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (40, 8, 8), dtype=np.uint8)
    labels = np.arange(40) % 2
    a = tmp_path / "a.npz"
    np.savez(a, images=imgs, labels=labels)
    cache = dsim.Cache(tmp_path / "cache")
    kw = dict(measure="counting-mean", cache=cache, max_samples=None)
    CountingMeasure.computed = 0
    v1 = dsim.measure(str(a), str(a), **kw)["value"]
    assert v1 == 0.0 and CountingMeasure.computed == 1  # same content: one representation
    # same content under another file name: a cache hit, nothing recomputed
    b = tmp_path / "renamed_copy.npz"
    b.write_bytes(a.read_bytes())
    dsim.measure(str(b), str(a), **kw)
    assert CountingMeasure.computed == 1
    # one pixel changed: a miss, recomputed, and a different value
    imgs2 = imgs.copy()
    imgs2[3, 4, 4] = (int(imgs2[3, 4, 4]) + 100) % 256
    c = tmp_path / "a_changed.npz"
    np.savez(c, images=imgs2, labels=labels)
    v3 = dsim.measure(str(c), str(a), **kw)["value"]
    assert CountingMeasure.computed == 2 and v3 > 0
    # a corrupt cache entry is a miss, not a crash
    for f in (tmp_path / "cache").rglob("*.json"):
        f.write_text("{broken")
    dsim.measure(str(a), str(a), **kw)
    assert CountingMeasure.computed == 3


def test_rank_user_folder_with_local_sources(tmp_path, counting_measure, shared_data):
    """A user's own image folder is ranked against the sources whose data is here."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for cls in ("normal", "pneumonia"):
        (tmp_path / "xray" / cls).mkdir(parents=True)
        for i in range(12):
            arr = (rng.random((28, 28)) * (120 if cls == "normal" else 255)).astype(np.uint8)
            Image.fromarray(arr, mode="L").save(tmp_path / "xray" / cls / f"{i}.png")

    ranking = dsim.rank(str(tmp_path / "xray"), measures=["counting-mean"], max_samples=200)
    assert ranking.target == "xray"
    assert len(ranking.rows) >= 3
    assert all(r.status == "predicted" for r in ranking.rows)
    from dsim.data.loading import data_missing

    reg = dsim.get_registry()
    datasets = [r for r in ranking.rows if r.kind == "dataset"]  # (checkpoints: with DSIM_WEIGHTS_DIR)
    local = [r for r in datasets if data_missing(reg.get(r.source)) is None]

    def value(r):
        return (r.contributions.get("counting-mean") or {}).get("value")

    assert len(local) >= 3 and all(value(r) is not None for r in local)
    # the studies' sources without images here still rank on their track record and facts
    remote = {r.source for r in datasets} - {r.source for r in local}
    assert "imagenet" in remote
    assert all(value(r) is None for r in ranking.rows if r.source in remote)
    # sources without local images are not silently dropped: they are listed as skipped
    assert all("reason" in s for s in ranking.skipped)


def test_same_images_in_another_size_are_never_candidates(shared_data):
    """ham10000-8x8, dermamnist and isic are the same HAM10000 images: none is a source for another."""
    reg = dsim.get_registry()
    fam = {"isic", "dermamnist", "ham10000-8x8"}
    assert reg.get("dermamnist").derived_from == reg.get("ham10000-8x8").derived_from == "isic"
    ranking = dsim.rank("ham10000-8x8", measures=["expert"], max_samples=300)
    assert ranking.sources and not fam & set(ranking.sources)
    explicit = dsim.rank(
        "ham10000-8x8", sources=["dermamnist", "breastmnist"], measures=["expert"], max_samples=300
    )
    assert explicit.sources == ["breastmnist"]
    assert {"source": "dermamnist", "reason": "same data as the target"} in [
        dict(s) for s in explicit.skipped
    ]


def test_the_same_skip_reason_for_many_sources_is_one_line(tmp_path):
    """logme with a checkpoint for one source only skips every other source for the same reason:
    one line lists them (the reason names no single source)."""
    import torch

    ckpt = tmp_path / "usps.pth"
    torch.save(
        dsim.create_backbone("smallcnn-w16", weights="random", num_classes=0, seed=0).state_dict(), ckpt
    )
    r = run_dsim(
        "rank",
        "--target",
        "breastmnist",
        "--measures",
        "logme",
        "--max-samples",
        "100",
        "-o",
        json.dumps({"usps": str(ckpt)}).join(["source_checkpoints=", ""]),
        "-o",
        "backbone=smallcnn-w16",
        "-o",
        "image_size=28",
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    flat = " ".join(out.split())
    assert flat.count("a dataset, not a checkpoint") == 1, out  # one line for all of them
    assert "usps" in flat.split("skipped")[0]  # ranked, above the skip lines
    # a long list is cut short (the rest in --json)
    assert re.search(
        r"skipped logme for [\w-]+(, [\w-]+){5}, and \d+ more: a dataset, not a checkpoint", flat
    )


def test_every_registry_card_is_a_candidate_or_skipped_with_a_reason():
    reg = dsim.get_registry()
    tcard = reg.get("chest")
    history, values = dsim.known_results(), dsim.known_measure_values()
    chosen, skipped = dsim.candidate_sources(tcard, history, values, target_has_data=False)
    names = {c.name for c in chosen}
    left_out = {s["source"]: s["reason"] for s in skipped}
    assert names and left_out and not names & set(left_out)
    assert names | set(left_out) == {c.name for c in reg} - {"chest"}
    assert left_out["pneumoniamnist"] == "same data as the target"
    assert all(r for r in left_out.values())
    assert "imagenet" in names  # a published source of chest


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"options": {"otdd_max_sample": 10}}, "unknown option 'otdd_max_sample'.*otdd_max_samples"),
        ({"top": -1}, r"--top: -1 is not allowed \(a whole number >= 1\)"),
        ({"top": 0}, r"--top: 0 is not allowed \(a whole number >= 1\)"),
        ({"max_samples": 1}, r"--max-samples: 1 is not allowed \(a whole number >= 2\)"),
        (
            {"options": {"knn_k": -5}, "measures": "knn"},
            r"option 'knn_k' of measure 'knn': -5 is not allowed",
        ),
        ({"options": {"otdd_max_samples": "abc"}}, r"option 'otdd_max_samples' of measure 'otdd': 'abc'"),
        ({"sources": ",,"}, r"--sources: ',,' is not allowed"),
        ({"measures": "expert", "options": {"task2vec_threads": 1}}, "parameter of measure 'task2vec'"),
        ({"options": {"nope.x": 1}}, "unknown measure 'nope'"),
    ],
)
def test_bad_knobs_are_refused_before_any_work(kwargs, needle):
    with pytest.raises(dsim.DsimError, match=needle):
        dsim.rank("chest", **kwargs)


def test_measure_parameters_are_typed_and_per_measure():
    otdd = dsim.create_measure("otdd", otdd_max_samples=10)
    assert otdd.otdd_max_samples == 10 and dsim.list_measures()["otdd"].otdd_max_samples == 2000
    assert otdd.config(dsim.Context())["otdd_max_samples"] == 10  # parameters are the cache config
    with pytest.raises(dsim.UnknownOptionError, match="did you mean otdd_max_samples"):
        dsim.create_measure("otdd", otdd_max_sample=10)
    from dsim.kernel.catalog import configure_measures

    every = dsim.list_measures()
    conf = configure_measures(every, {"probe_weights": "random", "task2vec.image_size": 32})
    assert conf["task2vec"].probe_weights == conf["otdd"].probe_weights == "random"  # every taker
    assert conf["task2vec"].image_size == 32 and conf["otdd"].image_size == 64  # only the named one


def test_cli_refuses_a_misspelt_option_in_one_line():
    r = run_dsim("rank", "--target", "chest", "-o", "otdd_max_sample=10")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "otdd_max_sample" in err[0] and "otdd_max_samples" in err[0]
    r = run_dsim("rank", "--target", "chest", "--top", "-1")
    assert r.returncode == 2 and "--top" in r.stderr and "Traceback" not in r.stderr


def test_rank_a_folder_with_a_corrupt_image_names_it_and_goes_on(tmp_path, shared_data):
    """A user's folder with one corrupt PNG among good images: ranked, the file named in the
    notes; with --strict the ranking fails naming it."""
    from PIL import Image

    data = dsim.load_dataset("breastmnist", max_samples=40, seed=0)
    root = tmp_path / "my_ultrasound"
    for i, (img, lab) in enumerate(zip(data.images, data.labels)):
        d = root / data.class_names[lab].replace(",", "").replace(" ", "_")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0]).save(d / f"{i}.png")
    bad = root / "malignant" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    r = run_dsim(
        "rank", "--target", str(root), "--measures", "expert,otdd", "--sources", "pneumoniamnist,usps"
    )
    assert r.returncode == 0, r.stderr
    flat = " ".join(r.stdout.split())
    assert "skipped 1 unreadable file(s) of 41" in flat and "broken.png" in flat
    r = run_dsim("rank", "--target", str(root), "--measures", "expert", "--strict")
    assert r.returncode == 2 and "broken.png" in r.stderr and "Traceback" not in r.stderr


def test_measures_listing_says_which_run_by_default():
    r = run_dsim("measures", "--json")
    assert r.returncode == 0, r.stderr
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert rows["filter-structure"]["default"] is False and rows["filter-structure"]["needs"] == "checkpoint"
    assert rows["logme"]["default"] is True and rows["logme"]["kind"] == "score"
    assert rows["otdd"]["kind"] == "distance" and "otdd_min_labelcount" in rows["otdd"]["parameters"]
    assert set(rows) == set(dsim.list_measures())

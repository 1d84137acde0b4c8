"""Checkpoints as candidates in a ranking, as a new user would ask: a folder of their own images,
the shared checkpoints, a file of their own with --arch, random init and a timm name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dsim

WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "weights"
needs_weights = pytest.mark.skipif(
    not (WEIGHTS / "cifar10_resnet20.pth").exists(), reason="needs ../shared/weights"
)


def run_dsim(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "dsim", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small folder of ultrasound images dsim has never seen as a registered name."""
    from PIL import Image

    data = dsim.load_dataset("breastmnist", max_samples=60, seed=1)
    root = tmp_path_factory.mktemp("user") / "my_ultrasound"
    for i, (img, lab) in enumerate(zip(data.images, data.labels)):
        d = root / ("malignant" if lab == 0 else "benign_or_normal")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0]).save(d / f"{i}.png")
    return root


@needs_weights
def test_rank_mixed_checkpoints_for_a_users_folder(folder, tmp_path):
    import torch

    own = tmp_path / "my_smallcnn.pth"
    torch.save(dsim.create_backbone("smallcnn", weights="random", num_classes=0, seed=3).state_dict(), own)
    env = {"DSIM_WEIGHTS_DIR": str(WEIGHTS), "DSIM_CACHE_DIR": str(tmp_path / "cache")}
    r = run_dsim(
        "rank",
        "--target",
        str(folder),
        "--sources",
        f"mobilenetv1-x0.25-imagenet,cifar10-resnet20,{own},timm:resnet18.a1_in1k",
        "--arch",
        "smallcnn",
        "--measures",
        "logme,h-score",
        "--max-samples",
        "60",
        "--json",
        env_extra=env,
    )
    assert r.returncode == 0, r.stderr
    rk = json.loads(r.stdout)
    rows = {x["source"]: x for x in rk["rows"]}
    assert set(rows) == {"mobilenetv1-x0.25-imagenet", "cifar10-resnet20", "my_smallcnn"}
    assert {x["kind"] for x in rows.values()} == {"checkpoint"}
    assert rows["cifar10-resnet20"]["architecture"] == "cifar-resnet20"
    assert rows["my_smallcnn"]["architecture"] == "smallcnn"
    assert all(np.isfinite(x["contributions"]["logme"]["value"]) for x in rows.values())
    # the timm checkpoint without cached weights: failed, not ranked, one line saying how to supply them
    why = [f["reason"] for f in rk["failed"] if f["source"] == "timm:resnet18.a1_in1k"]
    assert why and "DSIM_ALLOW_DOWNLOAD=1" in why[0]
    assert "timm:resnet18.a1_in1k" not in rows
    # a second ranking reads every feature from the cache (nothing is extracted again)
    again = run_dsim(
        "rank",
        "--target",
        str(folder),
        "--sources",
        "mobilenetv1-x0.25-imagenet,cifar10-resnet20",
        "--measures",
        "logme,h-score,knn",
        "--max-samples",
        "60",
        "--json",
        env_extra=env,
    )
    assert again.returncode == 0, again.stderr
    feats = list((tmp_path / "cache" / "representations" / "features").rglob("*.json"))
    assert len(feats) == 3  # one per (checkpoint, target), shared by all scores and both rankings


@needs_weights
def test_wrong_architecture_and_missing_files_are_one_line(folder, tmp_path):
    env = {"DSIM_WEIGHTS_DIR": str(WEIGHTS)}
    r = run_dsim(
        "rank",
        "--target",
        str(folder),
        "--sources",
        str(WEIGHTS / "cifar10_resnet20.pth"),
        "--arch",
        "cifar-resnet32",
        "--measures",
        "logme",
        "--json",
        env_extra=env,
    )
    # the only candidate cannot be evaluated: nothing is ranked, the command fails naming it
    assert r.returncode == 2 and not r.stdout, r.stdout
    assert "cifar10_resnet20.pth" in r.stderr and "layer1.3.conv1.weight" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_dsim(
        "rank", "--target", str(folder), "--sources", str(tmp_path / "nope.pth"), "--arch", "smallcnn"
    )
    assert (
        r.returncode == 2
        and "nope.pth" in r.stderr
        and "not found" in r.stderr
        and "Traceback" not in r.stderr
    )
    r = run_dsim("rank", "--target", str(folder), "--sources", str(WEIGHTS / "cifar10_resnet20.pth"))
    assert r.returncode == 2 and "--arch" in r.stderr and "Traceback" not in r.stderr


def test_zoo_file_and_zoo_listing(folder, tmp_path):
    import torch

    f = tmp_path / "a.pth"
    torch.save(dsim.create_backbone("smallcnn-w16", weights="random", num_classes=0, seed=1).state_dict(), f)
    zoo = tmp_path / "my_zoo.yaml"
    zoo.write_text(
        "checkpoints:\n"
        "  - {name: lab-a, architecture: smallcnn-w16, weights: 'file:a.pth', pretrained_on: usps}\n"
        "  - {name: lab-random, architecture: smallcnn-w16, weights: random}\n"
    )
    rk = dsim.rank(
        str(folder), zoo=str(zoo), measures="logme", max_samples=60, cache=dsim.Cache(tmp_path / "c")
    )
    assert {r.source for r in rk.rows} == {"lab-a", "lab-random"}
    lab = next(r for r in rk.rows if r.source == "lab-a")
    assert lab.kind == "checkpoint" and lab.architecture == "smallcnn-w16"
    r = run_dsim("zoo", "--zoo", str(zoo), "--json")
    assert r.returncode == 0, r.stderr
    cards = {c["name"]: c for c in json.loads(r.stdout)}
    assert cards["lab-a"]["weights_here"] and cards["lab-random"]["weights_here"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("checkpoints:\n  - {name: x, weights: random}\n")
    with pytest.raises(dsim.DsimError, match="bad.yaml: checkpoint entry #1 .*missing architecture"):
        dsim.rank(str(folder), zoo=str(bad))


def test_a_checkpoint_pretrained_on_the_targets_images_is_no_candidate(tmp_path):
    import torch

    f = tmp_path / "p.pth"
    torch.save(dsim.create_backbone("smallcnn-w16", weights="random", num_classes=0, seed=1).state_dict(), f)
    zoo = tmp_path / "z.yaml"
    zoo.write_text(
        "checkpoints:\n"
        f"  - {{name: on-pneumonia, architecture: smallcnn-w16, weights: 'file:{f}', pretrained_on: pneumoniamnist}}\n"
        f"  - {{name: on-usps, architecture: smallcnn-w16, weights: 'file:{f}', pretrained_on: usps}}\n"
    )
    rk = dsim.rank("chest", zoo=str(zoo), measures="expert")
    assert [r.source for r in rk.rows] == ["on-usps"]
    assert any(
        s.get("source") == "on-pneumonia" and "same data as the target" in s["reason"] for s in rk.skipped
    )


@needs_weights
def test_validate_fine_tunes_checkpoint_cards_in_their_own_architecture(folder, tmp_path, monkeypatch):
    """`dsim validate --sources` takes the candidate syntax of `dsim rank`: a registered
    checkpoint is fine-tuned in its own architecture from its checked file; a card whose file
    is not here fails its runs in one line, and the others still run."""
    monkeypatch.setenv("DSIM_WEIGHTS_DIR", str(WEIGHTS))
    monkeypatch.setenv("DSIM_CACHE_DIR", str(tmp_path / "cache"))
    store = tmp_path / "runs.sqlite"
    report = dsim.validate(
        str(folder),
        sources=["cifar10-resnet20", "usps"],
        backbone="smallcnn-w16",
        folds=2,
        hyperparameters={"epochs": 1, "image_size": 32},
        pretrain_hyperparameters={"epochs": 1, "image_size": 32},
        source_max=200,
        store=store,
        predict=False,
    )
    assert not report.failures, report.failures
    st = dsim.ResultsStore(store)
    runs = [st.get(row["key"]) for row in st.rows()]
    by_source = {}
    for r in runs:
        by_source.setdefault(r.spec.source, set()).add(r.spec.backbone)
    assert by_source["cifar10-resnet20"] == {"cifar-resnet20"}  # the card's own network
    assert by_source["usps"] == {"smallcnn-w16"}  # a dataset is pretrained on --backbone
    ck = {r.checkpoint for r in runs if r.spec.source == "cifar10-resnet20"}
    card = dsim.list_checkpoints()["cifar10-resnet20"]
    assert ck == {card.sha256}  # the very file the card names, checked by its digest
    row = next(r for r in report.rows if r.source == "cifar10-resnet20")
    assert row.auc is not None and 0.0 <= row.auc <= 1.0

    monkeypatch.setenv("DSIM_WEIGHTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(dsim.DsimError) as e:  # refused before any run, the file and variable named
        dsim.validate(
            str(folder),
            sources=["cifar10-resnet20"],
            backbone="smallcnn-w16",
            folds=2,
            hyperparameters={"epochs": 1, "image_size": 32},
            store=tmp_path / "other.sqlite",
            predict=False,
        )
    msg = str(e.value)
    assert "cifar10-resnet20" in msg and "cifar10_resnet20.pth" in msg and "DSIM_WEIGHTS_DIR" in msg, msg
    assert not (tmp_path / "other.sqlite").exists()  # nothing was planned, nothing stored


def test_validate_takes_the_card_names_of_a_zoo_file(folder, tmp_path, monkeypatch):
    """A card of the user's zoo YAML is a source name for validate as for rank (--zoo)."""
    import torch

    monkeypatch.setenv("DSIM_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "lab.pth"
    torch.save(dsim.create_backbone("smallcnn-w16", weights="random", num_classes=0, seed=1).state_dict(), f)
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(
        "checkpoints:\n"
        f"  - {{name: lab-net, architecture: smallcnn-w16, weights: 'file:{f}', input_size: 32}}\n"
    )
    kw = dict(
        sources=["lab-net"],
        backbone="smallcnn",
        folds=2,
        hyperparameters={"epochs": 1, "image_size": 32},
        predict=False,
    )
    with pytest.raises(dsim.DsimError, match="lab-net.*unknown dataset 'lab-net'"):  # unknown without the zoo
        dsim.validate(str(folder), store=tmp_path / "a.sqlite", **kw)
    report = dsim.validate(str(folder), store=tmp_path / "b.sqlite", zoo=[str(zoo)], **kw)
    assert not report.failures, report.failures
    st = dsim.ResultsStore(tmp_path / "b.sqlite")
    runs = [st.get(row["key"]) for row in st.rows() if row["source"] == "lab-net"]
    assert len(runs) == 2 and {r.spec.backbone for r in runs} == {"smallcnn-w16"}
    assert {r.checkpoint for r in runs} == {dsim.file_digest(f)}


@needs_weights
def test_a_dataset_ranking_leaves_out_checkpoints_on_disk_unless_asked(folder, tmp_path, monkeypatch):
    """The shared weights are here: a ranking without --sources ranks the datasets only and names
    the checkpoints it left out; --with-checkpoints (with_checkpoints=True) ranks them too."""
    monkeypatch.setenv("DSIM_WEIGHTS_DIR", str(WEIGHTS))
    monkeypatch.setenv("DSIM_CACHE_DIR", str(tmp_path / "cache"))
    here = sorted(c.name for c in dsim.get_registry().checkpoints.values() if c.weights.startswith("file:"))
    assert "cifar10-resnet20" in here
    rk = dsim.rank(str(folder), measures="expert")
    assert not any(r.kind == "checkpoint" for r in rk.rows)
    note = [n for n in rk.notes if n.startswith("left out")]
    assert len(note) == 1 and "--with-checkpoints" in note[0] and all(n in note[0] for n in here)
    rk = dsim.rank(str(folder), measures="expert", with_checkpoints=True)
    assert sorted(r.source for r in rk.rows if r.kind == "checkpoint") == here
    assert not any(n.startswith("left out") for n in rk.notes)


def test_fu_is_opt_in_and_runs_when_named(tmp_path, monkeypatch):
    """FU (back-propagation, no signal on the zoo) is not in a default ranking; named, it runs."""
    import torch

    monkeypatch.setenv("DSIM_CACHE_DIR", str(tmp_path / "cache"))
    assert dsim.list_measures()["fu"].opt_in and not dsim.list_measures()["logme"].opt_in
    f = tmp_path / "p.pth"
    torch.save(dsim.create_backbone("smallcnn-w16", weights="random", num_classes=0, seed=1).state_dict(), f)
    zoo = tmp_path / "z.yaml"
    zoo.write_text(
        f"checkpoints:\n  - {{name: net, architecture: smallcnn-w16, weights: 'file:{f}', pretrained_on: usps}}\n"
    )
    rng = np.random.default_rng(0)
    target = tmp_path / "t.npz"
    labels = (np.arange(40) % 2).astype(np.int64)
    np.savez(target, images=rng.integers(0, 255, (40, 16, 16), dtype=np.uint8), labels=labels)
    from dsim_plugins.model_scores import FU

    calls = []
    real = FU.value
    monkeypatch.setattr(FU, "value", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    rk = dsim.rank(str(target), zoo=str(zoo), max_samples=40)
    assert not calls and (rk.rows[0].contributions.get("fu") or {}).get("value") is None
    assert rk.rows[0].contributions["logme"]["value"] is not None
    rk = dsim.rank(str(target), zoo=str(zoo), measures="fu,logme", max_samples=40)
    assert calls == [1] and rk.rows[0].contributions["fu"]["value"] is not None


def test_a_third_party_backbone_is_ranked_at_the_size_it_declares(folder, tmp_path, fresh_plugins):
    """A backbone plugin whose network has none of timm's ``default_cfg`` declares its input size
    and feature dimension through ``BackboneFactory.spec``: a checkpoint card without
    ``input_size`` is ranked at that size, and a classifier is built on that feature dimension."""
    import torch

    seen: list[tuple[int, ...]] = []

    class Net(torch.nn.Module):
        num_classes = 0

        def __init__(self, in_chans, num_classes):
            super().__init__()
            self.conv = torch.nn.Conv2d(in_chans, 12, 3, padding=1)
            self.fc = torch.nn.Linear(12, num_classes) if num_classes else torch.nn.Identity()

        def forward_features(self, x):
            seen.append(tuple(x.shape[-2:]))
            return torch.relu(self.conv(x))

        def forward_head(self, x, pre_logits=False):
            x = x.mean(dim=(2, 3))
            return x if pre_logits else self.fc(x)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

        def get_classifier(self):
            return self.fc

    class Declared(dsim.BackboneFactory):
        name = "declared"

        def handles(self, model_name):
            return model_name == "declarednet"

        def list_models(self, pattern="*"):
            return ["declarednet"]

        def create(self, model_name, *, weights="imagenet", num_classes=0, in_chans=3, seed=0):
            torch.manual_seed(seed)
            model = Net(in_chans, num_classes)
            model.dsim_weights_id = dsim.random_weights_id(model_name, seed=seed, in_chans=in_chans)
            return model

        def spec(self, model_name, model):
            return dsim.BackboneSpec(input_size=40, mean=(0.5,) * 3, std=(0.25,) * 3, num_features=12)

    class P:
        @dsim.hookimpl
        def dsim_register_backbones(self):
            return [Declared()]

    fresh_plugins.register(P(), "declared-backbones")
    net = dsim.create_backbone("declarednet", weights="random")
    assert not hasattr(net, "default_cfg") and dsim.backbone_spec(net).num_features == 12
    card = dsim.CheckpointCard(name="lab-net", architecture="declarednet", weights="random")
    assert dsim.checkpoint_input_size(card) == 40
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text("checkpoints:\n  - {name: lab-net, architecture: declarednet, weights: random}\n")
    seen.clear()
    rk = dsim.rank(
        str(folder), zoo=str(zoo), measures="logme", max_samples=60, cache=dsim.Cache(tmp_path / "c")
    )
    assert [r.source for r in rk.rows] == ["lab-net"] and rk.rows[0].kind == "checkpoint"
    assert seen and set(seen) == {(40, 40)}

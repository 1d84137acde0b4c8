"""Checkpoint cards (``dsim_register_checkpoints``) of the built-in backbone plugins, and the
torchvision backbone plugin behind the cards of Juodelyte et al. 2024's architecture study.
No pretrained weights are needed: the cards are checked against timm's and torchvision's
metadata, and torchvision's networks against their own forward pass at random init."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import dsim
import dsim.kernel.plugins

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO.parent / "shared" / "published" / "juodelyte2024" / "AUCs_model.csv"


@pytest.fixture(autouse=True)
def _one_thread():
    """Small networks: on a small shared CPU, torch's intra-op threads cost more than they give."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def no_caches(tmp_path, monkeypatch):
    """Empty torch hub and Hugging Face caches, no downloads allowed."""
    monkeypatch.delenv("DSIM_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def _cards(provider=None):
    return [c for p, c in dsim.kernel.plugins.collect("dsim_register_checkpoints") if provider in (None, p)]


def test_every_card_names_a_buildable_architecture_a_known_dataset_and_its_weights():
    cards = _cards()
    names = [n for c in cards for n in c.all_names]
    assert len(names) == len(set(names))
    registry = dsim.get_registry()
    factories = [f for _p, f in dsim.kernel.plugins.collect("dsim_register_backbones")]
    for c in cards:
        assert registry.get(c.pretrained_on).name == c.pretrained_on, c.name
        assert any(f.handles(c.architecture) for f in factories), c.name
        assert c.weights.split(":")[0] in ("file", "timm", "torchvision"), c.name
        assert c.sha256 is None or (len(c.sha256) == 64 and int(c.sha256, 16) >= 0), c.name
        assert c.family and c.parameters and c.num_classes and c.input_size and c.licence, c.name
        assert dsim.CheckpointCard.from_dict(c.to_dict()) == c


def test_the_study_names_map_onto_one_card_each():
    """Each architecture of the study (Juodelyte et al. 2024, AUCs_model.csv) is the alias of
    exactly one card, a torchvision IMAGENET1K_V1 network as the study's code builds it."""
    if STUDY.is_file():
        with STUDY.open() as f:
            study = {row["source"] for row in csv.DictReader(f)}
    else:  # the names as the study's README lists them
        study = set(
            "densenet efficientnet googlenet mnasnet mobilenet vgg convnext shufflenet resnet".split()
        )
    aliased = {a: c for c in _cards() for a in c.aliases if a in study}
    assert set(aliased) == study
    for alias, c in aliased.items():
        assert c.pretrained_on == "imagenet" and c.family == alias
        assert c.weights.endswith((".tv_in1k", ".IMAGENET1K_V1")), c.name


def test_timm_cards_are_timm_pretrained_tags_of_the_stated_size():
    import timm

    tags = set(timm.list_pretrained())
    for c in _cards("timm_backbones"):
        tag = c.weights[len("timm:") :]
        assert tag in tags and tag.split(".")[0] == c.architecture, c.name
        cfg = timm.models.get_pretrained_cfg(tag).to_dict()
        assert cfg["input_size"][-1] == c.input_size and tuple(cfg["mean"]) == c.mean, c.name
        with torch.device("meta"):
            model = timm.create_model(c.architecture, pretrained=False, num_classes=c.num_classes)
        assert sum(p.numel() for p in model.parameters()) == c.parameters, c.name


def test_torchvision_cards_match_torchvision_weights_metadata():
    import torchvision.models as tvm

    cards = _cards("torchvision_backbones")
    assert {c.aliases[0] for c in cards} >= {"googlenet", "shufflenet"}  # not in timm
    for c in cards:
        arch, weights = c.weights[len("torchvision:") :].split(".")
        w = tvm.get_model_weights(arch)[weights]
        assert w.meta["num_params"] == c.parameters, c.name
        assert w.transforms.keywords["crop_size"] == c.input_size, c.name
        assert c.architecture == f"tv-{arch}"


def test_cards_need_no_weights_until_used(no_caches):
    for c in _cards():
        if c.weights.startswith("file:"):
            continue  # the shared files: tests/test_shared_backbones.py
        with pytest.raises(dsim.WeightsMissingError) as e:
            dsim.create_backbone(c.architecture, weights=c.weights)
        msg = str(e.value)
        assert "\n" not in msg and "DSIM_ALLOW_DOWNLOAD=1" in msg, msg


def test_a_timm_card_loads_its_tag_from_the_local_cache(no_caches, monkeypatch):
    import timm
    from safetensors.torch import save_file

    tag = "resnet18.tv_in1k"
    repo = timm.models.get_pretrained_cfg(tag).to_dict()["hf_hub_id"]
    ref = dsim.create_backbone("resnet18", weights="random", seed=3, num_classes=1000)
    base = no_caches / "hf" / f"models--{repo.replace('/', '--')}"
    (base / "snapshots" / "abc").mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text("abc")
    save_file(
        {k: v.contiguous() for k, v in ref.state_dict().items()},
        str(base / "snapshots" / "abc" / "model.safetensors"),
    )
    card = next(c for c in _cards("timm_backbones") if c.name == tag)
    model = dsim.create_backbone(card.architecture, weights=card.weights, num_classes=1000)
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], ref.state_dict()["layer4.1.conv2.weight"])
    with pytest.raises(dsim.DsimError, match="not for timm model 'vgg11'"):
        dsim.create_backbone("vgg11", weights=card.weights)


# ------------------------------------------------------------------------------ torchvision plugin
def _torchvision_net(arch: str, state):
    import torchvision.models as tvm

    kw = {"aux_logits": False, "init_weights": False, "transform_input": True} if arch == "googlenet" else {}
    net = tvm.get_model(arch, weights=None, **kw)
    net.load_state_dict(state)
    return net.eval()


@pytest.mark.parametrize("arch", ["googlenet", "shufflenet_v2_x0_5", "mobilenet_v3_small"])
def test_torchvision_backbones_compute_what_torchvision_computes(arch):
    m = dsim.create_backbone(f"tv-{arch}", weights="random", num_classes=1000, seed=1).eval()
    net = _torchvision_net(arch, m.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = m.forward_features(x)
        pooled = m.forward_head(f, pre_logits=True)
        assert pooled.shape == (2, m.num_features)
        assert torch.allclose(m(x), net(x), atol=1e-5)
        assert torch.allclose(m.get_classifier()(pooled), m(x), atol=1e-5)
    assert {"classifier", "input_size", "mean", "std"} <= set(m.default_cfg)
    feats = dsim.create_backbone(f"tv-{arch}", weights="random", num_classes=0, seed=1).eval()
    with torch.no_grad():
        assert torch.allclose(feats(x), pooled, atol=1e-5)


def test_torchvision_files_load_strictly_aux_heads_dropped(tmp_path):
    import torchvision.models as tvm

    # torchvision's published GoogLeNet file carries the auxiliary classifiers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        full = tvm.googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=True)
    path = tmp_path / "googlenet.pth"
    torch.save(full.state_dict(), path)
    m = dsim.create_backbone("tv-googlenet", weights=str(path), num_classes=1000).eval()
    assert not any(k.startswith("aux") for k in m.state_dict())
    assert m.dsim_weights_id == dsim.file_digest(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m(x), full.eval()(x), atol=1e-5)
    # grey input: the stem summed over RGB with GoogLeNet's input scale folded in
    grey = dsim.create_backbone("tv-googlenet", weights=str(path), in_chans=1)
    scale = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) / 0.5
    w = full.state_dict()["conv1.conv.weight"]
    assert torch.allclose(grey.conv1.conv.weight, (w * scale).sum(1, keepdim=True))
    with torch.no_grad():
        assert grey.eval()(torch.randn(2, 1, 64, 64)).shape == (2, 1024)
    # a module whose loading reads the file's version metadata (MNASNet), and a mismatch
    mnas = dsim.create_backbone("tv-mnasnet1_0", weights="random", num_classes=1000)
    torch.save(mnas.state_dict(), tmp_path / "mnas.pth")
    again = dsim.create_backbone("tv-mnasnet1_0", weights=str(tmp_path / "mnas.pth"), num_classes=1000)
    assert torch.equal(again.layers[0].weight, mnas.layers[0].weight)
    with pytest.raises(
        dsim.CheckpointError,
        match=r"does not fit backbone 'tv-shufflenet_v2_x0_5': \d+ of the model's \d+ tensors missing \(model: conv1\.0",
    ):
        dsim.create_backbone("tv-shufflenet_v2_x0_5", weights=str(tmp_path / "mnas.pth"))


def test_declared_torchvision_urls_are_torchvisions_own():
    """``dsim zoo`` checks torch hub's cache from declared URLs (no torchvision import): they must
    be the ones torchvision downloads."""
    import torchvision.models as tvm

    from dsim_plugins.torchvision_backbones import ARCHS, URLS

    assert set(URLS) == set(ARCHS)
    assert {a: tvm.get_model_weights(a).IMAGENET1K_V1.url for a in ARCHS} == URLS


def test_a_wrong_file_in_torch_hubs_cache_is_refused(no_caches):
    from dsim_plugins.torchvision_backbones import hub_file

    path, _url, prefix = hub_file("shufflenet_v2_x0_5")
    assert str(path).startswith(str(no_caches / "torch")) and prefix
    path.parent.mkdir(parents=True)
    torch.save({"conv1.0.weight": torch.zeros(1)}, path)
    with pytest.raises(dsim.WeightsChecksumError) as e:
        dsim.create_backbone("tv-shufflenet_v2_x0_5", weights="imagenet")
    assert str(path) in str(e.value) and prefix in str(e.value) and "\n" not in str(e.value)


def test_logme_runs_on_a_cifar_resnet_source_checkpoint(tmp_path):
    """The measures reach these backbones as they reach timm's: a source checkpoint of
    cifar-resnet20 (here seeded and saved) scores a target."""
    src = dsim.create_backbone("cifar-resnet20", weights="random", num_classes=10, seed=2)
    ckpt = tmp_path / "src.pth"
    torch.save(src.state_dict(), ckpt)
    rng = np.random.default_rng(0)
    target = dsim.ImageSet("t", rng.integers(0, 255, (40, 28, 28), dtype=np.uint8), np.arange(40) % 2)
    ctx = dsim.Context(seed=0, device="cpu", cache=None)
    logme = dsim.create_measure(
        "logme", source_checkpoints={"s": str(ckpt)}, backbone="cifar-resnet20", image_size=32
    )
    assert np.isfinite(logme.pair(dsim.DatasetCard(name="s"), target, ctx))

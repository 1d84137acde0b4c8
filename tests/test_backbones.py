"""The timm backbone plugin: seeded random init, local checkpoint files, timm's local cache, and
a clear message (never a silent download) when ImageNet weights are missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dsim


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.dtype.is_floating_point])


def test_random_init_is_seeded_and_explicit():
    a = dsim.create_backbone("resnet18", weights="random", seed=3)
    b = dsim.create_backbone("resnet18", weights="random", seed=3)
    c = dsim.create_backbone("resnet18", weights="random", seed=4)
    assert torch.equal(_params(a), _params(b))
    assert not torch.equal(_params(a), _params(c))
    assert a.dsim_weights_id == b.dsim_weights_id != c.dsim_weights_id
    # the global RNG is left alone
    torch.manual_seed(0)
    x = torch.rand(1)
    torch.manual_seed(0)
    dsim.create_backbone("resnet18", weights="random", seed=5)
    assert torch.equal(torch.rand(1), x)


def test_missing_imagenet_weights_say_how_to_supply_them(monkeypatch, tmp_path):
    monkeypatch.delenv("DSIM_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    with pytest.raises(dsim.WeightsMissingError) as e:
        dsim.create_backbone("resnet18", weights="imagenet")
    msg = str(e.value)
    assert "resnet18" in msg and "--weights" in msg and "random" in msg and "\n" not in msg


def test_checkpoint_file_loads_with_new_head_and_grey_input(tmp_path):
    src = dsim.create_backbone("resnet18", weights="random", seed=11, num_classes=7)
    path = tmp_path / "source.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    model = dsim.create_backbone("resnet18", weights=str(path), num_classes=2, seed=0)
    sd, ref = model.state_dict(), src.state_dict()
    assert torch.equal(sd["layer4.1.conv2.weight"], ref["layer4.1.conv2.weight"])
    assert sd["fc.weight"].shape == (2, 512)  # the 7-class head was dropped
    grey = dsim.create_backbone("resnet18", weights=str(path), in_chans=1)
    assert torch.allclose(grey.state_dict()["conv1.weight"], ref["conv1.weight"].sum(1, keepdim=True))
    assert len(grey.dsim_weights_id) == 64  # sha256 of the file content


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    other = dsim.create_backbone("resnet34", weights="random")
    path = tmp_path / "r34.pth"
    torch.save(other.state_dict(), path)
    # resnet34's tensors share names with resnet18 but not all shapes/blocks: too much is missing
    vgg = tmp_path / "garbage.pth"
    torch.save({"foo": torch.zeros(3)}, vgg)
    with pytest.raises(dsim.DsimError, match="does not fit timm model 'resnet18'"):
        dsim.create_backbone("resnet18", weights=str(vgg))
    with pytest.raises(dsim.WeightsMissingError, match="not found"):
        dsim.create_backbone("resnet18", weights=str(tmp_path / "nope.pth"))


def test_imagenet_weights_from_local_hf_cache(tmp_path, monkeypatch):
    """Weights placed in the Hugging Face cache layout are found offline."""
    import timm
    from safetensors.torch import save_file

    cfg = timm.models.get_pretrained_cfg("resnet18").to_dict()
    repo = cfg["hf_hub_id"]
    ref = dsim.create_backbone("resnet18", weights="random", seed=21, num_classes=1000)
    hub = tmp_path / "hub"
    snap = hub / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (hub / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (hub / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("abc123")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(snap / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    model = dsim.create_backbone("resnet18", weights="imagenet")
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], ref.state_dict()["layer1.0.conv1.weight"])


def test_unknown_backbone_suggests_names():
    with pytest.raises(dsim.UnknownNameError, match="resnet18"):
        dsim.create_backbone("resnet-18", weights="random")


def test_features_are_batched_and_deterministic():
    model = dsim.create_backbone("resnet18", weights="random", seed=0)
    imgs = np.random.default_rng(0).integers(0, 255, (9, 28, 28, 1), dtype=np.uint8)
    f1 = dsim.extract_features(model, imgs, size=32, batch_size=4)
    f2 = dsim.extract_features(model, imgs, size=32, batch_size=9)
    assert f1.shape == (9, 512)
    np.testing.assert_allclose(f1, f2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["smallcnn-w16", "resnet18"])
def test_every_backbone_follows_the_timm_interface_dsim_uses(name, tmp_path):
    """Strategies and measures call forward_features / forward_head / get_classifier: a backbone
    plugin's models must have them (LogME on a smallcnn checkpoint failed before they did)."""
    m = dsim.create_backbone(name, weights="random", num_classes=3, seed=0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f = m.forward_features(x)
        pooled = m.forward_head(f, pre_logits=True)
        assert pooled.shape == (2, m.num_features)
        assert dsim.backbone_spec(m).num_features == m.num_features  # the declared contract
        assert torch.allclose(m.forward_head(f), m(x), atol=1e-6)
        assert torch.allclose(m.get_classifier()(pooled), m(x), atol=1e-6)
    ckpt = tmp_path / "src.pth"
    torch.save(m.state_dict(), ckpt)
    target = dsim.ImageSet(
        "t", np.random.default_rng(0).integers(0, 255, (40, 28, 28), dtype=np.uint8), np.arange(40) % 2
    )
    ctx = dsim.Context(seed=0, device="cpu", cache=None)
    logme = dsim.create_measure("logme", source_checkpoints={"s": str(ckpt)}, backbone=name, image_size=32)
    assert np.isfinite(logme.pair(dsim.DatasetCard(name="s"), target, ctx))

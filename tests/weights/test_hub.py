"""Weights from the hubs, through huggingface_hub and torch.hub, against a stand-in on 127.0.0.1."""

import hashlib
import io
import json

import pytest
import torch
from safetensors.torch import save

from tests.helpers import TinyNet
from tests.weights.stand_in_hub import StandInHub
from transferkit.errors import TransferkitError
from transferkit.model.factory import create_model
from transferkit.weights.hub import fetch, remote_preprocessing
from transferkit.weights.loading import load_pretrained


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = StandInHub(tmp_path / "served")
    server.point(monkeypatch, tmp_path / "hf-cache")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-cache"))
    yield server
    server.close()


def _tiny_repo(hub, repo="me/tiny-net"):
    torch.manual_seed(1)
    reference = TinyNet()
    hub.add_repo_file(repo, "model.safetensors", save(reference.state_dict()))
    config = {
        "architecture": "tiny",
        "pretrained_cfg": {
            "mean": [0.1, 0.2, 0.3],
            "std": [0.5, 0.5, 0.5],
            "input_size": [3, 16, 16],
            "interpolation": "bilinear",
            "crop_pct": 1.0,
        },
    }
    hub.add_repo_file(repo, "config.json", json.dumps(config).encode())
    return reference


def test_hf_hub_repo_is_downloaded_cached_and_brings_its_preprocessing(hub):
    reference = _tiny_repo(hub)
    model = TinyNet()
    report = load_pretrained(model, "hf-hub:me/tiny-net")
    assert report.loaded_fraction == 1.0 and report.source == "hf-hub:me/tiny-net"
    torch.testing.assert_close(model.fc.weight, reference.fc.weight)
    pre = remote_preprocessing("hf-hub:me/tiny-net", model)
    assert pre.mean == (0.1, 0.2, 0.3) and pre.interpolation == "bilinear" and pre.input_size == (3, 16, 16)
    downloads = [r for r in hub.requests if r.startswith("GET") and r.endswith("model.safetensors")]
    assert len(downloads) == 1
    load_pretrained(TinyNet(), "hf-hub:me/tiny-net")  # the second time from the cache
    assert [r for r in hub.requests if r.startswith("GET") and r.endswith("model.safetensors")] == downloads


def test_timm_tag_goes_through_timm_config_to_its_hub_repo(hub):
    model = create_model("resnet18", num_classes=10)
    source = create_model("resnet18")
    hub.add_repo_file("timm/resnet18.a1_in1k", "model.safetensors", save(source.state_dict()))
    fetched = fetch("timm:a1_in1k", model)
    assert fetched.origin == "timm/resnet18.a1_in1k" and fetched.config["crop_pct"] == 0.95
    report = load_pretrained(model, "timm:a1_in1k")
    assert [m.key for m in report.mismatched] == ["fc.weight", "fc.bias"]  # the 1000-class head
    with pytest.raises(TransferkitError, match="no pretrained tag 'nope' for resnet18; its tags: .*a1_in1k"):
        fetch("timm:nope", model)


@pytest.mark.parametrize(
    "fault, words",
    [(None, "none of model.safetensors, pytorch_model.bin"), ("500", "Hugging Face Hub"), ("cut", "failed")],
)
def test_hub_failures_are_one_clear_error_and_leave_nothing_usable(hub, tmp_path, monkeypatch, fault, words):
    import huggingface_hub.utils._http as http

    retries = []
    monkeypatch.setattr(http.time, "sleep", retries.append)  # huggingface_hub's backoff, without the waiting
    if fault is not None:
        _tiny_repo(hub)
        hub.faults["model.safetensors"] = fault
    with pytest.raises(TransferkitError, match=words):
        fetch("hf-hub:me/tiny-net")
    snapshots = list((tmp_path / "hf-cache").rglob("snapshots/*/model.safetensors"))
    assert snapshots == []  # no half file where a later run would take it
    if fault is not None:
        hub.faults.clear()
        assert fetch("hf-hub:me/tiny-net").path.stat().st_size > 0  # and the next try succeeds
    if fault == "500":
        assert retries  # a server error is retried before it is reported


def test_offline_uses_the_cache_only_and_says_where_it_looked(hub, tmp_path, monkeypatch):
    _tiny_repo(hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TransferkitError, match=r"none of .* in the cache \(.*hf-cache; HF_HUB_OFFLINE is set\)"):
        fetch("hf-hub:me/tiny-net")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    fetch("hf-hub:me/tiny-net")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.requests)
    assert fetch("hf-hub:me/tiny-net").path.is_file() and len(hub.requests) == before


def test_url_download_checks_the_hash_in_its_name(hub, tmp_path):
    buffer = io.BytesIO()
    torch.save(TinyNet().state_dict(), buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    good = hub.add_file(f"tiny-{digest[:8]}.pth", data)
    assert load_pretrained(TinyNet(), good).loaded_fraction == 1.0
    assert (tmp_path / "torch-cache" / "checkpoints" / f"tiny-{digest[:8]}.pth").is_file()
    bad = hub.add_file("tiny-deadbeef.pth", data)
    with pytest.raises(TransferkitError, match="does not match its hash"):
        fetch(bad)
    assert not (tmp_path / "torch-cache" / "checkpoints" / "tiny-deadbeef.pth").exists()
    with pytest.raises(TransferkitError, match="Downloading .* failed"):
        fetch(f"{hub.url}/files/missing.pth")


def test_torchvision_weights_from_a_seeded_torch_cache(hub, tmp_path):
    import torchvision

    model = create_model("torchvision:resnet18", num_classes=4)
    url = torchvision.models.get_model_weights("resnet18")["DEFAULT"].url
    seeded = tmp_path / "torch-cache" / "checkpoints" / url.rsplit("/", 1)[-1]
    seeded.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), seeded)
    report = load_pretrained(model, "torchvision:DEFAULT")
    assert report.backbone_fraction == 1.0 and [m.key for m in report.mismatched] == ["fc.weight", "fc.bias"]
    pre = remote_preprocessing("torchvision:IMAGENET1K_V1", model)
    assert pre.input_size == (3, 224, 224) and pre.crop_pct == pytest.approx(224 / 256)
    assert pre.interpolation == "bilinear" and pre.mean == (0.485, 0.456, 0.406)
    with pytest.raises(TransferkitError, match="no weights 'V9' for resnet18; choose one of DEFAULT, IMAGENET1K_V1"):
        fetch("torchvision:V9", model)


def test_model_weights_lists_tags_and_what_is_cached(hub):
    from transferkit.weights.hub import model_weights

    before = {row["spec"]: row for row in model_weights("resnet18")}
    assert before["timm:a1_in1k"]["default"] and before["timm:a1_in1k"]["cached"] is None
    hub.add_repo_file("timm/resnet18.a1_in1k", "model.safetensors", save(create_model("resnet18").state_dict()))
    fetch("timm:a1_in1k", create_model("resnet18"))
    after = {row["spec"]: row for row in model_weights("resnet18")}
    assert after["timm:a1_in1k"]["cached"] and after["timm:a1_in1k"]["size_mb"] > 40
    assert after["timm:a2_in1k"]["cached"] is None
    vision = {row["spec"]: row for row in model_weights("torchvision:resnet18")}
    assert vision["torchvision:IMAGENET1K_V1"]["size_mb"] == pytest.approx(44.7, abs=0.1)  # torchvision's record
    with pytest.raises(TransferkitError, match="Unknown model 'nosuch'"):
        model_weights("nosuch")


def test_predict_with_hub_weights_and_an_architecture(hub):
    from PIL import Image

    from transferkit.inference.predict import load_predictor

    hub.add_repo_file("timm/resnet18.a1_in1k", "model.safetensors", save(create_model("resnet18").state_dict()))
    predictor = load_predictor("timm:a1_in1k", model="resnet18", device="cpu")
    assert len(predictor.class_names) == 1000 and predictor.preprocessing.crop_pct == 0.95
    image = hub.root / "cat.png"
    Image.new("RGB", (64, 48), (120, 80, 40)).save(image)
    top = predictor.predict([image], top_k=2)[0]["top"]
    assert len(top) == 2 and top[0]["label"] in predictor.class_names
    with pytest.raises(TransferkitError, match="need model: the MODEL they are for"):
        load_predictor("timm:a1_in1k")
    with pytest.raises(TransferkitError, match="does not fill resnet18: 2 tensors missing or of another shape"):
        partial = {k: v for k, v in create_model("resnet18").state_dict().items() if not k.startswith("fc.")}
        torch.save(partial, hub.root / "nohead.pth")
        load_predictor(str(hub.root / "nohead.pth"), model="resnet18")


def test_a_timm_hub_repo_at_another_size_brings_its_config_and_is_resampled(hub, tmp_path):
    """A repository in timm's layout (config.json + model.safetensors) trained at 96 px, used at 64 px."""
    from transferkit.train.config import TrainConfig
    from transferkit.train.engine import fit
    from transferkit.train.folder.run_folder import load_run

    torch.manual_seed(2)
    served = create_model("test_vit", num_classes=10, image_size=96)  # a 6x6 grid; the architecture's default is 160 px
    repo = "timm/test_vit.r96_in1k"
    hub.add_repo_file(repo, "model.safetensors", save({k: v.contiguous() for k, v in served.state_dict().items()}))
    config = {
        "architecture": "test_vit",
        "num_classes": 10,
        "num_features": 64,
        "pretrained_cfg": {
            "tag": "r96_in1k",
            "input_size": [3, 96, 96],
            "fixed_input_size": True,
            "interpolation": "bilinear",
            "crop_pct": 0.95,
            "crop_mode": "center",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "num_classes": 10,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    }
    hub.add_repo_file(repo, "config.json", json.dumps(config).encode())
    lines = []
    settings = dict(model="test_vit", weights=f"hf-hub:{repo}", data="builtin:digits", strategy="freeze", epochs=1)
    fit(TrainConfig(**settings, image_size=64, out=str(tmp_path / "run")), log=lines.append)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["load_report"]["resampled"] == [{"key": "pos_embed", "from": [1, 37, 64], "to": [1, 17, 64]}]
    # The size the weights were trained at (the repository's, not the architecture's 160) and the class token
    backbone = {"architecture": "test_vit", "trained_size": [96, 96], "input_size": [64, 64], "num_prefix_tokens": 1}
    assert report["backbone"] == backbone and load_run(tmp_path / "run")["backbone"] == backbone
    pre = load_run(tmp_path / "run")["preprocessing"]
    assert tuple(pre["mean"]) == (0.5, 0.5, 0.5) and tuple(pre["std"]) == (0.25, 0.25, 0.25)
    assert pre["interpolation"] == "bilinear" and pre["crop_pct"] == 0.95 and tuple(pre["input_size"]) == (3, 64, 64)
    assert any(f"the configuration that came with hf-hub:{repo}" in line for line in lines)


@pytest.mark.parametrize(
    ("name", "trained"), [("vit_small_patch14_dinov2.lvd142m", 518), ("eva02_tiny_patch14_224.mim_in22k", 224)]
)
def test_a_foundation_repo_written_by_timm_carries_its_config_into_a_run_at_another_size(hub, tmp_path, name, trained):
    """The repository's files are timm's own (``save_for_hf``: config.json + model.safetensors), without a head."""
    import timm
    from timm.models._hub import save_for_hf

    from transferkit.train.config import TrainConfig
    from transferkit.train.engine import fit
    from transferkit.train.folder.run_folder import load_run

    torch.manual_seed(3)
    served = timm.create_model(name, pretrained=False, num_classes=0)
    save_for_hf(served, tmp_path / "repo", safe_serialization=True)
    repo = f"timm/{name}"
    for file in (tmp_path / "repo").iterdir():
        hub.add_repo_file(repo, file.name, file.read_bytes())
    arch = name.split(".")[0]
    config = TrainConfig(
        model=arch, weights=f"hf-hub:{repo}", data="builtin:digits", strategy="freeze", epochs=1, image_size=56,
        train_images=200, out=str(tmp_path / "run"),  # what is checked is the load and the config, not the fit
    )
    fit(config, log=lambda message: None)
    state = load_run(tmp_path / "run")
    assert state["backbone"] == {
        "architecture": arch, "trained_size": [trained, trained], "input_size": [56, 56], "num_prefix_tokens": 1
    }
    cfg, pre = served.pretrained_cfg, state["preprocessing"]
    assert tuple(pre["mean"]) == tuple(cfg["mean"]) and tuple(pre["std"]) == tuple(cfg["std"])
    assert pre["interpolation"] == cfg["interpolation"] and pre["crop_pct"] == cfg["crop_pct"]
    report = json.loads((tmp_path / "run" / "report.json").read_text())["load_report"]
    tokens = (56 // 14) ** 2 + 1
    pos = {"key": "pos_embed", "from": list(served.pos_embed.shape), "to": [1, tokens, served.embed_dim]}
    assert pos in report["resampled"]
    assert report["backbone_fraction"] == 1.0 and all(key.startswith("head.") for key in report["missing"])
    torch.testing.assert_close(state["model"]["blocks.0.attn.proj.weight"], served.blocks[0].attn.proj.weight)

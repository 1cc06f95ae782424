import huggingface_hub.constants
import pytest
import torch

from transferkit import TransferkitError
from transferkit.model.factory import create_model
from transferkit.weights.loading import load_pretrained
from transferkit.weights.registry import get_weights, list_weights, resolve_source, timm_cached_weights

pytestmark = pytest.mark.slow


def test_registry_records():
    assert [r.name for r in list_weights()] == ["lite0", "lite1", "lite2"]
    rec = get_weights("lite0")
    assert rec.architecture == "tf_efficientnet_lite0" and rec.preprocessing.input_size == (3, 224, 224)
    assert rec.class_names()[281].startswith("tabby")
    with pytest.raises(TransferkitError, match="Unknown weights 'lite9'"):
        get_weights("lite9")


@pytest.mark.parametrize("name", ["lite0", "lite1", "lite2"])
def test_installed_file_matches_its_hash(name):
    rec = get_weights(name)
    assert rec.is_installed() and rec.verify()


@pytest.mark.parametrize("k", [0, 1, 2])
def test_lite_weights_map_fully_by_structure(k):
    model = create_model(f"tf_efficientnet_lite{k}")
    report = load_pretrained(model, f"lite{k}")
    assert report.how_counts == {"structure": len(model.state_dict())}
    assert report.loaded_fraction == 1.0 and not report.unexpected and not report.ambiguous
    assert report.notes == []


def test_other_padding_variant_gets_a_note():
    report = load_pretrained(create_model("efficientnet_lite0"), "lite0")
    assert "made for tf_efficientnet_lite0" in report.notes[0]


def test_unknown_source_and_missing_timm_cache(tmp_path, monkeypatch):
    with pytest.raises(TransferkitError, match="neither a file nor known weights"):
        resolve_source("resnet_weights")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(TransferkitError, match="not in the local cache.*nothing is downloaded"):
        timm_cached_weights(create_model("resnet18"))


def test_timm_cache_is_read_offline(tmp_path, monkeypatch):
    model = create_model("resnet18")
    url_name = model.pretrained_cfg["url"].rsplit("/", 1)[-1] if model.pretrained_cfg.get("url") else None
    # Fake a cached file the way torch.hub stores URL downloads, unless only a hub id exists.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    if url_name is None:
        pytest.skip("resnet18's timm config has no URL in this timm release")
    (tmp_path / "checkpoints").mkdir()
    reference = create_model("resnet18")
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / url_name)
    report = load_pretrained(model, "timm")
    assert report.how_counts == {"name": len(reference.state_dict())}
    torch.testing.assert_close(model.fc.weight, reference.fc.weight)


def test_grayscale_model_adapts_rgb_stem():
    rgb = create_model("tf_efficientnet_lite0")
    load_pretrained(rgb, "lite0")
    gray = create_model("tf_efficientnet_lite0", in_chans=1)
    report = load_pretrained(gray, "lite0")
    assert report.how_counts == {"structure": 295, "adapted": 1}
    torch.testing.assert_close(gray.conv_stem.weight, rgb.conv_stem.weight.sum(dim=1, keepdim=True))

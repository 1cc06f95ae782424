"""transformers image classifiers as MODEL: tiny random networks of transformers' own classes, saved as Trainer
saves them and served from the stand-in hub on 127.0.0.1 (no transformer weights install offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers import make_image_folder
from tests.weights.stand_in_hub import StandInHub
from transferkit.errors import ModelSpecError
from transferkit.model.factory import create_model, is_code_spec
from transferkit.model.freeze import stage_parameters
from transferkit.model.surgery import find_head
from transferkit.weights.loading import load_pretrained

transformers = pytest.importorskip("transformers")

LABELS = {0: "cat", 1: "dog", 2: "fox"}


def _tiny(family: str):
    """A tiny network of transformers' class for ``family``, at 32 px, with three labels."""
    common = {"num_labels": 3, "id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}}
    if family == "vit":
        config = transformers.ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, **common,
        )  # fmt: skip
        return transformers.ViTForImageClassification(config)
    if family == "convnext":
        config = transformers.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], image_size=32, **common)
        return transformers.ConvNextForImageClassification(config)
    if family == "swin":
        config = transformers.SwinConfig(
            image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4, **common
        )
        return transformers.SwinForImageClassification(config)
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], **common)
    return transformers.ResNetForImageClassification(config)


def _saved(family: str, folder):
    torch.manual_seed(0)
    model = _tiny(family).eval()
    model.save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, resample=3).save_pretrained(folder)
    return model


def _photos() -> torch.Tensor:
    from skimage import data

    images = [torch.from_numpy(np.ascontiguousarray(getattr(data, n)())) for n in ("chelsea", "coffee", "rocket")]
    small = [
        torch.nn.functional.interpolate(i.permute(2, 0, 1)[None].float(), size=(32, 32), mode="area") for i in images
    ]
    return (torch.cat(small) / 255 - 0.5) / 0.5


@pytest.mark.parametrize("family", ["vit", "convnext", "swin", "resnet"])
def test_a_saved_model_is_built_and_loaded_as_transformers_runs_it(family, tmp_path):
    reference = _saved(family, tmp_path / family)
    model = create_model(str(tmp_path / family))
    report = load_pretrained(model, str(tmp_path / family)).to_dict()
    assert report["loaded_fraction"] == 1.0 and not report["mismatched"] and not report["missing"]
    model.eval()
    photos = _photos()
    with torch.no_grad():
        assert torch.equal(model(photos), reference(pixel_values=photos).logits)
    assert model.label_names == ["cat", "dog", "fox"]
    assert find_head(model) == ("classifier.1" if family == "resnet" else "classifier")
    groups = stage_parameters(model)
    assert len(groups) >= 4 and groups[-1][-1].startswith("classifier")  # embeddings, 2 blocks or stages, the rest
    # paths and state-dict keys are transformers' own
    assert set(model.state_dict()) == set(reference.state_dict())


def test_new_classes_get_a_new_head_and_the_report_says_so(tmp_path):
    _saved("vit", tmp_path / "vit")
    model = create_model(str(tmp_path / "vit"), num_classes=5)
    report = load_pretrained(model, str(tmp_path / "vit")).to_dict()
    assert {m["key"] for m in report["mismatched"]} == {"classifier.weight", "classifier.bias"}
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 5) and model.label_names is None
    model.classifier = torch.nn.Linear(32, 7)  # surgery on the wrapper reaches the transformers model
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    served = StandInHub(tmp_path / "served")
    monkeypatch.setattr(constants, "ENDPOINT", served.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", served.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    _saved("vit", tmp_path / "vit")
    for path in (tmp_path / "vit").iterdir():
        served.add_repo_file("org/tiny-vit", path.name, path.read_bytes())
    yield served
    served.close()


def test_a_hub_model_trains_predicts_exports_and_is_identified(hub, tmp_path, cli, cli_json):
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=10, size=32)
    assert not is_code_spec("transformers:org/tiny-vit")  # no --trust-code: nothing of the repo runs
    code, out, err = cli(
        "train", "transformers:org/tiny-vit", "--data", data, "--out", tmp_path / "run", "--strategy", "lp-ft",
        "--epochs", "2", "--precision", "fp32", "--no-channels-last", "--batch-size", "8",
    )  # fmt: skip
    assert code == 0, err
    text = " ".join(out.split())
    assert "weights: transformers:org/tiny-vit: 38 tensors loaded" in text and "head 'classifier' is new" in text
    assert "cache: 'forward_head(pre_logits=True)' output (32,)" in text  # the probe trains on cached features
    assert "mean (0.5, 0.5, 0.5)" in text and "bicubic" in text  # the image processor's preprocessing
    predicted = cli_json("predict", tmp_path / "run", data / "a" / "0.png")
    assert predicted["predictions"][0]["top"][0]["label"] in ("a", "b")
    code, out, err = cli("export", tmp_path / "run")
    assert code == 0, err
    found = cli_json("identify", "transformers:org/tiny-vit")
    assert found["transformers"]["architecture"] == "ViTForImageClassification"
    assert found["transformers"]["labels"] == ["cat", "dog", "fox"] and found["native"] == "transformers:org/tiny-vit"


def test_configs_that_are_not_image_classifiers_are_one_line(tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    config = {"architectures": ["BertForSequenceClassification"], "model_type": "bert"}
    (bert / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSpecError, match="is a BertForSequenceClassification, not an image classifier"):
        create_model(str(bert))
    remote = tmp_path / "remote"
    remote.mkdir()
    config = {"architectures": ["ViTForImageClassification"], "model_type": "vit", "auto_map": {"x": "y.Z"}}
    (remote / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSpecError, match="repository's own code.*does not run"):
        create_model(str(remote))

"""transformers image classifiers as MODEL: tiny random networks of transformers' own classes, saved as Trainer
saves them and served from the stand-in hub on 127.0.0.1 (no transformer weights install offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import make_image_folder
from tests.weights.stand_in_hub import StandInHub
from transferkit.deploy.push import push_run
from transferkit.errors import ModelSpecError, WeightsError
from transferkit.inference.predict import load_predictor
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
    if family == "deit":  # with its distillation head: two classifiers, averaged
        config = transformers.DeiTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, **common,
        )  # fmt: skip
        return transformers.DeiTForImageClassificationWithTeacher(config)
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


@pytest.mark.parametrize("family", ["vit", "deit", "convnext", "swin", "resnet"])
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
    assert find_head(model) == {"resnet": "classifier.1", "deit": "cls_classifier"}.get(family, "classifier")
    groups = stage_parameters(model)
    assert len(groups) >= 4 and "classifier" in groups[-1][-1]  # embeddings, 2 blocks or stages, the rest
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
    monkeypatch.setenv("HF_TOKEN", "hf_stand_in")  # uploads carry a token, as the Hub asks
    served = StandInHub(tmp_path / "served")
    served.point(monkeypatch, tmp_path / "hf-cache")
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
    found = cli_json("identify", "transformers:org/tiny-vit")
    assert found["transformers"]["architecture"] == "ViTForImageClassification"
    assert found["transformers"]["labels"] == ["cat", "dog", "fox"] and found["native"] == "transformers:org/tiny-vit"

    # handed on: pushed as transformers' own folder, which transformers alone loads from the Hub
    url = push_run(tmp_path / "run", "me/finetuned", log=lambda m: None)
    assert url.startswith(f"{hub.url}/me/finetuned/commit/")
    assert sorted(hub.commits[0][3]) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    processor = transformers.AutoImageProcessor.from_pretrained("me/finetuned")
    loaded = transformers.AutoModelForImageClassification.from_pretrained("me/finetuned").eval()
    assert loaded.config.id2label == {0: "a", 1: "b"}
    images = sorted((data / "a").glob("*.png"))[:3] + sorted((data / "b").glob("*.png"))[:3]
    with torch.no_grad():
        inputs = processor([np.asarray(Image.open(p).convert("RGB")) for p in images], return_tensors="pt")
        probabilities = loaded(**inputs).logits.softmax(-1)
    predictor = load_predictor(str(tmp_path / "run"), device="cpu", uncalibrated=True)
    for answer, row in zip(predictor.predict([str(p) for p in images], top_k=2), probabilities):
        for top in answer["top"]:  # the written processor gives the run's own tensor
            assert top["probability"] == pytest.approx(float(row[loaded.config.label2id[top["label"]]]), abs=1e-4)


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


@pytest.mark.parametrize("eps, identical", [(1e-6, True), (1e-12, False)])
def test_a_vit_converted_into_timm_computes_what_transformers_does(tmp_path, cli_json, eps, identical):
    """transformers' ViT at the sizes of timm's test_vit, loaded into it by the written conversion
    and compared with transformers' own network on the sample photos. transformers' ViTs keep layer norm's eps
    at 1e-12, timm's at 1e-6: that difference is reported, never passed over."""
    config = transformers.ViTConfig(
        image_size=32, patch_size=16, hidden_size=64, num_hidden_layers=6, num_attention_heads=2,
        intermediate_size=192, num_labels=3, layer_norm_eps=eps,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    out = cli_json("load", "test_vit", tmp_path / "vit", "--num-classes", "3", "--image-size", "32")
    assert len(out["matched"]) == 80 and out["loaded_fraction"] == 1.0 and out["how"] == {"name": 80}
    assert any("q, k, v stacked into qkv" in note for note in out["notes"])
    variant = out["verification"]["variant"]
    assert variant["native"] == str(tmp_path / "vit") and variant["compared"] == "logits"
    assert variant["identical"] is identical and out["verification"]["status"] == ("ok" if identical else "warn")
    if identical:
        assert variant["max_abs_diff"] == 0.0
    else:
        assert 0 < variant["max_abs_diff"] < 1e-3 and variant["top1_agreement"] == variant["photos"]


def test_convnext_resnet_and_deit_converted_into_timm_and_a_family_without_a_conversion(tmp_path, cli_json):
    """transformers' ConvNeXt at the sizes of timm's test_convnext; its norms' epsilons are 1e-6 inside and
    layer_norm_eps at the end, timm's test network's 1e-5: the difference is reported."""
    config = transformers.ConvNextConfig(
        num_stages=4, hidden_sizes=[24, 32, 48, 64], depths=[1, 2, 4, 2], num_labels=3, layer_norm_eps=1e-5
    )
    torch.manual_seed(0)
    transformers.ConvNextForImageClassification(config).save_pretrained(tmp_path / "convnext")
    out = cli_json("load", "test_convnext", tmp_path / "convnext", "--num-classes", "3", "--image-size", "32")
    assert out["loaded_fraction"] == 1.0 and set(out["how"]) == {"name"} and not out["missing"]
    variant = out["verification"]["variant"]
    assert variant["compared"] == "logits" and variant["top1_agreement"] == variant["photos"]
    assert variant["max_abs_diff"] < 1e-3 * max(1.0, variant["scale"])
    # a ResNet-18 of transformers' basic layers, with BatchNorm statistics that matter, into timm's resnet18
    config = transformers.ResNetConfig(
        layer_type="basic", hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], num_labels=3
    )
    resnet = transformers.ResNetForImageClassification(config)
    for module in resnet.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    resnet.save_pretrained(tmp_path / "resnet")
    out = cli_json("load", "resnet18", tmp_path / "resnet", "--num-classes", "3", "--image-size", "64")
    assert out["loaded_fraction"] == 1.0 and out["how"] == {"name": 122} and not out["missing"]
    assert out["verification"]["variant"]["max_abs_diff"] == 0.0  # the same network, to the last bit
    # transformers' DeiT with its distillation head into timm's distilled DeiT
    config = transformers.DeiTConfig(
        image_size=32, patch_size=16, hidden_size=192, num_hidden_layers=12, num_attention_heads=3,
        intermediate_size=768, num_labels=3, layer_norm_eps=1e-6,
    )  # fmt: skip
    transformers.DeiTForImageClassificationWithTeacher(config).save_pretrained(tmp_path / "deit")
    out = cli_json(
        "load", "deit_tiny_distilled_patch16_224", tmp_path / "deit", "--num-classes", "3", "--image-size", "32"
    )
    assert out["how"] == {"name": 155} and out["verification"]["variant"]["max_abs_diff"] == 0.0
    config = transformers.ConvNextV2Config(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    transformers.ConvNextV2ForImageClassification(config).save_pretrained(tmp_path / "convnextv2")
    with pytest.raises(WeightsError, match="no written conversion of transformers' convnextv2 into timm"):
        load_pretrained(create_model("test_vit", num_classes=3), str(tmp_path / "convnextv2"))


def test_a_swin_converted_into_timm_computes_what_transformers_does(tmp_path):
    """A small Swin of both libraries (two stages: a patch merging between them), built with the same sizes."""
    import timm

    from transferkit.data.preprocess import Preprocessing
    from transferkit.weights.identify import variant_check

    sizes = {"embed_dim": 32, "depths": [1, 2], "num_heads": [1, 2], "window_size": 7}
    config = transformers.SwinConfig(image_size=56, num_labels=3, layer_norm_eps=1e-5, **sizes)
    torch.manual_seed(0)
    transformers.SwinForImageClassification(config).save_pretrained(tmp_path / "swin")
    model = timm.create_model("swin_tiny_patch4_window7_224", img_size=56, num_classes=3, **sizes)
    report = load_pretrained(model, str(tmp_path / "swin"))
    assert report.loaded_fraction == 1.0 and report.how_counts == {"name": len(report.matched)} and not report.missing
    pre = Preprocessing((3, 56, 56), (0.5,) * 3, (0.5,) * 3, "bicubic", 1.0, "center")
    variant = variant_check(model, str(tmp_path / "swin"), report, pre)
    assert variant["identical"] and variant["max_abs_diff"] < 1e-5 * max(1.0, variant["scale"])


def test_a_beit_converted_into_timm_computes_what_transformers_does(tmp_path):
    """A small BEiT of both libraries: layer scale, relative position bias per block, mean pooling."""
    import timm

    from transferkit.data.preprocess import Preprocessing
    from transferkit.weights.identify import variant_check

    config = transformers.BeitConfig(
        image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=3, use_relative_position_bias=True, use_mean_pooling=True,
        layer_scale_init_value=0.1, layer_norm_eps=1e-6,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BeitForImageClassification(config).save_pretrained(tmp_path / "beit")
    sizes = {"img_size": 32, "depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2}
    model = timm.create_model("beit_base_patch16_224", num_classes=3, **sizes)
    report = load_pretrained(model, str(tmp_path / "beit"))
    assert report.loaded_fraction == 1.0 and report.how_counts == {"name": len(report.matched)} and not report.missing
    pre = Preprocessing((3, 32, 32), (0.5,) * 3, (0.5,) * 3, "bicubic", 1.0, "center")
    variant = variant_check(model, str(tmp_path / "beit"), report, pre)
    assert variant["identical"] and variant["max_abs_diff"] < 1e-5 * max(1.0, variant["scale"])

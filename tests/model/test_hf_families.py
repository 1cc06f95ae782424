"""transformers families whose own code meets transferkit's machinery: TF-style padding under LoRA, BEiT's
attention in an ONNX export, MobileViT's processor (a crop larger than its resize, BGR)."""

from __future__ import annotations

import pytest

from tests.helpers import make_image_folder
from transferkit.deploy.export import export_run
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit

transformers = pytest.importorskip("transformers")

LABELS = {"num_labels": 2, "id2label": {0: "a", 1: "b"}, "label2id": {"a": 0, "b": 1}}
FAST = dict(epochs=1, precision="fp32", channels_last=False, batch_size=8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), classes=("a", "b"), per_class=8, size=40)


def _saved(folder, model, processor):
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def test_mobilenet_v2_trains_with_lora_through_its_tf_padding(data, tmp_path):
    """transformers' TF 'SAME' padding reads stride, kernel_size and dilation of the convolution peft wrapped."""
    config = transformers.MobileNetV2Config(image_size=64, depth_multiplier=0.25, tf_padding=True, **LABELS)
    spec = _saved(tmp_path / "net", transformers.MobileNetV2ForImageClassification(config),
                  transformers.MobileNetV2ImageProcessor(size={"shortest_edge": 72}, crop_size=64))  # fmt: skip
    summary = fit(TrainConfig(model=spec, data=str(data), out=str(tmp_path / "run"), strategy="lora", **FAST))
    assert 0 < summary["trainable_params"] < summary["frozen_params"] / 2
    result = export_run(tmp_path / "run", format="onnx", log=lambda m: None)  # adapters merged, then exported
    assert result.parity["top1_agreement"] == 1.0


def test_beit_exports_to_onnx(data, tmp_path):
    """torch.export cannot decompose the reshape after BEiT's SDPA attention with a dynamic batch; the eager
    attention exports, and the parity proof holds."""
    config = transformers.BeitConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, use_relative_position_bias=True,
                                     **LABELS)  # fmt: skip
    spec = _saved(tmp_path / "net", transformers.BeitForImageClassification(config),
                  transformers.BeitImageProcessor(size={"height": 32, "width": 32}))  # fmt: skip
    fit(TrainConfig(model=spec, data=str(data), out=str(tmp_path / "run"), strategy="freeze", **FAST))
    result = export_run(tmp_path / "run", format="onnx", log=lambda m: None)
    assert result.parity["max_abs_diff"] < 1e-4 and result.parity["top1_agreement"] == 1.0


def test_mobilevit_v2_trains_at_its_processors_size_in_bgr(data, tmp_path):
    config = transformers.MobileViTV2Config(image_size=64, width_multiplier=0.25, **LABELS)
    spec = _saved(tmp_path / "net", transformers.MobileViTV2ForImageClassification(config),
                  transformers.MobileViTImageProcessor(size={"shortest_edge": 72}, crop_size=64))  # fmt: skip
    lines = []
    fit(TrainConfig(model=spec, data=str(data), out=str(tmp_path / "run"), strategy="freeze", **FAST), log=lines.append)
    logged = " ".join(lines)
    assert "preprocessing: 64 px" in logged and "center crop 0.888" in logged
    import torch

    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert state["preprocessing"]["channel_order"] == "BGR" and state["preprocessing"]["crop_offset"] == "floor"


def test_bit_lora_exports_with_its_adapters_beside_its_weight_standardised_convolutions(data, tmp_path):
    """BiT standardises each convolution's weight before use: a LoRA update folded into the weight is standardised
    with it and computes something else, so the export keeps the adapters as layers of their own."""
    config = transformers.BitConfig(embedding_size=8, hidden_sizes=[32, 64], depths=[1, 1], num_groups=2,
                                    image_size=32, **LABELS)  # fmt: skip
    spec = _saved(tmp_path / "net", transformers.BitForImageClassification(config),
                  transformers.BitImageProcessor(size={"shortest_edge": 36}, crop_size=32))  # fmt: skip
    settings = {**FAST, "epochs": 4, "lr": 0.1}  # adapters far enough from zero for the merge to show
    fit(TrainConfig(model=spec, data=str(data), out=str(tmp_path / "run"), strategy="lora", **settings))
    lines = []
    result = export_run(tmp_path / "run", format="onnx", log=lines.append)
    assert any(line.startswith("adapters kept beside their layers: merged, they change") for line in lines), lines
    assert result.parity["max_abs_diff"] < 1e-4

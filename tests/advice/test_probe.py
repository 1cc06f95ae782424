"""Depth probes: where activations are taken, the probe itself, and the statistics gap."""

import pytest
import torch
import torch.nn as nn

from transferkit.advice.probe import Depth, _block, depth_points, extract, linear_probe, task_probe
from transferkit.data.preprocess import BatchPrep, Preprocessing
from transferkit.model.factory import create_model


def test_depths_are_stage_ends_and_the_head_input():
    points = depth_points(create_model("resnet18", num_classes=3))
    assert [p.name for p in points] == ["bn1", "layer1", "layer2", "layer3", "head input"]
    # --unfreeze-last counts the head: after layer3 come layer4 and fc
    assert [p.stages_after for p in points] == [5, 4, 3, 2, 1]
    lite = depth_points(create_model("tf_efficientnet_lite0", num_classes=3))
    assert len(lite) == 6 and lite[-1].name == "head input" and lite[0].name == "bn1"
    assert _block(["layer1.0.conv1", "layer1.1.bn2"]) == "layer1" and _block(["conv1", "bn1"]) == "bn1"


def test_swinv2_stages_are_probed_where_they_run_and_pooled_over_positions_not_channels():
    # SwinV2's first stage has no downsample: its parameters all sit in layers.0.blocks, a ModuleList
    # that is never called. Its stages give (N, H, W, C): the pooled width is the channels'.
    model = create_model("swinv2_tiny_window8_256", num_classes=3, image_size=64)
    points = depth_points(model)
    assert points[1].name == "layers.0.blocks.1"
    features, _, _ = extract(model, torch.rand(2, 3, 64, 64), lambda x: x, points)
    assert [tuple(f.shape) for f in features.values()] == [(2, 96), (2, 96), (2, 192), (2, 384), (2, 768)]


def test_a_distilled_models_tied_heads_give_one_head_input_per_image():
    from transferkit.model.surgery import tie_distillation_head

    model = create_model("levit_128s", num_classes=3, image_size=64)
    tie_distillation_head(model)
    features, _, _ = extract(model, torch.rand(3, 3, 64, 64), lambda x: x, depth_points(model)[-1:])
    assert features["head input"].shape == (3, 384)


def test_the_probe_separates_what_is_separable_and_not_noise():
    torch.manual_seed(0)
    labels = torch.arange(300) % 3
    centres = torch.randn(3, 16) * 3
    features = centres[labels] + torch.randn(300, 16)
    result = linear_probe(features[:200], labels[:200], features[200:], labels[200:], 3)
    assert result["accuracy"] > 0.95 and result["balanced_accuracy"] > 0.95
    noise = linear_probe(torch.randn(200, 16), labels[:200], torch.randn(100, 16), labels[200:], 3)
    assert noise["accuracy"] < 0.55  # chance is 1/3


def test_probes_of_several_labels_and_of_numbers_score_what_is_linear_and_not_noise():
    torch.manual_seed(0)
    features = torch.randn(400, 16)
    labels = torch.stack([features[:, 0] > 0, features[:, 1] + features[:, 2] > 0.5], 1).float()  # (N, 2)
    result = task_probe(features[:300], labels[:300], features[300:], labels[300:], "multi-label")
    assert result["score"] == result["map"] > 0.95
    noise = task_probe(torch.randn(300, 16), labels[:300], torch.randn(100, 16), labels[300:], "multi-label")
    assert noise["map"] < 0.7  # chance: each label's share of positives, about 0.5 and 0.36
    values = 3 * features[:, 0] - features[:, 3] + 0.1 * torch.randn(400) + 50
    numbers = task_probe(features[:300], values[:300], features[300:], values[300:], "regression")
    assert numbers["score"] == numbers["r2"] > 0.99 and numbers["mae"] < 0.2
    unrelated = task_probe(torch.randn(300, 16), values[:300], torch.randn(100, 16), values[300:], "regression")
    assert unrelated["r2"] < 0.1


class _Net(nn.Module):
    """BatchNorm first, so that its input is the image itself."""

    def __init__(self):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(self.bn0(x)).mean((2, 3)))


def test_the_statistics_gap_is_the_distance_in_running_standard_deviations():
    net = _Net().eval()  # running mean 0, running variance 1
    pre = Preprocessing((3, 8, 8), (0.0, 0.0, 0.0), (1 / 255,) * 3, "bilinear", 1.0)  # pixels pass unchanged
    images = torch.full((4, 3, 8, 8), 2, dtype=torch.uint8)  # every input 2: two standard deviations off
    points = [Depth("conv", 0, 2), Depth("head input", 0, 1)]
    features, gaps, speed = extract(net, images, BatchPrep(pre, torch.device("cpu"), False), points)
    assert features["conv"].shape == (4, 4) and features["head input"].shape == (4, 4)
    torch.testing.assert_close(features["conv"], features["head input"])  # the head's input is the pooled conv
    assert gaps == {0: pytest.approx(2.0, rel=1e-4)} and speed > 0


def test_imbalanced_classes_are_probed_by_balanced_accuracy(tmp_path):
    from tests.helpers import make_imbalanced_folder
    from transferkit.advice.advise import advise
    from transferkit.train.config import TrainConfig

    make_imbalanced_folder(tmp_path / "data")
    lines = []
    config = TrainConfig(
        model="tests.helpers:TinyNet", weights="none", data=str(tmp_path / "data"), image_size=16,
        out=str(tmp_path / "a"),
    )  # fmt: skip
    result = advise(config, log=lines.append)
    assert result["score"] == "balanced accuracy"
    assert all(row["score"] == row["balanced_accuracy"] for row in result["depths"])
    text = "\n".join(lines)
    said = "classes imbalanced (largest over smallest 6.0, over 2): the probes are compared by balanced accuracy"
    assert said in text
    assert "probe after head input: balanced accuracy" in text and ", accuracy " in text
    assert "balanced accuracy" in result["advice"]["reason"]
    # train's default, auto, would not train what was probed: the command names the weights
    assert result["train_command"].startswith("transferkit train tests.helpers:TinyNet --weights none --data ")


def test_advise_on_a_vit_names_its_blocks_and_has_no_statistics_gap(tmp_path):
    from transferkit.advice.advise import advise
    from transferkit.train.config import TrainConfig

    lines = []
    config = TrainConfig(
        model="test_vit", weights="none", data="builtin:digits", image_size=32, out=str(tmp_path / "a")
    )
    result = advise(config, log=lines.append)
    assert result["statistics_gap"] is None
    assert all(row["gap"] is None for row in result["depths"])
    assert any("statistics gap - (no BatchNorm)" in line for line in lines)
    assert result["advice"]["signals"] == ["linear probes"]

"""Identify a checkpoint's architecture, and compare a structure-mapped load with the file's own network."""

import shutil

import pytest
import torch
import torch.nn.functional as F
import torchvision

from tests.helpers import TinyNet
from transferkit.model.factory import create_model
from transferkit.weights.identify import _index, compare_outputs, identify, signature
from transferkit.weights.loading import load_pretrained
from transferkit.weights.registry import get_weights
from transferkit.weights.verify import verify_weights


def trained_a_few_steps(net: torch.nn.Module, steps: int = 4) -> torch.nn.Module:
    """A few SGD steps on noise images, so that weights and BatchNorm statistics leave their initial values."""
    torch.manual_seed(0)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    net.train()
    for _ in range(steps):
        x, y = torch.rand(8, 3, 64, 64), torch.randint(0, 10, (8,))
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.mark.parametrize(
    "model", ["resnet18", "efficientnet_lite0", "torchvision:resnet18", "torchvision:efficientnet_b0"]
)
def test_the_index_holds_what_the_installed_libraries_build(model):
    assert _index()["architectures"][model] == signature(create_model(model))


def test_a_torchvision_file_fits_its_own_names_with_its_class_count(tmp_path):
    net = torchvision.models.resnet18(num_classes=7)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    found = identify(tmp_path / "r18.pth")
    fits = {c.model: c for c in found.by_names}
    # timm's resnet18 uses torchvision's names, so both fit; their outputs are compared separately.
    assert {"resnet18", "torchvision:resnet18"} <= set(fits)
    assert fits["torchvision:resnet18"].num_classes == 7 and fits["torchvision:resnet18"].fit == "names"
    assert (
        "resnet34" not in fits and found.by_structure == [] or "resnet18" not in {c.model for c in found.by_structure}
    )


def test_a_headless_file_fits_with_no_head(tmp_path):
    state = create_model("mobilenetv3_small_050").state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("classifier")}
    torch.save(state, tmp_path / "backbone.pth")
    fits = {c.model: c for c in identify(tmp_path / "backbone.pth").by_names}
    assert "mobilenetv3_small_050" in fits and fits["mobilenetv3_small_050"].num_classes is None


def test_a_file_of_no_known_architecture_fits_nothing(tmp_path):
    torch.save(TinyNet().state_dict(), tmp_path / "tiny.pth")
    found = identify(tmp_path / "tiny.pth")
    assert found.by_names == [] and found.by_structure == [] and found.native is None


def test_a_torchvision_checkpoint_mapped_into_timm_is_compared_with_torchvision(tmp_path):
    trained = trained_a_few_steps(torchvision.models.efficientnet_b0(num_classes=10))
    torch.save(trained.state_dict(), tmp_path / "b0.pth")
    assert identify(tmp_path / "b0.pth").native == "torchvision:efficientnet_b0"

    same = create_model("efficientnet_b0", num_classes=10)  # timm's port: symmetric padding, as torchvision
    report = load_pretrained(same, tmp_path / "b0.pth")
    assert report.how_counts == {"structure": 360}
    result = verify_weights(same, source=tmp_path / "b0.pth", report=report)
    assert result["variant"]["native"] == "torchvision:efficientnet_b0" and result["variant"]["identical"]
    assert not [f for f in result["findings"] if f["kind"] == "other_implementation"]

    other = create_model("tf_efficientnet_b0", num_classes=10)  # TF 'same' padding, BatchNorm eps 1e-3
    report = load_pretrained(other, tmp_path / "b0.pth")
    assert report.loaded_fraction == 1.0  # a clean load by every count, and still another network
    result = verify_weights(other, source=tmp_path / "b0.pth", report=report)
    finding = next(f for f in result["findings"] if f["kind"] == "other_implementation")
    assert result["status"] == "warn" and "Use torchvision:efficientnet_b0 as MODEL" in finding["message"]
    assert f"logits differ by up to {finding['max_abs_diff']:.3g}" in finding["message"]


def test_compare_outputs_sees_features_when_heads_differ():
    a = trained_a_few_steps(torchvision.models.resnet18(num_classes=10))
    b = create_model("resnet18", num_classes=3)
    load_pretrained(b, a.state_dict())
    from transferkit.data.preprocess import Preprocessing

    result = compare_outputs(a, b, Preprocessing.from_model(b))
    assert result["compared"] == "features" and result["identical"] and result["max_abs_diff"] == 0.0


@pytest.mark.slow
def test_lite0_is_told_apart_from_the_implementation_that_pads_differently(tmp_path):
    found = identify("lite0")
    assert found.record == "lite0" and found.native == "tf_efficientnet_lite0" and found.by_names == []
    assert {"tf_efficientnet_lite0", "efficientnet_lite0"} <= {c.model for c in found.by_structure}
    copy = tmp_path / "weights.pth"  # the same bytes under another name: found by its digest
    shutil.copy(get_weights("lite0").path(), copy)
    assert identify(copy).record == "lite0"

    right = create_model("tf_efficientnet_lite0")
    report = load_pretrained(right, "lite0")
    result = verify_weights(right, get_weights("lite0").preprocessing, source="lite0", report=report)
    assert result["status"] == "ok" and result["variant"]["identical"] and "0.0" in result["variant"]["checked"]

    wrong = create_model("efficientnet_lite0")
    report = load_pretrained(wrong, "lite0")
    result = verify_weights(wrong, get_weights("lite0").preprocessing, source="lite0", report=report)
    finding = next(f for f in result["findings"] if f["kind"] == "other_implementation")
    assert finding["native"] == "tf_efficientnet_lite0" and finding["max_abs_diff"] > 1.0  # 3.12 measured


@pytest.mark.slow
def test_names_of_no_architecture_compare_the_structural_fits(tmp_path):
    state = torch.load(get_weights("lite0").path(), weights_only=True)
    # Names no architecture has: m0.weight, m1.running_mean ... (the last part kept, as converters do).
    modules = {}
    renamed = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        renamed[f"m{modules.setdefault(module, len(modules))}.{leaf}"] = value
    torch.save(renamed, tmp_path / "renamed.pth")
    found = identify(tmp_path / "renamed.pth")
    assert found.record is None and found.native is None
    model = create_model("efficientnet_lite0")
    report = load_pretrained(model, tmp_path / "renamed.pth")
    result = verify_weights(model, source=tmp_path / "renamed.pth", report=report)
    finding = next(f for f in result["findings"] if f["kind"] == "other_implementation")
    assert "fit no timm or torchvision architecture" in finding["message"]
    assert "tf_efficientnet_lite0" in {alt["model"] for alt in finding["alternatives"] if not alt["identical"]}


def test_identify_command_prints_the_fits_and_json(tmp_path, cli, cli_json):
    torch.save(torchvision.models.squeezenet1_1(num_classes=4).state_dict(), tmp_path / "sq.pth")
    out = cli_json("identify", tmp_path / "sq.pth")
    assert out["native"] == "torchvision:squeezenet1_1" and out["by_names"][0]["num_classes"] == 4
    code, text, _ = cli("identify", tmp_path / "sq.pth")
    assert code == 0 and "native architecture: torchvision:squeezenet1_1" in text

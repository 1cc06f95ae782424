import pytest
import torch

from transferkit import SurgeryError
from transferkit.model.freeze import freeze
from transferkit.model.inspection import layer_table, parameter_table, parameter_values


def test_layer_table_shapes_and_counts(tiny):
    freeze(tiny, "conv1")
    rows = {r.name: r for r in layer_table(tiny)}
    assert rows["conv1"].output_shape == [(1, 8, 16, 16)]
    assert rows["fc"].output_shape == [(1, 5)]
    assert rows[""].params == sum(p.numel() for p in tiny.parameters())
    assert rows[""].trainable == rows[""].params - 216
    assert rows["layer1.0"].depth == 2


def test_parameter_table(tiny):
    freeze(tiny, "conv1")
    table = {p.name: p for p in parameter_table(tiny)}
    assert table["conv1.weight"].shape == (8, 3, 3, 3) and not table["conv1.weight"].trainable
    assert table["fc.bias"].trainable


def test_parameter_values(tiny):
    with torch.no_grad():
        tiny.fc.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    v = parameter_values(tiny, "fc.bias", first=3)
    assert v["shape"] == [5] and v["mean"] == 3.0 and v["min"] == 1.0 and v["max"] == 5.0
    assert v["first"] == [1.0, 2.0, 3.0]
    assert v["std"] == pytest.approx(torch.tensor([1.0, 2, 3, 4, 5]).std().item())
    assert parameter_values(tiny, "bn1.running_var")["mean"] == 1.0
    with pytest.raises(SurgeryError, match="Did you mean fc.bias"):
        parameter_values(tiny, "fc.bais")

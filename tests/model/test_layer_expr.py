import pytest
import torch.nn as nn

from transferkit import LayerExprError
from transferkit.model.layer_expr import parse_layer, parse_value


def test_layers_with_literal_arguments():
    conv = parse_layer("Conv2d(64, 128, 3, padding=1)")
    assert isinstance(conv, nn.Conv2d) and conv.padding == (1, 1) and conv.out_channels == 128
    assert isinstance(parse_layer("nn.Identity()"), nn.Identity)
    seq = parse_layer("Sequential(Dropout(0.2), torch.nn.Linear(1280, 10))")
    assert isinstance(seq[1], nn.Linear) and seq[1].out_features == 10


@pytest.mark.parametrize(
    "text, message",
    [
        ("__import__('os').system('touch x')", "not a torch.nn layer name"),
        ("Linear(4096, x)", "not a literal"),
        ("Linear(4096, 10", "not valid syntax"),
        ("Lnear(4, 2)", "Did you mean Linear"),
        ("Linear(4096)", "could not be built"),
        ("Linear(**{'a': 1})", "'\\*\\*' arguments"),
        ("10", "not a layer call"),
    ],
)
def test_rejected(text, message):
    with pytest.raises(LayerExprError, match=message):
        parse_layer(text)


def test_parse_value():
    assert parse_value("10") == 10 and parse_value("(2, 2)") == (2, 2)
    with pytest.raises(LayerExprError):
        parse_value("open('x')")

import re

import pytest
import torch

from transferkit import TransferkitError
from transferkit.model._trace import input_size_of
from transferkit.model.factory import create_model


def test_vit_is_built_for_the_requested_size_with_its_own_grid():
    model = create_model("test_vit", num_classes=3, image_size=64)
    # patch 16: a 4x4 grid and the class token, instead of the 10x10 grid of its 160 px default
    assert tuple(model.pos_embed.shape) == (1, 17, 64)
    assert input_size_of(model) == (3, 64, 64)
    assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize("name", ["test_convnext", "test_maxvit", "swin_tiny_patch4_window7_224"])
@pytest.mark.parametrize("size", [64, 96])
def test_windowed_and_convolutional_families_run_at_other_sizes(name, size):
    model = create_model(name, num_classes=3, image_size=size)
    assert model.eval()(torch.randn(1, 3, size, size)).shape == (1, 3)


def test_a_size_the_architecture_cannot_take_is_refused_naming_sizes_that_work():
    with pytest.raises(TransferkitError, match=r"levit_128s cannot take 100 px input") as info:
        create_model("levit_128s", num_classes=3, image_size=100)
    message = str(info.value)
    assert "\n" not in message
    named = [int(s) for s in re.search(r"sizes that work near it: ([\d, ]+)", message).group(1).split(", ")]
    assert named
    for size in named:  # every size the message offers does run
        model = create_model("levit_128s", num_classes=3, image_size=size)
        assert model.eval()(torch.randn(1, 3, size, size)).shape == (1, 3)

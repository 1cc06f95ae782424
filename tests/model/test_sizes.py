import re

import pytest
import torch

from transferkit import TransferkitError
from transferkit.data.preprocess import input_size_of
from transferkit.model.factory import create_model
from transferkit.model.sizes import check_batch_memory


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


def test_a_batch_that_cannot_fit_is_refused_before_anything_is_built():
    with pytest.raises(
        TransferkitError, match=r"One image at 100000 px needs at least 111.8 GiB \(its float32 input\)"
    ):
        create_model("test_vit", num_classes=3, image_size=100_000)
    with pytest.raises(
        TransferkitError,
        match=r"One batch of 64 images at 64 px needs at least 3.0 MiB .* has 1.0 MiB of memory; .*batch_size",
    ):
        check_batch_memory(64, batch=64, memory=2**20)
    check_batch_memory(64, batch=64, memory=64 * 3 * 64 * 64 * 4)  # exactly the input: not refused


def test_the_dry_run_bounds_the_activations_by_the_largest_layer():
    model = create_model("resnet18", num_classes=3, image_size=64)
    # resnet18 at 64 px: the largest layer is the stem, 64 channels at 32x32 in and out of its norm
    inputs = 64 * 3 * 64 * 64 * 4
    with pytest.raises(TransferkitError, match=r"the input and output of '.+' in half precision") as info:
        check_batch_memory(64, batch=64, model=model, memory=inputs)
    needed = float(re.search(r"at least ([\d.]+) MiB", str(info.value)).group(1)) * 2**20
    assert needed >= 64 * 2 * 64 * 32 * 32 * 2 * 0.99

"""train/phase_cache.py: a phase's frozen prefix computed once, the tail trained on it, reused by a later phase."""

import pytest
import torch

from tests.helpers import TinyNet, make_image_folder, tiny_config, tiny_vit
from transferkit.data.preprocess import BatchPrep
from transferkit.model.freeze import freeze, freeze_backbone
from transferkit.runtime.fastpath import FastPath
from transferkit.train.cache.phase_cache import cache_frozen_prefix
from transferkit.train.setup import prepare_data

PLAIN = FastPath(False, "fp32", "as asked", batch_size=8)


def prepared(tmp_path, net, **changes):
    folder = make_image_folder(tmp_path / "images", classes=("a", "b", "c"), per_class=8, size=16)
    config = tiny_config(folder, tmp_path / "run", strategy="freeze", augment="none", **changes)
    return config, prepare_data(config, model=net, log=lambda m: None)


def cache(model, config, data, head, logged):
    return cache_frozen_prefix(
        model, config, data, PLAIN, torch.device("cpu"), head=head, augment="none", log=logged.append
    )


@pytest.fixture
def frozen_tinynet():
    torch.manual_seed(0)
    model = TinyNet(num_classes=3)
    freeze(model, ["conv1", "bn1", "layer1"])
    return model.eval()


def test_the_tail_on_the_cached_activations_gives_the_models_outputs(tmp_path, frozen_tinynet):
    model = frozen_tinynet
    config, data = prepared(tmp_path, model)
    logged = []
    phase = cache(model, config, data, "fc", logged)
    assert phase is not None and phase.boundary.path == "pool"  # the last frozen module before the head
    acts, labels = phase.val.tensors
    assert len(acts) == len(data.val) and torch.equal(labels, data.val.decoded.labels)
    prep = BatchPrep(data.preprocessing, torch.device("cpu"), False)
    with torch.no_grad():
        full = model(prep(data.val.decoded.images))
        with phase.skipping():
            short = phase.net(phase.prep(acts))
    # Activations are stored in fp16 where that keeps them within 1e-3 of their scale.
    assert (short - full).abs().max() <= 1e-3 * full.abs().max()
    line = next(m for m in logged if m.startswith("cache: 'pool'"))
    assert f"{len(data.train) + len(data.val)} images computed once" in line


def test_a_later_phase_with_the_same_frozen_weights_reuses_the_activations(tmp_path, frozen_tinynet):
    config, data = prepared(tmp_path, frozen_tinynet)
    first, second = [], []
    one = cache(frozen_tinynet, config, data, "fc", first)
    two = cache(frozen_tinynet, config, data, "fc", second)
    assert "reused from an earlier run" in next(m for m in second if m.startswith("cache: 'pool'"))
    assert "reused" not in next(m for m in first if m.startswith("cache: 'pool'"))
    assert torch.equal(one.train_views[0].tensors[0], two.train_views[0].tensors[0])


def test_changed_frozen_weights_are_computed_again(tmp_path, frozen_tinynet):
    config, data = prepared(tmp_path, frozen_tinynet)
    cache(frozen_tinynet, config, data, "fc", [])
    with torch.no_grad():
        frozen_tinynet.conv1.weight.mul_(2)
    logged = []
    cache(frozen_tinynet, config, data, "fc", logged)
    assert "reused" not in next(m for m in logged if m.startswith("cache: 'pool'"))


def test_a_vit_training_only_its_head_trains_on_timms_pre_logits(tmp_path):
    torch.manual_seed(0)
    model = tiny_vit(num_classes=3)
    freeze_backbone(model, head="head")
    config, data = prepared(tmp_path, model, model="tests.helpers:tiny_vit")
    phase = cache(model.eval(), config, data, "head", [])
    assert phase is not None and phase.boundary.kind == "output" and phase.net is model.head
    assert phase.val.tensors[0].shape == (len(data.val), model.head.in_features)


def test_nothing_frozen_first_caches_nothing_and_says_why(tmp_path):
    model = TinyNet(num_classes=3)
    config, data = prepared(tmp_path, model)
    logged = []
    assert cache(model, config, data, "fc", logged) is None
    assert logged == ["cache: off, the first layer to run already trains"]

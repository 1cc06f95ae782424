import pytest
import torch
import torch.nn as nn
import torchvision

from transferkit.data.preprocess import BatchPrep, Preprocessing
from transferkit.model.factory import create_model
from transferkit.model.freeze import freeze, freeze_backbone
from transferkit.train.cache.feature_cache import (
    check_boundary,
    find_boundary,
    fold_batchnorm,
    load_or_compute,
    rename_stored,
    truncated,
)

PRE = Preprocessing((3, 32, 32), (0.5,) * 3, (0.5,) * 3)


def images(n=4, size=32):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def prep():
    return BatchPrep(PRE, torch.device("cpu"), channels_last=False)


def test_resnet_frozen_through_layer3_caches_layer3():
    model = torchvision.models.resnet18(num_classes=10)
    freeze(model, ["conv1", "bn1", "layer1", "layer2", "layer3"])
    boundary = find_boundary(model, (3, 64, 64))
    assert boundary.path == "layer3"
    assert boundary.stubbed == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
    assert boundary.output_shape == (256, 4, 4)
    assert check_boundary(model, boundary, images(size=64), prep=prep()) < 1e-5


def test_efficientnet_head_only_caches_pooled_features():
    model = create_model("efficientnet_lite0", num_classes=10)
    freeze_backbone(model)
    boundary = find_boundary(model, (3, 64, 64))
    assert boundary.path == "global_pool" and boundary.output_shape == (1280,)
    assert check_boundary(model, boundary, images(size=64), prep=prep()) < 1e-5


def test_dropout_before_the_head_stays_live():
    model = torchvision.models.alexnet(num_classes=10)
    freeze(model, "features")
    boundary = find_boundary(model, (3, 64, 64))
    assert boundary.path == "avgpool"  # classifier.0 is Dropout: it runs every epoch


def test_nothing_frozen_means_no_boundary(tiny):
    assert find_boundary(tiny) is None


def test_training_batchnorm_is_live(tiny):
    freeze(tiny, ["conv1", "bn1"], train_bn=True)
    assert find_boundary(tiny).path == "conv1"


class SkipAcross(nn.Module):
    """The stem's output is also used after the boundary: truncation cannot reproduce it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        s = self.stem(x)
        return self.fc(self.pool(self.body(s) + s).flatten(1))


def test_skip_connection_across_the_boundary_is_detected():
    model = SkipAcross()
    freeze(model, ["stem", "body"])
    boundary = find_boundary(model, (3, 32, 32))
    assert boundary.path == "pool"  # the last frozen module before fc; the stem output also feeds the sum
    difference = check_boundary(model, boundary, images(), prep=prep())
    assert difference is None or difference > 1e-3


def test_truncated_restores_modules(tiny):
    freeze(tiny, ["conv1", "bn1"])
    boundary = find_boundary(tiny)
    original = tiny.conv1
    with truncated(tiny, boundary):
        assert isinstance(tiny.conv1, nn.Identity)
    assert tiny.conv1 is original and "conv1.weight" in tiny.state_dict()


def batches_of(acts, size=4, passes=None):
    """A compute function for load_or_compute that yields ``acts`` in batches and counts its passes."""

    def compute():
        if passes is not None:
            passes.append(1)
        yield from acts.split(size)

    return compute


def test_fp16_storage_and_memory_mapping(tmp_path):
    acts = torch.rand(10, 6) * 4
    passes = []
    stored, how = load_or_compute(
        batches_of(acts, passes=passes), 10, folder=tmp_path, key="k", max_memory_bytes=1 << 20
    )
    assert stored.dtype == torch.float16 and "in memory" in how and len(passes) == 1
    torch.testing.assert_close(stored.float(), acts, atol=4e-3, rtol=0)
    large = torch.cat([acts, torch.full((2, 6), 1e5)])  # the last batch is beyond fp16's range: a second pass
    kept, _ = load_or_compute(batches_of(large, passes=passes), 12, folder=tmp_path, key="w", max_memory_bytes=1 << 20)
    assert kept.dtype == torch.float32 and torch.equal(kept, large) and len(passes) == 3
    mapped, how = load_or_compute(batches_of(acts), 10, folder=tmp_path, key="m", max_memory_bytes=8)
    assert "memory-mapped" in how and (tmp_path / "m.json").exists()
    assert mapped.untyped_storage().filename == str(tmp_path / "m.float16.bin")
    torch.testing.assert_close(mapped.float(), acts, atol=4e-3, rtol=0)
    again, how = load_or_compute(lambda: 1 / 0, 10, folder=tmp_path, key="m", max_memory_bytes=8)
    assert "reused" in how and torch.equal(again, mapped)
    wide, how = load_or_compute(batches_of(large), 12, folder=tmp_path, key="x", max_memory_bytes=8)
    assert wide.dtype == torch.float32 and torch.equal(wide, large) and "memory-mapped" in how
    assert sorted(p.name for p in tmp_path.glob("x.*")) == ["x.float32.bin", "x.json"]  # the fp16 try is removed


def test_a_stored_cache_is_renamed_when_its_kernels_are_chosen_after_the_pass(tmp_path):
    acts = torch.rand(10, 6)
    mapped, _ = load_or_compute(batches_of(acts), 10, folder=tmp_path, key="trial", max_memory_bytes=8)
    rename_stored(tmp_path, "trial", "chosen")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chosen.float16.bin", "chosen.json"]
    torch.testing.assert_close(mapped.float(), acts, atol=4e-3, rtol=0)  # the mapping outlives the rename
    again, how = load_or_compute(lambda: 1 / 0, 10, folder=tmp_path, key="chosen", max_memory_bytes=8)
    assert "reused" in how and torch.equal(again, mapped)
    rename_stored(tmp_path, "in-memory", "other")  # nothing was written for it: nothing to do


@pytest.mark.parametrize(
    "meta",
    [
        {"file": "../../etc/passwd", "dtype": "float16", "shape": [10, 6]},  # another file
        {"file": "m.save.bin", "dtype": "save", "shape": [10, 6]},  # getattr(torch, "save")
        {"file": "m.float16.bin", "dtype": "float16", "shape": [10, 600]},  # larger than the file
        {"file": "m.float16.bin", "dtype": "float16", "shape": [3, 20]},  # another count
        {"file": "m.float16.bin", "dtype": "float16"},  # incomplete
        ["not", "a", "dict"],
    ],
)
def test_a_forged_cache_description_is_ignored(tmp_path, meta):
    import json

    acts = torch.rand(10, 6)
    load_or_compute(batches_of(acts), 10, folder=tmp_path, key="m", max_memory_bytes=8)
    (tmp_path / "m.json").write_text(json.dumps(meta))
    passes = []
    again, how = load_or_compute(batches_of(acts, passes=passes), 10, folder=tmp_path, key="m", max_memory_bytes=8)
    assert "reused" not in how and passes == [1]  # computed anew
    torch.testing.assert_close(again.float(), acts, atol=4e-3, rtol=0)


def test_batchnorm_folding_keeps_outputs_and_the_model():
    model = create_model("efficientnet_lite0", num_classes=10)
    with torch.no_grad():  # non-trivial statistics, so that folding has something to fold
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    freeze_backbone(model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    boundary = find_boundary(model, (3, 64, 64))
    fused = fold_batchnorm(model, boundary, images(size=64), prep=prep())
    assert fused is not None and fused is not model
    bns = lambda m: sum(type(x).__name__ in ("BatchNorm2d", "BatchNormAct2d") for x in m.modules())  # noqa: E731
    assert bns(fused) < bns(model)
    x = prep()(images(size=64))
    model.eval()
    torch.testing.assert_close(fused(x), model(x), atol=1e-4, rtol=1e-4)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_boundary_inside_module_lists_stubs_only_the_outermost_modules():
    # fastvit's stages hold their blocks in containers that never run themselves: a block's parent
    # is missing from the finished modules while its grandparent is there.
    from transferkit.model.factory import create_model
    from transferkit.model.freeze import freeze_backbone
    from transferkit.train.cache.feature_cache import check_boundary, find_boundary

    model = create_model("fastvit_t8", num_classes=5, image_size=64).eval()
    freeze_backbone(model, head="head.fc")
    boundary = find_boundary(model, (3, 64, 64))
    assert boundary.stubbed[:2] == ["stem", "stages.0"]
    assert not any(a.startswith(b + ".") for a in boundary.stubbed for b in boundary.stubbed)
    assert check_boundary(model, boundary, torch.rand(2, 3, 64, 64), prep=lambda x: x) <= 1e-4

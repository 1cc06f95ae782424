import pytest
import timm
import torch
import torch.nn as nn

from transferkit.inference.runs import evaluate_run
from transferkit.model.factory import create_model
from transferkit.model.freeze import freeze_stages
from transferkit.train.cache.entry_cut import check_entry, entry_cut
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit
from transferkit.train.folder.run_folder import load_run


def vit_config(tmp_path, **changes):
    values = dict(model="test_vit", weights="none", data="builtin:digits", out=str(tmp_path / "run"), epochs=2)
    values.update(image_size=32)
    values.update(precision="fp32", channels_last=False)
    return TrainConfig(**{**values, **changes})


def test_vit_freeze_caches_the_head_input_through_timms_cut(tmp_path):
    torch.manual_seed(0)
    base = tmp_path / "base.pth"
    torch.save(create_model("test_vit", num_classes=10, image_size=32).state_dict(), base)
    lines = []
    fit(vit_config(tmp_path, strategy="freeze", weights=str(base)), log=lines.append)
    assert any("cache: 'forward_head(pre_logits=True)' output (64,)" in line for line in lines), lines
    state = load_run(tmp_path / "run")
    assert all(row["cached"] for row in state["history"])
    before = torch.load(base)
    for key, value in before.items():  # cls_token and pos_embed too: nothing but the head moved
        if not key.startswith("head."):
            assert torch.equal(state["model"][key], value), key
    # The classifier trained on cached vectors is the model's own: the whole network, run on the
    # held-out images, scores what validation on the cached vectors (fp16 where accurate) did.
    result = evaluate_run(tmp_path / "run", device="cpu")
    best = result["validation"]
    assert abs(result["accuracy"] - best["val_acc"]) <= 0.01, best


def test_vit_head_unfreeze_last_caches_the_input_of_its_first_trained_block(tmp_path):
    lines = []
    cached = fit(vit_config(tmp_path, strategy="head", unfreeze_last=2, epochs=2), log=lines.append)
    plain = fit(vit_config(tmp_path, strategy="head", unfreeze_last=2, epochs=2, cache=False, out=str(tmp_path / "b")))
    phase = next(line for line in lines if line.startswith("phase head:"))
    model = create_model("test_vit", num_classes=10, image_size=32)
    last = len(model.blocks) - 1
    kept = (f"blocks.{last}.", "norm.", "head.")
    expected = sum(p.numel() for n, p in model.named_parameters() if n.startswith(kept))
    assert phase.startswith(f"phase head: {expected:,} of ")  # not cls_token or pos_embed
    # The frozen blocks ran once: the tokens entering the last block, class token included, were cached.
    assert any(line.startswith(f"cache: 'blocks.{last}' input (5, 64)") for line in lines), lines
    assert all(e["cached"] for e in cached["epochs"]) and not any(e["cached"] for e in plain["epochs"])
    a, b = load_run(tmp_path / "run")["model"], load_run(tmp_path / "b")["model"]
    for key in a:
        if not key.startswith(kept):
            assert torch.equal(a[key], b[key]), key
    # fp16 tokens: close to the uncached run, not bitwise
    weight = f"blocks.{last}.attn.qkv.weight"
    torch.testing.assert_close(a[weight], b[weight], atol=2e-2 * b[weight].abs().max().item(), rtol=0)
    assert abs(cached["best_val_acc"] - plain["best_val_acc"]) <= 0.02


@pytest.mark.parametrize(("name", "entry"), [("test_vit", "blocks.4"), ("test_maxvit", "stages.2")])
def test_entry_cut_skips_exactly_the_frozen_prefix(name, entry):
    # A MaxViT stage starts with a parameter-free pooling shortcut: the entry is the stage, not its convolution.
    model = timm.create_model(name, num_classes=3, img_size=32, drop_path_rate=0.1)
    freeze_stages(model, keep_last=3)
    boundary = entry_cut(model, (3, 32, 32))
    assert boundary.path == entry and boundary.kind == "input"
    images = torch.randn(4, 3, 32, 32)
    assert check_entry(model, boundary, images, prep=lambda x: x) <= 1e-5


def test_entry_cut_refuses_glue_that_carries_the_prefix_past_the_entry():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            h = self.a(x.flatten(1))
            return self.b(h) + h  # h reaches the output around the entry

    model = Skip()
    model.a.requires_grad_(False)
    boundary = entry_cut(model, (8,))
    assert boundary.path == "b" and boundary.stubbed == ["a"]
    assert check_entry(model, boundary, torch.randn(4, 8), prep=lambda x: x) > 1e-2

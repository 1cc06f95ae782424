import torch

from transferkit.inference.runs import evaluate_run
from transferkit.model.factory import create_model
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit
from transferkit.train.run_folder import load_run


def vit_config(tmp_path, **changes):
    values = dict(model="test_vit", data="builtin:digits", out=str(tmp_path / "run"), epochs=2, image_size=32)
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


def test_vit_head_unfreeze_last_trains_blocks_not_root_parameters(tmp_path):
    lines = []
    fit(vit_config(tmp_path, strategy="head", unfreeze_last=2, epochs=1), log=lines.append)
    phase = next(line for line in lines if line.startswith("phase head:"))
    model = create_model("test_vit", num_classes=10, image_size=32)
    last = len(model.blocks) - 1
    kept = (f"blocks.{last}.", "norm.", "head.")
    expected = sum(p.numel() for n, p in model.named_parameters() if n.startswith(kept))
    assert phase.startswith(f"phase head: {expected:,} of ")

import torch
from timm.layers import resample_abs_pos_embed

from transferkit.model.factory import create_model
from transferkit.weights.loading import load_pretrained


def test_position_embeddings_of_another_size_are_resampled_by_timm_and_reported():
    torch.manual_seed(0)
    source = create_model("test_vit", num_classes=5)  # 160 px: 10x10 patches
    model = create_model("test_vit", num_classes=5, image_size=64)
    report = load_pretrained(model, source.state_dict())
    assert report.resampled == [{"key": "pos_embed", "from": (1, 101, 64), "to": (1, 17, 64)}]
    assert report.loaded_fraction == 1.0 and not report.mismatched
    expected = resample_abs_pos_embed(source.pos_embed.detach(), new_size=(4, 4), num_prefix_tokens=1)
    torch.testing.assert_close(model.pos_embed.detach(), expected)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_relative_position_tables_of_windowed_models_are_resampled():
    torch.manual_seed(0)
    source = create_model("test_maxvit", num_classes=5)
    model = create_model("test_maxvit", num_classes=5, image_size=64)
    report = load_pretrained(model, source.state_dict())
    tables = [r for r in report.resampled if r["key"].endswith("relative_position_bias_table")]
    assert tables and all(r["from"] != r["to"] for r in tables)
    assert not report.mismatched
    assert torch.isfinite(model.eval()(torch.randn(1, 3, 64, 64))).all()

import json

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import TinyNet
from transferkit import TransferkitError
from transferkit.adapters import default_targets
from transferkit.inference.runs import load_trained
from transferkit.model.factory import create_model
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit
from transferkit.train.folder.run_folder import load_run


def quiet(message: str) -> None:
    pass


def vit_config(tmp_path, base, **changes):
    values = dict(model="test_vit", data="builtin:digits", out=str(tmp_path / "run"), epochs=2, image_size=32)
    values.update(precision="fp32", channels_last=False, strategy="lora", weights=str(base))
    return TrainConfig(**{**values, **changes})


@pytest.fixture
def base(tmp_path):
    """Pretrained weights for test_vit at 32 px, in timm's own names, as a file anyone can load."""
    torch.manual_seed(0)
    path = tmp_path / "base.safetensors"
    model = timm.create_model("test_vit", num_classes=10, img_size=32)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def test_default_targets_per_family():
    vit = create_model("test_vit", num_classes=3)
    assert default_targets(vit, "head")[:4] == [
        "blocks.0.attn.qkv",
        "blocks.0.attn.proj",
        "blocks.0.mlp.fc1",
        "blocks.0.mlp.fc2",
    ]
    assert default_targets(TinyNet(), "fc") == ["conv1", "layer1.0"]  # the convolutions of a CNN


def test_lora_run_is_a_peft_adapter_that_peft_alone_loads(tmp_path, base):
    fit(vit_config(tmp_path, base), log=quiet)
    run = tmp_path / "run"
    state = load_run(run)["model"]
    frozen = load_file(str(base))
    # Pretrained weights never moved: each adapted layer keeps its weight as peft's base_layer.
    assert torch.equal(state["blocks.0.attn.qkv.base_layer.weight"], frozen["blocks.0.attn.qkv.weight"])
    assert torch.equal(state["pos_embed"], frozen["pos_embed"])
    assert not torch.equal(state["blocks.0.attn.qkv.lora_B.default.weight"], torch.zeros(1))
    trainable = sum(v.numel() for k, v in state.items() if ".lora_" in k or ".modules_to_save." in k)
    total = sum(v.numel() for k, v in frozen.items())
    assert trainable / total < 0.2

    adapter = run / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "base.json"} <= {p.name for p in adapter.iterdir()}
    assert json.loads((adapter / "base.json").read_text())["weights"] == str(base)
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"

    # peft alone, no transferkit code: timm's model, the base file, the adapter folder.
    from peft import PeftModel

    plain = timm.create_model("test_vit", num_classes=10, img_size=32)
    plain.load_state_dict(load_file(str(base)))
    peft_model = PeftModel.from_pretrained(plain, str(adapter)).eval()
    trained = load_trained(run, device="cpu")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(x), trained.model(x))


def test_lora_resume_is_bitwise(tmp_path, base):
    straight = vit_config(tmp_path, base, out=str(tmp_path / "straight"))
    fit(straight, log=quiet)
    stopped = vit_config(tmp_path, base, out=str(tmp_path / "stopped"))
    fit(stopped, stop_after=1, log=quiet)
    fit(resume=tmp_path / "stopped", log=quiet)
    a, b = load_run(tmp_path / "straight")["model"], load_run(tmp_path / "stopped")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_lora_export_merges_the_adapters_and_keeps_parity(tmp_path, base):
    from transferkit.deploy.export import export_run

    fit(vit_config(tmp_path, base, epochs=1), log=quiet)
    lines = []
    result = export_run(tmp_path / "run", format="safetensors", log=lines.append)
    assert any("merged" in line for line in lines)
    exported = load_file(str(result.path))
    assert "blocks.0.attn.qkv.weight" in exported and not any("lora_" in k for k in exported)


def test_dora_and_bitfit_train_what_they_say(tmp_path, base):
    lines = []
    fit(vit_config(tmp_path, base, strategy="dora", epochs=1, out=str(tmp_path / "dora")), log=lines.append)
    state = load_run(tmp_path / "dora")["model"]
    assert any("lora_magnitude_vector" in k for k in state)
    fit(vit_config(tmp_path, base, strategy="bitfit", epochs=1, out=str(tmp_path / "bitfit")), log=quiet)
    after, before = load_run(tmp_path / "bitfit")["model"], load_file(str(base))
    moved = {k for k in before if not k.startswith("head.") and not torch.equal(after[k], before[k])}
    assert moved and all(k.endswith(".bias") for k in moved)


@pytest.mark.parametrize("train_bn", [False, True])
def test_bitfit_keeps_batchnorm_statistics_unless_train_bn(tmp_path, train_bn):
    torch.manual_seed(0)
    base = tmp_path / "tiny.safetensors"
    save_file(TinyNet(num_classes=10).state_dict(), base)
    config = TrainConfig(
        model="tests.helpers:TinyNet", weights=str(base), data="builtin:digits", strategy="bitfit", epochs=1,
        train_bn=train_bn, out=str(tmp_path / "run"), precision="fp32", channels_last=False,
    )
    fit(config, log=quiet)
    after, before = load_run(tmp_path / "run")["model"], load_file(str(base))
    assert not torch.equal(after["bn1.bias"], before["bn1.bias"])  # the BatchNorm biases train either way
    stats = ("bn1.running_mean", "bn1.running_var", "layer1.1.running_mean")
    assert all(torch.equal(after[k], before[k]) for k in stats) is not train_bn


def test_lora_targets_that_select_nothing_are_refused(tmp_path, base):
    with pytest.raises(TransferkitError, match="lora_targets pattern 'nothing' selects no Linear"):
        fit(vit_config(tmp_path, base, lora_targets=["nothing"]), log=quiet)
    assert not (tmp_path / "run").exists()

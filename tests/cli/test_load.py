import random
import subprocess
import sys

import torch
import torchvision
from safetensors.torch import load_file


def test_load_1000_into_10_and_save(cli_json, tmp_path):
    src = tmp_path / "r18.pth"
    torch.save({"model": torchvision.models.resnet18().state_dict()}, src)
    out_path = tmp_path / "out.safetensors"
    out = cli_json("load", "torchvision:resnet18", src, "--num-classes", "10", "--save", out_path)
    assert [m["key"] for m in out["mismatched"]] == ["fc.weight", "fc.bias"]
    assert out["mismatched"][0]["source_shape"] == [1000, 512] and out["mismatched"][0]["model_shape"] == [10, 512]
    assert out["missing"] == [] and out["unexpected"] == [] and out["container"] == "model"
    assert 0.99 < out["loaded_fraction"] < 1.0
    saved = load_file(str(out_path))
    assert saved["fc.weight"].shape == (10, 512) and len(saved) == len(out["matched"]) + 2


def test_bad_checkpoints_one_line_each(cli, tmp_path):
    rnd = tmp_path / "random.pth"
    rnd.write_bytes(random.Random(1).randbytes(2048))
    full = tmp_path / "full.pth"
    torch.save(torchvision.models.resnet18().state_dict(), full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[:5000])
    for path, text in [(tmp_path / "none.pth", "does not exist"), (rnd, "random.pth"), (cut, "corrupt or truncated")]:
        code, out, err = cli("load", "resnet18", path)
        assert code == 2 and err.count("\n") == 1 and text in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.pth", "full.pth", "random.pth"]


def test_entry_point_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "transferkit", "load", "resnet18", str(tmp_path / "x.pth")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"transferkit: error: Checkpoint '{tmp_path / 'x.pth'}' does not exist. Check the path."
    )


def test_offline_downloads_nothing_and_says_where_it_looked(cli, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored after the test: --offline sets it for the process
    code, _, err = cli("--offline", "load", "resnet18", "hf-hub:timm/resnet18.a1_in1k")
    assert code == 2 and "in the cache" in err and str(tmp_path / "hf") in err and "HF_HUB_OFFLINE is set" in err


def test_load_at_another_size_names_each_resampled_tensor(cli, tmp_path):
    from safetensors.torch import save_file

    from transferkit.model.factory import create_model

    torch.manual_seed(0)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("test_vit", num_classes=5).state_dict().items()}, path)
    code, out, err = cli("load", "test_vit", path, "--num-classes", "5", "--image-size", "64", "--dry-run")
    assert code == 0, err
    assert "resampled for the input size: pos_embed (1, 101, 64) -> (1, 17, 64)" in out


def test_a_size_the_model_cannot_take_is_one_line(cli):
    code, out, err = cli("inspect", "levit_128s", "--image-size", "100")
    assert code == 2 and err.count("\n") == 1
    assert "levit_128s cannot take 100 px input" in err and "--image-size" in err

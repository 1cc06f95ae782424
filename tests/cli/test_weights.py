import json
import struct

import pytest
import torch
from PIL import Image
from skimage import data

pytestmark = pytest.mark.slow


def test_weights_lists_installed(cli_json):
    out = cli_json("weights")
    assert [(w["name"], w["installed"]) for w in out["weights"]] == [("lite0", True), ("lite1", True), ("lite2", True)]
    assert out["weights"][0]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]


def test_load_lite0_maps_all_296_by_structure(cli_json):
    out = cli_json("load", "efficientnet_lite0", "lite0")
    assert len(out["matched"]) == 296 and {m["how"] for m in out["matches"]} == {"structure"}
    assert out["loaded_fraction"] == 1.0 and out["missing"] == [] and out["unexpected"] == []


def test_load_lite0_into_10_classes(cli_json, tmp_path):
    out = cli_json("load", "efficientnet_lite0", "lite0", "--num-classes", "10", "--save-map", tmp_path / "map.json")
    assert len(out["matched"]) == 294
    assert [(m["key"], m["source"], m["source_shape"]) for m in out["mismatched"]] == [
        ("classifier.weight", "_fc.weight", [1000, 1280]),
        ("classifier.bias", "_fc.bias", [1000]),
    ]
    key_map = json.loads((tmp_path / "map.json").read_text())
    assert (
        key_map["conv_stem.weight"] == "_conv_stem.weight"
        and key_map["blocks.6.0.bn3.running_var"] == "_blocks.15._bn2.running_var"
    )


def test_predict_names_the_photos(cli_json, tmp_path):
    paths = []
    for name in ("chelsea", "coffee", "rocket"):
        path = tmp_path / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(path)
        paths.append(path)
    out = cli_json("predict", "lite0", *paths, "--top-k", "3")
    top = [p["top"][0] for p in out["predictions"]]
    assert 281 <= top[0]["index"] <= 285 and "cat" in top[0]["label"]
    assert top[1]["index"] in (967, 968) and top[1]["label"] in ("espresso", "cup")
    assert top[2]["index"] in (657, 744, 812)


def test_resnet18_checkpoint_into_resnet34_fails(cli, tmp_path):
    import torchvision

    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    code, out, err = cli("load", "torchvision:resnet34", path)
    assert code == 2 and err.count("\n") == 1 and "different variant" in err


@pytest.mark.parametrize("kind", ["random", "truncated", "lying-safetensors", "non-tensor"])
def test_bad_files_name_the_file_and_write_nothing(cli, tmp_path, kind):
    if kind == "random":
        path = tmp_path / "bad.pth"
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "truncated":
        path = tmp_path / "bad.pth"
        torch.save({"w": torch.randn(100, 100)}, path)
        path.write_bytes(path.read_bytes()[:3000])
    elif kind == "lying-safetensors":
        path = tmp_path / "bad.safetensors"
        header = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 8]}}).encode()
        path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    else:
        path = tmp_path / "bad.pth"
        torch.save({"conv_stem.weight": torch.zeros(1), "epoch": 3}, path)
    out_file = tmp_path / "out.safetensors"
    code, out, err = cli("load", "efficientnet_lite0", path, "--save", out_file, "--save-map", tmp_path / "m.json")
    assert code == 2 and err.count("\n") == 1 and str(path) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_weights_of_a_model(cli_json):
    listed = cli_json("weights", "--model", "torchvision:resnet50")
    specs = {row["spec"]: row for row in listed["weights"]}
    assert set(specs) == {"torchvision:IMAGENET1K_V1", "torchvision:IMAGENET1K_V2", "torchvision:DEFAULT"}
    assert specs["torchvision:IMAGENET1K_V2"]["default"] and specs["torchvision:IMAGENET1K_V2"]["size_mb"] > 90

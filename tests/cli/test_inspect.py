import torchvision


def test_json_fields(cli_json):
    out = cli_json("inspect", "torchvision:alexnet", "--num-classes", "10", "--values", "classifier.6.bias")
    assert out["head"] == "classifier.6"
    expected = sum(p.numel() for p in torchvision.models.alexnet(num_classes=10).parameters())
    assert out["total_params"] == out["trainable_params"] == expected == 57_044_810
    assert {"name": "classifier.6.weight", "shape": [10, 4096], "trainable": True}.items() <= out["params"][-2].items()
    assert out["values"][0]["shape"] == [10]


def test_human_output(cli):
    code, out, err = cli("inspect", "resnet18", "--depth", "1", "--params")
    assert code == 0 and "head at 'fc'" in out and "layer4.1.bn2.bias" in out


def test_unknown_model(cli):
    code, out, err = cli("inspect", "resnet343")
    assert code == 2 and err.startswith("transferkit: error: Unknown model 'resnet343'") and err.count("\n") == 1


def test_a_run_folder_shows_its_trained_model(cli, cli_json, tmp_path):
    import torch

    from tests.helpers import make_image_folder, tiny_config
    from transferkit.train.engine import fit

    data = make_image_folder(tmp_path / "data", per_class=6, size=16)
    fit(tiny_config(data, tmp_path / "run", epochs=1), log=lambda m: None)
    out = cli_json("inspect", tmp_path / "run", "--trust-code", "--values", "fc.bias")
    best = torch.load(tmp_path / "run" / "best.pt", map_location="cpu", weights_only=True)
    assert out["model"] == f"{tmp_path / 'run'} (tests.helpers:TinyNet, best.pt of epoch 1)"
    shown = torch.tensor(out["values"][0]["first"])
    torch.testing.assert_close(shown, best["model"]["fc.bias"][: len(shown)])  # the trained values, not new ones
    code, _, err = cli("inspect", tmp_path / "run")
    assert code == 2 and "pass --trust-code only if you trust it" in err
    code, _, err = cli("inspect", tmp_path / "run", "--weights", "x.pt", "--trust-code")
    assert code == 2 and "is a run folder with its own weights (best.pt); leave out --weights" in err

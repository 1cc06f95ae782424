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

def test_broken_conv_names_the_layer(cli, cli_json):
    code, out, err = cli("surgery", "resnet34", "--set", "layer2.0.conv1=Conv2d(64, 256, 3)", "--json")
    import json

    result = json.loads(out)
    assert code == 1 and result["ok"] is False and result["layer"] == "layer2.0.bn1"
    assert "expects 128 channels" in result["error"]


def test_attribute_change_is_inconsistent(cli):
    code, out, err = cli("surgery", "torchvision:alexnet", "--set", "classifier.6.out_features=10")
    assert code == 1 and "inconsistent" in out and "classifier.6" in out


def test_replacing_the_head_is_ok(cli_json):
    out = cli_json("surgery", "torchvision:alexnet", "--set", "classifier.6=Linear(4096, 10)")
    assert out["ok"] is True and out["output_shape"] == [1, 10]


def test_bad_path_and_bad_expr(cli):
    for args, text in [
        (("--set", "layer9.0=Identity()"), "No layer at path 'layer9.0'"),
        (("--set", "fc=exec('1')"), "not a torch.nn layer"),
        (("--set", "fc"), "is not PATH=EXPR"),
    ]:
        code, out, err = cli("surgery", "resnet18", *args)
        assert code == 2 and err.count("\n") == 1 and text in err and "Traceback" not in err

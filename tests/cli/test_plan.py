def test_alexnet_freeze_features(cli_json):
    from transferkit.model.factory import create_model

    out = cli_json("plan", "torchvision:alexnet", "--num-classes", "10", "--freeze", "features")
    head = [f"classifier.{i}.{k}" for i in (1, 4, 6) for k in ("weight", "bias")]
    assert sorted(out["optimizer_params"]) == sorted(head)
    model = create_model("torchvision:alexnet", num_classes=10)
    total = sum(p.numel() for p in model.parameters())
    features = sum(p.numel() for p in model.features.parameters())
    assert out["before"] == {"trainable": total, "frozen": 0}
    assert out["after"] == {"trainable": total - features, "frozen": features}


def test_freeze_backbone_and_layer_decay(cli_json):
    out = cli_json("plan", "resnet18", "--unfreeze-last", "2", "--layer-decay", "0.5", "--head-lr", "0.01")
    lrs = {g["lr"] for g in out["optimizer_groups"]}
    # timm's layer groups count blocks: layer4.1 trains at lr * 0.5, layer4.0 at lr * 0.25
    assert lrs == {0.01, 0.0005, 0.00025}
    assert all(n.startswith(("layer4", "fc")) for n in out["optimizer_params"])
    # stem bn1; layer1: 2 blocks x 2; layer2 and layer3: 2 blocks x 2 + a downsample BN each
    assert len(out["frozen_norm_layers"]) == 1 + 2 * 2 + (2 * 2 + 1) + (2 * 2 + 1)


def test_bad_pattern_is_one_line(cli):
    code, out, err = cli("plan", "resnet18", "--freeze", "layer9")
    assert code == 2 and err.count("\n") == 1 and "'layer9' selects no parameter" in err

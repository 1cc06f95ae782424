import pytest


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


def test_a_strategy_is_planned_phase_by_phase_as_train_runs_it(cli_json, cli):
    out = cli_json("plan", "resnet18", "--strategy", "lp-ft", "--epochs", "4", "--num-classes", "10")
    probe, finetune = out["phases"]
    assert (probe["phase"], probe["epochs"], finetune["phase"], finetune["epochs"]) == ("probe", 2, "finetune", 2)
    assert probe["trainable"] == 512 * 10 + 10 and finetune["frozen"] == 0
    assert finetune["trainable"] == out["before"]["trainable"]
    assert finetune["lr"] == pytest.approx(probe["lr"] / 10)  # lp-ft fine-tunes at a tenth of the probe's rate
    assert sorted(n for g in probe["optimizer_groups"] for n in g["params"]) == ["fc.bias", "fc.weight"]
    assert len(probe["frozen_norm_layers"]) == 20 and finetune["frozen_norm_layers"] == []
    lora = cli_json("plan", "resnet18", "--strategy", "lora", "--num-classes", "10")["phases"][0]
    names = [n for g in lora["optimizer_groups"] for n in g["params"]]
    assert names and all("lora_" in n or n.startswith("fc.") for n in names)
    code, text, err = cli("plan", "resnet18", "--strategy", "head", "--unfreeze-last", "2", "--num-classes", "10")
    assert code == 0, err
    assert "trains in head" in text and "phase head: 5 epochs at lr" in " ".join(text.split())
    code, _, err = cli("plan", "resnet18", "--strategy", "auto")
    assert code == 2 and "strategy auto is chosen by probing DATA: run transferkit advise" in err


def test_plan_strategy_from_python_takes_the_users_model_and_prints_each_phase():
    import transferkit as tk

    model = tk.create_model("resnet18", num_classes=3)
    config = tk.TrainConfig(model="resnet18", data="photos/", out="runs/p", strategy="gradual", epochs=4)
    head, unfrozen = tk.plan_strategy(model, config)
    assert repr(head).startswith("PhasePlan('head', 1 epoch at lr ") and "1,539 parameters train" in repr(head)
    assert unfrozen.frozen == 0 and all(p.requires_grad for p in model.parameters())  # the last phase's state


def test_unfreeze_last_out_of_range_or_keeping_every_stage_is_said_in_one_line(cli):
    code, _, err = cli("plan", "resnet18", "--unfreeze-last", "9")
    assert code == 2 and err.count("\n") == 1 and "--unfreeze-last must be between 1 and 6" in err, err
    code, out, err = cli("plan", "resnet18", "--unfreeze-last", "6")
    said = "transferkit: warning: --unfreeze-last=6 keeps all 6 stages of the model trainable: it freezes nothing.\n"
    assert code == 0 and err == said and "freeze plan" in out

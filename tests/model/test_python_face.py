"""What people pass from Python: layer text, optimizer classes, pretrained=True; and the traps surgery warns of."""

import functools
import time
import warnings

import pytest
import torch
import torchvision

import transferkit as tk
from tests.helpers import TinyNet
from transferkit.errors import ConfigError, ModelSpecError, Unreachable


def test_set_module_takes_layer_text_and_keeps_a_frozen_slot_frozen():
    model = torchvision.models.alexnet()
    tk.freeze(model, "*")
    with pytest.warns(
        UserWarning, match=r"^'classifier.4' is frozen, as the layer it replaces was: pass trainable=True"
    ):
        tk.set_module(model, "classifier.4", "Linear(4096, 4096)")
    assert not model.classifier[4].weight.requires_grad
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # told: no warning
        tk.set_module(model, "classifier.4", "Linear(4096, 4096)", trainable=True)
    assert model.classifier[4].weight.requires_grad
    tk.unfreeze(model, "classifier.1")
    tk.set_module(model, "classifier.1", torch.nn.Linear(9216, 4096))  # a trainable slot stays trainable
    assert model.classifier[1].weight.requires_grad


def test_replace_head_after_freezing_everything_gives_a_head_that_trains():
    model = torchvision.models.alexnet()
    tk.freeze(model, "*")
    tk.replace_head(model, 5)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["classifier.6.weight", "classifier.6.bias"]
    tk.replace_head(model, 3, trainable=False)
    assert not any(p.requires_grad for p in model.parameters())


def test_surgery_after_the_optimizer_warns_that_it_misses_the_new_layer():
    model = torchvision.models.alexnet()
    tk.freeze(model, "features")
    optimizer = tk.create_optimizer(model, "sgd", lr=0.01)
    with pytest.warns(
        UserWarning,
        match=r"^replace_head \('classifier.6'\): the optimizer made before it does not hold "
        r"classifier.6.weight, classifier.6.bias, which would not train; make it again",
    ):
        tk.replace_head(model, 5)
    del optimizer
    tk.create_optimizer(model, "adamw")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tk.freeze(model, "classifier.4")  # freezing leaves nothing out of the optimizer that should train


def test_create_optimizer_takes_a_class_or_a_factory_with_the_training_defaults():
    model = TinyNet()
    by_name = tk.create_optimizer(model)
    assert isinstance(by_name, torch.optim.AdamW)
    assert {g["weight_decay"] for g in by_name.param_groups} == {0.0, 0.01}  # TrainConfig's weight_decay
    assert tk.TrainConfig.__dataclass_fields__["weight_decay"].default == 0.01
    sgd = tk.create_optimizer(model, torch.optim.SGD, lr=0.05)
    assert isinstance(sgd, torch.optim.SGD) and {g["lr"] for g in sgd.param_groups} == {0.05}
    made = tk.create_optimizer(model, functools.partial(torch.optim.SGD, momentum=0.8), lr=0.1)
    assert made.param_groups[0]["momentum"] == 0.8
    with pytest.raises(
        ConfigError, match=r"^optimizer must be adamw, adam, sgd, an optimizer class or a factory; got int"
    ):
        tk.create_optimizer(model, 3)
    with pytest.raises(ConfigError, match=r"^optimizer: .* made a list, not an optimizer"):
        tk.create_optimizer(model, lambda groups, lr: [])


def test_create_model_with_pretrained_weights_and_the_timm_prefix():
    model = tk.create_model("timm:tf_efficientnet_lite0", num_classes=5, pretrained="lite0")
    report = model.transferkit_load_report
    assert len(report.matched) == 294 and [m.key for m in report.mismatched] == ["classifier.weight", "classifier.bias"]
    assert len(str(report).splitlines()) <= 30
    with pytest.raises(ModelSpecError, match=r"^pretrained: botnet50ts_256 has no pretrained weights"):
        tk.create_model("botnet50ts_256", pretrained=True)
    started = time.perf_counter()
    with pytest.raises(Unreachable, match=r"not in the cache|in the cache"):
        tk.create_model("resnet18", pretrained=True, offline=True)  # the caches only: no retries
    assert time.perf_counter() - started < 5


def test_a_load_report_reads_in_a_few_lines_whatever_the_models_size():
    state = torchvision.models.resnet50().state_dict()  # 320 tensors, none of which TinyNet has
    report = tk.load_pretrained(TinyNet(), state, policy=tk.LoadPolicy(allow_partial=True, min_loaded=0.0))
    text = str(report)
    assert len(text.splitlines()) <= 30 and "more (report.to_dict() lists all)" in text
    assert report._repr_html_().startswith("<pre>Loaded")


def test_the_helpers_of_the_four_operations_are_exported():
    model = TinyNet()
    tk.freeze(model, "conv1")
    assert [n for n, _ in tk.trainable_parameters(model)][0] == "bn1.weight"
    assert tk.frozen_norm_layers(model) == []
    assert tk.select_parameters(model, "layer1") == ["layer1.0.weight", "layer1.1.weight", "layer1.1.bias"]


def test_every_exported_name_resolves_to_what_its_module_defines():
    import importlib

    from transferkit import _EXPORTS

    for name, module in _EXPORTS.items():
        assert getattr(tk, name) is getattr(importlib.import_module(module, "transferkit"), name), name
    assert tk.advise.__module__ == "transferkit.advice.advise" and set(_EXPORTS) <= set(tk.__all__)


def test_tables_print_read_and_convert():
    model = torchvision.models.alexnet()
    tk.freeze(model, "features")
    layers = tk.layer_table(model, max_depth=1)
    assert layers[0].name == "" and layers[1].name == "features"  # the rows stay LayerInfo
    text = str(layers).splitlines()
    assert text[0] == "layers of AlexNet" and text[1].split() == ["layer", "type", "output", "params", "trainable"]
    assert text[2].split()[:3] == ["(model)", "AlexNet", "(1,"] and "<table>" in layers._repr_html_()
    params = tk.parameter_table(model)
    assert params.to_pandas().loc[0, "shape"] == "64 x 3 x 11 x 11" and params[0].shape == (64, 3, 11, 11)
    plan = tk.plan_strategy(model, tk.TrainConfig(model="x", data="x/", out="runs/p", strategy="lp-ft", epochs=4))
    rows = plan.display_rows()
    assert [r["phase"] for r in rows] == ["probe", "finetune"] and rows[0]["training modules"] == "classifier"
    assert plan[1].trainable == sum(p.numel() for p in model.parameters())

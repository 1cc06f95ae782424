"""Training on several labels per image and on numbers, end to end through fit, with tiny models."""

import csv
import json

import numpy as np
import pytest
import torch

from tests.helpers import tiny_config
from tests.tasks.csvs import colour_images, multilabel_csv, regression_csv, write_csv
from transferkit.errors import ConfigError, RunError
from transferkit.inference.predict import load_predictor
from transferkit.inference.runs import evaluate_run
from transferkit.tasks.calibration import calibrated_thresholds
from transferkit.tasks.metrics import multilabel_metrics, regression_metrics
from transferkit.tasks.objective import TargetScale
from transferkit.train.engine import fit
from transferkit.train.folder.run_folder import load_run


@pytest.mark.parametrize("strategy", ["full", "freeze"])
def test_several_labels_train_to_a_high_average_precision(tmp_path, strategy):
    data = multilabel_csv(tmp_path)
    lines = []
    config = tiny_config(
        data,
        tmp_path / "run",
        task="multi-label",
        strategy=strategy,
        epochs=6 if strategy == "full" else 8,
        lr=1e-2,
    )
    summary = fit(config, log=lines.append)
    assert summary["task"] == "multi-label" and summary["best_val_acc"] is None
    assert summary["best_score"]["name"] == "val_map"  # 'rare' is on random images: no better than chance
    assert any(line.startswith("task multi-label: balance none, best checkpoint by map") for line in lines)
    assert any("labels on fewer than 1 in 20 training images: rare" in line for line in lines)
    assert any("train images per label (with it, of 192): green" in line for line in lines)
    if strategy == "freeze":
        assert any(line.startswith("cache: ") for line in lines)  # the frozen features are computed once
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,phase,train_loss,val_loss,val_map,val_map_micro,val_macro_f1,val_subset_acc")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    per_label = report["best_metrics"]["per_label"]
    assert set(per_label) == {"green", "rare", "red"}
    # each colour is on half the images (an AP of 0.5 by chance); frozen random convolutions see less of it
    floor = 0.9 if strategy == "full" else 0.7
    assert per_label["red"]["ap"] > floor and per_label["green"]["ap"] > floor, per_label
    assert all(0.0 < t < 1.0 for t in report["best_metrics"]["thresholds"])
    card = (tmp_path / "run" / "MODEL_CARD.md").read_text()
    assert "3 labels (images with each)" in card and "| label | train | val |" in card
    assert "| label | AP | precision | recall | F1 | threshold |" in card
    evaluated = evaluate_run(tmp_path / "run", trust_code=True, device="cpu")  # the run's own held-out images
    assert evaluated["task"] == "multi-label" and evaluated["images"] == 48
    assert evaluated["map"] == pytest.approx(summary["best"]["val_map"], abs=2e-3)  # cached: activations in fp16
    assert evaluated["validation"]["val_map"] == summary["best"]["val_map"]


def test_numbers_train_below_the_mean_predictors_error_and_resume(tmp_path):
    data = regression_csv(tmp_path)
    config = tiny_config(data, tmp_path / "run", task="regression", strategy="full", epochs=8, lr=1e-2, loss="huber")
    fit(config, stop_after=4, log=lambda m: None)
    summary = fit(resume=tmp_path / "run", trust_code=True, log=lambda m: None)
    assert len(summary["epochs"]) == 8  # resumed after epoch 4
    values = [float(r["target"]) for r in csv.DictReader(open(data))]
    val_targets = load_run(tmp_path / "run")["history"]
    assert val_targets[-1]["val_r2"] == summary["epochs"][-1]["val_r2"]
    scale = summary["target_scale"]
    assert scale["mean"] == pytest.approx(np.mean(values), abs=0.6) and scale["std"] > 1.0
    mean_predictor = np.mean(np.abs(np.array(values) - np.mean(values)))  # MAE of always answering the mean
    best = summary["best_score"]
    assert best["name"] == "val_mae" and best["value"] < 0.6 * mean_predictor, (best, mean_predictor)
    assert summary["best"]["val_spearman"] > 0.8
    assert set(summary["target_stats"]) == {"train", "val"} and summary["target_stats"]["train"]["count"] == 192.0


def test_task_settings_are_checked():
    for changes, message in [
        (
            dict(task="regression", monitor="acc"),
            "monitor must be one of auto, mae, rmse, r2, loss for task regression",
        ),
        (dict(task="multi-label", balance="sampler"), "balance sampler balances classes"),
        (dict(task="regression", mixup=0.2), "mixup mixes classes"),
        (dict(loss="huber"), "loss huber is for regression"),
        (dict(task="regression", lr="auto"), "auto's range test trains classes"),
        (dict(task="ordinal"), "task must be one of"),
    ]:
        with pytest.raises(ConfigError, match=message):
            tiny_config("d.csv", "o", **changes)


def test_metrics_of_perfect_and_of_known_outputs():
    targets = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=torch.float32)
    m = multilabel_metrics(targets * 8 - 4, targets, ["a", "b"])
    assert (m["map"], m["subset_accuracy"], m["hamming_loss"]) == (1.0, 1.0, 0.0)
    swapped = multilabel_metrics(targets.flip(1) * 8 - 4, targets, ["a", "b"])
    assert swapped["hamming_loss"] == 0.5 and swapped["subset_accuracy"] == 0.5
    scale = TargetScale(10.0, 2.0)
    values = torch.tensor([8.0, 10.0, 13.0])
    exact = regression_metrics(scale.standardise(values), values, scale)
    assert exact["mae"] == pytest.approx(0.0, abs=1e-6) and exact["r2"] == pytest.approx(1.0)
    off = regression_metrics(scale.standardise(values + 1.0), values, scale)
    assert off["mae"] == pytest.approx(1.0, abs=1e-5) and off["spearman"] == pytest.approx(1.0)


@pytest.mark.parametrize("strategy", ["head", "gradual", "lp-ft", "scratch", "lora", "dora", "bitfit"])
@pytest.mark.parametrize("task", ["multi-label", "regression"])
def test_every_strategy_trains_each_task(tmp_path, task, strategy):
    data = multilabel_csv(tmp_path, count=60) if task == "multi-label" else regression_csv(tmp_path, count=60)
    extra = {"unfreeze_last": 1} if strategy == "head" else {}
    config = tiny_config(data, tmp_path / "run", task=task, strategy=strategy, epochs=2, **extra)
    summary = fit(config, log=lambda m: None)
    key = "val_map" if task == "multi-label" else "val_mae"
    assert summary["best_score"]["name"] == key and all(np.isfinite(e[key]) for e in summary["epochs"])
    assert len(summary["epochs"]) == 2 and all(np.isfinite(e["train_loss"]) for e in summary["epochs"])
    if strategy in ("lora", "dora"):  # the adapter in peft's format, for every task
        assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_predict_gives_numbers_with_a_conformal_interval_that_covers_held_out_images(tmp_path):
    """90% split-conformal from the validation residuals: on images kept apart, coverage near 90%."""
    colours = colour_images(tmp_path, 900)
    splits = ["train"] * 300 + ["val"] * 300 + ["test"] * 300
    rows = [[f"{i}.png", red / 25.5, split] for i, ((red, _), split) in enumerate(zip(colours, splits))]
    data = write_csv(tmp_path / "values.csv", ["path", "target", "split"], rows)
    lines = []
    config = tiny_config(data, tmp_path / "run", task="regression", strategy="full", epochs=4, lr=1e-2)
    summary = fit(config, log=lines.append)
    interval = summary["interval"]
    assert interval["level"] == 0.9 and interval["images"] == 300 and interval["epoch"] == summary["best"]["epoch"]
    assert any(line.startswith("interval: 90% split-conformal, value ± ") for line in lines)
    card = (tmp_path / "run" / "MODEL_CARD.md").read_text()
    assert "A number per image" in card and "MAE " in card and "Prediction interval: value ± " in card
    predictor = load_predictor(str(tmp_path / "run"), trust_code=True, device="cpu")
    held_out = [(tmp_path / f"{i}.png", float(value)) for i, (_, value, split) in enumerate(rows) if split == "test"]
    results = predictor.predict([path for path, _ in held_out])
    inside = [low <= true <= high for (_, true), r in zip(held_out, results) for low, high in [r["interval"]]]
    assert abs(np.mean(inside) - 0.9) <= 0.07, np.mean(inside)
    assert all(r["interval"][1] - r["interval"][0] == pytest.approx(2 * interval["half_width"]) for r in results)
    evaluated = evaluate_run(tmp_path / "run", split="test", trust_code=True, device="cpu")
    assert evaluated["images"] == 300 and evaluated["interval"]["coverage"] == pytest.approx(np.mean(inside))
    assert evaluated["mae"] < np.mean(np.abs(np.array([v for _, v in held_out]) - summary["target_scale"]["mean"]))
    (tmp_path / "run" / "interval.json").write_text('{"half_width": "wide", "level": 0.9}')
    with pytest.raises(RunError, match="interval.json' is damaged"):
        load_predictor(str(tmp_path / "run"), trust_code=True, device="cpu")


def test_predict_names_the_labels_above_their_calibrated_thresholds(tmp_path):
    data = multilabel_csv(tmp_path)
    config = tiny_config(data, tmp_path / "run", task="multi-label", strategy="full", epochs=6, lr=1e-2)
    lines = []
    fit(config, log=lines.append)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    calibration = report["calibration"]
    # 'rare' has 2 of the 48 held-out images: it keeps 1; the colours get theirs
    assert calibration["task"] == "multi-label" and list(calibration["unfitted"]) == ["rare"]
    assert calibration["temperatures"][1] == 1.0 and calibration["temperatures"][0] != 1.0
    assert calibration["nll_after"] <= calibration["nll_before"]
    said = "calibration: a temperature kept for 2 of 3 labels on 48 held-out images; 1 kept 1 (rare); expected "
    assert any(line.startswith(said) for line in lines), lines
    # kept because each half, calibrated by the other half's fit, is better calibrated
    assert calibration["ece_after"] < calibration["ece_before"]
    assert (
        "One temperature per label, fitted on 48 held-out images: green "
        in (tmp_path / "run" / "MODEL_CARD.md").read_text()
    )
    raw = report["best_metrics"]["thresholds"]
    thresholds = dict(zip(["green", "rare", "red"], calibrated_thresholds(raw, calibration["temperatures"])))
    predictor = load_predictor(str(tmp_path / "run"), trust_code=True, device="cpu")
    images = [tmp_path / f"{i}.png" for i in range(20)]
    results = predictor.predict(images)
    uncalibrated = load_predictor(str(tmp_path / "run"), trust_code=True, device="cpu", uncalibrated=True).predict(
        images
    )
    for result, plain in zip(results, uncalibrated):
        assert [e["label"] for e in result["all"]] == ["green", "rare", "red"]
        assert all(e["threshold"] == pytest.approx(thresholds[e["label"]]) for e in result["all"])
        assert [e["threshold"] for e in plain["all"]] == pytest.approx(raw)
        applies = {e["label"] for e in result["all"] if e["probability"] >= e["threshold"]}
        assert {e["label"] for e in result["labels"]} == applies == {e["label"] for e in plain["labels"]}
    evaluated = evaluate_run(tmp_path / "run", trust_code=True, device="cpu")
    assert evaluated["temperature"] == calibration["temperatures"]
    assert evaluated["calibrated"]["ece"] < evaluated["calibration"]["ece"]
    damaged = {**calibration, "temperatures": [1.0, "hot", 1.0]}
    (tmp_path / "run" / "calibration.json").write_text(json.dumps(damaged))
    with pytest.raises(RunError, match="calibration.json' is damaged"):
        load_predictor(str(tmp_path / "run"), trust_code=True, device="cpu")
    (tmp_path / "run" / "calibration.json").write_text(json.dumps({**calibration, "temperatures": [1.0, 1.0]}))
    with pytest.raises(RunError, match="does not fit this run's outputs"):
        load_predictor(str(tmp_path / "run"), trust_code=True, device="cpu")
    colours = colour_images(tmp_path, 20)  # the same images: bright red -> 'red' named on most of them
    named = [("red" in {e["label"] for e in r["labels"]}) == (red > 127) for r, (red, _) in zip(results, colours)]
    assert np.mean(named) >= 0.8


@pytest.mark.parametrize("task", ["multi-label", "regression"])
def test_an_onnx_export_gives_the_runs_answers_in_onnxruntime(tmp_path, task, monkeypatch):
    from transferkit.deploy.export import export_run
    from transferkit.inference.sidecar import read_sidecar

    data = multilabel_csv(tmp_path, count=120) if task == "multi-label" else regression_csv(tmp_path, count=120)
    fit(tiny_config(data, tmp_path / "run", task=task, strategy="full", epochs=3, lr=1e-2), log=lambda m: None)
    result = export_run(tmp_path / "run", format="onnx", trust_code=True, log=lambda m: None)
    facts = read_sidecar(result.path)
    assert facts["task"] == task and result.parity["max_abs_diff"] < 1e-3
    images = [tmp_path / f"{i}.png" for i in range(12)]
    run = load_predictor(str(tmp_path / "run"), trust_code=True, device="cpu").predict(images)
    onnx = load_predictor(str(result.path), device="cpu").predict(images)
    for a, b in zip(run, onnx):
        if task == "multi-label":
            assert result.parity["decision_agreement"] == 1.0
            assert [e["label"] for e in a["labels"]] == [e["label"] for e in b["labels"]]
            assert all(
                x["probability"] == pytest.approx(y["probability"], abs=1e-4) for x, y in zip(a["all"], b["all"])
            )
        else:
            assert a["value"] == pytest.approx(b["value"], abs=1e-4) and b["interval"] == pytest.approx(
                a["interval"], abs=1e-4
            )
    if task == "multi-label":  # the parity on held-out images scores both sides against the labels
        assert result.parity["map"] == pytest.approx(result.parity["reference_map"], abs=1e-4)
    else:
        assert result.parity["mae"] == pytest.approx(result.parity["reference_mae"], rel=1e-4)
    int8 = export_run(tmp_path / "run", format="onnx", quantize="dynamic", trust_code=True, log=lambda m: None)
    cost = "map_drop" if task == "multi-label" else "mae_increase"
    assert int8.parity[cost] <= int8.parity[f"max_{cost}"] and read_sidecar(int8.path)["quantization"] == "dynamic"
    int8_answers = load_predictor(str(int8.path), device="cpu").predict(images)
    assert len(int8_answers) == len(images) and all("error" not in a for a in int8_answers)
    if task == "regression":  # past its limit, int8 is refused in the task's unit (mAP: as accuracy's points)
        from transferkit.deploy import parity as parity_module
        from transferkit.errors import ParityError

        monkeypatch.setattr(parity_module, "INT8_MAX_MAE_INCREASE", -101.0)  # beyond anything int8 can cost
        with pytest.raises(ParityError, match="int8 quantisation costs .* percent more mean absolute error on 24"):
            export_run(tmp_path / "run", out=tmp_path / "refused.onnx", quantize="dynamic", trust_code=True)
        assert not (tmp_path / "refused.onnx").exists()
    copy = tmp_path / "again.csv"  # not the run's own DATA: every image of it is evaluated
    copy.write_text(data.read_text())
    by_run = evaluate_run(tmp_path / "run", data=str(copy), trust_code=True, device="cpu")
    by_onnx = evaluate_run(result.path, data=str(copy), device="cpu")
    key = "map" if task == "multi-label" else "mae"
    assert by_onnx["task"] == task and by_onnx["images"] == by_run["images"] == 120
    assert by_onnx[key] == pytest.approx(by_run[key], abs=1e-4)


@pytest.mark.parametrize("task, make", [("multi-label", multilabel_csv), ("regression", regression_csv)])
def test_a_csvs_columns_say_its_task_without_the_task_option(tmp_path, cli, task, make):
    data = make(tmp_path, count=40)
    out = tmp_path / "run"
    code, stdout, err = cli(
        "train",
        "tests.helpers:TinyNet",
        "--weights",
        "none",
        "--data",
        data,
        "--out",
        out,
        "--strategy",
        "full",
        "--epochs",
        "1",
        "--image-size",
        "16",
        "--precision",
        "fp32",
        "--no-channels-last",
    )
    assert code == 0, err
    column = "labels" if task == "multi-label" else "target"
    assert f"task: {task}, as the CSV's '{column}' column says (it has no 'label' column)" in stdout
    assert json.loads((out / "config.json").read_text())["task"] == task

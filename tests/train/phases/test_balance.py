"""Imbalanced data: what auto decides, the weighted loss and sampler, monitoring, patience, the test split."""

import csv
import json

import pytest
import torch

from tests.helpers import make_image_folder
from tests.helpers import make_imbalanced_folder as imbalanced
from transferkit.inference.runs import evaluate_run
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit
from transferkit.train.folder.run_folder import load_run

TINY = "tests.helpers:TinyNet"


def config(tmp_path, **overrides):
    values = dict(model=TINY, data=str(tmp_path / "data"), out=str(tmp_path / "run"), epochs=2, image_size=16)
    values.update(precision="fp32", channels_last=False, batch_size=8)
    values.update(overrides)
    return TrainConfig(**values)


def test_auto_samples_the_classes_equally_and_monitors_balanced_accuracy(tmp_path):
    imbalanced(tmp_path / "data")
    logged = []
    summary = fit(config(tmp_path), log=logged.append)
    text = "\n".join(logged)
    assert "train images per class: cat 24, dog 4" in text and "val images per class: cat 6, dog 2" in text
    assert "warning: imbalanced classes: 'cat' has 6.0x the training images of 'dog'" in text
    assert "preprocessing: 16 px, mean (0.485, 0.456, 0.406)" in text and "from the model's own configuration" in text
    assert "balance sampler, best checkpoint by balanced_acc" in text
    assert summary["balance"] == "sampler" and summary["best"]["monitor"] == "balanced_acc"
    assert summary["class_counts"]["train"] == {"cat": 24, "dog": 4}
    assert summary["splits"] == "train from 'train', val from 'val'"
    best = max(summary["epochs"], key=lambda row: row["val_balanced_acc"])
    assert summary["best"]["epoch"] == best["epoch"]
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert {"val_balanced_acc", "val_macro_f1"} <= set(next(csv.reader(f)))
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert set(report["best_metrics"]["per_class"]) == {"cat", "dog"}


@pytest.mark.parametrize(("dogs", "balance"), [(10, "sampler"), (12, "none")])
def test_a_ratio_above_two_already_counts_as_imbalanced(tmp_path, dogs, balance):
    # At 2.4 to 1 on digits, no balancing cost 8 points of test balanced accuracy (BENCHMARKS.md).
    imbalanced(tmp_path / "data", dogs=dogs)
    logged = []
    summary = fit(config(tmp_path, epochs=1), log=logged.append)
    ratio = 24 / dogs
    state = "imbalanced" if balance == "sampler" else "balanced"
    assert f"classes {state} (largest over smallest {ratio:.1f}): balance {balance}" in "\n".join(logged)
    assert summary["balance"] == balance


def test_balanced_data_keeps_plain_loss_and_accuracy(tmp_path):
    make_image_folder(tmp_path / "data", per_class=8)
    summary = fit(config(tmp_path), log=lambda m: None)
    assert summary["balance"] == "none" and summary["best"]["monitor"] == "acc"


def test_weighted_loss_uses_the_balanced_class_weights(tmp_path, monkeypatch):
    import transferkit.train.phases.loop as loop

    seen = []
    original = loop.F.cross_entropy

    def spy(*args, weight=None, **kwargs):
        seen.append(weight)
        return original(*args, weight=weight, **kwargs)

    monkeypatch.setattr(loop.F, "cross_entropy", spy)
    imbalanced(tmp_path / "data")
    fit(config(tmp_path, balance="weighted", epochs=1), log=lambda m: None)
    # N / (K * n_c): 28 / (2 * 24) and 28 / (2 * 4)
    torch.testing.assert_close(seen[0].cpu(), torch.tensor([28 / 48, 28 / 8]))


def test_sampler_draws_the_classes_about_equally(tmp_path):
    from transferkit.train.parallel.distributed import DistContext, make_loader

    labels = torch.tensor([0] * 90 + [1] * 10)
    weights = (1.0 / torch.bincount(labels).double())[labels]
    dataset = torch.utils.data.TensorDataset(torch.zeros(100, 1), labels)

    def draw(seed):
        loader = make_loader(
            dataset,
            batch_size=50,
            shuffle=True,
            seed=seed,
            dist_ctx=DistContext(),
            drop_last=False,
            sample_weights=weights,
        )
        return torch.cat([y for _, y in loader])

    drawn, again = draw(0), draw(0)
    assert len(drawn) == 100 and 35 <= int((drawn == 1).sum()) <= 65  # 10% of the data, about half the draws
    assert torch.equal(drawn, again)  # the seed fixes the draws


def test_patience_ends_a_phase_and_resume_goes_on_with_the_next(tmp_path, monkeypatch):
    import transferkit.train.phases.validation as validation

    accuracies = [0.5, 0.5, 0.5, 0.75, 0.625, 0.625]  # the validation accuracy of each epoch, in order

    def scripted(model, loader, *, num_classes, **kwargs):
        correct = round(16 * accuracies.pop(0))
        confusion = torch.tensor(
            [[min(correct, 8), 8 - min(correct, 8)], [8 - (correct - min(correct, 8)), correct - min(correct, 8)]]
        )
        return {"loss": 1.0 - correct / 16, "accuracy": correct / 16, "count": 16, "confusion": confusion}

    monkeypatch.setattr(validation, "evaluate", scripted)
    make_image_folder(tmp_path / "data", per_class=10)
    # lp-ft over 8 epochs: probe has epochs 1-4, finetune 5-8.
    run = config(tmp_path, strategy="lp-ft", epochs=8, patience=2, monitor="acc")
    logged = []
    summary = fit(run, log=logged.append, stop_after=5)
    assert any("phase probe ends early: no better acc in 2 epochs" in m for m in logged)
    assert [(r["epoch"], r["phase"]) for r in summary["epochs"]] == [
        (1, "probe"),
        (2, "probe"),
        (3, "probe"),
        (5, "finetune"),
    ]
    resumed = fit(resume=tmp_path / "run", trust_code=True, log=logged.append)
    assert [r["epoch"] for r in resumed["epochs"]] == [1, 2, 3, 5, 6, 7]  # finetune ends early too
    assert resumed["best"]["epoch"] == 5 and accuracies == []
    assert load_run(tmp_path / "run", which="best")["epoch"] == 5


def test_eval_test_split_is_kept_apart(tmp_path):
    imbalanced(tmp_path / "data", test=True)
    logged = []
    fit(config(tmp_path, epochs=3), log=logged.append)  # after one epoch the head is near zero: mirrors barely differ
    assert any("test from 'test' kept apart (eval --split test)" in m for m in logged)
    result = evaluate_run(tmp_path / "run", split="test", trust_code=True)
    assert result["images"] == 6 and result["split"] == "test (test)"
    assert set(result["per_class"]) == {"cat", "dog"} and "balanced_accuracy" in result
    mirrored = evaluate_run(tmp_path / "run", split="test", trust_code=True, tta=True)
    assert mirrored["tta"] and mirrored["images"] == 6 and mirrored["loss"] != result["loss"]
    with pytest.raises(Exception, match="has no test split"):
        evaluate_run(tmp_path / "run", data="builtin:digits", split="test", trust_code=True)


def test_mixup_and_cutmix_train_on_images_not_the_cache(tmp_path):
    make_image_folder(tmp_path / "data", per_class=9)
    logged = []
    summary = fit(config(tmp_path, strategy="freeze", mixup=0.2, cutmix=1.0, batch_size=5), log=logged.append)
    assert any("with MixUp 0.2 / CutMix 1" in m for m in logged)
    assert not any(row["cached"] for row in summary["epochs"])  # mixed images: no cached activations
    assert all(row["train_loss"] > 0 for row in summary["epochs"])

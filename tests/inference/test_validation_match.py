"""eval of best.pt reproduces the validation training did, even when training and inference kernels differ."""

import pytest

from tests.helpers import make_image_folder, tiny_config
from transferkit.inference.runs import evaluate_run
from transferkit.runtime.fastpath import FastPath
from transferkit.train import engine
from transferkit.train.engine import fit


def test_eval_equals_validation_with_other_training_kernels(tmp_path, monkeypatch):
    def kernels(model, input_size, *, train=True, **kwargs):
        # training in channels-last fp32, inference in NCHW bf16: every number differs in rounding
        return FastPath(True, "fp32", "fixed") if train else FastPath(False, "bf16", "fixed", batch_size=16)

    monkeypatch.setattr(engine, "choose_fast_path", kernels)
    make_image_folder(tmp_path / "data", per_class=40, size=20)
    config = tiny_config(tmp_path / "data", tmp_path / "run", epochs=3, precision="auto", channels_last=None)
    summary = fit(config, log=lambda m: None)
    result = evaluate_run(tmp_path / "run", trust_code=True)
    best = summary["best"]
    assert result["validation"]["same"] and result["accuracy"] == best["val_acc"]
    assert result["loss"] == pytest.approx(best["val_loss"], abs=1e-7)

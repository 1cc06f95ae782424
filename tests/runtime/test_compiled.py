import json

import pytest
import torch

import transferkit.runtime.compiled as compiled_module
from tests.helpers import TinyNet, make_image_folder, tiny_config
from transferkit.inference.runs import load_trained
from transferkit.runtime.compiled import CompileDecision, compiled_for_training
from transferkit.runtime.fastpath import FastPath
from transferkit.train.engine import fit

CPU = torch.device("cpu")
MEASURED = FastPath(False, "fp32", "measured", {"NCHW fp32": 100.0})  # 100 images/s eager


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _scripted(monkeypatch, compile_seconds=100.0, eager=10.0, compiled=20.0):
    """Measurements without compiling: returns the calls made."""
    calls = []

    def measure(model, compiled_net, path, input_size, *, device, batch_size):
        calls.append(batch_size)
        return CompileDecision(False, "", compile_seconds, eager, compiled)

    monkeypatch.setattr(compiled_module, "_measure", measure)
    return calls


def _decide(images, **kw):
    logged = []
    net, decision = compiled_for_training(
        TinyNet(),
        kw.pop("path", MEASURED),
        (3, 16, 16),
        device=CPU,
        batch_size=8,
        images=images,
        log=logged.append,
        **kw,
    )
    return net, decision, logged


def test_a_short_phase_is_not_measured_and_trains_eagerly(monkeypatch):
    calls = _scripted(monkeypatch)
    net, decision, logged = _decide(images=100 * 60)  # 60 s at 100 images/s
    assert calls == [] and not decision.used and isinstance(net, TinyNet)
    assert "not measured: this phase trains about 60 s" in logged[0]


def test_a_long_phase_is_measured_once_and_the_kept_numbers_are_weighed_against_each_run(monkeypatch):
    monkeypatch.setattr(compiled_module, "MEASURE_FROM_SECONDS", 10.0)
    calls = _scripted(monkeypatch, compile_seconds=100.0, eager=10.0, compiled=20.0)
    net, decision, logged = _decide(images=2000)  # 200 s eager
    assert calls == [8] and decision.used and not isinstance(net, TinyNet)  # 2x faster, compile already paid
    assert "used (compiled while measuring): compile 100 s, 20 images/s compiled against 10 eager (2.00x)" in logged[0]
    # Kept: 1,000 images save 50 s, less than a 100 s compile; 10,000 save 500 s.
    _, short, logged = _decide(images=1000)
    assert calls == [8] and not short.used and "reused the measurement" in logged[0]
    assert "saves 50.0 s, less than the compile" in logged[0]
    _, long, logged = _decide(images=10_000)
    assert calls == [8] and long.used and "saves 500.0 s, more than the compile" in logged[0]
    _, again, _ = _decide(images=10_000, reprobe=True)
    assert calls == [8, 8]


def test_a_compiled_step_that_is_not_faster_by_the_margin_is_not_used(monkeypatch):
    monkeypatch.setattr(compiled_module, "MEASURE_FROM_SECONDS", 10.0)
    _scripted(monkeypatch, compile_seconds=5.0, eager=10.0, compiled=10.5)
    net, decision, logged = _decide(images=10_000)
    assert not decision.used and isinstance(net, TinyNet) and "not 1.1x faster" in logged[0]


def test_a_damaged_kept_measurement_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(compiled_module, "MEASURE_FROM_SECONDS", 10.0)
    calls = _scripted(monkeypatch)
    _decide(images=2000)
    (kept,) = (tmp_path / "cache" / "transferkit" / "kernels").glob("*.json")
    stored = json.loads(kept.read_text())
    stored["compile"]["eager_images_per_second"] = "fast"
    kept.write_text(json.dumps(stored))
    _decide(images=2000)
    assert calls == [8, 8]


def test_pinned_kernels_are_not_compiled_unless_asked(monkeypatch):
    monkeypatch.setattr(compiled_module, "MEASURE_FROM_SECONDS", 0.0)
    calls = _scripted(monkeypatch)
    net, decision, logged = _decide(images=10**9, path=FastPath(False, "fp32", "as asked"))
    assert calls == [] and not decision.used and isinstance(net, TinyNet) and "kernels are pinned" in logged[0]


def test_on_and_off_do_as_told_without_measuring(monkeypatch):
    calls = _scripted(monkeypatch)
    on, decision, _ = _decide(images=10, mode="on")
    assert decision.used and not isinstance(on, TinyNet)
    off, decision, logged = _decide(images=10**9, mode="off")
    assert not decision.used and isinstance(off, TinyNet) and calls == []


@pytest.mark.slow
def test_a_real_measurement_leaves_the_model_unchanged(monkeypatch):
    monkeypatch.setattr(compiled_module, "MEASURE_FROM_SECONDS", 0.0)
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, decision = compiled_for_training(model, MEASURED, (3, 16, 16), device=CPU, batch_size=8, images=10**6)
    assert decision.compile_seconds > 0 and decision.eager_images_per_second > 0
    assert decision.compiled_images_per_second > 0
    assert decision.used == (decision.compiled_images_per_second > 1.1 * decision.eager_images_per_second)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.slow
def test_training_with_a_compiled_step_saves_the_model_s_own_weights(tmp_path):
    make_image_folder(tmp_path / "data", per_class=8)
    logged = []
    summary = fit(tiny_config(tmp_path / "data", tmp_path / "run", epochs=2, compile="on"), log=logged.append)
    assert any(m.startswith("torch.compile: on") for m in logged)
    assert len(summary["epochs"]) == 2
    saved = torch.load(tmp_path / "run" / "best.pt", weights_only=False)["model"]
    assert not any("_orig_mod" in key for key in saved)
    trained = load_trained(tmp_path / "run", trust_code=True)
    assert trained.model.fc.weight.abs().sum() > 0  # the head moved from its zero start

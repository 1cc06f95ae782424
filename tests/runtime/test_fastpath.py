import os
import re

import pytest
import torch
import torch.nn as nn

from tests.helpers import TinyNet
from transferkit.model.factory import create_model
from transferkit.runtime import fastpath
from transferkit.runtime.fastpath import candidates, choose_fast_path, pick_kernels


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test starts with no kept decision."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))


def test_probe_measures_and_leaves_the_model_unchanged():
    model = TinyNet(num_classes=4)  # really timed: a model that runs in milliseconds
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = choose_fast_path(model, (3, 32, 32), device=torch.device("cpu"), batch_size=8, steps=1)
    measured = {f"{'channels-last' if cl else 'NCHW'} {p}" for cl, p in candidates(torch.device("cpu"))}
    assert set(fast.images_per_second) == measured and all(v > 0 for v in fast.images_per_second.values())
    assert fast.reason.startswith("measured")
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert model.conv1.weight.is_contiguous()


def test_user_choice_is_kept():
    model = TinyNet(num_classes=4)
    fast = choose_fast_path(model, (3, 32, 32), device=torch.device("cpu"), channels_last=False, precision="fp32")
    assert (fast.channels_last, fast.precision, fast.reason) == (False, "fp32", "as asked")
    fast = choose_fast_path(model, (3, 32, 32), device=torch.device("cpu"), batch_size=8, steps=1, precision="fp32")
    assert fast.precision == "fp32" and set(fast.images_per_second) == {"NCHW fp32", "channels-last fp32"}


def test_inference_probe_also_chooses_the_batch_size():
    model = TinyNet(num_classes=4)
    fast = choose_fast_path(
        model, (3, 32, 32), device=torch.device("cpu"), batch_size=4, max_batch_size=16, train=False
    )
    # The sizes timed, doubling from 4 while faster, and the fastest of them chosen.
    listed = re.search(r"batches of \d+ \((.*) images/s\)", fast.reason).group(1)
    rates = {int(size): float(rate) for size, rate in (pair.split(": ") for pair in listed.split(", "))}
    assert list(rates)[0] == 4 and all(b == 2 * a for a, b in zip(rates, list(rates)[1:])) and max(rates) <= 16
    assert fast.batch_size == max(rates, key=rates.get)
    trained = choose_fast_path(model, (3, 32, 32), device=torch.device("cpu"), batch_size=4, steps=1)
    assert trained.batch_size is None  # the training batch size is the user's: it changes the result


def test_reduced_precision_must_win_clearly_but_the_memory_format_need_not():
    options = [(False, "fp32"), (True, "fp32"), (True, "bf16"), (False, "bf16")]

    def speeds(*values):
        return dict(zip(["NCHW fp32", "channels-last fp32", "channels-last bf16", "NCHW bf16"], values))

    assert pick_kernels(options, speeds(156, 170, 256, 277)) == (False, "bf16")  # fastest, 1.6x the best fp32
    assert pick_kernels(options, speeds(100, 105, 110, 90)) == (True, "fp32")  # bf16 within the margin of fp32
    assert pick_kernels(options, speeds(100, 99, 50, 60)) == (False, "fp32")
    assert pick_kernels(options[2:], speeds(0, 0, 100, 101)) == (False, "bf16")  # no fp32 to compare against


class _Clock:
    """Stands in for the timing: a script of images/s per candidate, and the order it was asked in."""

    def __init__(self, script):
        self.script = {k: list(v) for k, v in script.items()}
        self.asked = []

    def __call__(self, model, channels_last, precision, batch_size, **kwargs):
        label = f"{'channels-last' if channels_last else 'NCHW'} {precision}"
        self.asked.append(label)
        return self.script[label].pop(0) if self.script[label] else 1.0


CPU = torch.device("cpu")
FP32 = {"NCHW fp32": [100.0] * 9, "channels-last fp32": [120.0] * 9, "channels-last bf16": [90.0] * 9}


def test_emulated_bf16_is_not_measured_unless_asked_for(monkeypatch):
    monkeypatch.setattr(fastpath, "_bf16_supported", lambda device: True)
    monkeypatch.setattr(fastpath, "bf16_native", lambda device: False)
    assert candidates(CPU) == [(False, "fp32"), (True, "fp32")]
    clock = _Clock({**FP32, "NCHW bf16": [80.0] * 9})
    monkeypatch.setattr(fastpath, "measure_throughput", clock)
    model = create_model("resnet18", num_classes=4)
    fast = choose_fast_path(model, (3, 32, 32), device=CPU, batch_size=8)
    assert set(clock.asked) == {"NCHW fp32", "channels-last fp32"}
    assert "bf16 not measured: this CPU only emulates it" in fast.reason
    asked = choose_fast_path(model, (3, 32, 32), device=CPU, batch_size=8, precision="bf16")
    assert set(clock.asked[6:]) == {"NCHW bf16", "channels-last bf16"} and asked.precision == "bf16"
    monkeypatch.setattr(fastpath, "bf16_native", lambda device: True)
    assert (True, "bf16") in candidates(CPU)


def test_candidates_are_interleaved_and_a_spike_does_not_decide(monkeypatch):
    model = create_model("resnet18", num_classes=4)
    monkeypatch.setattr(fastpath, "candidates", lambda device, **_: [(False, "fp32"), (True, "fp32"), (True, "bf16")])
    # channels-last fp32 is measured at 4 images/s once, as on a busy machine: its median still wins
    clock = _Clock({**FP32, "channels-last fp32": [120.0, 4.0, 121.0]})
    monkeypatch.setattr(fastpath, "measure_throughput", clock)
    fast = choose_fast_path(model, (3, 32, 32), device=CPU, batch_size=8)
    assert (fast.channels_last, fast.precision) == (True, "fp32")
    assert clock.asked[:3] == ["NCHW fp32", "channels-last fp32", "channels-last bf16"]
    assert clock.asked[3:6] == ["channels-last bf16", "channels-last fp32", "NCHW fp32"]  # the order alternates
    assert len(clock.asked) == 9 and fast.images_per_second["channels-last fp32"] == 120.0


def test_a_second_probe_reuses_the_decision_until_reprobe(monkeypatch):
    model = create_model("resnet18", num_classes=4)
    monkeypatch.setattr(fastpath, "candidates", lambda device, **_: [(False, "fp32"), (True, "fp32"), (True, "bf16")])
    clock = _Clock(FP32)
    monkeypatch.setattr(fastpath, "measure_throughput", clock)
    first = choose_fast_path(model, (3, 32, 32), device=CPU, batch_size=8)
    asked = len(clock.asked)
    # measured again under load, the same machine and model would now choose otherwise: it is not asked
    clock.script = {"NCHW fp32": [300.0] * 9, "channels-last fp32": [4.0] * 9, "channels-last bf16": [5.0] * 9}
    again = choose_fast_path(model, (3, 32, 32), device=CPU, batch_size=8)
    assert len(clock.asked) == asked and again.reason.startswith("reused the measurement of")
    assert (again.channels_last, again.precision) == (first.channels_last, first.precision) == (True, "fp32")
    other_size = choose_fast_path(model, (3, 48, 48), device=CPU, batch_size=8)  # another key: measured
    assert len(clock.asked) > asked and other_size.reason.startswith("measured")
    redone = choose_fast_path(model, (3, 32, 32), device=CPU, batch_size=8, reprobe=True)
    assert (redone.channels_last, redone.precision) == (False, "fp32") and redone.reason.startswith("measured")


def test_a_damaged_kept_decision_is_measured_again(monkeypatch, tmp_path):
    model = create_model("resnet18", num_classes=4)
    monkeypatch.setattr(fastpath, "candidates", lambda device, **_: [(False, "fp32"), (True, "fp32")])
    monkeypatch.setattr(fastpath, "measure_throughput", _Clock(FP32))
    choose_fast_path(model, (3, 32, 32), device=CPU, batch_size=8)
    (kept,) = (tmp_path / "transferkit" / "kernels").iterdir()
    kept.write_text('{"fast_path": {"channels_last": "yes", "precision": "int3"}}')
    fast = choose_fast_path(model, (3, 32, 32), device=CPU, batch_size=8)
    assert fast.reason.startswith("measured") and fast.precision == "fp32"
    assert os.path.getsize(kept) > 60  # written again, whole


def test_a_kernel_the_model_cannot_run_is_skipped_with_its_reason():
    class NoChannelsLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
                raise RuntimeError("view size is not compatible with input tensor's size and stride")
            return self.fc(self.conv(x).mean((2, 3)))

    fast = choose_fast_path(
        NoChannelsLast(), (3, 16, 16), device=torch.device("cpu"), batch_size=4, steps=1, precision="fp32", reprobe=True
    )
    assert not fast.channels_last
    assert "channels-last fp32 cannot run (view size is not compatible" in fast.reason

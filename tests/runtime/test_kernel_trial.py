import json
import re
import types

import pytest
import torch

from tests.helpers import make_image_folder, tiny_config
from transferkit.model.factory import create_model
from transferkit.runtime import fastpath
from transferkit.runtime.fastpath import choose_fast_path
from transferkit.runtime.kernel_trial import MAX_TIMED, MIN_TIMED, InferenceTrial, KernelTrial
from transferkit.train.engine import fit

NCHW, CL, BF16 = (False, "fp32"), (True, "fp32"), (True, "bf16")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test starts with no kept decision."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))


def _run(trial: KernelTrial, seconds: dict, limit: int = 100) -> list:
    """Steps until the trial decides: each candidate's step takes the next of its scripted seconds."""
    asked = []
    while (option := trial.next_option()) is not None and len(asked) < limit:
        asked.append(option)
        trial.record(seconds[option].pop(0) if seconds[option] else 1.0, images=8)
    return asked


def test_each_candidate_warms_up_then_rounds_alternate_until_the_test_decides():
    trial = KernelTrial([NCHW, CL])
    asked = _run(trial, {NCHW: [9.0] + [2.0] * 9, CL: [9.0] + [1.0] * 9})
    # warm-ups (untimed), then rounds in alternating order: three timed steps each decide at p = 1/20
    assert asked == [NCHW, CL, CL, NCHW, NCHW, CL, CL, NCHW]
    assert (trial.decided.channels_last, trial.decided.precision) == CL
    assert "p = 0.050 (one-sided Mann-Whitney, 3 steps each)" in trial.decided.reason
    assert trial.decided.images_per_second == {"NCHW fp32": 4.0, "channels-last fp32": 8.0}


def test_overlapping_times_go_on_and_are_decided_by_medians_at_the_limit():
    trial = KernelTrial([NCHW, CL])
    # the two alternate in which is faster: no separation, so every allowed step is taken
    script = {NCHW: [1.0] + [1.0, 1.2] * MAX_TIMED, CL: [1.0] + [1.1, 1.05] * MAX_TIMED}
    asked = _run(trial, script)
    assert len(asked) == 2 * (MAX_TIMED + 1)
    assert f"undecided after {MAX_TIMED} timed steps each: by medians" in trial.decided.reason
    assert (trial.decided.channels_last, trial.decided.precision) == CL  # median 1.075 against 1.1


def test_reduced_precision_must_be_faster_by_the_margin():
    trial = KernelTrial([NCHW, BF16])
    asked = _run(trial, {NCHW: [1.0] * 20, BF16: [0.95] * 20})  # 5% faster: within the 10% margin
    assert trial.decided.precision == "fp32" and len(asked) == 2 * (MAX_TIMED + 1)
    trial = KernelTrial([NCHW, BF16])
    _run(trial, {NCHW: [1.0] * 20, BF16: [0.5] * 20})
    assert trial.decided.precision == "bf16" and "3 steps each" in trial.decided.reason


def test_a_candidate_that_cannot_run_is_dropped_with_its_reason():
    trial = KernelTrial([NCHW, CL, BF16])
    assert trial.next_option() == NCHW
    trial.record(1.0, 8)
    assert trial.next_option() == CL
    trial.drop(CL, RuntimeError("view size is not compatible with input tensor's size and stride"))
    assert trial.next_option() == BF16  # the round goes on without it
    trial.drop(BF16, RuntimeError("no bf16 here"))
    assert trial.next_option() is None
    assert (trial.decided.channels_last, trial.decided.precision) == NCHW
    assert "channels-last fp32 cannot run (view size is not compatible" in trial.decided.reason


def test_settle_decides_on_what_was_timed_and_keeps_nothing(tmp_path):
    trial = KernelTrial([NCHW, CL], key="k")
    _run(trial, {NCHW: [1.0, 2.0], CL: [1.0, 1.0]}, limit=4)  # one timed step each
    assert trial.decided is None
    decided = trial.settle()
    assert decided.channels_last and "end of the phase's first epoch" in decided.reason
    assert not (tmp_path / "transferkit" / "kernels").exists()
    untimed = KernelTrial([NCHW, CL]).settle()
    assert (untimed.channels_last, untimed.precision) == NCHW and "too few steps" in untimed.reason


def test_a_decided_trial_is_kept_and_the_next_probe_reuses_it(monkeypatch):
    model = create_model("resnet18", num_classes=4)
    monkeypatch.setattr(fastpath, "candidates", lambda device, **_: [NCHW, CL])
    probe = dict(device=torch.device("cpu"), batch_size=8, train=True)
    trial = choose_fast_path(model, (3, 32, 32), trial=KernelTrial, **probe)
    assert isinstance(trial, KernelTrial) and trial.options == [NCHW, CL]
    _run(trial, {NCHW: [2.0] * 9, CL: [1.0] * 9})
    kept = choose_fast_path(model, (3, 32, 32), trial=KernelTrial, **probe)
    assert kept.reason.startswith("reused the measurement of") and kept.channels_last
    pinned = choose_fast_path(model, (3, 32, 32), trial=KernelTrial, channels_last=False, precision="fp32", **probe)
    assert pinned.reason == "as asked"


def test_a_run_chooses_its_kernels_on_its_first_steps(monkeypatch, tmp_path):
    """No probe steps: the first epoch's own steps time both memory formats, and the decision is the run's."""
    monkeypatch.setattr(fastpath, "candidates", lambda device, **_: [NCHW, CL])
    measured = []
    monkeypatch.setattr(fastpath, "measure_throughput", lambda *a, **k: measured.append(k["train"]) or 100.0)
    lines = []
    data = make_image_folder(tmp_path / "data", per_class=30)  # 48 training images: 24 steps of 2, enough
    config = tiny_config(data, tmp_path / "run", channels_last=None, batch_size=2, epochs=2, augment="none")
    fit(config, log=lines.append)
    assert measured == []  # neither the training nor the inference kernels were probed
    assert any("are timed on the first steps" in line for line in lines)
    assert any(line.startswith("kernels for training: ") for line in lines)  # the short line; train.log the rest
    lines = (tmp_path / "run" / "train.log").read_text().splitlines()
    decided = next(line for line in lines if "measured on the first training steps" in line)
    timed = re.search(r"Mann-Whitney, (\d+) steps each", decided)  # the rule decides after 3 to 8 steps each
    assert (timed and MIN_TIMED <= int(timed.group(1)) <= MAX_TIMED) or "by medians" in decided, decided
    assert any("are timed on the first validation batches" in line for line in lines)
    inference = next(line for line in lines if "fast path for inference (frozen" in line)
    assert "measured on the first batches of validation" in inference
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["fast_path"]["reason"] in decided
    assert state["fast_path_inference"]["reason"] in inference
    assert json.loads((tmp_path / "run" / "config.json").read_text())["channels_last"] is None


def _run_inference(trial: InferenceTrial, per_image: dict, limit: int = 200) -> list:
    """Batches until the trial decides; a batch of ``size`` with kernels ``o`` takes ``size * per_image[o, size]``."""
    asked = []
    while trial.decided is None and len(asked) < limit:
        size = trial.next_batch()
        asked.append((trial.option, size))
        trial.record(size * per_image[trial.option, size], size)
    return asked


def test_inference_kernels_then_the_batch_size_are_chosen_on_the_pass_and_kept(tmp_path):
    trial = InferenceTrial([NCHW, CL], key="inference", batch_size=16, max_batch_size=256)
    per_image = {(NCHW, 16): 0.02, (CL, 16): 0.01, (CL, 32): 0.008, (CL, 64): 0.009}
    asked = _run_inference(trial, per_image)
    # the kernel trial at 16 (warm-ups, then three timed each), then the winner at 32 and 64 (a warm-up, two timed)
    assert asked[:8] == [(NCHW, 16), (CL, 16), (CL, 16), (NCHW, 16), (NCHW, 16), (CL, 16), (CL, 16), (NCHW, 16)]
    assert asked[8:] == [(CL, 32)] * 3 + [(CL, 64)] * 3
    decided = trial.decided
    assert (decided.channels_last, decided.batch_size) == (True, 32)
    assert "batches of 32 (16: 100, 32: 125, 64: 111 images/s)" in decided.reason
    # against 0.008 s an image: NCHW's 64 images at 16 cost 0.012 more each, channels-last's 0.002, 192 at 64 0.001
    assert decided.measuring_seconds == pytest.approx(64 * 0.012 + 64 * 0.002 + 192 * 0.001)
    assert trial.next_batch() == 32 and trial.option == CL
    kept = json.loads((tmp_path / "transferkit" / "kernels" / "inference.json").read_text())
    assert kept["fast_path"]["batch_size"] == 32


def test_inference_batches_stop_at_the_largest_size_allowed():
    trial = InferenceTrial([NCHW, CL], batch_size=16, max_batch_size=32)
    per_image = {(NCHW, 16): 0.01, (CL, 16): 0.02, (NCHW, 32): 0.005}
    asked = _run_inference(trial, per_image)
    assert asked[-1] == (NCHW, 32) and trial.decided.batch_size == 32 and not trial.decided.channels_last


def test_a_pass_too_short_to_decide_settles_on_what_it_timed_or_measures_before(tmp_path):
    trial = InferenceTrial([NCHW, CL], key="short", batch_size=16)
    _run_inference(trial, {(NCHW, 16): 0.02, (CL, 16): 0.01}, limit=4)  # one timed batch each
    assert trial.settle().channels_last and "decided at the end of the pass" in trial.decided.reason
    assert not (tmp_path / "transferkit" / "kernels").exists()
    probed = fastpath.FastPath(False, "fp32", "probed")
    assert InferenceTrial([NCHW, CL], fallback=lambda: probed).result() is probed  # no batch timed


def test_the_pass_is_recut_into_the_trials_batches_with_each_candidates_memory_format():
    trial = InferenceTrial([NCHW, CL], batch_size=4, max_batch_size=8)
    module = torch.nn.Conv2d(3, 4, 3)
    prep = types.SimpleNamespace(channels_last=None)
    images = torch.arange(50 * 3 * 2 * 2, dtype=torch.uint8).view(50, 3, 2, 2)
    seen, formats = [], []
    for batch in trial.run(images.split(16), module, prep):  # the loader's batches of 16
        seen.append(batch)
        formats.append((prep.channels_last, module.weight.is_contiguous(memory_format=torch.channels_last)))
    assert torch.equal(torch.cat(seen), images)  # every image once, in order
    assert [len(b) for b in seen[:8]] == [4] * 8  # the kernel trial's batches
    assert formats[:2] == [(False, False), (True, True)]  # each candidate set on the module and the input
    assert {len(b) for b in seen[:-1]} <= {4, 8}  # then the climb's: nothing above the largest size allowed


def test_the_frozen_layers_pass_chooses_inference_kernels_and_later_runs_reuse_its_activations(monkeypatch, tmp_path):
    """No probe before training: the cache pass times the candidates; its activations keep their name."""
    from transferkit.advice.compare import compare
    from transferkit.train.config import TrainConfig

    monkeypatch.setattr(fastpath, "candidates", lambda device, **_: [NCHW, CL])
    measured = []
    monkeypatch.setattr(fastpath, "measure_throughput", lambda *a, **k: measured.append(k["train"]) or 100.0)
    base = TrainConfig(
        model="tests.helpers:TinyNet", data="builtin:digits", out=str(tmp_path / "cmp"), epochs=2, image_size=16
    )
    lines = []
    compare(base, ["lp-ft", "gradual"], log=lines.append)
    assert measured == []  # neither the inference nor the training kernels were probed
    assert sum(line.startswith("kernels for inference") for line in lines) == 1
    lines = [
        line.split(" ", 2)[2]  # after the time
        for run in ("lp-ft", "gradual")
        for line in (tmp_path / "cmp" / run / "train.log").read_text().splitlines()
    ]
    inference = [line for line in lines if line.startswith("fast path for inference")]
    assert len(inference) == 1 and "the first batches of the frozen layers' pass" in inference[0], inference
    assert "timing cost" in inference[0]
    cache_lines = [line for line in lines if line.startswith("cache:")]
    assert len(cache_lines) == 2 and "reused from an earlier run" in cache_lines[1], cache_lines
    state = torch.load(tmp_path / "cmp" / "gradual" / "last.pt", weights_only=False)
    assert state["fast_path_inference"]["reason"] in inference[0]


def test_images_and_their_labels_are_recut_alike():
    trial = InferenceTrial([NCHW, CL], batch_size=4, max_batch_size=8)
    images, labels = torch.rand(21, 3, 2, 2), torch.arange(21)
    loader = [[i, t] for i, t in zip(images.split(16), labels.split(16))]  # a DataLoader's [images, labels]
    seen = list(trial.run(loader, torch.nn.Conv2d(3, 4, 3), types.SimpleNamespace(channels_last=None)))
    assert all(isinstance(b, list) and len(b[0]) == len(b[1]) for b in seen)
    assert torch.equal(torch.cat([b[0] for b in seen]), images) and torch.equal(torch.cat([b[1] for b in seen]), labels)


def test_a_pass_too_short_to_time_the_kernels_settles_on_the_default_with_no_cost():
    from transferkit.runtime.kernel_trial import InferenceTrial

    trial = InferenceTrial([(False, "fp32"), (True, "bf16")], batch_size=16)
    for _ in range(3):  # one kernel timed, the other never: no decision, no batch size timed
        trial.next_batch()
        trial.record(0.1, 16)
    chosen = trial.settle()
    assert (chosen.channels_last, chosen.precision, chosen.measuring_seconds) == (False, "fp32", 0.0)
    assert chosen.reason.startswith("too few steps to time the kernels")

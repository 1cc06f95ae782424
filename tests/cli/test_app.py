import json
import subprocess
import sys

import pytest

from transferkit.cli.app import COMMANDS

# What a process imports while it answers: checked at import time, not timed.
PROBE = """
import json, sys
from transferkit.cli.app import main
sys.argv = ["transferkit", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    code = e.code or 0
heavy = sorted(m for m in ("torch", "timm", "torchvision", "sklearn", "matplotlib", "tensorboard") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def run_probe(*args):
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    return json.loads(done.stderr.strip().splitlines()[-1]), done.stdout


@pytest.mark.parametrize("args", [["--help"], ["-h"], *[[name, "--help"] for name in COMMANDS]])
def test_help_imports_no_torch(args):
    result, out = run_probe(*args)
    assert result == {"code": 0, "heavy": []}
    assert out.startswith("Usage: transferkit")


def test_version_and_command_list():
    result, out = run_probe("--version")
    assert result["code"] == 0 and out.strip() == "transferkit 0.1.0"
    _, out = run_probe("-h")
    assert all(f"  {name} " in out for name in COMMANDS)


def test_import_transferkit_loads_no_sklearn_matplotlib_or_tensorboard():
    code = (
        "import sys, transferkit as tk; tk.fit; tk.load_pretrained; tk.load_predictor; tk.compare;"
        "print(sorted(m for m in ('sklearn', 'matplotlib', 'tensorboard') if m in sys.modules), 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["[]", "True"], done.stderr[-2000:]


@pytest.mark.parametrize(
    "args, line",
    [
        (["--lr", "-1"], "transferkit: error: --lr must be in (0, inf), got -1.0."),
        (["--lr", "nan"], "transferkit: error: --lr must be a finite number, got nan."),
        (["--label-smoothing", "2"], "transferkit: error: --label-smoothing must be in [0, 1), got 2.0."),
        (["--image-size", "-8"], "transferkit: error: --image-size must be in [8, inf), got -8."),
        (["--image-size", "0"], "transferkit: error: --image-size must be in [8, inf), got 0."),
        (["--cache-views", "-1"], "transferkit: error: --cache-views must be in [0, inf), got -1."),
        (
            ["--strategy", "head"],
            "transferkit: error: Strategy 'head' needs --freeze patterns or --unfreeze-last.",
        ),
    ],
)
def test_settings_are_refused_in_one_line_naming_the_flag(cli, tmp_path, args, line):
    code, out, err = cli("train", "tests.helpers:SmallNet", "--data", "builtin:digits", "--out", tmp_path / "r", *args)
    assert (code, err) == (2, line + "\n")
    assert not (tmp_path / "r").exists()


def test_library_messages_name_arguments_and_the_cli_names_flags():
    from transferkit.cli.app import user_message
    from transferkit.errors import ConfigError, LoadError

    error = ConfigError("batch_size must be in [1, inf), got 0.", argument="batch_size")
    assert str(error).startswith("batch_size") and user_message(error).startswith("--batch-size")
    partial = LoadError("'ckpt_v2.pth' leaves layer_3 random; set allow_partial.", argument="allow_partial")
    assert user_message(partial) == "'ckpt_v2.pth' leaves layer_3 random; set --allow-partial."

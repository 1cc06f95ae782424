"""The frozen layers' pass of ``freeze`` with 1 process and shared by 2 under torchrun.

lite0 (the installed ImageNet weights) on builtin:mnist5k at 64 px, 1 epoch, no augmentation,
each run in a fresh folder so that nothing is reused. The pass's seconds are the ones the run
logs ("computed once in N s"). On a CPU, torchrun gives each of its processes one thread: the
single process is timed with one thread (the same compute per process as each of the two) and
with the machine's default, which shares the cores among its own threads.

    .venv/bin/python bench/sharded_cache.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "tf_efficientnet_lite0", "--weights", "lite0", "--data", "builtin:mnist5k", "--image-size", "64"]
TRAIN += ["--strategy", "freeze", "--augment", "none", "--epochs", "1", "--json"]


def timed_pass(out: Path, processes: int, threads: int | None) -> tuple[float, float]:
    """(seconds of the frozen layers' pass, validation accuracy) of one run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    launcher = [sys.executable, "-m", "transferkit"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        launcher += ["-m", "transferkit"]
    done = subprocess.run([*launcher, *TRAIN, "--out", str(out)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    found = re.search(r"computed once in ([\d.]+) s", " ".join(done.stderr.split()))
    return float(found.group(1)), __import__("json").loads(done.stdout)["best_val_acc"]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, processes, threads in [
            ("1 process, 1 thread", 1, 1),
            ("1 process, default threads", 1, None),
            ("2 processes (torchrun), 1 thread each", 2, None),
        ]:
            seconds, accuracy = timed_pass(Path(tmp) / label.replace(" ", "_"), processes, threads)
            rows.append((label, seconds, accuracy))
            print(f"{label}: {seconds:.1f} s, val_acc {accuracy:.3f}", flush=True)
    base = rows[0][1]
    lines = [
        f"`{command_line()}` on {machine()}.",
        "",
        "5,000 mnist5k images, lite0 at 64 px, the pooled features cached (`freeze`); seconds as the run logs them.",
        "",
        "| run | frozen layers' pass | against 1 process, 1 thread | val_acc after 1 epoch |",
        "|---|---:|---:|---:|",
        *(f"| {label} | {s:.1f} s | {base / s:.2f}x | {acc:.3f} |" for label, s, acc in rows),
    ]
    write_section("The frozen layers' pass shared by torchrun's processes", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

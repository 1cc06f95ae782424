"""The main job against its targets: `transferkit demo` on a 2-core CPU.

Targets: the whole demo under 10 minutes; best holdout accuracy at least 98%; `freeze` at least
93%; accuracy after one epoch clearly higher from pretrained weights than from scratch.

    .venv/bin/python bench/demo_targets.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from _report import command_line, machine, write_section

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    started = time.perf_counter()
    result = subprocess.run(
        [str(ROOT / ".venv/bin/transferkit"), "demo", "--json"], capture_output=True, text=True, cwd=ROOT
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        return 1
    out = json.loads(result.stdout)
    rows = {r["strategy"]: r for r in out["compare"]["rows"]}
    best = max(r["best_acc"] for r in rows.values())
    checks = [
        ("whole demo under 600 s", wall < 600, f"{wall:.0f} s"),
        ("best holdout accuracy >= 98%", best >= 0.98, f"{100 * best:.1f}%"),
        ("freeze >= 93%", rows["freeze"]["best_acc"] >= 0.93, f"{100 * rows['freeze']['best_acc']:.1f}%"),
        (
            "epoch-1 accuracy, pretrained (full) vs scratch",
            rows["full"]["epoch1_acc"] > rows["scratch"]["epoch1_acc"] + 0.1,
            f"{100 * rows['full']['epoch1_acc']:.1f}% vs {100 * rows['scratch']['epoch1_acc']:.1f}%",
        ),
    ]
    table = ["| strategy | trainable params | seconds | acc after epoch 1 | best acc |", "|---|---:|---:|---:|---:|"]
    for r in rows.values():
        table.append(
            f"| {r['strategy']} | {r['trainable_params']:,} | {r['seconds']:.0f} | "
            f"{100 * r['epoch1_acc']:.1f}% | {100 * r['best_acc']:.1f}% |"
        )
    verdicts = "\n".join(f"- {'PASS' if ok else 'FAIL'}: {name}: {value}" for name, ok, value in checks)
    body = f"""
Machine: {machine()}

Command: `{command_line()}` (runs `transferkit demo --json`: lite0 on builtin:mnist5k, 4 epochs at 80 px,
holdout 1,000 images).

{chr(10).join(table)}

{verdicts}
"""
    write_section("Demo targets", body)
    print(body)
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

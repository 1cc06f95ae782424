"""The main job against its targets: `transferkit demo` on a 2-core CPU.

Targets: the whole demo under 4 minutes (install excluded); every pretrained strategy ahead of
scratch at every epoch; the winner at least 93% on the 1,000 held-out images; gradual's accuracy
never falls from one epoch to the next (its unfreezing used to drop it back).

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
    scratch = rows["scratch"]["val_acc"]
    behind = {
        s: [i + 1 for i, (a, b) in enumerate(zip(r["val_acc"], scratch)) if a <= b]
        for s, r in rows.items()
        if s != "scratch"
    }
    gradual = rows["gradual"]["val_acc"]
    checks = [
        ("whole demo under 240 s", wall < 240, f"{wall:.0f} s"),
        ("best holdout accuracy >= 93%", best >= 0.93, f"{100 * best:.1f}%"),
        (
            "every pretrained strategy ahead of scratch at every epoch",
            not any(behind.values()),
            "; ".join(f"{s}: behind at {e}" for s, e in behind.items() if e) or "yes",
        ),
        (
            "gradual never falls from one epoch to the next",
            all(b >= a for a, b in zip(gradual, gradual[1:])),
            " -> ".join(f"{100 * a:.1f}%" for a in gradual),
        ),
    ]
    table = ["| strategy | trainable params | seconds | accuracy by epoch | best acc |", "|---|---:|---:|---|---:|"]
    for r in rows.values():
        table.append(
            f"| {r['strategy']} | {r['trainable_params']:,} | {r['seconds']:.0f} | "
            f"{' / '.join(f'{100 * a:.1f}%' for a in r['val_acc'])} | {100 * r['best_acc']:.1f}% |"
        )
    verdicts = "\n".join(f"- {'PASS' if ok else 'FAIL'}: {name}: {value}" for name, ok, value in checks)
    body = f"""
Machine: {machine()}

Command: `{command_line()}` (runs `transferkit demo --json`: lite0 on 1,000 training images of
builtin:mnist5k, 3 epochs at 64 px in batches of 32, holdout 1,000 images). Whole demo: {wall:.0f} s.

{chr(10).join(table)}

{verdicts}

The demo's own reading of it:

{chr(10).join("- " + line for line in out["compare"]["verdict"])}
"""
    write_section("Demo targets", body)
    print(body)
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

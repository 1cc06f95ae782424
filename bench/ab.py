"""The same workloads on two versions of the code, in fresh processes, alternating which runs first.

For a change that should not change speed or results (a restructuring): each workload runs
``--rounds`` times on each side, every run a new Python process whose ``transferkit`` is imported
from that side's tree (a ``git worktree`` of ``--before`` and this checkout), so that neither side
profits from the other's imports or caches in memory. Kept kernel decisions on disk are shared,
which makes the sides measure the same kernels. Medians are compared, with each run's result.

Workloads (tf_efficientnet_lite0 from the lite0 ImageNet weights):

- ``freeze``: ``fit`` with strategy freeze, 10 epochs on builtin:mnist5k at 96 px (bench/speed.py's first
  measurement, the frozen prefix computed once);
- ``full``: ``fit`` with strategy full, 2 epochs on builtin:mnist5k's first 1,000 images at 64 px;
- ``advise-digits``, ``advise-mnist5k``, ``advise-faces``: ``advise`` at 64 px (the advice benchmark's probes
  and decisions);
- ``demo``: ``transferkit demo --json`` (the demo targets: four strategies compared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _report import command_line, machine, write_section

ROOT = Path(__file__).resolve().parents[1]

FIT = """
import json, sys, time
try:
    from transferkit.advice.auto import fit as advised_fit
except ImportError:  # code from before the layers were enforced: the engine resolved strategy auto itself
    from transferkit.train.engine import fit as advised_fit
from transferkit.train.config import TrainConfig
config = TrainConfig(**json.loads(sys.argv[1]))
started = time.perf_counter()
summary = advised_fit(config, log=lambda m: None)
print(json.dumps({"seconds": time.perf_counter() - started, "result": round(summary["best_val_acc"], 4)}))
"""

ADVISE = """
import json, sys, time
from transferkit.advice.advise import advise
from transferkit.train.config import TrainConfig
config = TrainConfig(**json.loads(sys.argv[1]))
started = time.perf_counter()
result = advise(config, log=lambda m: None)
depths = ", ".join(f"{d['name']} {d['score']:.3f}" for d in result["depths"])
print(json.dumps({"seconds": time.perf_counter() - started, "result": f"{result['advice']['command']} ({depths})"}))
"""

DEMO = """
import json, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run([sys.executable, "-m", "transferkit", "demo", "--json", "--out", sys.argv[1]],
                      capture_output=True, text=True, check=True)
rows = json.loads(done.stdout.strip().splitlines()[-1])["compare"]["rows"]
result = ", ".join(f"{r['strategy']} {r['best_acc']:.3f}" for r in rows)
print(json.dumps({"seconds": time.perf_counter() - started, "result": result}))
"""

LITE0 = {"model": "tf_efficientnet_lite0", "weights": "lite0"}
WORKLOADS = {
    "freeze": (FIT, {**LITE0, "data": "builtin:mnist5k", "strategy": "freeze", "epochs": 10, "image_size": 96}),
    "full": (
        FIT,
        {**LITE0, "data": "builtin:mnist5k", "strategy": "full", "epochs": 2, "image_size": 64, "train_images": 1000},
    ),
    **{
        f"advise-{name}": (ADVISE, {**LITE0, "data": f"builtin:{name}", "epochs": 4, "image_size": 64})
        for name in ("digits", "mnist5k", "faces")
    },
    "demo": (DEMO, None),
}


def run_once(tree: Path, name: str, out: Path) -> dict:
    code, settings = WORKLOADS[name]
    argument = str(out) if settings is None else json.dumps({**settings, "out": str(out)})
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run(
        [sys.executable, "-c", code, argument], env=env, capture_output=True, text=True, cwd=tree, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{name} failed in {tree}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="The commit to compare this checkout with.")
    parser.add_argument("--only", default=",".join(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3, help="Runs a side (the demo: once a side).")
    parser.add_argument("--write", action="store_true", help="Write the section of BENCHMARKS.md.")
    args = parser.parse_args()
    names = args.only.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(before), args.before], cwd=ROOT, check=True)
        try:
            sides = {"before": before, "after": ROOT}
            runs: dict[str, dict[str, list[dict]]] = {n: {"before": [], "after": []} for n in names}
            for name in names:
                for index in range(1 if name == "demo" else args.rounds):
                    order = ("before", "after") if index % 2 == 0 else ("after", "before")
                    for side in order:
                        got = run_once(sides[side], name, Path(tmp) / f"{name}-{side}-{index}")
                        runs[name][side].append(got)
                        print(f"{name} {side} {index}: {got['seconds']:.1f} s, {got['result']}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
    lines = [
        f"Machine: {machine()}",
        "",
        f"Command: `{command_line()}`. Before: {args.before}; after: this commit. Each run a fresh process, the "
        "sides alternating which goes first; seconds are whole calls (data, model, weights, probes included).",
        "",
        "| workload | before: median (runs) | after: median (runs) | after / before | results before | results after |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name in names:
        b, a = ([r["seconds"] for r in runs[name][s]] for s in ("before", "after"))
        results = [sorted({str(r["result"]) for r in runs[name][s]}) for s in ("before", "after")]
        lines.append(
            f"| {name} | {statistics.median(b):.1f} s ({', '.join(f'{x:.1f}' for x in b)}) "
            f"| {statistics.median(a):.1f} s ({', '.join(f'{x:.1f}' for x in a)}) "
            f"| {statistics.median(a) / statistics.median(b):.2f} | {'; '.join(results[0])} | {'; '.join(results[1])} |"
        )
    report = "\n".join(lines)
    print(report)
    if args.write:
        write_section("Before and after a restructuring", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

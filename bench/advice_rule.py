"""The advice rule replayed on the advice benchmark's records, with its thresholds and leaving each dataset out.

``bench/advice_suite.py`` records, for each dataset, the probes at every depth, the statistics gap, the run's
optimizer steps, and every fixed strategy's final score. The rule (``transferkit.advice.rule.recommend``) decides
from the first three; the decision's score is the fourth, looked up (auto trains exactly that strategy, same
split and seed). The miss is how far that is below the best fixed strategy: in points for shares (accuracy,
mAP), in percent of the best for errors (MAE).

Leave-one-dataset-out: for each dataset, the thresholds are chosen on the other datasets alone, for auto as it
trains (the probes, then the race) (the most within
:data:`WITHIN` of the best, then the smallest total miss; ties go to the values listed first in :data:`GRID`,
those set before the benchmark), and the rule with them decides the dataset left out. A threshold that holds
says the same with or without each dataset.

    .venv/bin/python bench/advice_rule.py [--write]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import asdict
from pathlib import Path

from transferkit.advice.rule import Rule, recommend

RESULTS = Path(__file__).resolve().parent / "advice_suite.json"
WITHIN = 1.0  # points: the target, auto within one point of the best fixed strategy
# Each threshold's candidates, the value set before the benchmark first.
GRID = {
    "freeze_at": [0.97, 0.95, 0.96, 0.98, 0.99],
    "earlier_by": [0.02, 0.01, 0.03, 0.05],
    "min_steps": [50, 6, 12, 24, 36, 48],
}


def decide(entry: dict, rule: Rule) -> dict:
    """The rule's advice for one dataset's records."""
    depths = [{"name": k, "score": v, "stages_after": entry["stages_after"][k]} for k, v in entry["probes"].items()]
    return recommend(depths, entry["statistics_gap"], entry["score"], steps=entry["steps"], rule=rule)


def miss(entry: dict, command: str) -> float | None:
    """How far ``command``'s recorded score is below the best fixed strategy's (None: it was not trained)."""
    fixed = entry["fixed"]
    key = command.removeprefix("--strategy ")
    if key not in fixed:
        return None
    higher = fixed[key].get("higher_better", True)
    best = (max if higher else min)(r["best"] for r in fixed.values())
    got = fixed[key]["best"]
    return 100 * (best - got) if higher else 100 * (got - best) / best


def raced(entry: dict, rule: Rule) -> tuple[str, float]:
    """A race replayed from the recorded curves: the rule's ``head --unfreeze-last N`` against retraining from one
    probed depth earlier, each for one epoch, the better after it trained on; its command and seconds (probe and the
    loser's epoch included). Other advice is not raced."""
    advice = decide(entry, rule)
    command = advice["command"].removeprefix("--strategy ")
    seconds = entry["advise_seconds"]
    earlier = sorted(n for n in entry["stages_after"].values() if n > advice.get("unfreeze_last", 1e9))
    other = f"head --unfreeze-last {earlier[0]}" if earlier else None
    if advice["strategy"] != "head" or other not in entry["fixed"]:
        return advice["command"], seconds + entry["fixed"][command]["seconds"]
    ours, theirs = entry["fixed"][command], entry["fixed"][other]
    sign = 1 if ours.get("higher_better", True) else -1
    winner, loser = (theirs, ours) if sign * theirs["curve"][0] > sign * ours["curve"][0] else (ours, theirs)
    chosen = other if winner is theirs else command
    return f"--strategy {chosen}", seconds + winner["seconds"] + loser["epoch_seconds"][0]


def score(entries: dict, rule: Rule) -> tuple[int, float]:
    """How many datasets auto (the rule, then the race) gets within :data:`WITHIN` of the best, and its total miss
    (higher is better)."""
    misses = [miss(e, raced(e, rule)[0]) for e in entries.values()]
    misses = [100.0 if m is None else m for m in misses]  # a strategy not trained counts as a large miss
    return sum(m <= WITHIN for m in misses), -sum(misses)


def by_strategy(entries: dict, rule: Rule) -> dict[str, tuple[int, float, float]]:
    """Per strategy auto chose: datasets, their mean and largest miss (``transferkit.advice.rule.BENCHMARKED``)."""
    misses: dict[str, list[float]] = {}
    for entry in entries.values():
        command = raced(entry, rule)[0]
        misses.setdefault(command.split()[1], []).append(miss(entry, command))
    return {k: (len(v), round(sum(v) / len(v), 1), round(max(v), 1)) for k, v in sorted(misses.items())}


def fitted(entries: dict) -> Rule:
    """The thresholds of :data:`GRID` that score best on ``entries``; the first of equals."""
    best, chosen = None, None
    for values in itertools.product(*GRID.values()):
        rule = Rule(**dict(zip(GRID, values)))
        result = score(entries, rule)
        if best is None or result > best:
            best, chosen = result, rule
    return chosen


def _changed(rule: Rule) -> str:
    default = Rule()
    changed = [f"{k} {v:g}" for k, v in asdict(rule).items() if k in GRID and v != getattr(default, k)]
    return ", ".join(changed) or "the same"


def report(results: dict) -> str:
    from _report import command_line

    entries = {k: v for k, v in results.items() if "fixed" in v and "steps" in v}
    rule, on_all = Rule(), fitted(entries)
    lines = [
        "| data | steps | the probes' choice | miss | raced: choice | miss | replayed seconds / full's training | left "
        "out: thresholds from the others | raced with them | miss |",
        "|---|---:|---|---:|---|---:|---:|---|---|---:|",
    ]
    counts = [0, 0, 0]
    for name, entry in entries.items():
        ours = decide(entry, rule)["command"]
        others = fitted({k: v for k, v in entries.items() if k != name})
        race, seconds = raced(entry, rule)
        theirs = raced(entry, others)[0]
        shown = []
        for i, command in enumerate((ours, race, theirs)):
            m = miss(entry, command)
            counts[i] += m is not None and m <= WITHIN
            shown.append("not trained" if m is None else f"{m:.1f}")
        lines.append(
            f"| {name} | {entry['steps']} | `{ours}` | {shown[0]} | `{race}` | {shown[1]} | "
            f"{seconds / entry['fixed']['full']['seconds']:.2f} | {_changed(others)} | `{theirs}` | {shown[2]} |"
        )
    return f"""
Command: `{command_line()}` (no training: it replays bench/advice_suite.json).

The thresholds in `transferkit.advice.rule`: {", ".join(f"{k} {v:g}" for k, v in asdict(rule).items())}.
Fitted on every dataset, the grid search ({", ".join(f"{k} in {v}" for k, v in GRID.items())}) gives:
{_changed(on_all)} (against the rule's). "Left out" lists the thresholds chosen without that dataset where they differ
from the rule's.

{chr(10).join(lines)}

Within {WITHIN:g} point of the best fixed strategy: the probes' choice alone {counts[0]} of {len(entries)}; raced, as
auto trains ({"`transferkit.advice.race`"}: the probes' `head --unfreeze-last N` against retraining from one probed
depth earlier, one epoch each, then the better one trained on, replayed from the recorded curves; its time counts
the probe and the loser's epoch) {counts[1]} of {len(entries)}; raced with the thresholds chosen leaving the dataset
out, {counts[2]} of {len(entries)}.

Per strategy chosen (datasets, mean and largest miss; `transferkit.advice.rule.BENCHMARKED`, which auto's log
quotes when it trains less than `full`): {by_strategy(entries, rule)}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="Write the section of BENCHMARKS.md.")
    args = parser.parse_args()
    body = report(json.loads(RESULTS.read_text()))
    print(body)
    if args.write:
        from _report import write_section

        write_section("Advice rule: leaving each dataset out", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

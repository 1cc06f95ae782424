"""Which way to transfer, decided from linear probes at several depths: the rule and its thresholds.

The rule (:func:`recommend`), in order:

0. ``freeze`` when the run takes fewer than :data:`MIN_STEPS` optimizer steps: too few to train
   more than the head, whatever the probes say.
1. ``freeze`` when the probe on the head's input already reaches :data:`FREEZE_AT` and the
   new images are close to the statistics the weights expect (gap under :data:`GAP_HIGH`):
   the features separate the classes, and training more layers mostly costs time.
2. ``head --unfreeze-last N`` when an earlier depth probes at least :data:`EARLIER_BY` better
   than the last: the last stages are specific to the source task; retrain from there. Which of two
   neighbouring depths fine-tunes better the probes cannot tell: ``--strategy auto`` races the advised
   depth against the one before it (:mod:`~transferkit.advice.race`).
3. ``full`` when the statistics gap is large: BatchNorm statistics and early features must move.
4. ``lp-ft`` otherwise: probe first, then fine-tune everything gently (Kumar et al., 2022).

A network without BatchNorm (ViTs, Swin, ConvNeXt: LayerNorm keeps no running statistics) has
no statistics gap: the rule then decides on the probes alone, so never ``full`` for the gap,
and the advice says which signals it used.

The probe's score is the task's (:data:`~transferkit.advice.probe.PROBE_SCORES`): accuracy for
classes (balanced accuracy where they are imbalanced), macro mAP for several labels per image, R² for
numbers; each is at most 1, and the same thresholds apply to it. Each reason names the thresholds it
was decided by.

The thresholds are set on the advice benchmark (``bench/advice_suite.py``), and each is checked
leaving every dataset out in turn (``bench/advice_rule.py``); BENCHMARKS.md gives both.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BENCHMARKED",
    "EARLIER_BY",
    "FREEZE_AT",
    "GAP_HIGH",
    "MIN_STEPS",
    "Rule",
    "expected_cost",
    "recommend",
]

FREEZE_AT = 0.97
EARLIER_BY = 0.02
GAP_HIGH = 1.0  # the load verification's drift threshold: beyond it, the inputs are not what the weights saw
# Fewer optimizer steps than this train the head alone: on the advice benchmark, runs of 3 and 12 steps (10 and
# 30 digits a class) left every strategy that trains blocks far below freeze; runs of 36 steps and more did not.
MIN_STEPS = 24
# Per strategy the rule chose on the advice benchmark: datasets, and the mean and largest points below the best
# fixed strategy there (bench/advice_rule.py prints them from bench/advice_suite.json; a test replays them).
BENCHMARKED = {"freeze": (6, 0.0, 0.0), "head": (10, 0.9, 5.5)}


@dataclass(frozen=True)
class Rule:
    """The thresholds :func:`recommend` decides by; the default is the module's, other values replay the rule."""

    freeze_at: float = FREEZE_AT
    earlier_by: float = EARLIER_BY
    gap_high: float = GAP_HIGH
    min_steps: int = MIN_STEPS


def recommend(
    depths: list[dict], gap: float | None, measure: str = "accuracy", *, steps: int | None = None, rule: Rule = Rule()
) -> dict:
    """The strategy and its settings for probe results ``depths`` (input to output) and the statistics gap.

    Each depth's ``score`` is the probe's ``measure`` (accuracy, mAP or R²). ``steps``, the optimizer steps
    the run will take, advises freeze below ``rule.min_steps``, whatever the probes say.

    ``gap`` is None for a network without BatchNorm: the probes alone decide, and ``signals`` says so.

    Examples:
        >>> recommend([{"name": "layer3", "score": 0.9, "stages_after": 3},
        ...            {"name": "head input", "score": 0.8, "stages_after": 1}], gap=0.4)["command"]
        '--strategy head --unfreeze-last 3'
    """
    advice = _rule(depths, gap, measure, rule)
    if steps is not None and steps < rule.min_steps and advice["strategy"] != "freeze":
        advice = {
            "strategy": "freeze",
            "command": "--strategy freeze",
            "reason": f"the run takes {steps} optimizer steps, fewer than the {rule.min_steps} that training more "
            "than the head needs (on the advice benchmark, with 10 or 30 images a class, every strategy that trains "
            f"blocks fell far below freeze); with more images or epochs the probes would decide: {advice['command']}"
            f", as {advice['reason']}",
        }
    if gap is None:
        advice["reason"] += " (no BatchNorm layers, so no statistics gap: decided on the linear probes alone)"
    advice["signals"] = ["linear probes"] + ([] if gap is None else ["BatchNorm statistics gap"])
    return advice


def _rule(depths: list[dict], gap: float | None, measure: str, rule: Rule) -> dict:
    last = depths[-1]
    best = max(depths, key=lambda d: d["score"])
    near = gap is None or gap < rule.gap_high
    gap_text = "" if gap is None else f" (statistics gap {gap:.2f}, under the {rule.gap_high:g} that counts as far)"

    def said(value: float) -> str:
        shown = f"{value:.3f}" if measure == "R²" else f"{value:.1%}"
        return shown if measure == "accuracy" else f"{measure} {shown}"

    if last["score"] >= rule.freeze_at and near:
        return {
            "strategy": "freeze",
            "command": "--strategy freeze",
            "reason": f"a linear probe on the head's input already reaches {said(last['score'])} (freeze from "
            f"{said(rule.freeze_at)})"
            + ("" if gap is None else f" and the images are close to what the weights expect{gap_text}")
            + ": training more layers mostly costs time",
        }
    if best is not last and best["score"] - last["score"] >= rule.earlier_by:
        n = best["stages_after"]
        return {
            "strategy": "head",
            "unfreeze_last": n,
            "command": f"--strategy head --unfreeze-last {n}",
            "reason": f"the probe after {best['name']} ({said(best['score'])}) beats the head's input "
            f"({said(last['score'])}) by {_points(best['score'] - last['score'], measure)} (at least "
            f"{_points(rule.earlier_by, measure)} counts): the last stages are specific to the source task, so they "
            "retrain",
        }
    if not near:
        return {
            "strategy": "full",
            "command": "--strategy full",
            "reason": f"the images are far from what the weights' statistics expect (statistics gap {gap:.2f}, at "
            f"least {rule.gap_high:g}) and the probe reaches {said(last['score'])}, short of the "
            f"{said(rule.freeze_at)} of freeze: every layer has to adapt",
        }
    return {
        "strategy": "lp-ft",
        "command": "--strategy lp-ft",
        "reason": f"the probe on the head's input reaches {said(last['score'])}, short of the {said(rule.freeze_at)} "
        "from which freeze is advised, and no earlier depth beats it by "
        f"{_points(rule.earlier_by, measure)}"
        + ("" if gap is None else f", on images close to what the weights expect{gap_text}")
        + ": probe the head first, then fine-tune everything gently",
    }


def expected_cost(strategy: str) -> str | None:
    """What choosing ``strategy`` gave up on the advice benchmark, in points below the best fixed strategy; None
    where the rule sent no dataset there."""
    if strategy not in BENCHMARKED:
        return None
    sets, mean, most = BENCHMARKED[strategy]
    return (
        f"on the advice benchmark, the {sets} datasets advised {strategy} ended {mean:.1f} points below the best "
        f"fixed strategy on average, {most:.1f} at most (BENCHMARKS.md, 'Advice rule')"
    )


def _points(difference: float, measure: str) -> str:
    return f"{difference:.3f}" if measure == "R²" else f"{100 * difference:.1f} points"

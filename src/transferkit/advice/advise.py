"""Which way to transfer, decided from linear probes at several depths instead of training every strategy.

The rule (:func:`recommend`), in order:

1. ``freeze`` when the probe on the head's input already reaches :data:`FREEZE_AT` and the
   new images are close to the statistics the weights expect (gap under :data:`GAP_HIGH`):
   the features separate the classes, and training more layers mostly costs time.
2. ``head --unfreeze-last N`` when an earlier depth probes at least :data:`EARLIER_BY` better
   than the last: the last stages are specific to the source task; retrain from there.
3. ``full`` when the statistics gap is large: BatchNorm statistics and early features must move.
4. ``lp-ft`` otherwise: probe first, then fine-tune everything gently (Kumar et al., 2022).

A network without BatchNorm (ViTs, Swin, ConvNeXt: LayerNorm keeps no running statistics) has
no statistics gap: the rule then decides on the probes alone, so never ``full`` for the gap,
and the advice says which signals it used.

The probe's score is the task's (:data:`~transferkit.advice.probe.PROBE_SCORES`): accuracy for
classes (balanced accuracy where they are imbalanced, as ``train`` counts them), macro mAP for
several labels per image, R² for numbers; each is at most 1, and the same thresholds apply to it.
Each reason names the thresholds it was decided by.

The thresholds are written down with their measurements in BENCHMARKS.md ("Strategy advice").
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from ..data.preprocess import BatchPrep
from ..data.sources import open_data, stratified_sample
from ..serialization import write_json
from ..tasks.objective import loss_function
from ..tasks.scores import imbalance
from ..train.config import IMBALANCED, TASK_FIELDS, TrainConfig
from ..train.parallel.distributed import epoch_steps
from ..train.setup import build_model, choose_weights, prepare_data
from ..train.strategies import plan_phases
from .probe import PROBE_SCORES, Depth, depth_points, extract, linear_probe, task_probe

__all__ = ["EARLIER_BY", "FREEZE_AT", "GAP_HIGH", "SAMPLE", "advise", "advise_prepared", "recommend"]

FREEZE_AT = 0.97
EARLIER_BY = 0.02
GAP_HIGH = 1.0  # the load verification's drift threshold: beyond it, the inputs are not what the weights saw
SAMPLE = 4000  # training images probed at most; a stratified sample beyond
# Fewer optimizer steps than this train the head alone: on bench/advice_suite.py's sets, 9 and 27 steps (10 and
# 30 digits a class) left every strategy that trains blocks far below freeze, 78 and more did not.
MIN_STEPS = 50


def recommend(depths: list[dict], gap: float | None, measure: str = "accuracy", *, steps: int | None = None) -> dict:
    """The strategy and its settings for probe results ``depths`` (input to output) and the statistics gap.

    Each depth's ``score`` is the probe's ``measure`` (accuracy, mAP or R²). ``steps``, the optimizer steps
    the run will take, advises freeze below :data:`MIN_STEPS`, whatever the probes say.

    ``gap`` is None for a network without BatchNorm: the probes alone decide, and ``signals`` says so.

    Examples:
        >>> recommend([{"name": "layer3", "score": 0.9, "stages_after": 3},
        ...            {"name": "head input", "score": 0.8, "stages_after": 1}], gap=0.4)["command"]
        '--strategy head --unfreeze-last 3'
    """
    advice = _rule(depths, gap, measure)
    if steps is not None and steps < MIN_STEPS and advice["strategy"] != "freeze":
        advice = {
            "strategy": "freeze",
            "command": "--strategy freeze",
            "reason": f"the run takes {steps} optimizer steps, fewer than the {MIN_STEPS} that training more than the "
            "head needs (on the advice benchmark, with 10 or 30 images a class, every strategy that trains blocks "
            f"fell far below freeze); with more images or epochs the probes would decide: {advice['command']}, as "
            f"{advice['reason']}",
        }
    if gap is None:
        advice["reason"] += " (no BatchNorm layers, so no statistics gap: decided on the linear probes alone)"
    advice["signals"] = ["linear probes"] + ([] if gap is None else ["BatchNorm statistics gap"])
    return advice


def _rule(depths: list[dict], gap: float | None, measure: str) -> dict:
    last = depths[-1]
    best = max(depths, key=lambda d: d["score"])
    near = gap is None or gap < GAP_HIGH
    gap_text = "" if gap is None else f" (statistics gap {gap:.2f}, under the {GAP_HIGH:g} that counts as far)"

    def said(value: float) -> str:
        shown = f"{value:.3f}" if measure == "R²" else f"{value:.1%}"
        return shown if measure == "accuracy" else f"{measure} {shown}"

    if last["score"] >= FREEZE_AT and near:
        return {
            "strategy": "freeze",
            "command": "--strategy freeze",
            "reason": f"a linear probe on the head's input already reaches {said(last['score'])} (freeze from "
            f"{said(FREEZE_AT)})"
            + ("" if gap is None else f" and the images are close to what the weights expect{gap_text}")
            + ": training more layers mostly costs time",
        }
    if best is not last and best["score"] - last["score"] >= EARLIER_BY:
        n = best["stages_after"]
        return {
            "strategy": "head",
            "unfreeze_last": n,
            "command": f"--strategy head --unfreeze-last {n}",
            "reason": f"the probe after {best['name']} ({said(best['score'])}) beats the head's input "
            f"({said(last['score'])}) by {_points(best['score'] - last['score'], measure)} (at least "
            f"{_points(EARLIER_BY, measure)} counts): the last stages are specific to the source task, so they retrain",
        }
    if not near:
        return {
            "strategy": "full",
            "command": "--strategy full",
            "reason": f"the images are far from what the weights' statistics expect (statistics gap {gap:.2f}, at "
            f"least {GAP_HIGH:g}) and the probe reaches {said(last['score'])}, short of the {said(FREEZE_AT)} of "
            "freeze: every layer has to adapt",
        }
    return {
        "strategy": "lp-ft",
        "command": "--strategy lp-ft",
        "reason": f"the probe on the head's input reaches {said(last['score'])}, short of the {said(FREEZE_AT)} "
        "from which freeze is advised, and no earlier depth beats it by "
        f"{_points(EARLIER_BY, measure)}"
        + ("" if gap is None else f", on images close to what the weights expect{gap_text}")
        + ": probe the head first, then fine-tune everything gently",
    }


def _points(difference: float, measure: str) -> str:
    return f"{difference:.3f}" if measure == "R²" else f"{100 * difference:.1f} points"


def advise(
    config: TrainConfig,
    *,
    budget: float | None = None,
    sample: int = SAMPLE,
    log=print,
) -> dict:
    """Probe ``config``'s MODEL and weights on its DATA at several depths and recommend a strategy.

    Writes ``advice.json`` and ``probe_depth.png`` into ``config.out``. With ``budget``
    (seconds), a strategy estimated to take longer is not recommended; the cheapest is.
    """
    started = time.perf_counter()
    # The probes judge pretrained features: auto finding none is refused as for strategy auto.
    config = replace(choose_weights(replace(config, strategy="auto"))[0], strategy=config.strategy)
    source = _sampled(open_data(config.data, config.label_spec(), config.hf_options()), sample, config.seed, log)
    model, _ = build_model(config, len(source.class_names))
    Path(config.out).mkdir(parents=True, exist_ok=True)
    data = prepare_data(config, source=source, model=model, log=log)
    return advise_prepared(config, model, data, budget=budget, started=started, log=log)


def advise_prepared(
    config: TrainConfig,
    model: nn.Module,
    data,
    *,
    budget: float | None = None,
    started: float | None = None,
    write: bool = True,
    estimate: bool = True,
    keep_features: bool = False,
    train_images: int | None = None,
    log=print,
) -> dict:
    """:func:`advise` on a model with its weights and data already decoded (``train --strategy auto``).

    ``train_images`` is how many images the run trains on, where ``data`` is a sample of them (the optimizer
    steps the advice counts); by default ``data``'s.

    ``estimate=False`` skips timing training steps for the time estimates, which only a budget needs.
    ``keep_features`` adds the head's input for every image (``{"train": (N, D), "val": (M, D)}``)
    as ``result["head_features"]``, not written to ``advice.json``.

    The model is left as it was found: BatchNorm statistics, gradients, modes and memory format.
    ``write=False`` (the other ranks of a distributed run) leaves the files to another process.
    """
    from ..runtime.fastpath import probing

    started = time.perf_counter() if started is None else started
    prep = BatchPrep(data.preprocessing, torch.device("cpu"), channels_last=False)
    points = depth_points(model)
    with probing(model, training=False):
        train_x, gaps, speed = extract(
            model, data.train.decoded.images, prep, points, progress="probe: the training images", log=log
        )
        val_x, _, _ = extract(
            model, data.val.decoded.images, prep, points, progress="probe: the held-out images", log=log
        )
        train_y, val_y = data.train.decoded.labels, data.val.decoded.labels
        measure = probe_measure(data, log)
        depths = [
            _probe_depth(point, data, (train_x, train_y), (val_x, val_y), gaps.get(point.stage), measure, log)
            for point in points
        ]
        gap = sum(gaps.values()) / len(gaps) if gaps else None
        if gap is not None:
            log(
                f"statistics gap {gap:.2f}: the mean over the {len(gaps)} BatchNorm stages "
                f"({min(gaps.values()):.2f} to {max(gaps.values()):.2f}); from {GAP_HIGH:g} the images count as far "
                "from what the weights expect"
            )
        per_epoch, _ = epoch_steps(train_images or len(data.train), config.batch_size, world_size=1)
        steps = per_epoch * config.epochs  # as one process trains them, the last short batch dropped
        advice = recommend(depths, gap, measure, steps=steps)
        estimates = _estimates(config, model, data, points, speed, advice) if estimate or budget else {}
    if budget is not None and estimates.get(advice["command"], 0) > budget:
        advice = _within_budget(advice, estimates, budget)
    result = {
        "model": config.model,
        "weights": config.weights,
        "data": config.data,
        "images": {"train": len(train_y), "val": len(val_y)},
        "task": data.task,
        "score": measure,
        "depths": depths,
        "statistics_gap": gap,
        "advice": advice,
        "estimated_seconds": estimates,
        "forward_images_per_second": speed,
        "seconds": time.perf_counter() - started,
        "thresholds": {"freeze_at": FREEZE_AT, "earlier_by": EARLIER_BY, "gap_high": GAP_HIGH},
        "train_command": train_command(config, advice["command"]),
    }
    if write:
        write_json(Path(config.out) / "advice.json", result)
        _plot(depths, Path(config.out) / "probe_depth.png", measure)
    log(f"advice: {advice['command']}: {advice['reason']}")
    if keep_features:
        result["head_features"] = {"train": train_x[points[-1].name], "val": val_x[points[-1].name]}
    return result


def _probe_depth(point, data, train: tuple, val: tuple, gap: float | None, measure: str, log) -> dict:
    """The probe of the features after ``point``, scored by ``measure``, logged; its row of the advice."""
    (train_x, train_y), (val_x, val_y) = train, val
    if data.task == "classification":
        result = linear_probe(train_x[point.name], train_y, val_x[point.name], val_y, len(data.class_names))
        if measure == "balanced accuracy":
            result = {**result, "score": result["balanced_accuracy"]}
    else:
        result = task_probe(train_x[point.name], train_y, val_x[point.name], val_y, data.task)
    row = {
        "name": point.name,
        "stage": point.stage,
        "stages_after": point.stages_after,
        "dim": int(train_x[point.name].shape[1]),
        **result,
        "gap": gap,
    }
    also = f", balanced {row['balanced_accuracy']:.4f}" if measure == "accuracy" else ""
    also = f", accuracy {row['accuracy']:.4f}" if measure == "balanced accuracy" else also
    also += f", MAE {row['mae']:.4g}" if "mae" in row else ""
    log(
        f"probe after {point.name}: {measure} {row['score']:.4f}{also} "
        f"({row['dim']} features, {row['seconds']:.1f} s); statistics gap "
        + ("- (no BatchNorm)" if row["gap"] is None else f"{row['gap']:.2f}")
    )
    return row


def _within_budget(advice: dict, estimates: dict, budget: float) -> dict:
    """The cheapest strategy in place of the advised one, which would take longer than ``budget`` seconds."""
    cheapest = min(estimates, key=estimates.get)
    return {
        **advice,
        "over_budget": advice["command"],
        "command": cheapest,
        "strategy": cheapest.split()[1],
        "reason": advice["reason"] + f"; but it would take about {estimates[advice['command']]:.0f} s, over the "
        f"budget of {budget:g} s, so the cheapest ({cheapest}, about {estimates[cheapest]:.0f} s) is advised",
    }


def probe_measure(data, log=print) -> str:
    """What the probes are compared by: the task's score, balanced accuracy for imbalanced classes.

    As training monitors balanced accuracy on imbalanced classes, so do the probes: plain accuracy
    would rank depths by how well they find the large classes."""
    if data.task != "classification":
        return PROBE_SCORES[data.task]
    ratio = imbalance(list(data.class_counts["train"].values()))
    if ratio <= IMBALANCED:
        return "accuracy"
    log(
        f"classes imbalanced (largest over smallest {ratio:.1f}, over {IMBALANCED:g}): the probes are compared "
        "by balanced accuracy"
    )
    return "balanced accuracy"


# What ``train`` needs besides MODEL, weights, DATA and the strategy to train what was probed.
_CARRIED = ("image_size", "in_chans", "epochs", *TASK_FIELDS)


def train_command(config: TrainConfig, strategy: str) -> str:
    """The ``transferkit train`` command that trains ``strategy`` on what ``config`` probed, runnable as shown.

    Examples:
        >>> config = TrainConfig(model="resnet18", weights="timm", data="photos/", out="runs/a", epochs=3)
        >>> train_command(config, "--strategy full")
        'transferkit train resnet18 --weights timm --data photos/ --out runs/a/run --epochs 3 --strategy full'
    """
    defaults = TrainConfig(model=config.model, data=config.data, out=config.out)
    # Weights are always named: train's default, auto, may find others than were probed, or find some for none.
    words = ["transferkit", "train", config.model, "--weights", str(config.weights or "none")]
    if config.data:
        words += ["--data", str(config.data)]
    words += ["--out", str(Path(config.out) / "run")]
    for name in _CARRIED:
        value = getattr(config, name)
        if value != getattr(defaults, name) and value not in (None, [], ""):
            words += [f"--{name.replace('_', '-')}", ",".join(value) if isinstance(value, list) else str(value)]
    return " ".join(shlex.quote(w) for w in words) + " " + strategy


def _sampled(source, limit: int, seed: int, log):
    """A stratified sample of ``limit`` training images when DATA has more; said in the log."""
    if len(source.train) <= limit:
        return source
    picked = stratified_sample(source.train, limit, seed=seed)
    log(f"probing a stratified sample of {len(picked)} of {len(source.train)} training images")
    return dataclasses.replace(source, train=picked)


def _train_speed(model: nn.Module, data, keep_last: int | None, batch: int = 16) -> float:
    """Training images per second: forward and backward of a few batches, the first stages frozen if asked."""
    from ..model.freeze import freeze_stages, unfreeze

    images = data.train.decoded.images[:batch]
    labels = data.train.decoded.labels[:batch]
    prep = BatchPrep(data.preprocessing, torch.device("cpu"), channels_last=False)
    unfreeze(model, "*")
    if keep_last is not None:
        freeze_stages(model, keep_last=keep_last)
    model.train()
    times = []
    for _ in range(2):
        step_started = time.perf_counter()
        loss = loss_function(data.task, scale=data.target_scale)(model(prep(images)), labels)
        loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - step_started)
    unfreeze(model, "*")
    model.eval()
    return len(images) / min(times[1:])  # the first step pays for allocations


def _estimates(config: TrainConfig, model, data, points: list[Depth], forward: float, advice: dict) -> dict:
    """Seconds each strategy would take over ``config.epochs``, from the measured throughputs."""
    n_train, n_val = len(data.train.decoded.labels), len(data.val.decoded.labels)
    full = _train_speed(model, data, None)
    commands = {"--strategy freeze": ("freeze", None), "--strategy full": ("full", None)}
    if config.epochs >= 2:
        commands["--strategy lp-ft"] = ("lp-ft", None)
    if advice["strategy"] == "head":
        commands[advice["command"]] = ("head", advice["unfreeze_last"])
    cache = (n_train + n_val) / forward  # frozen layers run once; the head's epochs are negligible
    result = {}
    for command, (strategy, keep) in commands.items():
        seconds = 0.0
        for phase in plan_phases(strategy, config.epochs, unfreeze_last=keep):
            if phase.trains == "head":
                seconds += cache
            else:
                speed = full if phase.trains == "all" else _train_speed(model, data, keep)
                seconds += phase.epochs * (n_train / speed + n_val / forward)
        result[command] = seconds
    return result


def _plot(depths: list[dict], path: Path, measure: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..serialization import atomic_path

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(len(depths)), [d["score"] for d in depths], marker="o", label=measure)
    if all("balanced_accuracy" in d for d in depths):
        ax.plot(range(len(depths)), [d["balanced_accuracy"] for d in depths], marker=".", label="balanced accuracy")
    ax.set_xticks(range(len(depths)), [d["name"] for d in depths], rotation=30, ha="right")
    ax.set_ylabel("linear probe, held-out")
    ax.set_ylim(min(0.0, *(d["score"] for d in depths)), 1)  # R² falls below 0 where a probe does worse than the mean
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

"""Which way to transfer, decided from linear probes at several depths instead of training every strategy.

:func:`advise` probes the pretrained features at several depths (:mod:`~transferkit.advice.probe`), measures how
far the new images are from the statistics the weights expect, counts the run's optimizer steps, and asks the rule
(:func:`~transferkit.advice.rule.recommend`) which strategy to train; with a budget, it estimates each strategy's
seconds from measured training steps. ``advice.json`` and ``probe_depth.png`` record it.
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
from ..tasks.scores import imbalance
from ..train.config import IMBALANCED, TASK_FIELDS, TrainConfig
from ..train.parallel.distributed import epoch_steps
from ..train.setup import build_model, choose_weights, prepare_data
from .budget import estimate_seconds, within_budget
from .probe import PROBE_SCORES, depth_points, extract, linear_probe, task_probe
from .rule import GAP_HIGH, Rule, recommend

__all__ = ["SAMPLE", "advise", "advise_prepared"]

SAMPLE = 4000  # training images probed at most; a stratified sample beyond


def advise(
    config: TrainConfig,
    *,
    budget: float | None = None,
    sample: int = SAMPLE,
    log=print,
) -> dict:
    """Probe ``config``'s MODEL and weights on its DATA at several depths and recommend a strategy.

    Writes ``advice.json`` and ``probe_depth.png`` into ``config.out``. With ``budget`` (seconds of
    training), a strategy estimated to take longer is not advised: the one that trains the most of the
    network, no more than the probes advised, within it (:func:`~transferkit.advice.budget.within_budget`).
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
    probe_in_budget: bool = False,
    log=print,
) -> dict:
    """:func:`advise` on a model with its weights and data already decoded (``train --strategy auto``).

    ``train_images`` is how many images the run trains on, where ``data`` is a sample of them (the optimizer
    steps the advice counts); by default ``data``'s.

    ``estimate=False`` skips timing training steps for the time estimates, which only a budget needs.
    ``budget`` is seconds of training (:func:`~transferkit.advice.budget.within_budget`); with
    ``probe_in_budget`` (a run's ``--budget``) the probe's own seconds count against it.
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
        gap = _statistics_gap(gaps, log)
        per_epoch, _ = epoch_steps(train_images or len(data.train), config.batch_size, world_size=1)
        # the optimizer steps as one process takes them, the last short batch dropped
        advice = recommend(depths, gap, measure, steps=per_epoch * config.epochs)
        every_depth = budget is not None  # within a budget, each depth's head is a choice
        estimates = {}
        if estimate or every_depth:
            estimates = estimate_seconds(config, model, data, points, speed, advice, train_images, every_depth)
    if budget is not None:  # what is left of it, where the probe counts
        advice = within_budget(advice, estimates, budget - (time.perf_counter() - started if probe_in_budget else 0))
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
        "considered": considered(depths, estimates),
        "estimated_seconds": estimates,
        "forward_images_per_second": speed,
        "seconds": time.perf_counter() - started,
        "thresholds": dataclasses.asdict(Rule()),
        "train_command": train_command(config, advice["command"]),
    }
    if write:
        write_json(Path(config.out) / "advice.json", result)
        _plot(depths, Path(config.out) / "probe_depth.png", measure)
    log(f"advice: {advice['command']}: {advice['reason']}")
    if keep_features:
        result["head_features"] = {"train": train_x[points[-1].name], "val": val_x[points[-1].name]}
    return result


def _statistics_gap(gaps: dict[int, float], log) -> float | None:
    """The mean of the BatchNorm stages' gaps, said in the log; None without BatchNorm."""
    if not gaps:
        return None
    gap = sum(gaps.values()) / len(gaps)
    log(
        f"statistics gap {gap:.2f}: the mean over the {len(gaps)} BatchNorm stages "
        f"({min(gaps.values()):.2f} to {max(gaps.values()):.2f}); from {GAP_HIGH:g} the images count as far "
        "from what the weights expect"
    )
    return gap


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


def considered(depths: list[dict], estimates: dict[str, float]) -> list[dict]:
    """The strategies the probes weighed: ``freeze`` by the head's input, ``head --unfreeze-last N`` by the depth it
    retrains from; each with its probe's score (what training from there starts above) and estimated seconds."""
    rows = [{"command": "--strategy freeze", "probe": depths[-1]["name"], "score": depths[-1]["score"]}]
    rows += [
        {"command": f"--strategy head --unfreeze-last {d['stages_after']}", "probe": d["name"], "score": d["score"]}
        for d in reversed(depths[:-1])
    ]
    for row in rows:
        if row["command"] in estimates:
            row["estimated_seconds"] = estimates[row["command"]]
    return rows


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

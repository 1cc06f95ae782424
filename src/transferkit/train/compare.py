"""Run several strategies on one split and compare them: a table and learning curves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError, RunError
from ..serialization import atomic_path, write_json
from .config import TrainConfig
from .engine import fit
from .setup import Kernels, prepare_data
from .strategies import STRATEGIES

__all__ = ["compare", "plot_curves", "verdict"]


def compare(
    base: TrainConfig,
    strategies: list[str],
    *,
    log: Callable[[str], None] = print,
) -> dict:
    """Train ``base`` once per strategy into ``base.out/<strategy>``, same data split and seed.

    The data is decoded and the kernels are measured once for all strategies, and frozen-layer
    activations one strategy computed are reused by the next with the same frozen weights.

    Returns ``{"rows": [...], "runs": {strategy: summary}, "plot": path}``; each row has the
    strategy, trainable parameters, seconds, accuracy after epoch 1 and best accuracy.
    """
    base.require_classes("compare")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ConfigError(
            f"Unknown strategies {', '.join(unknown) or '(none)'}; choose from {', '.join(STRATEGIES)}.",
            argument="strategies",
        )
    configs = {s: replace(base, strategy=s, out=str(Path(base.out) / s)) for s in strategies}  # each validated
    out = Path(base.out)
    if out.is_file():
        raise RunError(f"Output '{out}' is a file; give a folder for the comparison.")
    if out.is_dir():
        # compare.json and the plot go here: never into a folder that holds someone's other files.
        ours = {*STRATEGIES, "compare.json", "compare.png"}
        others = sorted(p.name for p in out.iterdir() if p.name not in ours and not p.name.startswith(".compare."))
        if others:
            raise RunError(
                f"'{out}' holds other files ({', '.join(others[:3])}); compare writes compare.json and one run "
                "folder per strategy there. Choose an empty or new folder."
            )
    data = prepare_data(base, log=log)
    kernels = Kernels()
    runs = {}
    for strategy, config in configs.items():
        log(f"== {strategy}")
        runs[strategy] = fit(config, log=log, data=data, kernels=kernels)
    rows = [
        {
            "strategy": s,
            "trainable_params": r["trainable_params"],
            "seconds": r["seconds"],
            "epoch1_acc": r["epochs"][0]["val_acc"],
            "best_acc": r["best_val_acc"],
            "val_acc": [e["val_acc"] for e in r["epochs"]],
        }
        for s, r in runs.items()
    ]
    plot = plot_curves(runs, out / "compare.png", title=f"{base.model} on {base.data}")
    result = {"rows": rows, "plot": str(plot), "runs": {s: r["out"] for s, r in runs.items()}, "verdict": verdict(rows)}
    write_json(out / "compare.json", result)
    return result


def verdict(rows: list[dict]) -> list[str]:
    """What the comparison shows, in sentences read off its numbers: the winner, and pretrained against scratch.

    Example:
        >>> verdict([{"strategy": "full", "best_acc": 0.95, "val_acc": [0.8, 0.95], "trainable_params": 9},
        ...          {"strategy": "scratch", "best_acc": 0.5, "val_acc": [0.1, 0.5], "trainable_params": 9}])[0]
        'full wins: 95.0% best, 45.0 points above scratch.'
    """
    ranked = sorted(rows, key=lambda r: r["best_acc"], reverse=True)
    best, runner = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    lines = [
        f"{best['strategy']} wins: {100 * best['best_acc']:.1f}% best"
        + ("" if runner is None else f", {100 * (best['best_acc'] - runner['best_acc']):.1f} points above "
           f"{runner['strategy']}")
        + "."
    ]
    scratch = next((r for r in rows if r["strategy"] == "scratch"), None)
    if scratch is not None:
        for r in rows:
            if r is scratch:
                continue
            pairs = list(zip(r["val_acc"], scratch["val_acc"]))
            behind = [i + 1 for i, (a, b) in enumerate(pairs) if a <= b]
            curve = ", ".join(f"{100 * a:.1f}/{100 * b:.1f}" for a, b in pairs)
            if behind:
                lines.append(
                    f"{r['strategy']} is not ahead of scratch at epoch {', '.join(map(str, behind))} ({curve}%)."
                )
            else:
                lines.append(f"{r['strategy']} beats scratch at every epoch ({curve}%).")
    largest = max(r["trainable_params"] for r in rows)
    for r in (r for r in rows if r["trainable_params"] < 0.1 * largest):
        share = r["trainable_params"] / largest
        lines.append(
            f"{r['strategy']} trains {share:.1%} of the parameters and reaches {100 * r['best_acc']:.1f}%: "
            f"{100 * (best['best_acc'] - r['best_acc']):.1f} points from the best."
        )
    return lines


def plot_curves(runs: dict[str, dict], path: Path, *, title: str) -> Path:
    """Validation accuracy against epoch and against seconds, one line per strategy (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    for strategy, summary in runs.items():
        epochs = [e["epoch"] for e in summary["epochs"]]
        acc = [100 * e["val_acc"] for e in summary["epochs"]]
        seconds = [e["cumulative_seconds"] for e in summary["epochs"]]
        by_epoch.plot(epochs, acc, marker="o", label=strategy)
        by_time.plot(seconds, acc, marker="o", label=strategy)
    by_epoch.set_xlabel("epoch")
    by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_time.set_xlabel("seconds of training")
    for ax in (by_epoch, by_time):
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
    by_epoch.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path

"""Run several strategies on one split and compare them: a table and learning curves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .engine import TrainConfig, fit
from .errors import TransferkitError
from .serialization import atomic_path, write_json
from .strategies import STRATEGIES

__all__ = ["compare", "plot_curves"]


def compare(
    base: TrainConfig,
    strategies: list[str],
    *,
    log: Callable[[str], None] = print,
) -> dict:
    """Train ``base`` once per strategy into ``base.out/<strategy>``, same data split and seed.

    Returns ``{"rows": [...], "runs": {strategy: summary}, "plot": path}``; each row has the
    strategy, trainable parameters, seconds, accuracy after epoch 1 and best accuracy.
    """
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise TransferkitError(
            f"Unknown strategies {', '.join(unknown) or '(none)'}; choose from {', '.join(STRATEGIES)}."
        )
    out = Path(base.out)
    runs = {}
    for strategy in strategies:
        log(f"== {strategy}")
        runs[strategy] = fit(replace(base, strategy=strategy, out=str(out / strategy)), log=log)
    rows = [
        {
            "strategy": s,
            "trainable_params": r["trainable_params"],
            "seconds": r["seconds"],
            "epoch1_acc": r["epochs"][0]["val_acc"],
            "best_acc": r["best_val_acc"],
        }
        for s, r in runs.items()
    ]
    plot = plot_curves(runs, out / "compare.png", title=f"{base.model} on {base.data}")
    result = {"rows": rows, "plot": str(plot), "runs": {s: r["out"] for s, r in runs.items()}}
    write_json(out / "compare.json", result)
    return result


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

"""Run several strategies on one split and compare them: a table and learning curves.

Runs of classes are compared by validation accuracy; runs of several labels per image or of
numbers by the score that chose their best checkpoint (macro mAP, MAE, ...), in its direction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError, RunError
from ..serialization import atomic_path, write_json
from ..tasks.scores import MONITORS, in_percent, score_name
from ..train.config import TrainConfig
from ..train.setup import Kernels, choose_weights, prepare_data
from ..train.strategies import STRATEGIES
from .auto import fit

__all__ = ["compare", "plot_curves", "score_text", "verdict"]


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
    strategy, trainable parameters, seconds, and the compared ``score`` (its metrics.csv column):
    after epoch 1, at best, and per epoch (``curve``). Rows of classes repeat these as
    ``epoch1_acc``, ``best_acc`` and ``val_acc``.
    """
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ConfigError(
            f"Unknown strategies {', '.join(unknown) or '(none)'}; choose from {', '.join(STRATEGIES)}.",
            argument="strategies",
        )
    configs = {s: replace(base, strategy=s, out=str(Path(base.out) / s)) for s in strategies}  # each validated
    for config in configs.values():  # a strategy refused for want of weights is refused before any trains
        choose_weights(config)
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
    rows = [_row(s, r) for s, r in runs.items()]
    plot = plot_curves(runs, out / "compare.png", title=f"{base.model} on {base.data}")
    result = {"rows": rows, "plot": str(plot), "runs": {s: r["out"] for s, r in runs.items()}, "verdict": verdict(rows)}
    write_json(out / "compare.json", result)
    return result


def _row(strategy: str, summary: dict) -> dict:
    """One strategy's line of the comparison, by the score its task is compared on."""
    classes = summary.get("task", "classification") == "classification"
    score = "val_acc" if classes else summary["best_score"]["name"]
    curve = [e[score] for e in summary["epochs"]]
    row = {
        "strategy": strategy,
        "trainable_params": summary["trainable_params"],
        "seconds": summary["seconds"],
        "score": score,
        "higher_better": next(higher for key, higher in MONITORS.values() if key == score),
        "epoch1": curve[0],
        "best": summary["best_val_acc"] if classes else summary["best_score"]["value"],
        "curve": curve,
    }
    if classes:
        row.update(epoch1_acc=row["epoch1"], best_acc=row["best"], val_acc=curve)
    return row


def score_text(value: float, score: str) -> str:
    """A score as the comparison writes it: a share in percent, anything else in its own units.

    Examples:
        >>> score_text(0.9612, "val_acc"), score_text(0.0412, "val_mae")
        ('96.1%', '0.0412')
    """
    return f"{100 * value:.1f}%" if in_percent(score) else f"{value:.4g}"


def _gap(difference: float, score: str) -> str:
    return f"{100 * difference:.1f} points" if in_percent(score) else f"{difference:.4g}"


def verdict(rows: list[dict]) -> list[str]:
    """What the comparison shows, in sentences read off its numbers: the winner, and pretrained against scratch.

    Examples:
        >>> verdict([{"strategy": "full", "best": 0.95, "curve": [0.8, 0.95], "trainable_params": 9, "score": "val_acc",
        ...           "higher_better": True}, {"strategy": "scratch", "best": 0.5, "curve": [0.1, 0.5],
        ...           "trainable_params": 9, "score": "val_acc", "higher_better": True}])[0]
        'full wins: 95.0% best, 45.0 points above scratch.'
    """
    score, higher = rows[0]["score"], rows[0]["higher_better"]
    name = "" if score == "val_acc" else f"{score_name(score)} "  # classes: accuracy goes without saying
    sign = 1 if higher else -1
    ranked = sorted(rows, key=lambda r: sign * r["best"], reverse=True)
    best, runner = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    better = "above" if higher else "below"
    lines = [
        f"{best['strategy']} wins: {name}{score_text(best['best'], score)} best"
        + ("" if runner is None else f", {_gap(abs(best['best'] - runner['best']), score)} {better} ")
        + ("" if runner is None else runner["strategy"])
        + "."
    ]
    scratch = next((r for r in rows if r["strategy"] == "scratch"), None)
    if scratch is not None:
        for r in rows:
            if r is scratch:
                continue
            pairs = list(zip(r["curve"], scratch["curve"]))
            behind = [i + 1 for i, (a, b) in enumerate(pairs) if sign * a <= sign * b]
            shares = in_percent(score)
            curve = ", ".join(f"{100 * a:.1f}/{100 * b:.1f}" if shares else f"{a:.4g}/{b:.4g}" for a, b in pairs) + (
                "%" if shares else ""
            )
            if behind:
                at = ", ".join(map(str, behind))
                lines.append(f"{r['strategy']} is not ahead of scratch at epoch {at} ({curve}).")
            else:
                lines.append(f"{r['strategy']} beats scratch at every epoch ({curve}).")
    largest = max(r["trainable_params"] for r in rows)
    for r in (r for r in rows if r["trainable_params"] < 0.1 * largest):
        share = r["trainable_params"] / largest
        lines.append(
            f"{r['strategy']} trains {share:.1%} of the parameters and reaches {name}{score_text(r['best'], score)}: "
            f"{_gap(abs(best['best'] - r['best']), score)} from the best."
        )
    return lines


def plot_curves(runs: dict[str, dict], path: Path, *, title: str) -> Path:
    """The compared validation score against epoch and against seconds, one line per strategy (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    score = "val_acc"
    for strategy, summary in runs.items():
        row = _row(strategy, summary)
        score = row["score"]
        epochs = [e["epoch"] for e in summary["epochs"]]
        values = [100 * v if in_percent(score) else v for v in row["curve"]]
        seconds = [e["cumulative_seconds"] for e in summary["epochs"]]
        by_epoch.plot(epochs, values, marker="o", label=strategy)
        by_time.plot(seconds, values, marker="o", label=strategy)
    by_epoch.set_xlabel("epoch")
    by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_time.set_xlabel("seconds of training")
    for ax in (by_epoch, by_time):
        ax.set_ylabel(f"validation {score_name(score)}{' (%)' if in_percent(score) else ''}")
        ax.grid(alpha=0.3)
    by_epoch.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path

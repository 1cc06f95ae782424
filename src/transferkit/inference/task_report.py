"""``report.html`` of a run that predicts several labels per image, or a number.

Several labels: the scores, the per-label table at the run's thresholds (what ``predict``
answers), each label's precision-recall curve with its threshold marked, the label pairs most
often confused (one missed while the other was predicted on the same image), and the images with
the highest loss. A number: the scores, predicted against true values with the interval's band,
the residuals' histogram, and the largest errors with their thumbnails. Built from :mod:`._page`
like the page of classes.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..serialization import write_bytes, write_text
from ..tasks.metrics import confused_label_pairs
from ..tasks.scores import curve_scores
from ._page import caption, curves_section, data_uri, figure_png, html_page, learning_curves, pyplot, thumbnail

__all__ = ["write_task_report"]

WORST = 12  # images shown with their thumbnails

# Each task's validation scores: (metrics.csv column, name, shown in percent)


def write_task_report(
    folder: str | Path,
    result: dict,
    *,
    history: list[dict],
    images: torch.Tensor,
    names: list[str],
    outputs: torch.Tensor,
    targets: torch.Tensor,
) -> Path:
    """Write ``report.html`` and its plots into ``folder``.

    Args:
        result: what :func:`~transferkit.inference.task_eval.evaluate_task` returns.
        history: the run's epochs (rows of ``metrics.csv``).
        images: the evaluated images, (N, C, H, W) uint8, in the order of ``outputs``.
        names: their file names.
        outputs: several labels: (N, K) probabilities as ``predict`` gives them; a number: (N,)
            predicted values in the target's units.
        targets: (N, K) 0/1, or (N,) true values.
    """
    folder = Path(folder)
    task = result["task"]
    plots = {"curves.png": learning_curves(history, curve_scores(task))}
    curves = curves_section(plots["curves.png"], history)
    if task == "multi-label":
        plots["precision_recall.png"] = _precision_recall(outputs, targets, result)
        body = _multilabel_body(result, plots, curves, outputs, targets, images, names)
    else:
        plots["predicted.png"] = _predicted_vs_true(outputs, targets, result)
        plots["residuals.png"] = _residual_histogram(outputs - targets, result)
        body = _regression_body(result, plots, curves, outputs, targets, images, names)
    for name, png in plots.items():
        write_bytes(folder / name, png)
    return write_text(folder / "report.html", html_page(result, body))


def _precision_recall(probabilities: torch.Tensor, targets: torch.Tensor, result: dict) -> bytes:
    from sklearn.metrics import precision_recall_curve

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    y, p = targets.numpy().astype(np.int64), probabilities.numpy()
    shown = 0
    for k, name in enumerate(result["label_names"]):
        if y[:, k].sum() == 0 or shown == 20:  # no curve without a positive; a legend of 20 is already long
            continue
        precision, recall, cuts = precision_recall_curve(y[:, k], p[:, k])
        (line,) = ax.plot(recall, precision, label=f"{name[:20]} (AP {result['per_label'][name]['ap']:.2f})")
        at = min(int(np.searchsorted(cuts, result["thresholds"][k])), len(cuts) - 1)
        ax.plot(recall[at], precision[at], "o", color=line.get_color())  # the run's threshold
        shown += 1
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("precision-recall per label (dot: the run's threshold)")
    ax.grid(alpha=0.3)
    if shown:
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return figure_png(fig)


def _multilabel_body(result, plots, curves, probabilities, targets, images, names) -> str:
    e = html.escape
    label_names, thresholds = result["label_names"], result["thresholds"]
    decided = probabilities >= torch.tensor(thresholds)[None]
    kept = result["at_thresholds"]
    rows = []
    for k, name in enumerate(label_names):
        ap, at = result["per_label"][name]["ap"], kept["per_label"][name]
        rows.append(
            f"<tr><td>{e(name)}</td><td>{'-' if ap is None else f'{ap:.3f}'}</td><td>{thresholds[k]:.3f}</td>"
            f"<td>{at['precision']:.3f}</td><td>{at['recall']:.3f}</td><td>{at['f1']:.3f}</td>"
            f"<td>{int(targets[:, k].sum())}</td></tr>"
        )
    pairs = confused_label_pairs(targets, decided, label_names)
    confused = "".join(
        f"<li>{e(p['missed'])} missed while {e(p['instead'])} was predicted: {p['count']}</li>" for p in pairs
    )
    loss = F.binary_cross_entropy(probabilities.double().clamp(1e-7, 1 - 1e-7), targets.double(), reduction="none")
    cards = []
    for i in loss.sum(1).argsort(descending=True)[:WORST].tolist():
        true = {label_names[k] for k in range(len(label_names)) if targets[i, k]}
        said = {label_names[k] for k in range(len(label_names)) if decided[i, k]}
        cards.append(
            f'<div class="card"><img src="{thumbnail(images[i])}" alt="{e(names[i])}">{caption(names[i])}'
            f"<div>true: {e(', '.join(sorted(true))) or 'none'}</div>"
            f'<div class="{"" if said == true else "wrong"}">'
            f"predicted: {e(', '.join(sorted(said))) or 'none'}</div></div>"
        )
    return f"""<table>
<tr><th>mAP (macro)</th><th>mAP (micro)</th><th>macro-F1</th><th>subset accuracy</th><th>Hamming loss</th>
<th>loss</th></tr>
<tr><td>{result["map"]:.4f}</td><td>{result["map_micro"]:.4f}</td><td>{kept["macro_f1"]:.4f}</td>
<td>{kept["subset_accuracy"]:.4f}</td><td>{kept["hamming_loss"]:.4f}</td><td>{result["loss"]:.4f}</td></tr></table>
<p>Decisions, F1, subset accuracy and Hamming loss are at the run's thresholds, which predict uses.</p>
{curves}
<h2>Per label</h2>
<table><tr><th>label</th><th>AP</th><th>threshold</th><th>precision</th><th>recall</th><th>F1</th>
<th>images with it</th></tr>
{"".join(rows)}</table>
<h2>Precision and recall</h2><img src="{data_uri(plots["precision_recall.png"])}" alt="precision-recall curves">
<h3>Most confused label pairs</h3><ul>{confused or "<li>none</li>"}</ul>
<h2>Highest losses</h2>
<div class="grid">{"".join(cards)}</div>"""


def _predicted_vs_true(predicted: torch.Tensor, true: torch.Tensor, result: dict) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    line = np.array([low, high])
    ax.plot(line, line, color="gray", linestyle="--", label="predicted = true")
    interval = result.get("interval")
    if interval:
        width = interval["half_width"]
        ax.fill_between(
            line, line - width, line + width, color="gray", alpha=0.15, label=f"{interval['level']:.0%} interval"
        )
    ax.scatter(true.numpy(), predicted.numpy(), s=10, alpha=0.6)
    ax.set_xlabel(f"true {result['target']}")
    ax.set_ylabel(f"predicted {result['target']}")
    ax.set_title(f"MAE {result['mae']:.4g}, R² {result['r2']:.3f}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return figure_png(fig)


def _residual_histogram(residuals: torch.Tensor, result: dict) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    ax.hist(residuals.numpy(), bins=min(40, max(5, len(residuals) // 5)), edgecolor="black", alpha=0.7)
    interval = result.get("interval")
    if interval:
        for x in (-interval["half_width"], interval["half_width"]):
            ax.axvline(x, color="gray", linestyle="--")
    ax.set_xlabel(f"predicted - true ({result['target']})")
    ax.set_ylabel("images")
    ax.set_title("residuals" + (" (dashed: the interval)" if interval else ""))
    fig.tight_layout()
    return figure_png(fig)


def _regression_body(result, plots, curves, predicted, true, images, names) -> str:
    e = html.escape
    interval = result.get("interval")
    width = interval["half_width"] if interval else None
    cards = []
    for i in (predicted - true).abs().argsort(descending=True)[:WORST].tolist():
        outside = width is not None and abs(float(predicted[i] - true[i])) > width
        band = f"<div>interval ± {width:.4g}{' (missed)' if outside else ''}</div>" if width is not None else ""
        cards.append(
            f'<div class="card"><img src="{thumbnail(images[i])}" alt="{e(names[i])}">{caption(names[i])}'
            f"<div>true <b>{float(true[i]):.4g}</b></div>"
            f'<div class="wrong">predicted <b>{float(predicted[i]):.4g}</b></div>{band}</div>'
        )
    coverage = f"<th>{interval['level']:.0%} interval</th><th>coverage here</th>" if interval else ""
    covered = f"<td>± {width:.4g}</td><td>{interval['coverage']:.1%}</td>" if interval else ""
    return f"""<p>Target: <b>{e(result["target"])}</b>.</p>
<table><tr><th>MAE</th><th>RMSE</th><th>R²</th><th>Spearman</th><th>loss</th>{coverage}</tr>
<tr><td>{result["mae"]:.4g}</td><td>{result["rmse"]:.4g}</td><td>{result["r2"]:.4f}</td><td>{result["spearman"]:.4f}</td>
<td>{result["loss"]:.4f}</td>{covered}</tr></table>
{curves}
<h2>Predicted against true</h2><img src="{data_uri(plots["predicted.png"])}" alt="predicted against true values">
<img src="{data_uri(plots["residuals.png"])}" alt="residual histogram">
<h2>Largest errors</h2><div class="grid">{"".join(cards)}</div>"""

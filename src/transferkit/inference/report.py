"""``report.html``: one self-contained page on how a run did and what it gets wrong.

The page of a run of classes; runs of several labels or of numbers get theirs from
:mod:`transferkit.inference.task_report`. Both are built from :mod:`._page`: self-contained, with
the plots also written beside it as PNGs, and every name from the user's files escaped.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import torch

from ..serialization import write_bytes, write_text
from ..tasks.calibration import ECE_BINS
from ..train.folder.calibration import probability_kind
from ._page import caption, curves_section, data_uri, figure_png, html_page, learning_curves, pyplot, thumbnail

__all__ = ["top_losses", "write_report"]


def top_losses(probabilities: torch.Tensor, targets: torch.Tensor, *, k: int = 12) -> list[int]:
    """Indices of the ``k`` examples with the highest cross-entropy, worst first."""
    loss = -probabilities[torch.arange(len(targets)), targets].clamp(min=1e-12).log()
    return loss.argsort(descending=True)[:k].tolist()


def write_report(
    folder: str | Path,
    result: dict,
    *,
    history: list[dict],
    images: torch.Tensor,
    names: list[str],
    probabilities: torch.Tensor,
    targets: torch.Tensor,
) -> Path:
    """Write ``report.html`` and its plots (``curves.png``, ``confusion.png``, ``reliability.png``) into ``folder``.

    Args:
        result: what :func:`~transferkit.inference.runs.evaluate_run` returns.
        history: the run's epochs (rows of ``metrics.csv``).
        images: the evaluated images, (N, C, H, W) uint8, in the order of ``probabilities``.
        names: their file names.
    """
    folder = Path(folder)
    plots = {
        "curves.png": learning_curves(history),
        "confusion.png": _confusion(result["confusion_matrix"], result["class_names"]),
        "reliability.png": _reliability(result.get("calibrated") or result["calibration"]),
    }
    for name, png in plots.items():
        write_bytes(folder / name, png)
    class_names = result["class_names"]
    worst = []
    for i in top_losses(probabilities, targets):
        predicted = int(probabilities[i].argmax())
        worst.append(
            {
                "thumbnail": thumbnail(images[i]),
                "name": names[i],
                "true": class_names[int(targets[i])],
                "predicted": class_names[predicted],
                "p_predicted": float(probabilities[i, predicted]),
                "p_true": float(probabilities[i, int(targets[i])]),
            }
        )
    page = _page(result, plots, worst, curves_section(plots["curves.png"], history))
    return write_text(folder / "report.html", page)


def _confusion(matrix: list[list[int]], class_names: list[str]) -> bytes:
    plt = pyplot()
    k = len(class_names)
    size = min(12, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    counts = np.asarray(matrix)
    rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)  # each true class's share
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        str(counts[i, j]),
                        ha="center",
                        va="center",
                        color="white" if rows[i, j] > 0.5 else "black",
                    )
        ax.set_xticks(range(k), [n[:12] for n in class_names], rotation=45, ha="right")
        ax.set_yticks(range(k), [n[:12] for n in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    return figure_png(fig)


def _reliability(calib: dict) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", label="calibrated")
    bins = calib["bins"]
    ax.bar(
        [(b["low"] + b["high"]) / 2 for b in bins],
        [b["accuracy"] for b in bins],
        width=1 / ECE_BINS,
        edgecolor="black",
        alpha=0.7,
        label="accuracy in bin",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {100 * calib['ece']:.1f}%)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return figure_png(fig)


def _calibration_line(result: dict) -> str:
    if not result.get("calibrated"):
        return ""
    return (
        f" Expected calibration error {result['calibration']['ece']:.4f} uncalibrated, "
        f"{result['calibrated']['ece']:.4f} calibrated."
    )


def _page(result: dict, plots: dict[str, bytes], worst: list[dict], curves: str) -> str:
    e = html.escape
    rows = []
    for name, c in result["per_class"].items():
        recall = "-" if c["recall"] is None else f"{c['recall']:.3f}"
        rows.append(
            f"<tr><td>{e(name)}</td><td>{c['precision']:.3f}</td><td>{recall}</td>"
            f"<td>{c['f1']:.3f}</td><td>{c['support']}</td></tr>"
        )
    confused = "".join(
        f"<li>{e(p['true'])} taken for {e(p['predicted'])}: {p['count']}</li>" for p in result["most_confused"]
    )
    cards = "".join(
        f'<div class="card"><img src="{w["thumbnail"]}" alt="{e(w["name"])}">{caption(w["name"])}'
        f'<div>true <b>{e(w["true"])}</b></div><div class="{"wrong" if w["true"] != w["predicted"] else "right"}">'
        f"predicted <b>{e(w['predicted'])}</b> {100 * w['p_predicted']:.0f}%</div>"
        f"<div>p(true) {100 * w['p_true']:.1f}%</div></div>"
        for w in worst
    )
    body = f"""<table>
<tr><th>accuracy</th><th>balanced accuracy</th><th>macro-F1</th><th>loss</th><th>ECE, uncalibrated (15 bins)</th></tr>
<tr><td>{result["accuracy"]:.4f}</td><td>{result["balanced_accuracy"]:.4f}</td><td>{result["macro_f1"]:.4f}</td>
<td>{result["loss"]:.4f}</td><td>{result["calibration"]["ece"]:.4f}</td></tr></table>
<p>Probabilities on this page are {e(result.get("probabilities") or probability_kind(None))}:
the ones predict gives.{_calibration_line(result)}</p>
{curves}
<h2>Per class</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{"".join(rows)}</table>
<h2>Confusion matrix</h2><img src="{data_uri(plots["confusion.png"])}" alt="confusion matrix">
<h3>Most confused</h3><ul>{confused or "<li>none</li>"}</ul>
<h2>Reliability</h2><img src="{data_uri(plots["reliability.png"])}" alt="reliability diagram">
<h2>Top losses</h2><div class="grid">{cards}</div>"""
    return html_page(result, body)

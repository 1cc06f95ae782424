"""``report.html``: one self-contained page on how a run did and what it gets wrong.

Everything is inlined (plots and thumbnails as PNG data, no script or style from the network),
so that the page opens offline and can be mailed. The plots are also written beside it as PNGs.
Every name on the page comes from the user's files and is escaped.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import torch

from ..serialization import write_bytes, write_text

__all__ = ["calibration", "top_losses", "write_report"]

ECE_BINS = 15


def calibration(probabilities: torch.Tensor, targets: torch.Tensor, *, bins: int = ECE_BINS) -> dict:
    """Expected calibration error over ``bins`` equal-width confidence bins, and the bins themselves.

    Example:
        >>> calibration(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1]))["ece"]
        0.35
    """
    confidence, predicted = probabilities.max(-1)
    correct = (predicted == targets).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    rows, ece = [], 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        n = int(inside.sum())
        if n:
            acc, conf = correct[inside].mean().item(), confidence[inside].double().mean().item()
            ece += n / len(targets) * abs(acc - conf)
            rows.append({"low": low.item(), "high": high.item(), "count": n, "accuracy": acc, "confidence": conf})
    return {"ece": ece, "bins": rows}


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
        "curves.png": _curves(history),
        "confusion.png": _confusion(result["confusion_matrix"], result["class_names"]),
        "reliability.png": _reliability(result["calibration"]),
    }
    for name, png in plots.items():
        write_bytes(folder / name, png)
    class_names = result["class_names"]
    worst = []
    for i in top_losses(probabilities, targets):
        predicted = int(probabilities[i].argmax())
        worst.append(
            {
                "thumbnail": _thumbnail(images[i]),
                "name": names[i],
                "true": class_names[int(targets[i])],
                "predicted": class_names[predicted],
                "p_predicted": float(probabilities[i, predicted]),
                "p_true": float(probabilities[i, int(targets[i])]),
            }
        )
    page = _page(result, plots, worst)
    return write_text(folder / "report.html", page)


def _figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curves(history: list[dict]) -> bytes:
    plt = _pyplot()
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [row["epoch"] for row in history]
    loss_ax.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
    loss_ax.plot(epochs, [row["val_loss"] for row in history], marker="o", label="validation")
    loss_ax.set_title("loss")
    for key, label in (
        ("val_acc", "accuracy"),
        ("val_balanced_acc", "balanced accuracy"),
        ("val_macro_f1", "macro-F1"),
    ):
        if history and key in history[0]:
            score_ax.plot(epochs, [100 * row[key] for row in history], marker="o", label=label)
    score_ax.set_title("validation (%)")
    from matplotlib.ticker import MaxNLocator

    for ax in (loss_ax, score_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _figure_png(fig)


def _confusion(matrix: list[list[int]], class_names: list[str]) -> bytes:
    plt = _pyplot()
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
    return _figure_png(fig)


def _reliability(calib: dict) -> bytes:
    plt = _pyplot()
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
    return _figure_png(fig)


def _thumbnail(image: torch.Tensor, size: int = 96) -> str:
    from PIL import Image

    pixels = image.permute(1, 2, 0).numpy() if image.shape[0] == 3 else image[0].numpy()
    img = Image.fromarray(pixels)
    scale = size / max(img.size)
    resample = Image.NEAREST if scale >= 2 else Image.BILINEAR  # small digits stay crisp
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return _data_uri(buffer.getvalue())


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.card { width: 150px; font-size: 12px; border: 1px solid #ddd; padding: 6px; }
.card div { overflow-wrap: anywhere; }
.card img { display: block; margin: 0 auto 4px; image-rendering: pixelated; }
.wrong { color: #b00; }
"""


def _page(result: dict, plots: dict[str, bytes], worst: list[dict]) -> str:
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
        f'<div class="card"><img src="{w["thumbnail"]}" alt="{e(w["name"])}"><div>{e(w["name"][-40:])}</div>'
        f'<div>true <b>{e(w["true"])}</b></div><div class="{"wrong" if w["true"] != w["predicted"] else "right"}">'
        f"predicted <b>{e(w['predicted'])}</b> {100 * w['p_predicted']:.0f}%</div>"
        f"<div>p(true) {100 * w['p_true']:.1f}%</div></div>"
        for w in worst
    )
    skipped = len(result.get("skipped_images", []))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>transferkit report: {e(str(result["run"]))}</title>
<style>{_STYLE}</style></head>
<body>
<h1>{e(str(result["run"]))}</h1>
<p>Evaluated on {e(str(result["data"]))} ({e(result["split"])}, {result["images"]} images{
        f", {skipped} unusable skipped" if skipped else ""
    }).</p>
<table><tr><th>accuracy</th><th>balanced accuracy</th><th>macro-F1</th><th>loss</th><th>ECE (15 bins)</th></tr>
<tr><td>{result["accuracy"]:.4f}</td><td>{result["balanced_accuracy"]:.4f}</td><td>{result["macro_f1"]:.4f}</td>
<td>{result["loss"]:.4f}</td><td>{result["calibration"]["ece"]:.4f}</td></tr></table>
<h2>Learning curves</h2><img src="{_data_uri(plots["curves.png"])}" alt="learning curves">
<h2>Per class</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{"".join(rows)}</table>
<h2>Confusion matrix</h2><img src="{_data_uri(plots["confusion.png"])}" alt="confusion matrix">
<h3>Most confused</h3><ul>{confused or "<li>none</li>"}</ul>
<h2>Reliability</h2><img src="{_data_uri(plots["reliability.png"])}" alt="reliability diagram">
<h2>Top losses</h2><div class="grid">{cards}</div>
<script>
// Marks the page once loaded, so that a headless browser can tell every image decoded.
addEventListener("load", () => {{
  const broken = [...document.images].filter((img) => !img.complete || img.naturalWidth === 0).length;
  document.body.dataset.images = broken ? "broken:" + broken : "ok";
}});
</script>
</body></html>
"""

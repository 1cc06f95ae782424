"""What every ``report.html`` shares: the page around its sections, PNG plots, thumbnails, learning curves.

Everything is inlined (plots and thumbnails as PNG data, no script or style from the network),
so that a page opens offline and can be mailed. Every name a caller puts on a page must already
be escaped (:func:`html.escape`): the names come from the user's files.
"""

from __future__ import annotations

import base64
import html
import io

import torch

from ..tasks.scores import curve_scores

__all__ = [
    "CLASS_SCORES",
    "caption",
    "curves_section",
    "data_uri",
    "figure_png",
    "html_page",
    "learning_curves",
    "phase_starts",
    "pyplot",
    "thumbnail",
]

# The validation scores a run of classes keeps: (metrics.csv column, name, shown in percent)
CLASS_SCORES = curve_scores("classification")


def pyplot():
    """matplotlib's pyplot on the Agg backend: plots without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """``fig`` as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def learning_curves(history: list[dict], scores=CLASS_SCORES) -> bytes:
    """Train and validation loss per epoch beside the validation ``scores`` that ``history`` holds."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [row["epoch"] for row in history]
    loss_ax.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
    loss_ax.plot(epochs, [row["val_loss"] for row in history], marker="o", label="validation")
    loss_ax.set_title("loss")
    percent = any(p for _, _, p in scores)
    for key, label, in_percent in scores:
        values = [row.get(key) for row in history]
        if history and all(isinstance(v, (int, float)) for v in values):
            score_ax.plot(epochs, [100 * v if in_percent else v for v in values], marker="o", label=label)
    score_ax.set_title("validation (%)" if percent else "validation")
    later = phase_starts(history)[1:]  # a strategy's later phases begin at the dashed lines
    for ax in (loss_ax, score_ax):
        for epoch, name in later:
            ax.axvline(epoch - 0.5, color="grey", linestyle="--", linewidth=1)
            ax.annotate(
                name,
                (epoch - 0.5, 1),
                xycoords=("data", "axes fraction"),
                xytext=(3, -3),
                textcoords="offset points",
                va="top",
                fontsize=8,
                color="grey",
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return figure_png(fig)


def phase_starts(history: list[dict]) -> list[tuple[int, str]]:
    """(first epoch, name) of each phase of the run in ``history``, in order.

    Examples:
        >>> rows = [{"epoch": 1, "phase": "probe"}, {"epoch": 2, "phase": "probe"}, {"epoch": 3, "phase": "finetune"}]
        >>> phase_starts(rows)
        [(1, 'probe'), (3, 'finetune')]
    """
    starts = []
    for row in history:
        if not starts or row.get("phase") != starts[-1][1]:
            starts.append((row["epoch"], row.get("phase")))
    return starts


def curves_section(png: bytes, history: list[dict]) -> str:
    """The page's learning curves (:func:`learning_curves`'s ``png``), with where each phase begins when there are
    several."""
    section = f'<h2>Learning curves</h2><img src="{data_uri(png)}" alt="learning curves">'
    starts = phase_starts(history)
    if len(starts) < 2:
        return section
    named = ", ".join(f"{html.escape(str(name))} from epoch {epoch}" for epoch, name in starts)
    return f"{section}<p>Phases: {named}; a dashed line marks where each later phase begins.</p>"


def thumbnail(image: torch.Tensor, size: int = 96) -> str:
    """A (C, H, W) uint8 image as a PNG data URI at most ``size`` pixels wide or high; a float one (the model's input
    as a Dataset's transforms made it) is stretched to the full range of grey levels first."""
    from PIL import Image

    if image.is_floating_point():
        low, high = image.min(), image.max()
        image = ((image - low) / (high - low).clamp(min=1e-12) * 255).round().to(torch.uint8)

    pixels = image.permute(1, 2, 0).numpy() if image.shape[0] == 3 else image[0].numpy()
    img = Image.fromarray(pixels)
    scale = size / max(img.size)
    resample = Image.NEAREST if scale >= 2 else Image.BILINEAR  # small digits stay crisp
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return data_uri(buffer.getvalue())


def caption(name: str, width: int = 40) -> str:
    """An image's path as a card's caption (escaped HTML): its last whole parts that fit in ``width``
    characters (the file name at least), a line break allowed after each ``/``; the whole path on hover.

    Examples:
        >>> caption("photos/valid/sneaker/img_0001.png", width=24)
        '<div title="photos/valid/sneaker/img_0001.png">…/sneaker/<wbr>img_0001.png</div>'
    """
    parts = name.split("/")
    shown = parts[-1:]
    for part in reversed(parts[:-1]):
        if len("/".join([part, *shown])) + 2 > width:
            break
        shown.insert(0, part)
    text = "/<wbr>".join(html.escape(part) for part in shown)
    return f'<div title="{html.escape(name)}">{"…/" if len(shown) < len(parts) else ""}{text}</div>'


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.card { width: 150px; font-size: 12px; border: 1px solid #ddd; padding: 6px; }
.card div { overflow-wrap: break-word; }
.card img { display: block; margin: 0 auto 4px; image-rendering: pixelated; }
.wrong { color: #b00; }
"""


def html_page(result: dict, body: str) -> str:
    """The whole page: a title and heading naming the run, what was evaluated, then ``body`` (escaped HTML)."""
    e = html.escape
    skipped = len(result.get("skipped_images", []))
    evaluated = (
        f"Evaluated on {e(str(result['data']))} ({e(result['split'])}, {result['images']} images"
        f"{f', {skipped} unusable skipped' if skipped else ''})."
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>transferkit report: {e(str(result["run"]))}</title>
<style>{_STYLE}</style></head>
<body>
<h1>{e(str(result["run"]))}</h1>
<p>{evaluated}</p>
{body}
<script>
// Marks the page once loaded, so that a headless browser can tell every image decoded.
addEventListener("load", () => {{
  const broken = [...document.images].filter((img) => !img.complete || img.naturalWidth === 0).length;
  document.body.dataset.images = broken ? "broken:" + broken : "ok";
}});
</script>
</body></html>
"""

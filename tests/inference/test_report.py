"""report.html: its numbers, its escaping, and the page as a real browser renders it."""

import html
import re

import pytest
import torch

from tests.helpers import CHROMIUM, make_image_folder, render_in_chromium, tiny_config
from transferkit.inference.report import top_losses
from transferkit.inference.runs import evaluate_run
from transferkit.tasks.calibration import reliability
from transferkit.train.engine import fit


def test_expected_calibration_error():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.95, 0.05], [0.3, 0.7]])
    targets = torch.tensor([0, 1, 0, 1])
    # bins: 0.9 (right), 0.6 (wrong), 0.95 (right), 0.7 (right)
    expected = (abs(1 - 0.925) * 2 + abs(0 - 0.6) + abs(1 - 0.7)) / 4
    assert reliability(probs, targets)["ece"] == pytest.approx(expected)
    assert top_losses(probs, targets, k=2) == [1, 3]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A run on classes whose names try to break the page, evaluated with its report."""
    root = tmp_path_factory.mktemp("report")
    make_image_folder(root / "data", classes=("<script>alert(1)</script>", "a&b"), per_class=10)
    config = tiny_config(root / "data", root / "run", strategy="lp-ft", epochs=3)  # two phases: probe, finetune
    fit(config, log=lambda m: None)
    result = evaluate_run(root / "run", trust_code=True, report=True)
    return root / "run", result


def test_report_files_and_escaping(report):
    run, result = report
    page = (run / "report.html").read_text()
    assert result["report"] == str(run / "report.html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "a&amp;b" in page and page.count("data:image/png;base64,") == 3 + min(12, result["images"])
    for name in ("curves.png", "confusion.png", "reliability.png"):
        assert (run / name).read_bytes()[:4] == b"\x89PNG"
    assert "http://" not in page and "https://" not in page  # nothing from the network
    assert "Phases: probe from epoch 1, finetune from epoch 2; a dashed line marks" in page
    # Each card names its image by the path's last whole parts (never cut inside one), the whole path on hover.
    captions = re.findall(r'<div title="([^"]+)">(…/)?(.+?)</div>', page)
    assert len(captions) == min(12, result["images"])
    for name, cut, shown in captions:
        shown = shown.replace("/<wbr>", "/")
        assert name.endswith("/" + shown) if cut else name == shown
        assert shown.count("/") >= 1 and len(html.unescape(shown)) <= 40  # a class folder and its file fit


def test_learning_curves_mark_where_a_phase_begins():
    from transferkit.inference._page import learning_curves, phase_starts

    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "val_acc": e / 5} for e in range(1, 5)]
    one = [{**row, "phase": "full"} for row in rows]
    two = [{**row, "phase": "probe" if row["epoch"] < 3 else "finetune"} for row in rows]
    assert phase_starts(one) == [(1, "full")] and phase_starts(two) == [(1, "probe"), (3, "finetune")]
    assert learning_curves(two) != learning_curves(one)  # the line and its name are drawn
    assert learning_curves(one) == learning_curves([dict(row) for row in one])  # and nothing else differs


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed ('make test' installs it as root)")
def test_report_renders_in_a_real_browser(report, tmp_path):
    import numpy as np
    from PIL import Image

    run, _ = report
    dom, log, shot = render_in_chromium(run / "report.html", tmp_path)
    assert 'data-images="ok"' in dom, log[-2000:]
    assert "Uncaught" not in log and ":ERROR:CONSOLE" not in log
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2400, 1200)
    assert (pixels < 128).mean() > 0.01 and len(np.unique(pixels)) > 50  # text, plots and thumbnails, not blank

    # The same check on a page with one image cut short must fail: it can tell.
    broken = tmp_path / "broken.html"
    page = (run / "report.html").read_text()
    start = page.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken.write_text(page[:start] + "AAAA" + page[start + 400 :])
    dom, _, _ = render_in_chromium(broken, tmp_path)
    assert 'data-images="broken:1"' in dom

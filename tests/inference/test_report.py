"""report.html: its numbers, its escaping, and the page as a real browser renders it."""

import pytest
import torch

from tests.helpers import CHROMIUM, make_image_folder, render_in_chromium, tiny_config
from transferkit.inference.report import calibration, top_losses
from transferkit.inference.runs import evaluate_run
from transferkit.train.engine import fit


def test_expected_calibration_error():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.95, 0.05], [0.3, 0.7]])
    targets = torch.tensor([0, 1, 0, 1])
    # bins: 0.9 (right), 0.6 (wrong), 0.95 (right), 0.7 (right)
    expected = (abs(1 - 0.925) * 2 + abs(0 - 0.6) + abs(1 - 0.7)) / 4
    assert calibration(probs, targets)["ece"] == pytest.approx(expected)
    assert top_losses(probs, targets, k=2) == [1, 3]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A run on classes whose names try to break the page, evaluated with its report."""
    root = tmp_path_factory.mktemp("report")
    make_image_folder(root / "data", classes=("<script>alert(1)</script>", "a&b"), per_class=10)
    config = tiny_config(root / "data", root / "run")
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

"""report.html of runs of several labels and of numbers: its sections, its escaping, and a real browser."""

import numpy as np
import pytest
from PIL import Image

from tests.helpers import CHROMIUM, render_in_chromium, tiny_config
from tests.tasks.csvs import multilabel_csv, regression_csv
from transferkit.inference.runs import evaluate_run
from transferkit.train.engine import fit

HOSTILE = ("<script>alert(1)</script>", "a&b", "rare")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A multi-label run whose label names try to break the page, and a regression run, each with its report."""
    made = {}
    for task, data in (("multi-label", multilabel_csv), ("regression", regression_csv)):
        root = tmp_path_factory.mktemp(task)
        csv = data(root, names=HOSTILE) if task == "multi-label" else data(root)
        fit(tiny_config(csv, root / "run", task=task, strategy="full", epochs=3, lr=1e-2), log=lambda m: None)
        made[task] = (root / "run", evaluate_run(root / "run", trust_code=True, report=True, device="cpu"))
    return made


def test_several_labels_report_names_every_label_escaped_with_its_curves(runs):
    run, result = runs["multi-label"]
    page = (run / "report.html").read_text()
    assert result["report"] == str(run / "report.html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "a&amp;b" in page and "a&b" not in page
    for section in ("Per label", "Precision and recall", "Most confused label pairs", "Highest losses"):
        assert f">{section}</h" in page, section
    # 2 plots and a thumbnail for each of the 12 highest losses
    assert page.count("data:image/png;base64,") == 2 + 12
    for name in ("curves.png", "precision_recall.png"):
        assert (run / name).read_bytes()[:4] == b"\x89PNG"
    # the table shows the thresholds the run keeps, which predict uses
    for k, name in enumerate(result["label_names"]):
        assert result["per_label"][name]["threshold"] == result["thresholds"][k]
    assert f"<td>{result['thresholds'][0]:.3f}</td>" in page
    assert "http://" not in page and "https://" not in page


def test_numbers_report_shows_predictions_residuals_and_the_largest_errors(runs):
    run, result = runs["regression"]
    page = (run / "report.html").read_text()
    for section in ("Predicted against true", "Largest errors"):
        assert f">{section}</h2>" in page, section
    assert page.count("data:image/png;base64,") == 3 + 12
    for name in ("curves.png", "predicted.png", "residuals.png"):
        assert (run / name).read_bytes()[:4] == b"\x89PNG"
    assert f"<td>{result['mae']:.4g}</td>" in page and "90% interval" in page
    assert f"<td>{result['interval']['coverage']:.1%}</td>" in page


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed ('make test' installs it as root)")
@pytest.mark.parametrize("task", ["multi-label", "regression"])
def test_task_reports_render_in_a_real_browser(runs, task, tmp_path):
    dom, log, shot = render_in_chromium(runs[task][0] / "report.html", tmp_path)
    assert 'data-images="ok"' in dom, log[-2000:]
    assert "Uncaught" not in log and ":ERROR:CONSOLE" not in log
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert (pixels < 128).mean() > 0.01 and len(np.unique(pixels)) > 50  # text, plots and thumbnails, not blank

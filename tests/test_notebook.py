"""examples/transfer_learning.ipynb runs in a real Jupyter kernel, and its outputs say what it claims."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "transfer_learning.ipynb"


def text_of(cell) -> str:
    """What a code cell showed: its printed text and its value's plain text (or HTML where that is all)."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif "data" in output:
            data = output["data"]
            parts.append(data.get("text/plain", "") + data.get("text/html", ""))
        elif output["output_type"] == "error":
            parts.append("\n".join(output["traceback"]))
    return "".join(parts)


@pytest.mark.slow
def test_the_example_notebook_runs_and_shows_what_it_says(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}).execute()
    shown = [text_of(cell) for cell in notebook.cells if cell.cell_type == "code"]
    everything = "\n".join(shown)
    assert "Traceback" not in everything
    assert shown[1].startswith("Loaded lite0: 296 tensors matched (296 by structure)")
    assert "cat" in shown[2].split(")")[0]  # the most probable ImageNet class of chelsea is a cat
    assert "layers of EfficientNet" in shown[3] and "<table>" in shown[3]
    assert "Linear(in_features=1280, out_features=10" in shown[4]
    assert "classifier" in shown[5] and "<table>" in shown[5]
    assert "(800, 200, ['0', '1'" in shown[6]
    assert "strategy as-is: your model's own freezing: only its head 'classifier' trains" in shown[7]
    assert "cache: " in shown[7]
    accuracy = float(shown[9].split("accuracy ")[1].split(",")[0])
    assert accuracy > 0.85, shown[9]
    assert "1 predictions" in shown[10] and "<table>" in shown[10]
    assert "parity images: 200 from the run's held-out split" in shown[11] and shown[11].endswith("(1.0, 200)")

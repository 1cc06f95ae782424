import pytest

pytestmark = pytest.mark.slow


def test_demo_walks_through_and_fine_tunes(cli, tmp_path):
    # The full demo (4 strategies on builtin:mnist5k) is measured by bench/demo_targets.py; here a short
    # version checks every step is shown.
    args = ["--data", "builtin:digits", "--strategies", "freeze,scratch", "--epochs", "1", "--image-size", "32"]
    code, out, err = cli("demo", *args, "--out", tmp_path / "demo")
    assert code == 0, err
    assert "294 tensors matched (294 by structure)" in out
    assert "classifier.weight: checkpoint (1000, 1280) vs model (10, 1280)" in out
    assert "optimizer receives 2 tensors: classifier.weight, classifier.bias" in out
    assert "caught at 'bn2'" in out and "expects 1280 channels" in out
    assert "accuracy after epoch 1" in out and (tmp_path / "demo" / "compare.png").exists()

import pytest

pytestmark = pytest.mark.slow


def test_demo_walks_through_the_four_operations(cli):
    code, out, err = cli("demo")
    assert code == 0, err
    assert "294 tensors matched (294 by structure)" in out
    assert "classifier.weight: checkpoint (1000, 1280) vs model (10, 1280)" in out
    assert "optimizer receives 2 tensors: classifier.weight, classifier.bias" in out
    assert "caught at 'bn2'" in out and "expects 1280 channels" in out

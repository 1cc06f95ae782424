"""One temperature per label: the fit finds a known over-confidence, keeps every decision, and says what it skips."""

import numpy as np
import pytest
import torch

from transferkit.tasks.calibration import (
    MIN_EACH_SIDE,
    binary_ece,
    calibrated_thresholds,
    fit_label_temperatures,
    label_probabilities,
)


def _overconfident(n=4000, temperatures=(2.5, 0.6, 1.0), seed=0):
    """Logits whose labels are drawn from sigmoid(logit / T_k): the right temperatures are ``temperatures``."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, len(temperatures), generator=g) * 3
    truth = torch.sigmoid(logits / torch.tensor(temperatures))
    return logits, (torch.rand(n, len(temperatures), generator=g) < truth).long()


def test_each_label_gets_its_own_temperature_and_calibration_improves():
    logits, targets = _overconfident()
    temperatures, unfitted = fit_label_temperatures(logits, targets)
    assert unfitted == {}
    assert temperatures == pytest.approx([2.5, 0.6, 1.0], rel=0.12), temperatures
    before = binary_ece(label_probabilities(logits, None), targets)
    after = binary_ece(label_probabilities(logits, temperatures), targets)
    assert after < 0.5 * before and after < 0.03, (before, after)


def test_a_label_with_too_few_images_on_one_side_keeps_one():
    logits, targets = _overconfident(n=200)
    targets[:, 1] = 0
    targets[: MIN_EACH_SIDE - 1, 1] = 1  # four images with label 1
    temperatures, unfitted = fit_label_temperatures(logits, targets)
    assert temperatures[1] == 1.0 and set(unfitted) == {1}
    assert "4 held-out images with it and 196 without (each side needs 5)" in unfitted[1]
    assert temperatures[0] != 1.0


def test_thresholds_move_with_the_temperatures_so_no_decision_changes():
    logits, _ = _overconfident(n=2000)
    raw = [0.3, 0.55, 0.9]
    temperatures = [2.5, 0.6, 1.0]
    decided_raw = label_probabilities(logits, None) >= torch.tensor(raw)
    moved = calibrated_thresholds(raw, temperatures)
    decided = label_probabilities(logits, temperatures) >= torch.tensor(moved)
    # equal but for logits within float rounding of a threshold
    assert (decided_raw != decided).sum() <= 2
    assert moved[2] == pytest.approx(0.9) and moved[0] > 0.3 and moved[1] > 0.55  # T > 1 softens, T < 1 sharpens
    assert calibrated_thresholds(raw, None) == raw


def test_expected_calibration_error_of_known_probabilities():
    p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5], [0.5, 0.5]])
    y = torch.tensor([[1, 0], [0, 0], [1, 0], [0, 1]])
    # bins: 0.9 twice (half apply: gap 0.4), 0.1 twice (none: gap 0.1), 0.5 four times (half: gap 0)
    assert binary_ece(p, y) == pytest.approx((2 * 0.4 + 2 * 0.1) / 8)
    assert binary_ece(torch.tensor(np.array([[1.0], [0.0]])), torch.tensor([[1], [0]])) == 0.0

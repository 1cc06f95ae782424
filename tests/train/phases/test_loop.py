import torch
import torch.nn as nn

from transferkit.train.phases.loop import tta_logits, tta_warning


def test_tta_averages_the_probabilities_of_an_image_and_its_mirror():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 5, 3))
    x = torch.rand(2, 3, 4, 5)
    plain = tta_logits(model, x)
    torch.testing.assert_close(plain, model(x))
    averaged = tta_logits(model, x, tta=True).exp()
    expected = (model(x).softmax(-1) + model(x.flip(-1)).softmax(-1)) / 2
    torch.testing.assert_close(averaged, expected)
    # A mirror-symmetric image gains nothing from its mirror: the same probabilities.
    symmetric = torch.cat([x[..., :2], x[..., 2:3], x[..., :2].flip(-1)], -1)
    torch.testing.assert_close(tta_logits(model, symmetric, tta=True).exp(), model(symmetric).softmax(-1))


def test_tta_warns_for_digit_classes():
    assert "digits" in tta_warning([str(i) for i in range(10)])
    assert tta_warning(["cat", "dog"]) is None

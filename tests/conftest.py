import pytest
import torch

from tests.helpers import TinyNet


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyNet()

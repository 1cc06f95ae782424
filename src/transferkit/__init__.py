"""transferkit: transfer learning for PyTorch image classifiers, every step visible and checked."""

from .errors import *  # noqa: F403  (errors.__all__ is the public list)
from .loading import LoadReport, load_pretrained
from .models import create_model
from .surgery import Validation, check_layers, find_head, get_module, replace_head, set_module, validate
from ._trace import input_size_of

__version__ = "0.1.0"

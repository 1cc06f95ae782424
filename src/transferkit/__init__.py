"""transferkit: transfer learning for PyTorch image classifiers, every step visible and checked."""

from ._trace import input_size_of
from .errors import (
    CheckpointError,
    FreezeError,
    LayerExprError,
    LoadError,
    ModelSpecError,
    SurgeryError,
    TransferkitError,
)
from .loading import LoadReport, load_pretrained
from .models import create_model
from .surgery import Validation, check_layers, find_head, get_module, replace_head, set_module, validate

__all__ = [
    "CheckpointError",
    "FreezeError",
    "LayerExprError",
    "LoadError",
    "LoadReport",
    "ModelSpecError",
    "SurgeryError",
    "TransferkitError",
    "Validation",
    "check_layers",
    "create_model",
    "find_head",
    "get_module",
    "input_size_of",
    "load_pretrained",
    "replace_head",
    "set_module",
    "validate",
]

__version__ = "0.1.0"

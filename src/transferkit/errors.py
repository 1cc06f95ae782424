"""Exceptions for problems a user can cause and fix.

The command line turns each of these into one line on stderr and exit code 2.
"""

__all__ = [
    "TransferkitError",
    "ModelSpecError",
    "CheckpointError",
    "LoadError",
    "FreezeError",
    "SurgeryError",
    "LayerExprError",
]


class TransferkitError(Exception):
    """Base class: the message says what was wrong and what to do."""


class ModelSpecError(TransferkitError, ValueError):
    """A MODEL argument that names no model that can be built."""


class CheckpointError(TransferkitError, ValueError):
    """A checkpoint file that cannot be read safely."""


class LoadError(TransferkitError, ValueError):
    """Weights that were read but do not fit the model well enough to load."""


class FreezeError(TransferkitError, ValueError):
    """A freeze pattern or depth that selects nothing or too much."""


class LayerExprError(TransferkitError, ValueError):
    """A layer expression such as ``Linear(4096, 10)`` that cannot be built."""


class SurgeryError(TransferkitError, ValueError):
    """A model that no longer works after a layer was changed.

    Attributes:
        layer: dotted path of the first layer whose input or weights do not fit.
        detail: the shapes involved.
    """

    def __init__(self, message: str, *, layer: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.layer = layer
        self.detail = detail

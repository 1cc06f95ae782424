"""Exceptions for problems a user can cause and fix, one class per kind of input.

Messages say what was wrong, what was received and what to do, and name library arguments
(``batch_size``), never command-line flags: the command line maps a :class:`ConfigError`'s
``argument`` to its flag and turns every :class:`TransferkitError` into one line on stderr
and exit code 2.
"""

__all__ = [
    "Interrupted",
    "TransferkitError",
    "ConfigError",
    "ModelSpecError",
    "WeightsError",
    "CheckpointError",
    "LoadError",
    "DataError",
    "ImageReadError",
    "FreezeError",
    "LayerExprError",
    "SurgeryError",
    "RunError",
    "StorageError",
    "ParityError",
    "Unreachable",
]


class TransferkitError(Exception):
    """Base class: the message says what was wrong and what to do.

    Attributes:
        argument: the library argument the message names (``batch_size``, ``allow_partial``),
            which a front end may rewrite as its own option; None when it names none.
    """

    exit_code = 2  # the command line's exit status: bad input

    def __init__(self, message: str, *, argument: str | tuple[str, ...] | None = None):
        super().__init__(message)
        self.argument = argument


class ConfigError(TransferkitError, ValueError):
    """A setting out of its range, of the wrong type, or unknown."""


class ModelSpecError(TransferkitError, ValueError):
    """A MODEL argument that names no model that can be built."""


class WeightsError(TransferkitError, ValueError):
    """Pretrained weights that cannot be found, read or loaded."""


class Unreachable(WeightsError):
    """Weights to be downloaded that cannot be: no connection, or offline and not in the cache."""


class CheckpointError(WeightsError):
    """A checkpoint file that cannot be read safely."""


class LoadError(WeightsError):
    """Weights that were read but do not fit the model well enough to load."""


class DataError(TransferkitError, ValueError):
    """DATA that cannot be trained on: missing, one class, an empty class folder, a bad CSV."""


class ImageReadError(DataError):
    """One image file that cannot be used; data loading skips and lists it."""


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


class RunError(TransferkitError, RuntimeError):
    """A run folder that cannot be used: not a run, already a run, not writable, unreadable."""


class StorageError(TransferkitError, RuntimeError):
    """A file that cannot be written: no space, no folder, no permission."""


class ParityError(TransferkitError, RuntimeError):
    """An export that computes something else than the model it came from: nothing is kept (exit 1).

    Attributes:
        parity: the numbers measured, when the comparison ran.
    """

    exit_code = 1
    parity: dict | None = None


class Interrupted(BaseException):
    """A signal that stops a command (SIGINT from Ctrl-C, SIGTERM from a scheduler), raised where the process is.

    A ``BaseException``, as ``KeyboardInterrupt``: no ``except Exception`` swallows it, so files being written
    are left whole by their atomic writes and the run says how to go on.
    """

    def __init__(self, signal_name: str, exit_code: int):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = exit_code

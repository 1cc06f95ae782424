"""Read a PyTorch file without running the code its pickle names, unless the caller trusts it.

``torch.load(weights_only=True)`` reads it; a file it refuses is named with the functions and classes
that loading it would import, found by disassembling the pickle (never by running it), and a file of
another kind (Keras, gzip, TorchScript, ONNX) is named as what it is.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path

import torch

from ._text import first_line
from .errors import CheckpointError

__all__ = ["load_torch_file", "read_torch"]

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_OPCODE = 0x80


def load_torch_file(path: str | Path, *, trust: bool = False, refusal_hint: str | None = None):
    """``torch.load`` on CPU without running pickled code unless ``trust``; every failure a :class:`CheckpointError`.

    A file that would import functions or classes outside torch's allowlist is refused with
    their names, found by disassembling the pickle, not by parsing torch's message.
    """
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(f"Checkpoint '{path}' is empty (0 bytes).")
    return read_torch(path, head, trust, refusal_hint)


def read_torch(path: Path, head: bytes, trust: bool, refusal_hint: str | None = None):
    other = _other_format(path, head)
    if other:
        raise CheckpointError(f"Checkpoint '{path}' is {other}")
    if not head.startswith(_ZIP_MAGIC) and head[0] != _PICKLE_PROTOCOL_OPCODE:
        raise CheckpointError(
            f"Checkpoint '{path}' is neither a PyTorch checkpoint nor a safetensors file "
            "(unrecognised header). Check that the file is the weights file and was fully copied."
        )
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it did not write; the file is checked either way.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError:
        if trust:
            raise CheckpointError(f"Checkpoint '{path}' is corrupt or truncated: its pickle cannot be read.") from None
        unsafe = _unsafe_globals(path, zipped=head.startswith(_ZIP_MAGIC))
        if unsafe:
            shown = ", ".join(unsafe[:3]) + (f" and {len(unsafe) - 3} more" if len(unsafe) > 3 else "")
            raise CheckpointError(
                f"Checkpoint '{path}' refused: loading it would run code ({shown}). "
                + (
                    refusal_hint
                    or "Set trust_checkpoint only if you trust its source, or "
                    "re-save it as a plain state dict or safetensors."
                ),
                argument=None if refusal_hint else "trust_checkpoint",
            ) from None
        raise CheckpointError(
            f"Checkpoint '{path}' is corrupt or truncated: its pickle cannot be read as tensors."
        ) from None
    except Exception as e:  # weights_only: nothing ran; whatever broke, the file is not readable
        raise CheckpointError(f"Checkpoint '{path}' is corrupt or truncated: {first_line(e, 200)}") from None


def _other_format(path: Path, head: bytes) -> str | None:
    """What a file that is not PyTorch weights is, from its first bytes (and a zip's members), with what to do."""
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return (
            "a Keras/HDF5 file (.h5): PyTorch cannot read Keras weights. Use the architecture's PyTorch "
            "weights (timm, torchvision, hf-hub) instead."
        )
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed: decompress it (gunzip) and give the file inside."
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return None  # torch.load reports the damage
        if any(n.endswith(("model.weights.h5", "config.json")) for n in names) and not any(
            n.endswith("data.pkl") for n in names
        ):
            return "a Keras archive (.keras): PyTorch cannot read Keras weights; use PyTorch weights instead."
        if any(n.endswith(("constants.pkl", "code/__torch__.py")) or "/code/" in n for n in names):
            return (
                "a TorchScript archive (torch.jit.save): it holds a program, not a state dict. Load it with "
                "torch.jit.load where you trust it, and save its state_dict() to a file."
            )
        return None
    if path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and b"onnx" in head.lower()):
        return "an ONNX model: it cannot be loaded into a PyTorch module; use the PyTorch weights it was exported from."
    return None


def _unsafe_globals(path: Path, *, zipped: bool) -> list[str]:
    """The functions and classes the pickle would import that torch does not allow, read without running it."""
    from torch import _weights_only_unpickler as allowed

    try:
        if zipped:
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            data = path.read_bytes()
        found = _pickle_globals(data)
    except Exception:  # a stream too broken to disassemble is reported as corrupt by the caller
        return []
    safe = set(allowed._get_allowed_globals()) | set(allowed._get_user_allowed_globals())
    return sorted(found - safe)


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}


def _pickle_globals(data: bytes) -> set[str]:
    """``module.name`` of every GLOBAL and STACK_GLOBAL in a pickle, by static disassembly (any protocol).

    A legacy torch file is several pickles in a row; each is read.
    """
    found: set[str] = set()
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        strings: list[str] = []  # strings pushed so far, for STACK_GLOBAL's module and name
        memo: dict[int, str] = {}
        for op, arg, _ in pickletools.genops(stream):
            if op.name == "GLOBAL" or op.name == "INST":
                module, _, name = str(arg).partition(" ")
                found.add(f"{module}.{name}")
            elif op.name in _STRING_OPS:
                strings.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
            elif op.name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif op.name in ("PUT", "BINPUT", "LONG_BINPUT") and strings:
                memo[int(arg)] = strings[-1]
            elif op.name in ("GET", "BINGET", "LONG_BINGET") and int(arg) in memo:
                strings.append(memo[int(arg)])
            elif op.name == "STACK_GLOBAL":
                found.add(".".join(strings[-2:]) if len(strings) >= 2 else "<unknown>")
    return found

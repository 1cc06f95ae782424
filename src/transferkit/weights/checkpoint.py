"""Read tensors from checkpoint files safely, whatever wraps them.

Pickled checkpoints are read with ``torch.load(weights_only=True)``: a file that needs code to
run while unpickling is refused unless the caller says it trusts the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .._text import first_line
from ..errors import CheckpointError
from ..torch_files import read_torch

__all__ = ["Checkpoint", "from_state_dict", "read_checkpoint"]

# Keys under which training scripts nest the weights, in the order they are preferred.
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "state_dict_ema")
# Prefixes added by wrappers, not by the architecture: DataParallel/DDP and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class Checkpoint:
    """Tensors read from one source, and what was done to get them."""

    source: str
    tensors: dict[str, torch.Tensor]
    format: str  # "safetensors", "torch" or "state_dict"
    container: str | None = None  # the key the tensors were found under, e.g. "state_dict"
    stripped_prefixes: list[str] = field(default_factory=list)


def read_checkpoint(
    path: str | Path,
    *,
    trust_checkpoint: bool = False,
    use_ema: bool = False,
) -> Checkpoint:
    """Read a ``.pth``/``.pt``/``.bin`` state dict or checkpoint dict, or a ``.safetensors`` file.

    Args:
        trust_checkpoint: allow a pickle that runs code while loading. Only for files from a
            source you trust: unpickling such a file can do anything the code says.
        use_ema: prefer ``state_dict_ema`` when the checkpoint holds one.

    Examples:
        >>> ckpt = read_checkpoint("resnet34.pth")
        >>> len(ckpt.tensors)
        218
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Checkpoint '{path}' does not exist. Check the path.")
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' is not a file.")
    with path.open("rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(f"Checkpoint '{path}' is empty (0 bytes).")
    if path.suffix == ".safetensors" or _looks_like_safetensors(head, path.stat().st_size):
        return _from_mapping(str(path), _read_safetensors(path), "safetensors", use_ema)
    return _from_mapping(str(path), read_torch(path, head, trust_checkpoint), "torch", use_ema)


def from_state_dict(state_dict: Mapping, *, source: str = "state_dict", use_ema: bool = False) -> Checkpoint:
    """Wrap an in-memory state dict (or checkpoint dict) the same way files are read."""
    return _from_mapping(source, state_dict, "state_dict", use_ema)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    # 8-byte little-endian header length, then the JSON header.
    return len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8


def _read_safetensors(path: Path) -> dict:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"Checkpoint '{path}' is not a valid safetensors file: {first_line(e, 200)}") from None


def _from_mapping(source: str, obj, fmt: str, use_ema: bool) -> Checkpoint:
    container = None
    if isinstance(obj, torch.nn.Module):
        obj, container = obj.state_dict(), "nn.Module"
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"Checkpoint '{source}' holds a {type(obj).__name__}, not a state dict.")
    if not _all_tensors(obj):
        keys = (("state_dict_ema",) if use_ema else ()) + _CONTAINER_KEYS
        for key in keys:
            inner = obj.get(key)
            if isinstance(inner, torch.nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, Mapping) and inner:
                obj, container = inner, key
                break
    bad = [(k, v) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        key, value = bad[0]
        raise CheckpointError(
            f"Checkpoint '{source}' is not a state dict: '{key}' holds a {type(value).__name__}, "
            f"not a tensor ({len(bad)} such entries), and none of {', '.join(_CONTAINER_KEYS)} holds the weights."
        )
    if not obj:
        raise CheckpointError(f"Checkpoint '{source}' holds no tensors.")
    tensors, stripped = _strip_wrapper_prefixes(dict(obj))
    return Checkpoint(source, tensors, fmt, container, stripped)


def _all_tensors(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_wrapper_prefixes(tensors: dict) -> tuple[dict, list[str]]:
    stripped: list[str] = []
    out = {}
    for key, value in tensors.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
                    if prefix not in stripped:
                        stripped.append(prefix)
        out[key] = value
    return out, stripped

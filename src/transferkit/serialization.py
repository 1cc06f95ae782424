"""Write files atomically: a reader sees the old file or the complete new one, never half of one.

Files are created with the permissions the user's umask gives (not the 0600 of a temporary
file), and a full disk is reported with the space that was needed and where.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save as save_bytes

from ._storage import free_bytes
from ._text import human_bytes
from .errors import StorageError

__all__ = ["atomic_path", "save_safetensors", "save_torch", "write_bytes", "write_json", "write_text"]


@contextmanager
def atomic_path(path: str | Path, *, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Args:
        size: bytes about to be written, when known: checked against the free space first.

    Examples:
        >>> with atomic_path("model.safetensors") as tmp:
        ...     save_file(tensors, tmp)
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise StorageError(f"Cannot write '{path}': folder '{parent}' does not exist.")
    if size is not None:
        _check_space(path, size)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise _storage_error(path, e, size) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp's 0600 would hide a shared run from its group
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        raise _storage_error(path, e, size) from None
    except RuntimeError:
        # torch.save reports a failed write as a RuntimeError; the disk is the usual cause.
        if _free_bytes(parent) < (size or 1) * 2:
            raise StorageError(_no_space_message(path, size)) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, after checking that the disk has room for it."""
    with atomic_path(path, size=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def save_torch(obj, path: str | Path) -> Path:
    """``torch.save``, atomically: serialised in memory first, so that its size is known before writing."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue())


def save_safetensors(
    state_dict: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save tensors as safetensors, atomically. Shared or strided tensors are copied first."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    return write_bytes(path, save_bytes(tensors, metadata={k: str(v) for k, v in (metadata or {}).items()}))


def write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _free_bytes(folder: Path) -> int:
    try:
        return free_bytes(folder)
    except OSError:
        return 1 << 62  # unknown: the write itself reports a full disk


def _check_space(path: Path, size: int) -> None:
    # Root may write into the reserved blocks; everyone else sees f_bavail. Keep a page of slack.
    if _free_bytes(path.parent if str(path.parent) else Path(".")) < size + 4096:
        raise StorageError(_no_space_message(path, size))


def _no_space_message(path: Path, size: int | None) -> str:
    folder = path.parent if str(path.parent) else Path(".")
    need = f"{human_bytes(size)} " if size else ""
    return (
        f"Not enough disk space to write '{path}': it needs {need}and '{folder}' has "
        f"{human_bytes(_free_bytes(folder))} free. Free some space or choose another output folder."
    )


def _storage_error(path: Path, error: OSError, size: int | None) -> StorageError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(_no_space_message(path, size))
    return StorageError(f"Cannot write '{path}': {error.strerror or error}. Choose a writable location.")

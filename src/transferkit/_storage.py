"""Tensors kept in memory when they fit, otherwise in a memory-mapped file with the same interface.

Used for decoded images and for cached activations. The file's blocks are reserved before it is
mapped, so a full disk is reported as an error instead of crashing the process on a later write.
"""

from __future__ import annotations

import errno
import math
import os
import tempfile
from pathlib import Path

import torch

from .errors import StorageError

__all__ = ["free_bytes", "memory_budget", "mapped_tensor", "scratch_tensor"]


def physical_memory() -> int | None:
    """Bytes of this machine's memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget() -> int:
    """Bytes a run keeps in memory for one dataset-sized tensor: a quarter of physical memory."""
    total = physical_memory()
    return total // 4 if total else 2 * 2**30


def free_bytes(folder: Path) -> int:
    """Bytes a process without root's reserve may still write to ``folder``'s filesystem (OSError if unknown)."""
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def _reserve(fd: int, nbytes: int, file: Path) -> None:
    """Allocate the file's blocks now; where the filesystem cannot, check the free space instead."""
    nbytes = max(nbytes, 1)
    no_space = False
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, 0, nbytes)
            return
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            no_space = e.errno == errno.ENOSPC
    free = free_bytes(file.parent)
    if no_space or free < nbytes:
        raise StorageError(
            f"Not enough disk space in '{file.parent}' for {nbytes / 2**30:.1f} GiB "
            f"({free / 2**30:.1f} GiB free); free some space or write the run elsewhere."
        )
    os.ftruncate(fd, nbytes)


def mapped_tensor(shape: tuple[int, ...], dtype: torch.dtype, file: Path) -> torch.Tensor:
    """A tensor backed by ``file`` (created with its blocks reserved), shared: writes reach the file."""
    file.parent.mkdir(parents=True, exist_ok=True)
    numel = math.prod(shape)
    nbytes = numel * dtype.itemsize
    fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _reserve(fd, nbytes, file)
    except BaseException:
        os.close(fd)
        file.unlink(missing_ok=True)
        raise
    os.close(fd)
    return torch.from_file(str(file), shared=True, size=numel, dtype=dtype).view(shape)


def scratch_tensor(shape: tuple[int, ...], dtype: torch.dtype, folder: Path) -> torch.Tensor:
    """A memory-mapped tensor in ``folder`` whose file is removed at once: the space is freed with the tensor."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, suffix=".bin")
    os.close(fd)
    try:
        return mapped_tensor(shape, dtype, Path(name))
    finally:
        Path(name).unlink(missing_ok=True)

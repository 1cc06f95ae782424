"""Attributes of a package imported on first use, so that importing it costs nothing until then.

The command line imports ``transferkit`` to answer ``--help``; torch, timm and torchvision load
only when a command runs (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

__all__ = ["attach"]


def attach(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` serving ``{name: relative module}``."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        _globals_of(package)[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*_globals_of(package), *exports})

    return __getattr__, __dir__


def _globals_of(package: str) -> dict:
    return vars(sys.modules[package])

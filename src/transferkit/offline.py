"""The offline switch: whether the hubs' clients (huggingface_hub, datasets, transformers) may download.

``HF_HUB_OFFLINE`` holds it, as huggingface_hub reads it, so that a library called underneath agrees;
``--offline`` and the Python ``offline=`` arguments set it for one call.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

__all__ = ["offline", "offline_mode"]


@contextmanager
def offline_mode(value: bool | None):
    """Within the block, download nothing (True) or allow downloads (False), whatever ``HF_HUB_OFFLINE`` says;
    None leaves it as it is. The Python face of ``--offline``."""
    if value is None:
        yield
        return
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1" if value else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


def offline() -> bool:
    """Whether huggingface_hub is to use its cache only (``HF_HUB_OFFLINE``, which ``--offline`` sets)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")

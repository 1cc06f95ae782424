"""What ``Learner.predict`` takes, made one batch; and what it gives, :class:`Predictions`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .._table import Table
from ..data.preprocess import Preprocessing, to_uint8_tensor
from ..data.sources import files_under
from ..errors import DataError

__all__ = ["Batch", "Predictions", "as_batch"]


@dataclass
class Batch:
    """Images to predict for: files (``paths``), or tensors with a name each."""

    paths: list[str] | None = None
    tensors: list[torch.Tensor] | None = None
    names: list[str] | None = None
    normalised: bool = False  # float tensors: the model's input as it is


def as_batch(images, pre: Preprocessing, *, transform: Callable | None, given: bool) -> Batch:
    """``images`` (a path, a folder, a list, a PIL image, a tensor or an array) as one :class:`Batch`.

    ``given``: the run trained on tensors as a Dataset gave them; an image then needs ``transform``.
    """
    if isinstance(images, str | Path):
        path = Path(images)
        if path.is_dir():
            files = files_under(path)
            if not files:
                raise DataError(f"images: the folder '{path}' holds no files.", argument="images")
            images = [str(p) for p in files]
        else:
            images = [str(path)]
    if isinstance(images, list | tuple):
        if not images:
            raise DataError("images: the list is empty.", argument="images")
        if all(isinstance(i, str | Path) for i in images):
            if given:
                return _from_images([Image.open(p) for p in images], [str(p) for p in images], pre, transform, given)
            return Batch(paths=[str(p) for p in images])
        batches = [as_batch(i, pre, transform=transform, given=given) for i in images]
        if len({b.normalised for b in batches}) > 1 or any(b.paths for b in batches):
            raise DataError(
                "images: a list mixes float tensors with images or paths; give one kind.", argument="images"
            )
        tensors = [t for b in batches for t in b.tensors]
        names = [f"image {k}" for k in range(len(tensors))]
        return Batch(tensors=tensors, names=names, normalised=batches[0].normalised)
    if isinstance(images, Image.Image):
        return _from_images([images], ["image 0"], pre, transform, given)
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            if images.dtype.kind == "f" and images.ndim in (3, 4):
                return as_batch(torch.from_numpy(np.ascontiguousarray(images)), pre, transform=transform, given=given)
            raise DataError(
                f"images: an array must be uint8 (H, W) or (H, W, C) pixels; got {images.dtype} {images.shape}.",
                argument="images",
            )
        arrays = list(images) if images.ndim == 4 else [images]
        return _from_images([Image.fromarray(a) for a in arrays], None, pre, transform, given)
    if isinstance(images, torch.Tensor):
        return _from_tensor(images, pre, transform, given)
    raise DataError(
        f"images: expected a path, a folder, a PIL image, a tensor, an array or a list of them; got "
        f"{type(images).__name__}.",
        argument="images",
    )


def _from_tensor(tensor: torch.Tensor, pre: Preprocessing, transform, given: bool) -> Batch:
    if tensor.ndim not in (3, 4):
        raise DataError(
            f"images: a tensor must be (C, H, W) or (N, C, H, W); got shape {tuple(tensor.shape)}.", argument="images"
        )
    batch = tensor[None] if tensor.ndim == 3 else tensor
    names = [f"image {k}" for k in range(len(batch))]
    if tensor.is_floating_point():
        if given and tuple(batch.shape[1:]) != tuple(pre.input_size):
            raise DataError(
                f"images: the run trained on tensors of shape {tuple(pre.input_size)}; these are "
                f"{tuple(batch.shape[1:])}.",
                argument="images",
            )
        return Batch(tensors=list(batch), names=names, normalised=True)
    if tensor.dtype != torch.uint8:
        raise DataError(
            f"images: a tensor is float (the model's input) or uint8 (pixels); got {tensor.dtype}.", argument="images"
        )
    if given:
        from torchvision.transforms.functional import to_pil_image

        return _from_images([to_pil_image(t) for t in batch], names, pre, transform, given)
    return Batch(tensors=[to_uint8_tensor(t, pre) for t in batch], names=names)


def _from_images(images: list[Image.Image], names, pre: Preprocessing, transform, given: bool) -> Batch:
    names = names or [f"image {k}" for k in range(len(images))]
    if not given:
        mode = pre.image_mode
        return Batch(tensors=[to_uint8_tensor(i.convert(mode), pre) for i in images], names=names)
    if transform is None:
        raise DataError(
            "transform: this run trained on tensors your Dataset's transforms made, and an image needs them too: "
            "give predict(..., transform=...) or the tensors themselves.",
            argument="transform",
        )
    tensors = [transform(i) for i in images]
    if not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in tensors):
        raise DataError("transform: it must make a float tensor (C, H, W) of an image.", argument="transform")
    return Batch(tensors=tensors, names=names, normalised=True)


class Predictions(Table):
    """What ``predict`` gives, one row per image: its top classes and probabilities, the labels that apply, or a
    number and its interval. ``.labels`` gives the top class (labels, value) of each image."""

    def __init__(self, rows=(), *, task: str = "classification", probabilities: str | None = None):
        rows = list(rows)
        super().__init__(rows, title=f"{len(rows)} predictions")
        self.task, self.probabilities = task, probabilities

    def display_rows(self) -> list[dict]:
        return [_flat(row, self.task) for row in self]

    @property
    def labels(self) -> list:
        """The answer per image: the top class, the labels that apply, or the number (None where unreadable)."""
        return [row.get("label", row.get("labels", row.get("value"))) for row in self.display_rows()]


def _flat(row: dict, task: str) -> dict:
    """One table row of a prediction: the image, then the answer and how sure."""
    flat = {"image": row["image"]}
    if "error" in row:
        return {**flat, "error": row["error"]}
    if task == "classification":
        top = row["top"]
        flat.update(label=top[0]["label"], probability=top[0]["probability"])
        if len(top) > 1:
            flat["next"] = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in top[1:3])
    elif task == "multi-label":
        flat["labels"] = [t["label"] for t in row["labels"]]
    else:
        flat["value"] = row["value"]
        if "interval" in row:
            flat["interval"] = row["interval"]
    return flat

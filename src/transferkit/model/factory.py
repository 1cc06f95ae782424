"""Build a model from a MODEL string.

MODEL is one of:

* a timm model name: ``resnet34``, ``efficientnet_lite0``;
* ``torchvision:NAME``: ``torchvision:alexnet``;
* a factory in the user's own file: ``path/to/model.py:resnet34``;
* a factory in an importable module: ``package.module:factory``.

A run trained from Python on a module object records ``object:package.module.Class``
(:func:`object_spec`): it names the module's class and builds nothing; the run's weights go back
into a module of that architecture the user gives.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import timm
import torch.nn as nn
import torchvision

from .._text import one_line
from ..data.preprocess import torchvision_data_config
from ..errors import ModelSpecError
from .surgery import replace_head, set_module

__all__ = ["code_origin", "create_model", "is_code_spec", "is_object_spec", "object_spec"]

OBJECT_PREFIX = "object:"


def is_code_spec(spec: str) -> bool:
    """True when building ``spec`` imports the user's code (``file.py:factory`` or ``module:factory``)."""
    return ":" in spec and not spec.startswith(("torchvision:", "transformers:", "timm:", OBJECT_PREFIX))


def object_spec(obj: object) -> str:
    """The MODEL (or DATA) a run records for an object given from Python: ``object:`` and its class's path.

    Examples:
        >>> object_spec(torchvision.models.alexnet())
        'object:torchvision.models.alexnet.AlexNet'
    """
    cls = type(obj)
    return f"{OBJECT_PREFIX}{cls.__module__}.{cls.__qualname__}"


def is_object_spec(spec: str | None) -> bool:
    """True for what :func:`object_spec` records: an object given from Python, which no string rebuilds."""
    return isinstance(spec, str) and spec.startswith(OBJECT_PREFIX)


def code_origin(spec: str) -> dict | None:
    """The file whose code builds ``spec``, and its SHA-256, without importing it; None for timm and torchvision.

    Examples:
        >>> code_origin("nets/tiny.py:tiny")
        {'spec': 'nets/tiny.py:tiny', 'file': '/home/me/nets/tiny.py', 'sha256': '3f1c...'}
    """
    if not is_code_spec(spec):
        return None
    location = spec.rpartition(":")[0]
    if _is_file_location(location):
        path = Path(location)
    else:
        path = _module_file(location)
    if path is None or not path.is_file():
        return {"spec": spec, "file": str(path) if path else location, "sha256": None}
    return {"spec": spec, "file": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _is_file_location(location: str) -> bool:
    return location.endswith(".py") or "/" in location or "\\" in location


def _module_file(name: str) -> Path | None:
    """Where ``name`` would be imported from, found on sys.path without running any package's code."""
    parts = name.split(".")
    for root in sys.path:
        base = Path(root or ".").joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def create_model(
    spec: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    image_size: int | None = None,
    drop_path: float = 0.0,
) -> nn.Module:
    """Build the model that ``spec`` names, with random weights (:func:`transferkit.create_model` loads pretrained
    ones too).

    Args:
        spec: the MODEL string (see the module docstring).
        num_classes: give the model a head for this many classes. Factories that take a
            ``num_classes`` argument receive it; for the others the head is replaced.
        in_chans: input channels (1 for grayscale). Factories that take ``in_chans`` receive
            it; for the others the first convolution is rebuilt. Loading RGB weights then
            adapts that convolution the way timm's ``adapt_input_conv`` does.
        image_size: the side in pixels of the images the model will see. Architectures that fix
            their size at construction (ViT position embeddings, Swin windows, LeViT biases) are
            built for it with timm's ``img_size``; a size the network cannot run at is refused,
            naming sizes that work (:func:`~transferkit.model.sizes.check_input_size`).
        drop_path: stochastic depth, timm's ``drop_path_rate``: the rate of the last block, rising from 0
            at the first. Only timm models take it; one that builds no ``DropPath`` with it is refused.
    Examples:
        >>> model = create_model("torchvision:alexnet", num_classes=10)
        >>> model.classifier[6].out_features
        10
        >>> create_model("vit_tiny_patch16_224", num_classes=10, image_size=64).pos_embed.shape
        torch.Size([1, 17, 192])
    """
    if num_classes is not None and num_classes < 1:
        raise ModelSpecError(f"num_classes must be at least 1, got {num_classes}.", argument="num_classes")
    if in_chans is not None and in_chans < 1:
        raise ModelSpecError(f"in_chans must be at least 1, got {in_chans}.", argument="in_chans")
    if image_size is not None and image_size < 8:
        raise ModelSpecError(f"image_size must be at least 8, got {image_size}.", argument="image_size")
    if not 0 <= drop_path < 1:
        raise ModelSpecError(f"drop_path must be at least 0 and under 1, got {drop_path}.", argument="drop_path")
    from .hf_transformers import build, is_transformers_model

    spec = spec.removeprefix("timm:")  # a timm name, said as torchvision:NAME is
    if drop_path and (":" in spec or is_transformers_model(spec)):  # torchvision:NAME, a factory, a transformers repo
        raise ModelSpecError(
            f"drop_path (stochastic depth) is given to timm models as their drop_path_rate; '{spec}' is not one: "
            "leave drop_path at 0.",
            argument="drop_path",
        )
    if is_object_spec(spec):
        raise ModelSpecError(
            f"MODEL '{spec}' is a module that was given from Python; no name rebuilds it: give a module of that "
            "architecture (load_learner(run, model=...)).",
            argument="model",
        )
    if is_transformers_model(spec):
        model = build(spec, num_classes=num_classes, image_size=image_size)
    else:
        model = _build_named(spec, num_classes, in_chans, image_size, drop_path)
    return model


def _build_named(spec: str, num_classes, in_chans, image_size, drop_path: float) -> nn.Module:
    """A timm, torchvision or user-factory model at random weights (see :func:`create_model`)."""
    if spec.startswith("torchvision:"):
        factory = _torchvision_factory(spec.split(":", 1)[1])
    elif ":" in spec:
        factory = _user_factory(spec)
    else:
        factory = _timm_factory(spec, drop_path)
    if image_size is not None:
        from .sizes import check_batch_memory

        check_batch_memory(image_size, batch=1, channels=in_chans or 3)  # the dry run's one image
    model = _call_factory(factory, spec, num_classes, in_chans, image_size)
    if drop_path and not any(getattr(m, "drop_prob", 0) for m in model.modules()):
        raise _no_drop_path(spec)
    if image_size is not None:
        from ..data.preprocess import input_size_of
        from .sizes import check_input_size

        channels = in_chans or input_size_of(model)[0]
        model.transferkit_input_size = (channels, image_size, image_size)
        check_input_size(
            model,
            spec,
            image_size,
            build=lambda size: _call_factory(factory, spec, num_classes, in_chans, size),
            channels=channels,
        )
    return model


def _no_drop_path(spec: str) -> ModelSpecError:
    return ModelSpecError(
        f"'{spec}' has no stochastic depth (timm builds it with no DropPath): leave drop_path at 0.",
        argument="drop_path",
    )


def _timm_factory(name: str, drop_path: float = 0.0) -> Callable[..., nn.Module]:
    if not timm.is_model(name):
        known = timm.list_models()
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelSpecError(
            f"Unknown model '{name}'.{hint} Use a timm name (resnet34), torchvision:NAME, or path/to/model.py:factory."
        )

    default_size = getattr(timm.get_pretrained_cfg(name), "input_size", None)

    def factory(img_size: int | None = None, **kwargs) -> nn.Module:
        # pretrained=False: weights come from load_pretrained, never from a download.
        if drop_path:
            kwargs["drop_path_rate"] = drop_path
        try:
            return build(img_size, **kwargs)
        except TypeError as e:
            if "drop_path_rate" in str(e):
                raise _no_drop_path(name) from None
            raise

    def build(img_size: int | None, **kwargs) -> nn.Module:
        if img_size is None or (default_size is not None and img_size == default_size[-1]):
            return timm.create_model(name, pretrained=False, **kwargs)
        try:
            return timm.create_model(name, pretrained=False, img_size=img_size, **kwargs)
        except TypeError as e:
            if "img_size" not in str(e):
                raise
            # A network that does not fix its size at construction (most CNNs) takes any size as it is.
            return timm.create_model(name, pretrained=False, **kwargs)

    factory.__signature__ = inspect.Signature(
        [
            inspect.Parameter("num_classes", inspect.Parameter.KEYWORD_ONLY, default=1000),
            inspect.Parameter("in_chans", inspect.Parameter.KEYWORD_ONLY, default=3),
            inspect.Parameter("img_size", inspect.Parameter.KEYWORD_ONLY, default=None),
        ]
    )
    return factory


def _torchvision_factory(name: str) -> Callable[..., nn.Module]:
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join('torchvision:' + c for c in close)}?" if close else ""
        raise ModelSpecError(f"Unknown torchvision classification model '{name}'.{hint}")

    def factory(**kwargs) -> nn.Module:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
        # the preprocessing of the architecture's default weights: its own, as a timm model's pretrained_cfg
        default = torchvision.models.get_model_weights(name).DEFAULT
        model.transferkit_data_config = torchvision_data_config(default.transforms())
        model.transferkit_input_size = model.transferkit_data_config["input_size"]
        model.transferkit_torchvision = name  # for torchvision:ENUM weights
        return model

    factory.__signature__ = inspect.Signature(
        [inspect.Parameter("num_classes", inspect.Parameter.KEYWORD_ONLY, default=1000)]
    )
    return factory


def _user_factory(spec: str) -> Callable[..., nn.Module]:
    location, _, attr = spec.rpartition(":")
    if not location or not attr:
        raise ModelSpecError(f"Model '{spec}' should look like path/to/model.py:factory or package.module:factory.")
    if _is_file_location(location):
        path = Path(location)
        if not path.is_file():
            raise ModelSpecError(f"Model file '{path}' does not exist. Check the path before ':{attr}'.")
        module_name = f"transferkit_user_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except SystemExit as e:
            raise ModelSpecError(
                f"Model file '{path}' called exit({e.code}) while being imported; remove that call."
            ) from None
        except Exception as e:
            raise ModelSpecError(f"Importing model file '{path}' failed: {_one_line(e)}") from None
    else:
        try:
            module = importlib.import_module(location)
        except SystemExit as e:
            raise ModelSpecError(f"Module '{location}' called exit({e.code}) while being imported.") from None
        except ImportError as e:
            raise ModelSpecError(f"Cannot import module '{location}' for model '{spec}': {e}") from e
        except Exception as e:
            raise ModelSpecError(f"Importing module '{location}' for model '{spec}' failed: {_one_line(e)}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        names = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
        close = difflib.get_close_matches(attr, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelSpecError(f"'{location}' has no callable '{attr}'.{hint}")
    return factory


def _call_factory(
    factory: Callable[..., nn.Module],
    spec: str,
    num_classes: int | None,
    in_chans: int | None,
    image_size: int | None = None,
) -> nn.Module:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {}
    if num_classes is not None and ("num_classes" in params or var_kw):
        kwargs["num_classes"] = num_classes
    if in_chans is not None and "in_chans" in params:
        kwargs["in_chans"] = in_chans
    if image_size is not None and "img_size" in params:
        kwargs["img_size"] = image_size
    try:
        model = factory(**kwargs)
    except ModelSpecError:
        raise
    except SystemExit as e:
        raise ModelSpecError(f"The factory of '{spec}' called exit({e.code}) instead of returning a model.") from None
    except Exception as e:
        raise ModelSpecError(f"The factory of '{spec}' failed: {_one_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"'{spec}' returned {type(model).__name__}, not a torch.nn.Module.")
    if in_chans is not None and "in_chans" not in kwargs:
        _set_input_channels(model, in_chans)
    if num_classes is not None and "num_classes" not in kwargs:
        replace_head(model, num_classes)
    return model


def _one_line(error: BaseException) -> str:
    text = one_line(error, 300)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _set_input_channels(model: nn.Module, in_chans: int) -> None:
    path, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None:
        raise ModelSpecError("in_chans needs a model whose first layer is a Conv2d.", argument="in_chans")
    if conv.in_channels == in_chans:
        return
    if conv.groups != 1:
        raise ModelSpecError(
            f"The first convolution '{path}' is grouped; in_chans cannot rebuild it.", argument="in_chans"
        )
    new = nn.Conv2d(
        in_chans,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    set_module(model, path, new, check=False)

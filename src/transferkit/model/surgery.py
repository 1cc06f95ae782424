"""Find, replace and validate layers by their dotted path (``fc``, ``classifier.6``, ``layer2.0.conv1``)."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch.nn as nn

from .._text import first_line
from ..data.preprocess import input_size_of
from ..errors import LayerExprError, SurgeryError
from ._trace import CONV_TYPES, NORM_TYPES, describe_expectation, trace
from .optimizer_watch import warn_stale_optimizers

__all__ = [
    "Validation",
    "apply_assignment",
    "check_layers",
    "find_head",
    "get_module",
    "put_module",
    "replace_head",
    "set_module",
    "swapped",
    "tie_distillation_head",
    "validate",
]

# Where models that carry no timm config keep their classifier. A container found here is
# searched for its last Linear or Conv2d (AlexNet's classifier -> classifier.6).
_HEAD_NAMES = ("fc", "classifier", "head", "heads", "last_linear", "logits")


@dataclass
class Validation:
    """The outcome of a dry run: ``ok``, the output shape, or the error and the layer it names."""

    ok: bool
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None = None
    layer: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise SurgeryError(self.error, layer=self.layer)


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The module at a dotted path; ``""`` is the model itself.

    Examples:
        >>> get_module(torchvision.models.alexnet(), "classifier.6")
        Linear(in_features=4096, out_features=1000, bias=True)
    """
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(path, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else " Run 'transferkit inspect MODEL' to list the paths."
        raise SurgeryError(f"No layer at path '{path}' in {type(model).__name__}.{hint}", layer=path) from None


def put_module(model: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at ``path`` as it is (no dry run, no change to what trains) and return the one it replaces:
    the step every swap takes, :func:`set_module`'s and the frozen-layer cache's temporary ones."""
    parent_path, _, name = path.rpartition(".")
    parent = get_module(model, parent_path)
    old = get_module(model, path)
    setattr(parent, name, module)
    return old


@contextmanager
def swapped(model: nn.Module, replacements: dict[str, nn.Module]) -> Iterator[nn.Module]:
    """Within the block each path of ``replacements`` holds its module; the originals are put back after,
    also on an error."""
    originals = []
    try:
        for path, module in replacements.items():
            originals.append((path, put_module(model, path, module)))
        yield model
    finally:
        for path, module in reversed(originals):
            put_module(model, path, module)


def set_module(
    model: nn.Module,
    path: str,
    module: nn.Module | str,
    *,
    check: bool = True,
    input_size: tuple[int, ...] | None = None,
    trainable: bool | None = None,
) -> nn.Module:
    """Put ``module`` at ``path`` and return the module it replaced.

    Args:
        module: a module, or its text as the command line takes it (``"Linear(4096, 5)"``).
        check: a dry run checks the whole network afterwards; if it no longer works, the old
            module is put back and :class:`SurgeryError` names the first layer whose input does not fit.
        trainable: whether the new module's parameters train. Default: as the layer it replaces
            (a layer put where every parameter was frozen is frozen too, and a warning says so).

    A warning also names the parameters an optimizer made by ``create_optimizer`` for this model
    no longer holds: make it again after the surgery.

    Examples:
        >>> set_module(model, "classifier.6", "Linear(4096, 10)")
    """
    if not path:
        raise SurgeryError("An empty path names the whole model; give the path of a layer, such as 'fc'.")
    if isinstance(module, str):
        from .layer_expr import parse_layer

        module = parse_layer(module)
    if not isinstance(module, nn.Module):
        raise SurgeryError(f"module must be an nn.Module or its text (Linear(4096, 10)); got {type(module).__name__}.")
    old = get_module(model, path)
    old_param = next(old.parameters(), None)
    if old_param is not None:
        module = module.to(device=old_param.device)
    frozen = _frozen_slot(old, get_module(model, path.rpartition(".")[0]))
    put_module(model, path, module)
    if check:
        result = validate(model, input_size=input_size, changed=[path])
        if not result.ok:
            put_module(model, path, old)
            result.raise_if_failed()
    _set_trainable(module, path, frozen if trainable is None else not trainable, told=trainable is not None)
    warn_stale_optimizers(model, f"set_module('{path}')")
    return old


def _frozen_slot(old: nn.Module, parent: nn.Module) -> bool:
    """True when every parameter of the layer being replaced is frozen (for one without any: of its parent)."""
    params = list(old.parameters()) or list(parent.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def _set_trainable(module: nn.Module, path: str, frozen: bool, *, told: bool) -> None:
    params = list(module.parameters())
    for param in params:
        param.requires_grad_(not frozen)
    if frozen and params and not told:
        warnings.warn(
            f"'{path}' is frozen, as the layer it replaces was: pass trainable=True to train it.", stacklevel=3
        )


# Attribute values that --set may replace: plain settings such as out_features, p, inplace.
_SETTABLE = (bool, int, float, str, tuple, type(None))


def apply_assignment(model: nn.Module, assignment: str) -> str:
    """Apply one ``PATH=EXPR``: a layer at a module path, or a literal at a layer's public setting; returns PATH.

    Examples:
        >>> apply_assignment(model, "classifier.6=Linear(4096, 10)")
        'classifier.6'
        >>> apply_assignment(model, "classifier.5.p=0.2")
        'classifier.5.p'
    """
    from .layer_expr import parse_layer, parse_value

    path, sep, expr = assignment.partition("=")
    path, expr = path.strip(), expr.strip()
    if not sep or not path or not expr:
        raise LayerExprError(f"'{assignment}' is not PATH=EXPR; write e.g. --set fc=Linear(512,10).")
    parent_path, _, attr = path.rpartition(".")
    try:
        parent = model.get_submodule(parent_path)
    except AttributeError:
        get_module(model, path)  # raises, naming the whole path and the closest ones
    if attr in dict(parent.named_children()) or attr.isdigit():
        set_module(model, path, parse_layer(expr), check=False)
        return path
    if not attr.isidentifier() or attr.startswith("_"):
        raise LayerExprError(
            f"'{path}' is not a layer or a public setting of one; names starting with '_' cannot be set."
        )
    current = getattr(parent, attr, None)
    if not hasattr(parent, attr) or not isinstance(current, _SETTABLE) or attr == "training":
        get_module(model, path)  # raises, naming the closest layer paths
    value = parse_value(expr)
    kinds = (int, float) if isinstance(current, int | float) and not isinstance(current, bool) else (type(current),)
    if current is not None and (not isinstance(value, kinds) or isinstance(value, bool) != isinstance(current, bool)):
        raise LayerExprError(
            f"'{path}' is {type(current).__name__} ({current!r}), and {value!r} is {type(value).__name__}."
        )
    # Setting out_features and the like is allowed so that its effect is shown: the weight keeps
    # its shape and validation reports the layer as inconsistent.
    setattr(parent, attr, value)
    return path


def find_head(model: nn.Module) -> str:
    """The path of the final classification layer.

    timm models say where it is (``pretrained_cfg['classifier']``); otherwise the usual names are
    tried (``fc`` in ResNet; ``classifier`` in AlexNet, VGG and MobileNet, whose last Linear is
    taken, giving ``classifier.6`` for AlexNet), then the last Linear layer of the model.
    """
    cfg = getattr(model, "pretrained_cfg", None)
    candidates: list[str] = []
    if isinstance(cfg, dict) and cfg.get("classifier"):
        classifier = cfg["classifier"]
        candidates.append(classifier[0] if isinstance(classifier, (tuple, list)) else classifier)
    candidates.extend(_HEAD_NAMES)
    for path in candidates:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            return path
        inner = _last_layer(module, (nn.Linear, nn.Conv2d))
        if inner is not None:
            return f"{path}.{inner}" if inner else path
    last = _last_layer(model, (nn.Linear,))
    if last:
        return last
    raise SurgeryError(
        f"Cannot find a classification layer in {type(model).__name__}: it has no Linear layer "
        "and none of the usual head names. Give the head's path explicitly."
    )


def _last_layer(module: nn.Module, types: tuple[type, ...]) -> str | None:
    found = None
    for name, sub in module.named_modules():
        if isinstance(sub, types):
            found = name
    return found


def tie_distillation_head(model: nn.Module) -> bool:
    """Make a distilled model's distillation head its class head (one module in both places); True if it had one.

    LeViT, EfficientFormerV2 and the distilled DeiTs average a class head and a distillation
    head at inference. For new classes both are new, and the distillation head would stay a
    frozen random half of every prediction where only ``head`` trains. Tied, the model computes
    ``head`` alone, and freezing, caching, adapters and export all see one classifier.
    """
    head, dist = getattr(model, "head", None), getattr(model, "head_dist", None)
    if not isinstance(head, nn.Module) or not isinstance(dist, nn.Module) or dist is head:
        return False
    model.head_dist = head
    return True


def replace_head(
    model: nn.Module,
    num_classes: int,
    *,
    path: str | None = None,
    check: bool = True,
    trainable: bool = True,
) -> str:
    """Give the model a new, randomly initialised head for ``num_classes`` classes; returns its path.

    timm models use their own ``reset_classifier``; for other models the layer at ``path`` (found
    with :func:`find_head` by default) is rebuilt with the same input size. A dry run then checks
    that the model gives ``(N, num_classes)`` logits.

    The new head trains (``trainable=False`` freezes it), also where the old one was frozen: freezing
    a whole network and then replacing its head is how a linear probe is set up. A warning names
    what an optimizer made by ``create_optimizer`` for this model misses: make it again.

    Examples:
        >>> replace_head(torchvision.models.resnet34(), 10)
        'fc'
    """
    if num_classes < 1:
        raise SurgeryError(f"num_classes must be at least 1, got {num_classes}.")
    head_path = path or find_head(model)
    old = get_module(model, head_path)
    if path is None and hasattr(model, "reset_classifier") and hasattr(model, "pretrained_cfg"):
        model.reset_classifier(num_classes)
        new = get_module(model, head_path)
        param = next(old.parameters(), None)
        if param is not None:
            new.to(device=param.device, dtype=param.dtype)
    else:
        with warnings.catch_warnings():  # said once, below, for the head as it is then
            warnings.simplefilter("ignore")
            set_module(model, head_path, _new_head(old, num_classes, head_path), check=False, trainable=trainable)
    _set_trainable(get_module(model, head_path), head_path, not trainable, told=True)
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes
    if check:
        validate(model, num_classes=num_classes, changed=[head_path]).raise_if_failed()
    warn_stale_optimizers(model, f"replace_head ('{head_path}')")
    return head_path


def _new_head(old: nn.Module, num_classes: int, path: str) -> nn.Module:
    param = next(old.parameters(), None)
    factory = {"device": param.device, "dtype": param.dtype} if param is not None else {}
    if isinstance(old, nn.Linear):
        return nn.Linear(old.in_features, num_classes, bias=old.bias is not None, **factory)
    if isinstance(old, nn.Conv2d):
        return nn.Conv2d(
            old.in_channels,
            num_classes,
            old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            bias=old.bias is not None,
            **factory,
        )
    raise SurgeryError(
        f"The head at '{path}' is a {type(old).__name__}; only Linear and Conv2d heads can be rebuilt. "
        f"Replace it explicitly, for example with set_module(model, '{path}', Linear(IN, N))."
    )


def check_layers(model: nn.Module) -> list[tuple[str, str]]:
    """Layers whose attributes disagree with their weights, as ``(path, explanation)``.

    ``model.classifier[6].out_features = 10`` changes an attribute and leaves a (1000, 4096)
    weight: such a layer still computes 1000 outputs and must not be trained as if it had 10.
    """
    problems = []
    for name, module in model.named_modules():
        expected = _expected_weight_shape(module)
        if expected is None or module.weight is None:
            continue
        actual = tuple(module.weight.shape)
        if actual != expected:
            problems.append((name, _inconsistency(name, module, expected, actual)))
    return problems


def _expected_weight_shape(module: nn.Module) -> tuple[int, ...] | None:
    if isinstance(module, nn.Linear):
        return (module.out_features, module.in_features)
    if isinstance(module, CONV_TYPES):
        if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            return (module.in_channels, module.out_channels // module.groups, *module.kernel_size)
        return (module.out_channels, module.in_channels // module.groups, *module.kernel_size)
    if isinstance(module, NORM_TYPES) and module.affine:
        return (module.num_features,)
    return None


def _inconsistency(name: str, module: nn.Module, expected: tuple, actual: tuple) -> str:
    kind = type(module).__name__
    if isinstance(module, nn.Linear):
        says = f"in_features={module.in_features}, out_features={module.out_features}"
        fix = f"Linear({actual[1]}, {module.out_features})" if actual[1:] else "a new layer"
    elif isinstance(module, NORM_TYPES):
        says = f"num_features={module.num_features}"
        fix = f"{kind}({module.num_features})"
    else:
        says = f"in_channels={module.in_channels}, out_channels={module.out_channels}"
        fix = "a new layer"
    return (
        f"Layer '{name}' ({kind}) is inconsistent: its attributes say {says} but its weight has "
        f"shape {actual}, so it still computes the old shapes. Changing an attribute does not "
        f"resize the weight; replace the layer instead, e.g. {name}={fix}."
    )


def validate(
    model: nn.Module,
    *,
    input_size: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    changed: list[str] | tuple[str, ...] = (),
) -> Validation:
    """Check a model after surgery: consistent layers, a dry-run forward pass, the output shape.

    Args:
        input_size: (C, H, W); by default the size the model was built for.
        num_classes: when given, the output must be ``(N, num_classes)``.
        changed: paths of layers that were just changed, named in the error as the likely cause.

    Examples:
        >>> net = torchvision.models.resnet34()
        >>> net.layer2[0].conv1 = nn.Conv2d(64, 256, 3)
        >>> validate(net).error
        "Layer 'layer2.0.bn1' (BatchNorm2d) cannot take its input (1, 256, 54, 54): ..."
    """
    size = tuple(input_size) if input_size is not None else input_size_of(model)
    shape = (1, *size)
    problems = check_layers(model)
    if problems:
        layer, message = problems[0]
        return Validation(False, shape, layer=layer, error=message)
    output, records, failure = trace(model, size)
    if failure is not None:
        return Validation(False, shape, layer=failure.layer, error=_failure_message(failure, records, changed))
    out_shape = tuple(output.shape) if hasattr(output, "shape") else None
    if num_classes is not None and (out_shape is None or len(out_shape) != 2 or out_shape[1] != num_classes):
        head = find_head(model)
        error = f"The model outputs {out_shape}, not (N, {num_classes}) logits; check the head at '{head}'."
        return Validation(False, shape, output_shape=out_shape, layer=head, error=error)
    return Validation(True, shape, output_shape=out_shape)


def _failure_message(failure, records, changed) -> str:
    kind = type(failure.module).__name__
    where = f"'{failure.layer}' ({kind})" if failure.layer else f"the model ({kind})"
    given = ", ".join(str(s) for s in failure.input_shapes) or "no tensor"
    expects = describe_expectation(failure.module)
    reason = first_line(failure.error, None)
    message = f"Layer {where} cannot take its input {given}"
    message += f": it {expects}." if expects else f": {reason}."
    by_name = {r.name: r for r in records}
    causes = [p for p in changed if p != failure.layer]
    if causes:
        cause = causes[0]
        produced = by_name.get(cause)
        out = f", which outputs {produced.output_shapes[0]}" if produced and produced.output_shapes else ""
        message += f" The changed layer '{cause}'{out}{',' if out else ''} is the likely cause."
    elif failure.last_finished is not None and failure.last_finished.name and failure.last_finished.output_shapes:
        prev = failure.last_finished
        message += f" The previous layer, '{prev.name}' ({prev.type}), output {prev.output_shapes[0]}."
    return message

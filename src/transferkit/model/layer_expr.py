"""Build a torch.nn layer from text such as ``Linear(4096, 10)``, without evaluating code.

The text is parsed with :mod:`ast`; only calls of torch.nn module classes with literal
arguments (numbers, strings, booleans, None, tuples, lists) or nested layers are accepted:
``Sequential(Dropout(0.2), Linear(1280, 10))``.
"""

from __future__ import annotations

import ast
import difflib

import torch
import torch.nn as nn

from .._text import one_line
from ..errors import LayerExprError

__all__ = ["parse_layer", "parse_value"]


def _layer_classes() -> dict[str, type[nn.Module]]:
    return {
        name: obj
        for name, obj in vars(nn).items()
        if isinstance(obj, type) and issubclass(obj, nn.Module) and not name.startswith("_")
    }


def parse_layer(text: str) -> nn.Module:
    """The layer that ``text`` describes.

    Examples:
        >>> parse_layer("Conv2d(64, 128, 3, padding=1)")
        Conv2d(64, 128, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise LayerExprError(
            f"Layer expression '{text}' is not valid syntax ({e.msg}); write e.g. Linear(4096, 10)."
        ) from None
    node = tree.body
    if not isinstance(node, ast.Call):
        raise LayerExprError(
            f"Layer expression '{text}' is not a layer call; write e.g. Linear(4096, 10) or Identity()."
        )
    return _build(node, text)


def _build(node: ast.Call, text: str) -> nn.Module:
    name = _callee_name(node.func, text)
    classes = _layer_classes()
    cls = classes.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, classes, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise LayerExprError(f"'{name}' in '{text}' is not a torch.nn layer.{hint}")
    args = [_argument(a, text) for a in node.args]
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise LayerExprError(f"'**' arguments are not allowed in '{text}'.")
        if kw.arg in ("device", "dtype"):
            raise LayerExprError(
                f"'{kw.arg}=' is not allowed in '{text}': a new layer takes the model's device and dtype."
            )
        kwargs[kw.arg] = _argument(kw.value, text)
    try:
        # Built without memory first: a typo such as Linear(4096000, 1000000) must not exhaust it.
        with torch.device("meta"):
            size = sum(p.numel() for p in cls(*args, **kwargs).parameters())
        if size > _MAX_PARAMETERS:
            raise LayerExprError(
                f"{name}(...) in '{text}' would have {size:,} parameters, more than {_MAX_PARAMETERS:,}; "
                "check its sizes."
            )
        return cls(*args, **kwargs)
    except LayerExprError:
        raise
    except Exception as e:  # the layer's own constructor checks the arguments
        raise LayerExprError(f"{name}(...) in '{text}' could not be built: {one_line(e)}") from None


# Four times the largest classifier layer in timm's zoo (about 2.5e8 parameters).
_MAX_PARAMETERS = 1_000_000_000


def _callee_name(func: ast.expr, text: str) -> str:
    # Accept Linear, nn.Linear and torch.nn.Linear.
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        prefix = ast.unparse(func.value)
        if prefix in ("nn", "torch.nn"):
            return func.attr
    raise LayerExprError(f"'{ast.unparse(func)}' in '{text}' is not a torch.nn layer name.")


def _argument(node: ast.expr, text: str):
    if isinstance(node, ast.Call):
        return _build(node, text)
    return _literal(node, text)


def _literal(node: ast.expr, text: str):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        raise LayerExprError(
            f"Argument '{ast.unparse(node)}' in '{text}' is not a literal; only numbers, strings, "
            "True/False/None, tuples, lists and nested layers are allowed."
        ) from None


def parse_value(text: str):
    """A literal attribute value (``10``, ``(2, 2)``, ``True``) for setting a layer attribute."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError):
        raise LayerExprError(f"'{text}' is not a literal value (a number, string, tuple, True/False/None).") from None

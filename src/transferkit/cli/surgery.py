"""``transferkit surgery``: replace layers by path and validate the result with a dry run."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import ImageSizeOpt, InChansOpt, JsonOpt, ModelArg, NumClassesOpt, console, dry_run_size, emit_json


def apply_assignment(net, assignment: str) -> str:
    """Apply one ``PATH=EXPR``: a layer at a module path, or a literal at a layer's attribute."""
    from ..errors import LayerExprError
    from ..model.layer_expr import parse_layer, parse_value
    from ..model.surgery import get_module, set_module

    path, sep, expr = assignment.partition("=")
    path, expr = path.strip(), expr.strip()
    if not sep or not path or not expr:
        raise LayerExprError(f"'{assignment}' is not PATH=EXPR; write e.g. --set fc=Linear(512,10).")
    parent_path, _, attr = path.rpartition(".")
    try:
        parent = net.get_submodule(parent_path)
    except AttributeError:
        get_module(net, path)  # raises, naming the whole path and the closest ones
    if attr in dict(parent.named_children()) or attr.isdigit():
        set_module(net, path, parse_layer(expr), check=False)
    elif hasattr(parent, attr) and not callable(getattr(parent, attr)):
        # Setting an attribute such as out_features is allowed so that its effect is shown:
        # the weight keeps its shape and validation reports the layer as inconsistent.
        setattr(parent, attr, parse_value(expr))
    else:
        get_module(net, path)  # raises with the closest paths
    return path


def surgery_command(
    model: ModelArg,
    assignments: Annotated[
        list[str],
        typer.Option(
            "--set",
            metavar="PATH=EXPR",
            help="PATH=EXPR, e.g. classifier.6=Linear(4096,10); repeatable, applied in order.",
        ),
    ],
    num_classes: NumClassesOpt = None,
    in_chans: InChansOpt = None,
    image_size: ImageSizeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace layers by path and validate the network with a dry-run forward pass.

    Exits 1 when the changed network does not work, naming the first layer that does not fit.
    """
    from ..model.factory import create_model
    from ..model.surgery import validate

    net = create_model(model, num_classes=num_classes, in_chans=in_chans)
    changed = [apply_assignment(net, a) for a in assignments]
    result = validate(net, input_size=dry_run_size(net, image_size), changed=changed)
    if as_json:
        emit_json({"model": model, "changed": changed, **result.to_dict()})
    elif result.ok:
        console.print(
            f"[green]ok[/]: {', '.join(changed)} changed; input {result.input_shape} -> output {result.output_shape}"
        )
    else:
        console.print(f"[red]broken[/] at '{result.layer}': {result.error}")
    if not result.ok:
        raise typer.Exit(1)

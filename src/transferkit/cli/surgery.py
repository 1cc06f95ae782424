"""``transferkit surgery``: replace layers by path and validate the result with a dry run."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import ImageSizeOpt, InChansOpt, JsonOpt, ModelArg, NumClassesOpt, console, dry_run_size, emit_json


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
    from ..model.surgery import apply_assignment, validate

    net = create_model(model, num_classes=num_classes, in_chans=in_chans, image_size=image_size)
    changed = [apply_assignment(net, a) for a in assignments]
    result = validate(net, input_size=dry_run_size(net, image_size), changed=changed)
    if as_json:
        emit_json({"model": model, "changed": changed, **result.to_dict()})
    elif result.ok:
        console.print(f"ok: {', '.join(changed)} changed; input {result.input_shape} -> output {result.output_shape}")
    else:
        console.print(f"broken at '{result.layer}': {result.error}")
    if not result.ok:
        raise typer.Exit(1)

"""``transferkit identify``: the architectures a checkpoint file fits, and the one it came from."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import JsonOpt, console, emit_json, note


def identify_command(
    source: Annotated[
        str,
        typer.Argument(
            metavar="FILE",
            help="Checkpoint (.pth, .pt, .bin, .safetensors), a registry name, or a transformers model's folder "
            "or transformers:ORG/REPO.",
        ),
    ],
    trust_checkpoint: Annotated[
        bool, typer.Option("--trust-checkpoint", help="Allow a checkpoint that runs code when unpickled.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Find the timm and torchvision architectures whose names and shapes FILE fits exactly.

    Architectures that fit only by structure (same shapes, other names) are listed apart:
    loading into them maps tensors by position, and 'transferkit load' then compares their
    outputs with the file's own network on natural photos.
    """
    from ..weights.identify import identify

    found = identify(source, trust_checkpoint=trust_checkpoint)
    for line in found.notes:
        note(line)
    if as_json:
        emit_json(found.to_dict())
        return
    console.print(f"{found.source}: {found.tensors} tensors, {found.parameters:,} parameters")
    if found.record:
        console.print(f"  the '{found.record}' weights, made and checked for {found.record_model}")
    if found.transformers:
        about = found.transformers
        labels = ", ".join(about["labels"][:8]) + (", ..." if len(about["labels"]) > 8 else "")
        console.print(
            f"  a transformers {about['architecture']} ({about['model_type']}), {about['image_size']} px, "
            f"{len(about['labels'])} labels: {labels}"
        )
    for title, fits in (("fits by names", found.by_names), ("fits by structure only", found.by_structure)):
        if fits:
            console.print(f"  {title}:")
            for c in fits:
                head = f" ({c.num_classes} classes)" if c.num_classes else " (no head)"
                console.print(f"    {c.model}{head}")
    if found.native:
        console.print(f"  native architecture: {found.native} (--model {found.native})")
    elif found.by_structure:
        console.print(
            "  no architecture has these names: the structure fits above may compute differently; "
            "'transferkit load --model M FILE' compares them on natural photos"
        )
    else:
        console.print("  no timm or torchvision architecture fits this file")

"""``transferkit inspect``: the module tree, the parameters and their values."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import (
    ImageSizeOpt,
    InChansOpt,
    JsonOpt,
    ModelArg,
    NumClassesOpt,
    TrustCodeOpt,
    console,
    dry_run_size,
    emit_json,
    human_count,
)


def inspect_command(
    model: ModelArg,
    num_classes: NumClassesOpt = None,
    in_chans: InChansOpt = None,
    weights: Annotated[
        str | None, typer.Option("--weights", metavar="WEIGHTS", help="Load these weights first.")
    ] = None,
    params: Annotated[
        bool, typer.Option("--params", help="List every parameter with shape and trainable flag.")
    ] = False,
    values: Annotated[
        list[str] | None,
        typer.Option("--values", metavar="NAME", help="Show statistics and first values of this parameter or buffer."),
    ] = None,
    depth: Annotated[int, typer.Option("--depth", metavar="N", help="Deepest module level shown in the tree.")] = 2,
    image_size: ImageSizeOpt = None,
    trust_checkpoint: Annotated[
        bool, typer.Option("--trust-checkpoint", help="Allow a checkpoint that runs code when unpickled.")
    ] = False,
    trust_code: TrustCodeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a model's structure with output shapes, its parameters and their values.

    MODEL may be a run folder: its trained model (best.pt) is shown."""
    from ..model.factory import create_model
    from ..model.inspection import layer_table, parameter_table, parameter_values
    from ..model.surgery import find_head
    from ..weights.loading import load_pretrained
    from .load import print_load_report

    run = _run_model(model, weights, trust_code)
    if run is not None:
        net, image_size = run.model, image_size or run.preprocessing.input_size[-1]
        model = f"{model} ({run.config.model}, best.pt of epoch {run.epoch})"
    else:
        net = create_model(model, num_classes=num_classes, in_chans=in_chans, image_size=image_size)
    report = load_pretrained(net, weights, trust_checkpoint=trust_checkpoint) if weights else None
    layers = layer_table(net, input_size=dry_run_size(net, image_size))
    plist = parameter_table(net)
    stats = [parameter_values(net, v) for v in values or []]
    head = find_head(net)
    total = sum(p.numel for p in plist)
    trainable = sum(p.numel for p in plist if p.trainable)

    if as_json:
        out = {
            "model": model,
            "total_params": total,
            "trainable_params": trainable,
            "head": head,
            "layers": [l.to_dict() for l in layers if l.depth <= depth],
            "params": [p.to_dict() for p in plist],
        }
        if values:
            out["values"] = stats
        if report is not None:
            out["load"] = report.to_dict()
        emit_json(out)
        return

    if report is not None:
        print_load_report(report)
    title = f"{model}: {human_count(total)} parameters, {human_count(trainable)} trainable, head at '{head}'"
    _print_tables(title, layers, depth, plist if params else [])
    for s in stats:
        console.print(
            f"{s['name']} shape={tuple(s['shape'])} dtype={s['dtype']} mean={s['mean']:.6g} "
            f"std={s['std'] if s['std'] is None else format(s['std'], '.6g')} min={s['min']:.6g} max={s['max']:.6g}"
        )
        console.print(f"  first values: {[round(v, 6) for v in s['first']]}")


def _print_tables(title: str, layers, depth: int, plist) -> None:
    """The module tree to ``depth`` with output shapes and counts; each parameter of ``plist`` after it."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("module")
    table.add_column("type")
    table.add_column("output shape")
    table.add_column("params", justify="right")
    table.add_column("trainable", justify="right")
    for l in layers:
        if l.depth > depth:
            continue
        shape = ", ".join(str(tuple(s)) for s in l.output_shape) if l.output_shape else "-"
        name = ("  " * max(l.depth - 1, 0) + l.name) if l.name else "(model)"
        table.add_row(name, l.type, shape, human_count(l.params), human_count(l.trainable))
    console.print(table)
    if plist:
        ptable = Table(title="parameters")
        for col in ("name", "shape", "trainable"):
            ptable.add_column(col)
        for p in plist:
            ptable.add_row(p.name, str(tuple(p.shape)), "yes" if p.trainable else "no")
        console.print(ptable)


def _run_model(model: str, weights: str | None, trust_code: bool):
    """The trained model of run folder ``model`` (best.pt, on the CPU), or None when ``model`` is not a run."""
    from pathlib import Path

    from ..errors import ConfigError
    from ..inference.runs import load_trained
    from ..train.folder.out_folder import is_run_folder

    if not is_run_folder(Path(model)):
        return None
    if weights:
        raise ConfigError(f"'{model}' is a run folder with its own weights (best.pt); leave out --weights.")
    return load_trained(model, device="cpu", trust_code=trust_code)

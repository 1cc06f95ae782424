"""``transferkit plan``: what freezing would leave trainable, and what the optimizer would receive."""

from __future__ import annotations

from typing import Annotated

import typer

from ..train.config import describe, setting_default
from ._common import InChansOpt, JsonOpt, ModelArg, NumClassesOpt, console, emit_json, human_count


def _totals(summary) -> dict:
    return {"trainable": sum(c.trainable for c in summary), "frozen": sum(c.frozen for c in summary)}


def plan_command(
    model: ModelArg,
    freeze_patterns: Annotated[
        list[str] | None,
        typer.Option(
            "--freeze", metavar="PATTERN", help="Module path, glob (layer1.*) or re:REGEX to freeze; repeatable."
        ),
    ] = None,
    backbone: Annotated[bool, typer.Option("--freeze-backbone", help="Freeze everything but the head.")] = False,
    unfreeze_last: Annotated[
        int | None,
        typer.Option(
            "--unfreeze-last", metavar="N", help="Freeze all but the last N stages (a ViT's blocks; the head is one)."
        ),
    ] = None,
    train_bn: Annotated[bool, typer.Option("--train-bn", help="Keep frozen BatchNorm layers training.")] = False,
    num_classes: NumClassesOpt = None,
    in_chans: InChansOpt = None,
    optimizer: Annotated[
        str, typer.Option("--optimizer", metavar="NAME", help=describe("optimizer"))
    ] = setting_default("optimizer"),
    lr: Annotated[float, typer.Option("--lr", metavar="X", help="Main learning rate.")] = 1e-3,
    weight_decay: Annotated[
        float, typer.Option("--weight-decay", metavar="X", help=describe("weight_decay"))
    ] = setting_default("weight_decay"),
    head_lr: Annotated[float | None, typer.Option("--head-lr", metavar="X", help=describe("head_lr"))] = None,
    layer_decay: Annotated[
        float | None, typer.Option("--layer-decay", metavar="X", help=describe("layer_decay"))
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show trainable and frozen parameters before and after freezing, and the optimizer's parameters."""
    from rich.table import Table

    from ..errors import FreezeError
    from ..model.factory import create_model
    from ..model.freeze import freeze, freeze_backbone, freeze_stages, frozen_norm_layers, parameter_summary
    from ..train.optim import create_optimizer

    if not freeze_patterns and not backbone and unfreeze_last is None:
        raise FreezeError("Nothing to plan: give --freeze PATTERN, --freeze-backbone or --unfreeze-last N.")
    net = create_model(model, num_classes=num_classes, in_chans=in_chans)
    before = parameter_summary(net)
    if freeze_patterns:
        freeze(net, freeze_patterns, train_bn=train_bn)
    if backbone:
        freeze_backbone(net, train_bn=train_bn)
    if unfreeze_last is not None:
        freeze_stages(net, keep_last=unfreeze_last, train_bn=train_bn)
    after = parameter_summary(net)
    opt = create_optimizer(net, optimizer, lr=lr, weight_decay=weight_decay, head_lr=head_lr, layer_decay=layer_decay)
    names = [n for g in opt.param_groups for n in g["param_names"]]
    groups = [{"lr": g["lr"], "weight_decay": g["weight_decay"], "params": g["param_names"]} for g in opt.param_groups]
    norms = frozen_norm_layers(net)

    if as_json:
        emit_json(
            {
                "model": model,
                "before": _totals(before),
                "after": _totals(after),
                "modules": [
                    {"module": b.module, "before": b.to_dict(), "after": a.to_dict()} for b, a in zip(before, after)
                ],
                "optimizer": optimizer,
                "optimizer_params": names,
                "optimizer_groups": groups,
                "frozen_norm_layers": norms,
            }
        )
        return

    table = Table(title=f"{model}: freeze plan")
    for col in ("module", "trainable before", "trainable after", "frozen after"):
        table.add_column(col, justify="left" if col == "module" else "right")
    for b, a in zip(before, after):
        style = "dim" if a.trainable == 0 else ""
        table.add_row(b.module, human_count(b.trainable), human_count(a.trainable), human_count(a.frozen), style=style)
    t_before, t_after = _totals(before), _totals(after)
    table.add_row(
        "total",
        human_count(t_before["trainable"]),
        human_count(t_after["trainable"]),
        human_count(t_after["frozen"]),
        style="bold",
    )
    console.print(table)
    policy = "training (--train-bn)" if train_bn else "held in eval mode"
    console.print(f"Frozen BatchNorm layers: {len(norms)}, {policy}.")
    console.print(f"Optimizer {optimizer} receives {len(names)} tensors in {len(groups)} groups:")
    for g in groups:
        shown = ", ".join(g["params"][:6]) + (f", ... ({len(g['params'])} in all)" if len(g["params"]) > 6 else "")
        console.print(f"  lr={g['lr']:g} weight_decay={g['weight_decay']:g}: {shown}")

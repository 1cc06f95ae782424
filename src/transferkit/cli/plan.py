"""``transferkit plan``: what freezing (or a strategy, phase by phase) would leave trainable, and what the optimizer
would receive."""

from __future__ import annotations

from typing import Annotated

import typer

from ..train.config import describe, setting_default
from ._common import InChansOpt, JsonOpt, ModelArg, NumClassesOpt, console, emit_json, human_count


def _totals(summary) -> dict:
    return {"trainable": sum(c.trainable for c in summary), "frozen": sum(c.frozen for c in summary)}


def plan_command(
    model: ModelArg,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy", metavar="S", help="Plan each phase of a strategy as train runs it. " + describe("strategy")
        ),
    ] = None,
    epochs: Annotated[
        int, typer.Option("--epochs", metavar="N", help="Epochs to split into the strategy's phases.")
    ] = setting_default("epochs"),
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
    lr: Annotated[
        float | None,
        typer.Option("--lr", metavar="X", help="Main learning rate (default 1e-3; with --strategy, its own)."),
    ] = None,
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
    from ..errors import FreezeError
    from ..model.factory import create_model

    settings = dict(
        freeze=freeze_patterns or [],
        unfreeze_last=unfreeze_last,
        train_bn=train_bn,
        optimizer=optimizer,
        weight_decay=weight_decay,
        head_lr=head_lr,
        layer_decay=layer_decay,
    )
    if strategy is not None:
        if backbone:
            raise FreezeError("--freeze-backbone is what strategy freeze does; give one of them.")
        if strategy == "auto":
            raise FreezeError("strategy auto is chosen by probing DATA: run transferkit advise, or plan a named one.")
        _plan_phases(model, strategy, epochs, lr, settings, num_classes, in_chans, as_json)
        return
    if not freeze_patterns and not backbone and unfreeze_last is None:
        raise FreezeError(
            "Nothing to plan: give --strategy S, --freeze PATTERN, --freeze-backbone or --unfreeze-last N."
        )
    net = create_model(model, num_classes=num_classes, in_chans=in_chans)
    plan = _freeze_plan(net, backbone, 1e-3 if lr is None else lr, settings)
    if as_json:
        emit_json({"model": model, **plan})
        return
    _show_freeze_plan(model, plan, optimizer, train_bn)


def _plan_phases(model: str, strategy: str, epochs: int, lr, settings: dict, num_classes, in_chans, as_json) -> None:
    """Each phase of ``strategy`` as train runs it, on MODEL built as train builds it (no DATA is read)."""
    from ..model.factory import create_model
    from ..model.freeze import parameter_summary
    from ..train.config import TrainConfig
    from ..train.plan import plan_strategy

    config = TrainConfig(
        model=model,
        data="-",  # nothing is read
        out="-",
        strategy=strategy,
        epochs=epochs,
        lr=lr if lr is not None else setting_default("lr"),
        **settings,
    )
    net = create_model(model, num_classes=num_classes, in_chans=in_chans)
    _show_phases(model, config, parameter_summary(net), plan_strategy(net, config), as_json)


def _freeze_plan(net, backbone: bool, lr: float, settings: dict) -> dict:
    """The parameters per module before and after freezing as asked, and what the optimizer receives."""
    from ..model.freeze import freeze, freeze_backbone, freeze_stages, frozen_norm_layers, parameter_summary
    from ..train.optim import create_optimizer

    train_bn = settings["train_bn"]
    before = parameter_summary(net)
    if settings["freeze"]:
        freeze(net, settings["freeze"], train_bn=train_bn)
    if backbone:
        freeze_backbone(net, train_bn=train_bn)
    if settings["unfreeze_last"] is not None:
        freeze_stages(net, keep_last=settings["unfreeze_last"], train_bn=train_bn, argument="unfreeze_last")
    after = parameter_summary(net)
    opt = create_optimizer(
        net,
        settings["optimizer"],
        lr=lr,
        weight_decay=settings["weight_decay"],
        head_lr=settings["head_lr"],
        layer_decay=settings["layer_decay"],
    )
    groups = [{"lr": g["lr"], "weight_decay": g["weight_decay"], "params": g["param_names"]} for g in opt.param_groups]
    return {
        "before": _totals(before),
        "after": _totals(after),
        "modules": [{"module": b.module, "before": b.to_dict(), "after": a.to_dict()} for b, a in zip(before, after)],
        "optimizer": settings["optimizer"],
        "optimizer_params": [n for g in opt.param_groups for n in g["param_names"]],
        "optimizer_groups": groups,
        "frozen_norm_layers": frozen_norm_layers(net),
    }


def _show_freeze_plan(model: str, plan: dict, optimizer: str, train_bn: bool) -> None:
    from rich.table import Table

    table = Table(title=f"{model}: freeze plan")
    for col in ("module", "trainable before", "trainable after", "frozen after"):
        table.add_column(col, justify="left" if col == "module" else "right")
    for row in plan["modules"]:
        b, a = row["before"], row["after"]
        style = "dim" if a["trainable"] == 0 else ""
        trainable = (human_count(b["trainable"]), human_count(a["trainable"]), human_count(a["frozen"]))
        table.add_row(row["module"], *trainable, style=style)
    t_before, t_after = plan["before"], plan["after"]
    table.add_row(
        "total",
        human_count(t_before["trainable"]),
        human_count(t_after["trainable"]),
        human_count(t_after["frozen"]),
        style="bold",
    )
    console.print(table)
    policy = "training (--train-bn)" if train_bn else "held in eval mode"
    groups, names = plan["optimizer_groups"], plan["optimizer_params"]
    console.print(f"Frozen BatchNorm layers: {len(plan['frozen_norm_layers'])}, {policy}.")
    console.print(f"Optimizer {optimizer} receives {len(names)} tensors in {len(groups)} groups:")
    for g in groups:
        shown = ", ".join(g["params"][:6]) + (f", ... ({len(g['params'])} in all)" if len(g["params"]) > 6 else "")
        console.print(f"  lr={g['lr']:g} weight_decay={g['weight_decay']:g}: {shown}")


def _show_phases(model: str, config, before, phases, as_json: bool) -> None:
    """Each phase of ``config.strategy``: what trains per top-level module, and the optimizer's groups."""
    from rich.table import Table

    if as_json:
        emit_json(
            {
                "model": model,
                "strategy": config.strategy,
                "before": {"trainable": sum(c.trainable for c in before), "frozen": sum(c.frozen for c in before)},
                "phases": [p.to_dict() for p in phases],
            }
        )
        return
    table = Table(title=f"{model}: strategy {config.strategy}, {config.epochs} epochs")
    table.add_column("module")
    table.add_column("parameters", justify="right")
    for p in phases:
        table.add_column(f"trains in {p.name}", justify="right")
    rows = {c.module: [c.trainable + c.frozen] for c in before}
    for p in phases:
        for c in p.modules:
            rows.setdefault(c.module, [0]).append(c.trainable)  # adapters add modules' parameters
    for name, values in rows.items():
        cells = [human_count(v) for v in values] + [""] * (1 + len(phases) - len(values))
        table.add_row(name, *cells, style="dim" if all(v == 0 for v in values[1:]) else "")
    table.add_row(
        "total",
        human_count(sum(c.trainable + c.frozen for c in before)),
        *(human_count(p.trainable) for p in phases),
        style="bold",
    )
    console.print(table)
    policy = "training (--train-bn)" if config.train_bn else "held in eval mode"
    for p in phases:
        tensors = sum(len(g["params"]) for g in p.groups)
        norms = f"{len(p.frozen_norms)} frozen BatchNorm layers, {policy}" if p.frozen_norms else "no frozen BatchNorm"
        console.print(
            f"phase {p.name}: {p.epochs} epochs at lr {p.lr:g}; {norms}; optimizer {config.optimizer} receives "
            f"{tensors} tensors in {len(p.groups)} groups:"
        )
        for g in p.groups:
            shown = ", ".join(g["params"][:6]) + (f", ... ({len(g['params'])} in all)" if len(g["params"]) > 6 else "")
            console.print(f"  lr={g['lr']:g} weight_decay={g['weight_decay']:g}: {shown}")

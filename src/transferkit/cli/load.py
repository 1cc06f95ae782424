"""``transferkit load``: load weights into a model and report what matched."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import ImageSizeOpt, InChansOpt, JsonOpt, ModelArg, NumClassesOpt, console, emit_json


def print_load_report(report, *, limit: int = 8, out=console) -> None:
    """A :class:`~transferkit.weights.loading.LoadReport` for people: counts, notes, and the first of each list."""
    for line in report.lines(limit=limit, more="--json lists all"):
        out.print(line, markup=False, highlight=False)


def _print_verification(verification: dict) -> None:
    console.print(f"  verification: {verification['status']}")
    variant = verification.get("variant")
    if variant and variant["identical"] and variant.get("native"):
        how = variant.get("checked") or (
            f"largest {variant['compared']} difference {variant['max_abs_diff']:.3g} on {variant['photos']} photos"
        )
        console.print(f"    computes what the file's own architecture {variant['native']} does: {how}")
    for finding in verification["findings"]:
        console.print(f"    {finding['kind']}: {finding['message']}")


def load_command(
    model: ModelArg,
    source: Annotated[str, typer.Argument(metavar="SRC", help="Checkpoint: .pth, .pt, .bin or .safetensors.")],
    num_classes: NumClassesOpt = None,
    in_chans: InChansOpt = None,
    image_size: ImageSizeOpt = None,
    save: Annotated[
        Path | None,
        typer.Option(
            "--save", metavar="FILE", help="Write the loaded weights, in the model's names, as OUT.safetensors."
        ),
    ] = None,
    save_map: Annotated[
        Path | None,
        typer.Option("--save-map", metavar="FILE", help="Write the key map {model name: checkpoint name} as JSON."),
    ] = None,
    mapping: Annotated[
        str, typer.Option("--mapping", metavar="HOW", help="auto (names, then structure), name or structure.")
    ] = "auto",
    allow_partial: Annotated[
        bool, typer.Option("--allow-partial", help="Load even if parameters outside the head stay random.")
    ] = False,
    trust_checkpoint: Annotated[
        bool, typer.Option("--trust-checkpoint", help="Allow a checkpoint that runs code when unpickled.")
    ] = False,
    use_ema: Annotated[
        bool, typer.Option("--use-ema", help="Prefer the EMA weights when the checkpoint has them.")
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail unless every tensor matches.")] = False,
    min_loaded: Annotated[
        float,
        typer.Option(
            "--min-loaded", metavar="X", help="Fail when less than this share of non-head parameters would load."
        ),
    ] = 0.5,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would load; change nothing.")] = False,
    allow_nonfinite: Annotated[
        bool, typer.Option("--allow-nonfinite", help="Load even if tensors hold NaN or infinity.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Load pretrained weights into MODEL, report what matched, and verify them on natural photos.

    Exits 1 with --strict when the verification warns (untrained statistics, input far from
    the statistics the weights expect).
    """
    from ..model.factory import create_model
    from ..serialization import save_safetensors, write_json
    from ..weights.loading import LoadPolicy, load_pretrained

    policy = LoadPolicy(mapping, strict, min_loaded, allow_partial, dry_run, allow_nonfinite=allow_nonfinite)
    net = create_model(model, num_classes=num_classes, in_chans=in_chans, image_size=image_size)
    report = load_pretrained(net, source, policy=policy, trust_checkpoint=trust_checkpoint, use_ema=use_ema)
    verification = None
    if not dry_run:
        from ..weights.preprocessing import resolve_preprocessing
        from ..weights.verify import verify_weights

        brought = resolve_preprocessing(net, source, image_size=image_size)[0]  # the size the model was built for
        verification = verify_weights(net, brought, source=source, report=report, trust_checkpoint=trust_checkpoint)
    if save is not None:
        save_safetensors(net.state_dict(), save, metadata={"model": model, "source": str(source)})
    if save_map is not None:
        write_json(save_map, report.key_map())
    if as_json:
        saved = {"saved": save, "saved_map": save_map}
        emit_json({**report.to_dict(), "verification": verification, **{k: str(v) for k, v in saved.items() if v}})
    else:
        print_load_report(report)
        if verification is not None:
            _print_verification(verification)
        for path in (save, save_map):
            if path is not None:
                console.print(f"Saved {path}")
    if strict and verification is not None and verification["status"] != "ok":
        raise typer.Exit(1)  # --strict: a warning fails the load

"""``transferkit shard``: any DATA written as WebDataset tar shards with an index, for ``--data wds:OUT``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import JsonOpt, emit_json, output_console
from ._config_options import TASK_FIELDS, config_options


@config_options(only=[f for f in TASK_FIELDS if f != "loss"])
def shard_command(
    data: Annotated[
        str, typer.Argument(metavar="DATA", help="Image folder, CSV, hf:ORG/NAME or builtin:NAME to write.")
    ],
    out: Annotated[str, typer.Argument(metavar="OUT", help="A new folder for the shards and index.json.")],
    shard_size: Annotated[
        str, typer.Option("--shard-size", metavar="SIZE", help="Start a new shard past this size (1GB, 500MB).")
    ] = "1GB",
    as_json: JsonOpt = False,
    *,
    settings: dict,
) -> None:
    """Write DATA's images, as they are, into tar shards per split (train/, val/, test/), with index.json.

    Train from them with --data wds:OUT. Unusable images are skipped and listed in the index.
    """
    from ..data.shards import parse_size, write_shards
    from ..data.sources import open_data
    from ..train.config import TrainConfig

    console = output_console(as_json)
    size = parse_size(shard_size)
    config = TrainConfig(model="-", data=data, out=out, **settings)
    source = open_data(data, config.label_spec(), config.hf_options())
    index = write_shards(source, Path(out), shard_size=size, log=console.print)
    if index["skipped"]:
        console.print(f"{len(index['skipped'])} unusable images skipped (listed in {Path(out) / 'index.json'})")
    if as_json:
        emit_json(index)

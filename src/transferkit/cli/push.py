"""``transferkit push``: a run's timm Hub folder uploaded to the Hugging Face Hub."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import JsonOpt, emit_json, output_console


def push_command(
    run: Annotated[str, typer.Argument(metavar="RUN", help="The --out folder of a training run.")],
    repo_id: Annotated[str, typer.Argument(metavar="ORG/REPO", help="The model repository, created when missing.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
    revision: Annotated[
        str | None, typer.Option("--revision", metavar="BRANCH", help="The branch to commit to (default: main).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload RUN as a folder that timm.create_model("hf-hub:ORG/REPO") loads (export --format timm-hub first).

    Uses huggingface_hub's token (HF_TOKEN or 'hf auth login') and endpoint (HF_ENDPOINT).
    """
    from ..deploy.push import push_run

    console = output_console(as_json)
    url = push_run(run, repo_id, private=private, revision=revision, log=console.print)
    if as_json:
        emit_json({"repo_id": repo_id, "commit_url": url})

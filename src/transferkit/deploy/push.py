"""Upload a run's Hub folder to the Hugging Face Hub with huggingface_hub's own API.

The folder is the one ``export --format timm-hub`` writes, or ``--format transformers`` for a run
whose MODEL is a transformers model (exported first, with its parity proof, when the run has
none). The repository is created when missing (``create_repo(exist_ok=True)``) and the files go
up in one commit (``create_commit``); the README's loading example names the repository. The
token is huggingface_hub's: ``HF_TOKEN`` or ``hf auth login``.
"""

from __future__ import annotations

from pathlib import Path

from .._text import one_line
from ..errors import ConfigError, RunError

__all__ = ["push_run"]

# The HTTP clients huggingface_hub has talked through: their errors are the network's (its versions differ)
HTTP_CLIENTS = ("httpx", "httpx2", "httpcore", "requests", "urllib3")


def push_run(
    run: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    message: str | None = None,
    log=print,
) -> str:
    """Upload ``run``'s ``timm-hub`` (or ``transformers``) folder to the model repository ``repo_id``; returns the
    commit's URL.

    Examples:
        >>> push_run("runs/flowers", "me/flowers-vit")
        'https://huggingface.co/me/flowers-vit/commit/3f1c...'
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ConfigError(f"'{repo_id}' is not a Hub repository id; give ORG/NAME.", argument="repo_id") from None
    if "/" not in repo_id:
        raise ConfigError(f"'{repo_id}' names no owner; give ORG/NAME, such as me/{repo_id}.", argument="repo_id")
    from ..model.hf_transformers import is_transformers_model
    from .export import _model_spec, export_run

    run = Path(run)
    if not (run / "best.pt").is_file():
        raise RunError(f"'{run}' holds no best.pt: push needs a finished run folder from train.")
    format = "transformers" if is_transformers_model(_model_spec(run)) else "timm-hub"
    folder = run / format
    if not folder.is_dir():
        log(f"{run} has no {format} folder: exporting it first")
        export_run(run, format=format, log=log)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if {p.name for p in files} < {"config.json", "model.safetensors"}:
        raise RunError(f"'{folder}' is not a complete {format} export; delete it and push again.")
    operations = []
    for path in files:
        content = path.read_bytes()
        if path.name == "README.md":  # its loading example names the repository
            content = content.replace(b"ORG/REPO", repo_id.encode())
        operations.append(CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=content))
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.create_commit(
            repo_id,
            operations,
            commit_message=message or f"Upload {run.name} from transferkit",
            revision=revision,
            repo_type="model",
        )
    except LocalTokenNotFoundError:
        raise RunError("Pushing needs a Hugging Face token: set HF_TOKEN, or run 'hf auth login'.") from None
    except HfHubHTTPError as e:
        if getattr(e.response, "status_code", None) in (401, 403):
            raise RunError(
                f"The Hub refused the upload to '{repo_id}' as unauthorised: set HF_TOKEN to a token with write "
                "access to it, or run 'hf auth login'."
            ) from None
        raise RunError(f"The Hub refused the upload to '{repo_id}': {one_line(e, 300)}") from None
    except Exception as e:
        if not isinstance(e, OSError) and type(e).__module__.split(".")[0] not in HTTP_CLIENTS:
            raise
        raise RunError(
            f"Could not reach the Hub at {api.endpoint} to push '{repo_id}' ({type(e).__name__}: {e}); check the "
            "network, or HF_ENDPOINT."
        ) from None
    log(f"pushed {len(operations)} files to {repo_id}: {commit.commit_url}")
    return commit.commit_url

"""The JSON file beside an exported model: what a consumer needs to feed it, and the proof it was checked.

The sidecar carries a digest of its own contents and the SHA-256 of the model file, so that a
sidecar edited by hand, or one beside another model file, is refused instead of silently
feeding the model other preprocessing or class names.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import RunError
from ..serialization import write_json

__all__ = ["file_sha256", "read_sidecar", "sidecar_path", "task_facts", "write_sidecar"]

_REQUIRED = {
    "format": str,
    "file": str,
    "sha256": str,
    "model": str,
    "class_names": list,
    "input": dict,
    "preprocessing": dict,
    "parity": dict,
}


def sidecar_path(model_file: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    path = Path(model_file)
    return path.with_name(path.name + ".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest(facts: dict) -> str:
    body = {k: v for k, v in facts.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_sidecar(model_file: str | Path, facts: dict) -> Path:
    """Write the sidecar of ``model_file`` with its digest; ``facts`` gets ``file`` and ``sha256`` filled in."""
    facts = {**facts, "file": Path(model_file).name, "sha256": file_sha256(model_file)}
    facts["digest"] = _digest(facts)
    return write_json(sidecar_path(model_file), facts)


def read_sidecar(model_file: str | Path) -> dict:
    """The checked sidecar of ``model_file``; refused when missing, malformed, edited or for another file."""
    path = sidecar_path(model_file)
    if not Path(model_file).is_file():
        raise RunError(f"Exported model '{model_file}' does not exist.")
    if not path.is_file():
        raise RunError(
            f"'{model_file}' has no sidecar '{path.name}' beside it (class names, preprocessing); "
            "export again with 'transferkit export', or copy the sidecar with the model."
        )
    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RunError(f"Sidecar '{path}' is not valid JSON ({e}); export again.") from None
    if not isinstance(facts, dict):
        raise RunError(f"Sidecar '{path}' holds {type(facts).__name__}, not an object; export again.")
    for key, kind in _REQUIRED.items():
        if not isinstance(facts.get(key), kind):
            raise RunError(f"Sidecar '{path}' lacks '{key}' ({kind.__name__}); export again.")
    if facts.get("digest") != _digest(facts):
        raise RunError(
            f"Sidecar '{path}' was changed after export (its digest does not match its contents): "
            "its class names or preprocessing cannot be trusted; export again."
        )
    if facts["sha256"] != file_sha256(model_file):
        raise RunError(
            f"'{model_file}' is not the file its sidecar was written for (SHA-256 differs); "
            "export again, or put the matching sidecar beside it."
        )
    return facts


def task_facts(trained) -> dict:
    """What a consumer of a model of several labels or of numbers needs beside the outputs (none for classes):
    the task, where a CSV holds its labels, the thresholds or the target's scale and interval. The
    sidecar carries them, and the ``transferkit`` key of a timm Hub folder's config.json."""
    if trained.task == "classification":
        return {}
    spec = trained.label_spec
    facts = {
        "task": trained.task,
        "labels": {"sep": spec.sep, "columns": list(spec.columns), "target_column": spec.target_column},
    }
    if trained.task == "multi-label":
        facts["thresholds"] = trained.thresholds
    else:
        facts["target_scale"] = {"mean": trained.target_scale.mean, "std": trained.target_scale.std}
        facts["interval"] = trained.interval
    return facts

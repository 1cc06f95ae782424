"""A run as a timm Hub folder: what ``timm.create_model("hf-hub:ORG/REPO", pretrained=True)`` loads.

timm writes the folder itself (:func:`timm.models.save_for_hf`): ``model.safetensors`` and a
``config.json`` holding the architecture, the arguments it was built with, the run's
preprocessing as ``pretrained_cfg`` and its class names as ``label_names``. The model card
becomes ``README.md``, with the metadata the Hub reads (``library_name: timm``). Several labels
per image or a number per image go under ``config.json``'s ``transferkit`` key (task,
thresholds, the temperature or one per label, the target's scale and interval, as an export's
sidecar holds them), which timm ignores and the card explains.

Only a model that timm builds can be handed on this way: its MODEL must be a timm name, and timm
must load the folder back (a run whose layers were replaced is refused with timm's words); the
export's parity proof then runs the model timm loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from .._text import one_line
from ..errors import ConfigError
from ..inference.sidecar import task_facts
from ..serialization import write_text

__all__ = ["check_timm_model", "load_timm_folder", "write_timm_folder"]


def check_timm_model(spec: str) -> None:
    """Refuse, in one line, a MODEL that is not a timm model: timm could not build it from the folder."""
    import timm

    if ":" in spec or not timm.is_model(spec):
        raise ConfigError(
            f"The timm-hub format needs a timm model; this run's MODEL is '{spec}'. Export onnx, "
            "exported-program or safetensors instead.",
            argument="format",
        )


def write_timm_folder(model: nn.Module, trained, folder: Path, *, card: str | None) -> None:
    """timm's own Hub folder for ``model`` (config.json, model.safetensors) with the run's preprocessing,
    class names and task facts, and ``README.md`` from the model card."""
    from timm.models import save_for_hf

    pre = trained.preprocessing
    data_config = {
        "input_size": tuple(pre.input_size),
        "mean": tuple(pre.mean),
        "std": tuple(pre.std),
        "interpolation": pre.interpolation,
        "crop_pct": pre.crop_pct,
        "crop_mode": pre.crop_mode,
    }
    extra = {"label_names": list(trained.class_names)}
    facts = {**task_facts(trained), **({"temperature": trained.temperature} if trained.temperature else {})}
    if facts:  # as the sidecar of an export carries them; timm ignores the key
        extra["transferkit"] = facts
    save_for_hf(model, str(folder), model_config=extra, data_config=data_config, safe_serialization=True)
    write_text(folder / "README.md", _readme(trained, card))


def load_timm_folder(folder: Path) -> nn.Module:
    """The folder as timm alone loads it: ``timm.create_model("local-dir:FOLDER", pretrained=True)``.

    A model timm does not build the same way (a replaced layer, another head) fails to load: one line
    with timm's words, never a silent success.
    """
    import timm

    try:
        return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"timm cannot load this run from a Hub folder ({one_line(e, 300)}): its layers are not the ones timm "
            "builds, as after a layer replacement. Export onnx, exported-program or safetensors instead.",
            argument="format",
        ) from None


def _readme(trained, card: str | None) -> str:
    """The model card with the Hub's metadata block, and how timm loads the folder."""
    use = {
        "classification": "The outputs are logits over `label_names`, in their order.",
        "multi-label": "The outputs are one logit per label of `label_names`: a label applies where its sigmoid "
        "reaches its threshold (`transferkit.thresholds` in config.json).",
        "regression": "The output is the standardised value: multiply by `transferkit.target_scale.std` and add "
        "its `mean` for the target's units.",
    }[trained.task]
    head = (
        "---\nlibrary_name: timm\ntags:\n- image-classification\n- timm\n- transferkit\n---\n\n"
        "Load with timm alone:\n\n```python\nimport timm\n\n"
        'model = timm.create_model("hf-hub:ORG/REPO", pretrained=True).eval()\n'
        "config = timm.data.resolve_data_config({}, model=model)\n"
        "transform = timm.data.create_transform(**config)\n```\n\n"
        f"{use}\n\n"
    )
    return head + (card or "")

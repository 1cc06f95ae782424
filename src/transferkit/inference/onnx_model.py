"""Run an exported ``.onnx`` with onnxruntime behind the interface PyTorch models have here.

:func:`load_onnx` gives an :class:`~transferkit.inference.trained.TrainedModel` whose ``model`` is
an :class:`OnnxClassifier`: ``predict`` and ``eval`` then read, resize, crop and batch images
exactly as for a run, and only the forward pass changes. For an export that normalises inside
its graph (uint8 NHWC input), the batches are handed over as 0-255 values.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from .._text import first_line
from ..data.preprocess import Preprocessing, legacy_note
from ..errors import ConfigError, RunError
from .sidecar import read_sidecar

__all__ = ["OnnxClassifier", "is_onnx", "load_onnx", "onnx_session"]


def is_onnx(source: str | Path) -> bool:
    return str(source).endswith(".onnx")


def onnx_session(path: str | Path):
    """An onnxruntime CPU session for ``path``, with as many threads as torch uses."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("Running .onnx files needs onnxruntime: pip install 'transferkit[export]'.") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3  # errors only: its warnings would interleave with the output
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for a broken file
        raise RunError(f"onnxruntime cannot load '{path}': {first_line(e, 200)}") from None


class OnnxClassifier(nn.Module):
    """Logits from an onnxruntime session for batches shaped as transferkit's preprocessing gives them."""

    def __init__(self, path: str | Path, *, uint8_nhwc: bool):
        super().__init__()
        self.session = onnx_session(path)
        self.input_name = self.session.get_inputs()[0].name
        self.uint8_nhwc = uint8_nhwc
        # predict and eval read the device and dtype from the first parameter.
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uint8_nhwc:  # batches arrive as 0-255 floats (see load_onnx)
            feed = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        else:
            feed = x.float().contiguous()
        return torch.from_numpy(self.session.run(None, {self.input_name: feed.cpu().numpy()})[0])


def load_onnx(path: str | Path, *, device: str = "cpu"):
    """An exported ``.onnx`` and its checked sidecar as a :class:`~transferkit.inference.trained.TrainedModel`."""
    from ..runtime.fastpath import FastPath
    from .trained import TrainedModel

    if device not in ("auto", "cpu"):
        raise ConfigError(f"'.onnx' files run on the CPU with onnxruntime; got device {device!r}.", argument="device")
    facts = read_sidecar(path)
    if facts["format"] != "onnx":
        raise RunError(f"The sidecar of '{path}' describes a {facts['format']} export, not onnx; export again.")
    try:
        pre = Preprocessing.from_dict(facts["preprocessing"])
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"The sidecar of '{path}' has incomplete preprocessing ({e}); export again.") from None
    notes = [note] if (note := legacy_note(facts["preprocessing"])) else []
    uint8 = facts["input"].get("dtype") == "uint8"
    model = OnnxClassifier(path, uint8_nhwc=uint8)
    feed = replace(pre, mean=(0.0,) * len(pre.mean), std=(1 / 255,) * len(pre.std)) if uint8 else pre
    quantization = facts.get("quantization")
    fast = FastPath(False, "fp32", f"onnxruntime{' int8 ' + quantization if quantization else ''}")
    trained = TrainedModel(model, feed, list(facts["class_names"]), None, fast, notes)
    trained.temperature = facts.get("temperature")
    _task_from(facts, trained, path)
    return trained


def _task_from(facts: dict, trained, path) -> None:
    """The task, thresholds, target scale and interval a sidecar of several labels or of numbers carries."""
    from ..tasks.conformal import LEVEL
    from ..tasks.objective import TargetScale
    from ..tasks.targets import TASKS, LabelSpec

    task = facts.get("task", "classification")
    if task not in TASKS:
        raise RunError(f"The sidecar of '{path}' names task {task!r}; export again.")
    trained.task = task
    if task == "classification":
        return
    try:
        labels = facts["labels"]
        trained.label_spec = LabelSpec(task, labels["sep"], tuple(labels["columns"]), labels["target_column"])
        if task == "multi-label":
            trained.thresholds = [float(t) for t in facts["thresholds"]]
            if len(trained.thresholds) != len(trained.class_names):
                raise ValueError("one threshold per label")
            if trained.temperature is not None:
                trained.temperature = [float(t) for t in trained.temperature]
                if len(trained.temperature) != len(trained.class_names) or not all(t > 0 for t in trained.temperature):
                    raise ValueError("one positive temperature per label")
        else:
            scale = facts["target_scale"]
            trained.target_scale = TargetScale(float(scale["mean"]), float(scale["std"]))
            interval = facts.get("interval")
            if interval is not None:
                trained.interval = {
                    **interval,
                    "half_width": float(interval["half_width"]),
                    "level": float(interval.get("level", LEVEL)),
                }
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"The sidecar of '{path}' has incomplete {task} facts ({e}); export again.") from None

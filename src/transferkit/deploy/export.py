"""Export a run's best model and prove, on its held-out images, that the export computes the same.

Formats: ``onnx`` (torch.onnx's dynamo exporter, dynamic batch), ``exported-program``
(``torch.export``, saved as ``.pt2``), ``safetensors`` (the weights, rebuilt from MODEL) and
``timm-hub`` (a folder that ``timm.create_model("hf-hub:...")`` loads, written by timm:
:mod:`.timm_hub`; the proof runs the model timm loads from it), or ``transformers`` (for a
transformers MODEL, the folder ``from_pretrained`` loads: :mod:`.transformers_folder`).
Every export is run beside the PyTorch model on the run's held-out images before anything is
kept; past the tolerance it is an error (:class:`~transferkit.errors.ParityError`, exit 1)
and nothing is written. Tolerances, measured in BENCHMARKS.md ("Export parity"):

* fp32: the largest logit difference at most :data:`FP32_TOLERANCE` of the largest logit
  (at least 1): float32 reorderings stay near 1e-5 of it; a BatchNorm left in training mode
  or another resize is 1e-1 and up.
* int8 (``quantize``): held-out accuracy at most :data:`INT8_MAX_DROP` points below fp32.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

from .. import __version__
from ..adapters import merged, peft_model_of
from ..data.decode import decode
from ..data.preprocess import BatchPrep, Preprocessing
from ..data.sources import open_data
from ..data.user_data import is_given
from ..errors import ConfigError, RunError
from ..inference.sidecar import sidecar_path, task_facts, write_sidecar
from ..inference.trained import TrainedModel
from ..train.folder.model_card import record_export
from .parity import (
    FP32_TOLERANCE,
    INT8_MAX_DROP,
    Proof,
    as_images,
    held_out_images,
    outputs_of,
    trained_for_export,
)
from .timm_hub import check_timm_model, load_timm_folder, write_timm_folder
from .transformers_folder import check_transformers_run, load_transformers_folder, write_transformers_folder

__all__ = ["FORMATS", "FP32_TOLERANCE", "INT8_MAX_DROP", "ExportResult", "export_run"]

FORMATS = {
    "onnx": ".onnx",
    "exported-program": ".pt2",
    "safetensors": ".safetensors",
    "timm-hub": "",
    "transformers": "",
}
FOLDERS = ("timm-hub", "transformers")  # formats written as a folder, with no sidecar: their config.json says it all
# How each folder is loaded by its library alone, for the log
LOADED_BY = {
    "timm-hub": "timm.create_model('local-dir:{out}', pretrained=True)",
    "transformers": "AutoModelForImageClassification.from_pretrained('{out}')",
}
QUANTIZE = ("dynamic", "static")
CALIBRATION_IMAGES = 128  # training images static quantisation calibrates on


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    parity: dict


class WithPreprocessing(nn.Module):
    """uint8 images (N, H, W, C), already resized and cropped, to logits: normalisation in the graph."""

    def __init__(self, model: nn.Module, pre: Preprocessing):
        super().__init__()
        self.model = model
        prep = BatchPrep(pre, torch.device("cpu"), channels_last=False)
        self.register_buffer("mean", prep.mean.clone())  # (1, C, 1, 1), in 0-255 units
        self.register_buffer("std", prep.std.clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float()
        return self.model((x - self.mean) / self.std)


def export_run(
    run: str | Path,
    *,
    format: str = "onnx",
    out: str | Path | None = None,
    with_preprocessing: bool = False,
    quantize: str | None = None,
    data: str | None = None,
    trust_code: bool = False,
    log=print,
    module: nn.Module | None = None,
    held_out: tuple[torch.Tensor, torch.Tensor, str] | None = None,
) -> ExportResult:
    """Export ``run``'s best model to ``out`` (default: ``model.onnx`` etc. in the run folder) with a sidecar.

    Args:
        format: ``onnx``, ``exported-program`` or ``safetensors``.
        with_preprocessing: take uint8 (N, H, W, C) images and normalise inside the graph
            (``onnx`` and ``exported-program``); resizing and cropping stay outside.
        quantize: ``dynamic`` or ``static`` int8 with onnxruntime's quantiser (``onnx`` only);
            static calibrates on training images.
        data: DATA for the proof, when the run's own DATA is not where it was.
        module: for a run trained from Python on a module, a module of its architecture (a copy is exported).
        held_out: the proof's (images, labels, where they come from) instead of DATA's held-out images: uint8
            images, or the model's float inputs for a run that trained on tensors as a Dataset gave them.

    Examples:
        >>> export_run("runs/lite0", format="onnx").parity["max_abs_diff"]
        2.1e-05
    """
    run, out = Path(run), _checked_out(Path(run), format, out, with_preprocessing, quantize)
    if format in FOLDERS:  # before the run is loaded: a MODEL of the user's code is never imported for nothing
        (check_timm_model if format == "timm-hub" else check_transformers_run)(_model_spec(run))
    trained = trained_for_export(run, trust_code, module)
    if with_preprocessing and is_given(trained.preprocessing):
        raise ConfigError(
            "with_preprocessing: this run trained on tensors your Dataset's transforms made; they stay outside the "
            "export, which takes those tensors.",
            argument="with_preprocessing",
        )
    model = trained.model.to(memory_format=torch.contiguous_format).float().eval()
    images, labels, split = held_out if held_out is not None else held_out_images(trained, data)
    log(f"parity images: {len(images)} from {split}")
    reference = outputs_of(lambda x: model(x), images, trained.preprocessing, uint8=False)
    if peft_model_of(trained.model) is not None:
        reload = partial(trained_for_export, run, trust_code, module)
        trained, model = _adapters_placed(trained, reload, images, reference, format, log)
    proof = Proof(images, labels, split, reference, trained, with_preprocessing)
    out.parent.mkdir(parents=True, exist_ok=True)  # as train --out makes its folder
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as tmp:
        exported = Path(tmp) / f"model{FORMATS[format]}"
        net = WithPreprocessing(model, trained.preprocessing) if with_preprocessing else model
        card = run / "MODEL_CARD.md"
        card = card.read_text(encoding="utf-8") if card.is_file() else None
        _export(format, net, images[:2], exported, with_preprocessing, trained, card=card)
        parity = proof.check(format, _runner(format, exported, trained))
        if quantize:
            quantized = Path(tmp) / "model.int8.onnx"
            _quantize(exported, quantized, quantize, trained, data, with_preprocessing)
            parity = proof.check_int8(quantize, _runner("onnx", quantized, trained), fp32=parity)
            exported = quantized
        _place(exported, out)
    return _written(run, out, format, quantize, trained, with_preprocessing, parity, log)


def _checked_out(run: Path, format: str, out, with_preprocessing: bool, quantize: str | None) -> Path:
    """Where the export goes (default: ``model.onnx`` etc. in the run folder), refused with the settings that do not
    go together, before anything is loaded."""
    if format not in FORMATS:
        raise ConfigError(f"Unknown export format '{format}'; use one of {', '.join(FORMATS)}.", argument="format")
    if quantize is not None and (quantize not in QUANTIZE or format != "onnx"):
        raise ConfigError(
            f"quantize must be dynamic or static, for the onnx format (got {quantize!r} with {format}).",
            argument="quantize",
        )
    if with_preprocessing and format in ("safetensors", *FOLDERS):
        raise ConfigError(
            "with_preprocessing needs a graph: use onnx or exported-program.", argument="with_preprocessing"
        )
    if not (run / "best.pt").is_file():
        raise RunError(f"'{run}' holds no best.pt: export needs a finished run folder from train.")
    suffix = (".int8" if quantize else "") + FORMATS[format]
    out = Path(out) if out is not None else run / (format if format in FOLDERS else f"model{suffix}")
    if format in FOLDERS and (out.is_file() or out.is_dir() and any(out.iterdir())):
        raise RunError(
            f"out '{out}' exists and is not an empty folder; the {format} export writes a new folder.", argument="out"
        )
    if format not in FOLDERS and out.is_dir():
        raise RunError(
            f"out '{out}' is a folder; give the file to write, such as {out / ('model' + suffix)}.", argument="out"
        )
    blocker = next((p for p in (out.parent, *out.parent.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise RunError(f"Cannot write '{out}': '{blocker}' is a file, not a folder.")
    return out


def _adapters_placed(trained: TrainedModel, reload, images, reference: torch.Tensor, format: str, log):
    """Adapters folded into their layers (peft's ``merge_and_unload``) where that keeps the outputs; kept beside
    them otherwise (a layer that transforms its weight before use: BiT's weight-standardised convolutions).
    Returns the run's model as it will be exported, and the network."""
    model = trained.model = merged(trained.model).eval()
    drift = (
        (outputs_of(lambda x: model(x), images, trained.preprocessing, uint8=False) - reference).abs().max()
        if format in ("onnx", "exported-program")  # the graphs; other formats hold the merged weights as they are
        else 0.0
    )
    if drift > FP32_TOLERANCE * max(1.0, float(reference.abs().max())):
        trained = reload()
        log(f"adapters kept beside their layers: merged, they change the outputs by up to {drift:.3g}")
        return trained, trained.model.to(memory_format=torch.contiguous_format).float().eval()
    log("adapters merged into their layers (peft's merge_and_unload)")
    return trained, model


def _written(run: Path, out: Path, format: str, quantize, trained, with_preprocessing: bool, parity: dict, log):
    """The sidecar beside a file (a folder holds its own files), the export in the model card; the result."""
    if format in FOLDERS:
        files = ", ".join(sorted(p.name for p in out.iterdir()))
        log(f"wrote {out} ({files}: {LOADED_BY[format].format(out=out)} loads it)")
        record_export(run, out.name, {"file": str(out), "format": format, "quantization": None, "parity": parity})
        return ExportResult(out, out / "config.json", parity)
    facts = {
        "format": format,
        "model": trained.config.model,
        "class_names": trained.class_names,
        "input": _input_facts(format, with_preprocessing, trained.preprocessing),
        "preprocessing": trained.preprocessing.to_dict(),
        "temperature": trained.temperature,
        **task_facts(trained),
        "quantization": quantize,
        "parity": parity,
        "versions": {"transferkit": __version__, "torch": torch.__version__},
    }
    side = write_sidecar(out, facts)
    log(f"wrote {out} and {side.name}")
    record_export(run, out.name, {"file": str(out), "format": format, "quantization": quantize, "parity": parity})
    return ExportResult(out, sidecar_path(out), parity)


def _model_spec(run: Path) -> str:
    """The run's MODEL, from its best checkpoint read without executing anything."""
    from ..train.folder.run_folder import load_run

    return str(load_run(run, which="best")["config"].get("model", ""))


def _export(
    format: str, net: nn.Module, example: torch.Tensor, path: Path, uint8: bool, trained, card: str | None = None
) -> None:
    if format == "timm-hub":
        write_timm_folder(net, trained, path, card=card)
        return
    if format == "transformers":
        write_transformers_folder(net, trained, path, card=card)
        return
    if format == "safetensors":
        from ..serialization import save_safetensors

        save_safetensors(
            trained.model.state_dict(), path, metadata={"model": trained.config.model, "format": "transferkit"}
        )
        return
    x = (
        example.permute(0, 2, 3, 1).contiguous()
        if uint8
        else BatchPrep(trained.preprocessing, torch.device("cpu"), channels_last=False)(example)
    )
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _eager_attention(net):
        warnings.simplefilter("ignore")
        if format == "exported-program":
            program = torch.export.export(net, (x,), dynamic_shapes=({0: batch},))
            torch.export.save(program, path)
            return
        try:
            torch.onnx.export(
                net,
                (x,),
                path,
                dynamo=True,
                dynamic_shapes=({0: batch},),
                input_names=["images"],
                output_names=["logits"],
                external_data=False,
                verbose=False,
            )
        except ImportError as e:
            raise ConfigError(f"ONNX export needs the export extra: pip install 'transferkit[export]' ({e}).") from None


def _runner(format: str, path: Path, trained):
    """A function from the exported file: input batch -> logits."""
    if format == "onnx":
        from ..inference.onnx_model import onnx_session

        session = onnx_session(path)
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    if format == "exported-program":
        module = torch.export.load(path).module()
        return lambda x: module(x)
    if format == "timm-hub":
        loaded = load_timm_folder(path)
        return lambda x: loaded(x)
    if format == "transformers":
        return load_transformers_folder(path)
    from safetensors.torch import load_file

    from ..model.factory import create_model

    config = trained.config
    rebuilt = create_model(
        config.model, num_classes=len(trained.class_names), in_chans=config.in_chans, image_size=config.image_size
    )
    rebuilt.load_state_dict(load_file(path))
    rebuilt.eval()
    return lambda x: rebuilt(x)


def _quantize(fp32: Path, out: Path, mode: str, trained, data: str | None, uint8: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prepared = out.with_name("prepared.onnx")  # shapes inferred and graph folded, as onnxruntime advises
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        if mode == "dynamic":
            quantize_dynamic(prepared, out, weight_type=QuantType.QInt8)
            return
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat

        images = _calibration_images(trained, data)
        prep = BatchPrep(trained.preprocessing, torch.device("cpu"), channels_last=False)
        batches = [images[i : i + 16] for i in range(0, len(images), 16)]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.feeds = iter(
                    {"images": (b.permute(0, 2, 3, 1).contiguous() if uint8 else prep(b)).numpy()} for b in batches
                )

            def get_next(self):
                return next(self.feeds, None)

        quantize_static(
            prepared,
            out,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def _calibration_images(trained, data: str | None) -> torch.Tensor:
    from ..data.sources import split_items

    spec = data or trained.config.data
    source = open_data(spec, trained.label_spec, trained.config.hf_options())
    train, _ = split_items(source.train, val_fraction=trained.config.val_fraction, seed=trained.config.seed)
    step = max(1, len(train) // CALIBRATION_IMAGES)
    return as_images(decode(train[::step][:CALIBRATION_IMAGES], trained.preprocessing).images)


def _place(exported: Path, out: Path) -> None:
    from ..serialization import atomic_path

    if exported.is_dir():  # a new folder, renamed into place whole: never half-written
        if out.is_dir():
            out.rmdir()  # empty, as checked before the export
        exported.rename(out)
        return

    with atomic_path(out, size=exported.stat().st_size) as tmp:
        shutil.copyfile(exported, tmp)


@contextlib.contextmanager
def _eager_attention(net: nn.Module):
    """A transformers model traced with its eager attention, restored after.

    torch.export cannot decompose the reshape after BEiT's SDPA attention with a dynamic batch
    ("Cannot view a tensor with shape [s77, 17, 2, 16] ... as [s77, 17, 32]"); the eager attention
    computes the same (the parity proof checks it) and exports.
    """
    models = [m.hf_model for m in net.modules() if hasattr(m, "hf_model")]
    before = [m.config._attn_implementation for m in models]
    for m in models:
        m.set_attn_implementation("eager")
    try:
        yield
    finally:
        for m, implementation in zip(models, before):
            m.set_attn_implementation(implementation)


def _input_facts(format: str, uint8: bool, pre: Preprocessing) -> dict:
    channels, height, width = pre.input_size
    if uint8:
        facts = {"layout": "NHWC", "dtype": "uint8", "normalised": False, "shape": [None, height, width, channels]}
    else:
        facts = {"layout": "NCHW", "dtype": "float32", "normalised": True, "shape": [None, channels, height, width]}
    if pre.channel_order != "RGB":  # the weights' order, as transferkit's preprocessing hands the image over
        facts["channel_order"] = pre.channel_order
    # A graph names its input; safetensors holds weights only.
    return facts if format == "safetensors" else {"name": "images", **facts}

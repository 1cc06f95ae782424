"""MODEL from the transformers library: an image classifier as Trainer saves one (``config.json``,
``model.safetensors``, ``preprocessor_config.json``), on the Hub (``transformers:ORG/REPO``) or in a
folder.

The network is built from its ``config.json`` (the class ``architectures`` names, ``from_config``)
(no code from the repository is run: ``auto_map`` entries are refused) and wrapped in
:class:`TransformersClassifier`, which takes images and returns logits as timm and torchvision models
do. Its module paths and state-dict keys are transformers' own (``vit.encoder.layer.11``,
``classifier``), so freezing, surgery, LoRA targets and checkpoints name what transformers' documentation
names; the weights load by name, and the head of another number of classes is reported as such.
Preprocessing comes from the image processor's configuration; stages (for ``gradual``,
``--unfreeze-last`` and layer-wise learning rates) are the embeddings, each encoder layer or stage, and
the rest.
"""

from __future__ import annotations

import inspect
import json
import math
import pickle
import re
from pathlib import Path

import torch
import torch.nn as nn

from .._storage import physical_memory
from .._text import human_bytes, one_line
from ..errors import ModelSpecError
from ..offline import offline
from ..torch_files import load_torch_file
from .hf_preprocessing import processor_config

__all__ = [
    "PREFIX",
    "TransformersClassifier",
    "build",
    "describe",
    "is_transformers_model",
    "pretrained_state",
    "transformers_files",
]

PREFIX = "transformers:"


def is_transformers_model(spec: str) -> bool:
    """``transformers:ORG/REPO``, or a folder whose ``config.json`` is transformers' (it names ``architectures``)."""
    if spec.startswith(PREFIX):
        return True
    config = Path(spec) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "architectures" in data and "model_type" in data


def transformers_files(spec: str, names: tuple[str, ...]) -> dict[str, Path]:
    """The named files of a transformers model that exist, from its folder or downloaded from the Hub
    (``huggingface_hub``'s cache; with ``HF_HUB_OFFLINE`` from the cache only)."""
    if not spec.startswith(PREFIX):
        return {name: Path(spec) / name for name in names if (Path(spec) / name).is_file()}
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    repo = spec[len(PREFIX) :]
    found = {}
    for name in names:
        try:
            found[name] = Path(hf_hub_download(repo, name, local_files_only=offline()))
        except EntryNotFoundError:
            continue
        except LocalEntryNotFoundError:
            if name == "config.json":
                raise ModelSpecError(f"'{spec}' is not in the Hugging Face cache and HF_HUB_OFFLINE is set.") from None
        except (HfHubHTTPError, OSError, ValueError) as e:
            if name == "config.json":
                raise ModelSpecError(f"Cannot fetch '{spec}' from the Hub: {one_line(e, 200)}") from None
    return found


def _config(spec: str):
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    files = transformers_files(spec, ("config.json",))
    if "config.json" not in files:
        raise ModelSpecError(f"'{spec}' has no config.json; a transformers model is a folder or repo with one.")
    try:
        data = json.loads(files["config.json"].read_text())
    except (OSError, ValueError) as e:
        raise ModelSpecError(f"'{spec}': config.json cannot be read: {one_line(e, 200)}") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ModelSpecError(f"'{spec}': config.json names no model_type; it is not a transformers model.")
    if data["model_type"] == "timm_wrapper":
        raise ModelSpecError(
            f"'{spec}' is a timm model in transformers' TimmWrapper: give it to transferkit as timm reads it, "
            "MODEL hf-hub:ORG/REPO for a Hub repository, or its timm architecture name with --weights FOLDER."
        )
    if data.get("auto_map"):
        raise ModelSpecError(
            f"'{spec}' needs the repository's own code (auto_map in config.json), which transferkit does not run."
        )
    # model type -> its image classification classes (one name, or a tuple of them)
    classifiers = {
        k: (v,) if isinstance(v, str) else tuple(v) for k, v in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.items()
    }
    architectures = data.get("architectures") or []
    if data["model_type"] not in classifiers or (
        architectures and architectures[0] not in classifiers[data["model_type"]]
    ):
        named = architectures[0] if architectures else data["model_type"]
        known = sorted({name for names in classifiers.values() for name in names})
        raise ModelSpecError(
            f"'{spec}' is a {named}, not an image classifier: MODEL takes transformers' image classification "
            f"models ({', '.join(known[:6])}, ...)."
        )
    try:
        return AutoConfig.for_model(**data), data
    except (ValueError, TypeError, KeyError) as e:
        raise ModelSpecError(f"'{spec}': config.json is not a valid {data['model_type']} configuration: {e}") from None


def _model_class(data: dict):
    """The class ``config.json``'s ``architectures`` names (a family may have several image classifiers, such as
    DeiT with and without its distillation head); transformers' auto class when it names none."""
    import transformers

    named = (data.get("architectures") or [None])[0]
    return getattr(transformers, named) if named else transformers.AutoModelForImageClassification


def describe(spec: str) -> dict:
    """What a transformers model's ``config.json`` says: its class, family, labels and input size."""
    config, data = _config(spec)
    labels = [config.id2label[i] for i in sorted(config.id2label)]
    size = getattr(config, "image_size", None)
    return {
        "architecture": (data.get("architectures") or [type(config).__name__])[0],
        "model_type": data["model_type"],
        "labels": labels,
        "image_size": size[0] if isinstance(size, list | tuple) else size,
    }


def build(spec: str, *, num_classes: int | None = None, image_size: int | None = None) -> TransformersClassifier:
    """The network ``spec`` names, with random weights, a head for ``num_classes`` (default: its own labels)."""
    config, data = _config(spec)
    labels = [config.id2label[i] for i in sorted(config.id2label)] if num_classes in (None, config.num_labels) else None
    if num_classes is not None and num_classes != config.num_labels:
        config.num_labels = num_classes
        config.id2label = {i: f"LABEL_{i}" for i in range(num_classes)}
        config.label2id = {v: k for k, v in config.id2label.items()}
    model_class = _model_class(data)
    processor = transformers_files(spec, ("preprocessor_config.json",)).get("preprocessor_config.json")
    preprocessing = _preprocessing(config, processor)
    _check_fits(spec, lambda: _construct(model_class, config), preprocessing["input_size"])
    try:
        model = _construct(model_class, config)
    except ImportError as e:  # a family built on a library of its own (DiNAT on natten)
        why = one_line(e, 200)
        raise ModelSpecError(f"'{spec}': transformers cannot build {model_class.__name__}: {why}") from None
    _check_runs(spec, model, preprocessing["input_size"])
    wrapped = TransformersClassifier(model, preprocessing, labels, spec)
    if image_size is not None:
        wrapped.transferkit_input_size = (wrapped.pretrained_cfg["input_size"][0], image_size, image_size)
    return wrapped


def _check_runs(spec: str, model: nn.Module, input_size: tuple[int, int, int]) -> None:
    """One image through the network: a config.json whose sizes disagree (four stage widths for two stages) is one
    line here, not an error in the middle of training."""
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(pixel_values=torch.zeros(1, *input_size))
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        raise ModelSpecError(
            f"'{spec}': the network config.json describes does not run on one {input_size[1]}x{input_size[2]} image "
            f"({one_line(e, 160)}); check its sizes."
        ) from None
    finally:
        model.train(training)


def _refuse_pickle(spec: str, error: Exception):
    """The checkpoint refusal, naming the code a ``pytorch_model.bin`` would run, for a pickle transformers would not
    read."""
    hint = "transformers models load only tensors: convert the file to model.safetensors where you trust its source."
    for path in transformers_files(spec, ("pytorch_model.bin",)).values():
        load_torch_file(path, refusal_hint=hint)  # raises the refusal with the names it would import
    raise ModelSpecError(f"transformers cannot read the weights of '{spec}' as tensors: {one_line(error, 200)}")


def _construct(model_class, config) -> nn.Module:
    return model_class.from_config(config) if hasattr(model_class, "from_config") else model_class._from_config(config)


def _check_fits(spec: str, construct, input_size: tuple[int, int, int]) -> None:
    """Refuse, before anything is allocated, a config whose network or one input image exceeds this machine's memory
    (an ``image_size`` of a million pixels sizes a ViT's position embeddings at hundreds of gigabytes)."""
    memory = physical_memory()
    if not memory:
        return
    image = math.prod(input_size) * 4
    if image > memory:
        raise ModelSpecError(
            f"'{spec}': one {input_size[1]}x{input_size[2]} input image (from its config.json and image processor) "
            f"needs {human_bytes(image)} as float32, more than this machine's {human_bytes(memory)}; check the "
            "image sizes in config.json and preprocessor_config.json."
        )
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            parameters = sum(p.numel() for p in construct().parameters())
    except Exception:  # noqa: BLE001 - a network that cannot be built without memory is built for real below
        return
    if parameters * 4 > memory:
        raise ModelSpecError(
            f"'{spec}': config.json describes a network of {parameters:,} parameters ({human_bytes(parameters * 4)} "
            f"as float32), more than this machine's {human_bytes(memory)} of memory; check the image and layer "
            "sizes in config.json."
        )


def pretrained_state(spec: str) -> dict[str, torch.Tensor]:
    """The weights of a transformers model as its modules name them, read by transformers itself (which maps
    the names a checkpoint was saved under, e.g. by an older release), with the checkpoint's own head."""
    from transformers.utils import logging as transformers_logging

    config, data = _config(spec)
    source = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # its load report is transferkit's to give
    transformers_logging.disable_progress_bar()
    try:
        model = _model_class(data).from_pretrained(
            source, config=config, local_files_only=offline(), trust_remote_code=False
        )
    except pickle.UnpicklingError as e:  # transformers reads .bin files with weights_only: nothing ran
        _refuse_pickle(spec, e)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelSpecError(f"transformers cannot load the weights of '{spec}': {one_line(e, 200)}") from None
    finally:
        transformers_logging.set_verbosity(verbosity)
        transformers_logging.enable_progress_bar()
    return model.state_dict()


def _preprocessing(config, processor: Path | None) -> dict:
    """timm's pretrained configuration keys from the image processor (:mod:`.hf_preprocessing`); without one,
    the config's image size, squashed, and transformers' ViT statistics."""
    channels = getattr(config, "num_channels", 3)
    if processor is not None:
        return processor_config(processor.parent, channels=channels)
    side = getattr(config, "image_size", 224)
    side = side[0] if isinstance(side, list | tuple) else side
    return {
        "input_size": (channels, int(side), int(side)),
        "mean": (0.5,) * channels,
        "std": (0.5,) * channels,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "squash",
    }


class _Reached(Exception):
    """Raised at the classifier's input, to stop a forward pass that only wants its features."""


class TransformersClassifier(nn.Module):
    """A transformers image classifier that takes images and returns logits.

    The transformers model's children are this module's children, so that paths and state-dict keys
    are its own; replacing one of them here (a new ``classifier``) replaces it in the model too.
    """

    def __init__(self, model: nn.Module, preprocessing: dict, labels: list[str] | None, spec: str):
        super().__init__()
        object.__setattr__(self, "hf_model", model)  # not registered: its parameters are the children's
        for name, child in model.named_children():
            self.add_module(name, child)
        # DeiT with its distillation head has two classifiers, averaged: the class token's is the head;
        # PP-LCNet's is its head
        top = next((n for n in ("classifier", "cls_classifier", "head") if n in model._modules), None)
        if top is None:
            raise ModelSpecError(
                f"{type(model).__name__} has no classifier, cls_classifier or head module: transferkit cannot tell "
                "which layer is its head."
            )
        linear = [n for n, m in model.get_submodule(top).named_modules() if isinstance(m, nn.Linear) and n]
        head = f"{top}.{linear[-1]}" if linear else top
        self.pretrained_cfg = {
            **preprocessing,
            "classifier": head,  # ResNet's is classifier.1, after a Flatten
            "architecture": type(model).__name__,
            "source": spec,
        }
        self.transferkit_weights = spec  # the weights come with the model
        self.label_names = labels  # the model's own classes, when its head is kept
        self.transferkit_input_size = preprocessing["input_size"]
        # ViTs run at another size than they were made for when asked to interpolate their position embeddings
        self.interpolates = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        hf = self.__dict__.get("hf_model")
        if hf is not None and isinstance(value, nn.Module) and name in hf._modules:
            hf._modules[name] = value

    def train(self, mode: bool = True):
        super().train(mode)
        self.hf_model.training = mode
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """What the classifier receives (the pooled or class-token features), as timm's feature API gives it: the
        forward pass stops at the classifier's input."""
        captured = []

        def stop(module, args):
            captured.append(args[0])
            raise _Reached

        handle = self.get_submodule(self.pretrained_cfg["classifier"]).register_forward_pre_hook(stop)
        try:
            self(x)
        except _Reached:
            pass
        finally:
            handle.remove()
        return captured[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.get_submodule(self.pretrained_cfg["classifier"])(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.interpolates and tuple(x.shape[-2:]) != tuple(self.pretrained_cfg["input_size"][1:]):
            out = self.hf_model(pixel_values=x, interpolate_pos_encoding=True)
        else:
            out = self.hf_model(pixel_values=x)
        return out.logits if "logits" in out else out[0]  # PP-LCNet returns its logits as last_hidden_state

    def group_matcher(self, coarse: bool = False) -> dict:
        """Stages as timm's ``group_matcher`` gives them: the embeddings, each encoder layer or stage, the rest."""
        prefix = self.hf_model.base_model_prefix
        base = getattr(self.hf_model, prefix, None)
        if base is None:
            return {"stem": r"^$"}
        stem = [n for n in base._modules if n in ("embeddings", "embedder")]
        matcher = {"stem": rf"^{prefix}\.(?:{'|'.join(stem)})\." if stem else r"^$"}
        encoder = base._modules.get("encoder")
        places = [("", base), *([("encoder.", encoder)] if encoder is not None else [])]
        blocks = next(
            (
                f"{where}{n}"
                for where, parent in places
                for n, m in parent.named_children()
                if isinstance(m, nn.ModuleList)
            ),
            None,
        )
        if blocks is not None:  # ViT's layers.N (encoder.layer.N before transformers 5), ConvNeXt's encoder.stages.N
            matcher["blocks"] = rf"^{prefix}\.{re.escape(blocks)}\.(\d+)\."
        return matcher

"""Every transformers image classifier through the commands: train (freeze, lora, full), predict, export.

For each class in transformers' ``AutoModelForImageClassification`` mapping: a small random network
of that class (its configuration's defaults with layers, widths and depths shrunk; the defaults where
shrinking breaks it), saved by transformers' own ``save_pretrained`` beside its family's image processor
(the processor class's defaults, the network's image size set to what the processor feeds), then, through
the library functions the commands call:

* the image processor: transferkit's tensor against ``AutoImageProcessor.from_pretrained(folder)(photo)`` on
  scikit-image's three photos (largest difference in grey levels);
* train with ``freeze``, ``lora`` and ``full`` (one epoch, 24 images of 2 classes), predict of 2 files,
  export of the ``lora`` run to ONNX with its parity proof in onnxruntime.

Each cell is ``ok``, ``refused: ...`` (the one line transferkit gives, a TransferkitError) or
``error: ...`` (anything else: a bug). ``--only TYPE`` runs the named model types.

    .venv/bin/python bench/transformers_families.py [--only vit,beit]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _report import command_line, machine, write_section
from PIL import Image

from transferkit.data.preprocess import EvalTransform, Preprocessing
from transferkit.deploy.export import export_run
from transferkit.errors import TransferkitError
from transferkit.inference.predict import load_predictor
from transferkit.model.hf_preprocessing import processor_config
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit

MAX_SIDE = 448  # larger processor sizes are brought down to 224 px
MAX_PARAMS = 60_000_000  # a network this size still trains an epoch of 24 images on 2 cores in seconds
LABELS = {"num_labels": 2, "id2label": {0: "a", 1: "b"}, "label2id": {"a": 0, "b": 1}}
# Attribute -> small value, applied where a configuration has the attribute (and to its vision sub-config).
SMALL_INTS = {
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "embed_dim": 16,
    "num_channels": 3,
    "projection_dim": 16,
    "neck_hidden_size": 32,
}
# Where a family's sizes depend on each other: EfficientNet's last convolution is 1280 channels times the width;
# Perceiver's cross-attention width is its input's (261 Fourier channels): one head divides it.
FAMILY = {
    "efficientnet": {"hidden_dim": 320},
    "perceiver": {
        "num_cross_attention_heads": 1,
        "num_self_attention_heads": 2,
        "d_latents": 64,
        "num_latents": 32,
        "num_blocks": 1,
        "num_self_attends_per_block": 1,
    },
}
SMALL_FLOATS = dict.fromkeys(("width_coefficient", "depth_coefficient", "width_multiplier", "depth_multiplier"), 0.25)


def _small_depths(config) -> dict:
    found = {}
    for name in ("depths", "num_layers", "layer_depths"):
        value = getattr(config, name, None)
        if isinstance(value, list | tuple) and all(isinstance(v, int) for v in value):
            found[name] = [1] * len(value)
    if isinstance(getattr(config, "num_hidden_layers", None), int) and not found:  # a CNN's maps to its stages
        found["num_hidden_layers"] = 2
    return found


def _small_widths(config) -> dict:
    found = {}
    for name in ("hidden_sizes", "embed_dims", "dims"):
        value = getattr(config, name, None)
        if isinstance(value, list | tuple) and all(isinstance(v, int) for v in value):
            found[name] = [max(8, v // 64 * 8) for v in value]
    for name, small in SMALL_INTS.items():
        if isinstance(getattr(config, name, None), int) and name not in ("num_channels", "num_hidden_layers"):
            found[name] = small
    for name, small in SMALL_FLOATS.items():
        if isinstance(getattr(config, name, None), float):
            found[name] = small
    return found


def _configs(model_type: str):
    """Configurations to try, smallest first: widths and depths shrunk, depths only, the defaults; each built
    with its sizes as arguments, as a user's configuration is, so that derived settings follow them."""
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type, **LABELS)
    for shrink in ((_small_depths, _small_widths), (_small_depths,), ()):
        overrides = {k: v for step in shrink for k, v in step(default).items()}
        if len(shrink) == 2:
            overrides.update(FAMILY.get(model_type, {}))
        for sub in ("vision_config",):
            part = getattr(default, sub, None)
            if part is not None and shrink:
                overrides[sub] = {**part.to_dict(), **{k: v for step in shrink for k, v in step(part).items()}}
        yield AutoConfig.for_model(model_type, **LABELS, **overrides)


def _processor(model_type: str):
    import transformers
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type)
    if not names:
        return None
    if model_type == "timm_wrapper":  # timm's data configuration, as a timm Hub repository carries it
        from timm.models import get_pretrained_cfg

        return transformers.TimmWrapperImageProcessor(pretrained_cfg=get_pretrained_cfg("resnet50").to_dict())
    name = names.get("torchvision") or next(iter(names.values())) if isinstance(names, dict) else names
    return getattr(transformers, name)()


def config_channels(config) -> int:
    vision = getattr(config, "vision_config", None) or config
    return getattr(vision, "num_channels", 3)


class NotBuilt(Exception):
    """No configuration of the class that this sweep could build small enough: the sweep's limit, not transferkit's."""


def _count(model_class, config) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in model_class(config).parameters())


def _build(model_type: str, class_name: str, folder: Path) -> dict:
    """Save the smallest network of ``class_name`` that builds, with its processor; what was built."""
    import transformers

    model_class = getattr(transformers, class_name)
    processor = _processor(model_type)
    if processor is not None:
        processor.save_pretrained(folder)
    size, feeds_images = None, True
    if processor is not None:
        try:
            size = Preprocessing.from_config(processor_config(folder)).input_size[1]
        except TransferkitError:  # refused by transferkit (ImageGPT's tokens): built untried, for it to answer
            feeds_images = False
    if size and size > MAX_SIDE:  # Donut's 2560x1920 documents: the mechanics at a size 2 cores train
        path = folder / "preprocessor_config.json"
        settings = json.loads(path.read_text())
        settings["size"] = {"height": 224, "width": 224} if "height" in settings["size"] else {"shortest_edge": 224}
        if isinstance(settings.get("crop_size"), dict):
            settings["crop_size"] = {"height": 224, "width": 224}
        path.write_text(json.dumps(settings))
        size = Preprocessing.from_config(processor_config(folder)).input_size[1]
    last = None
    for config in _configs(model_type):
        for part in [config, getattr(config, "vision_config", None)]:
            if size and part is not None and isinstance(getattr(part, "image_size", None), int):
                part.image_size = size
        try:
            params = _count(model_class, config)
            if params > MAX_PARAMS:
                last = f"{params / 1e6:.0f}M parameters at its smallest configuration"
                continue
            torch.manual_seed(0)
            model = model_class(config).eval()
            with torch.no_grad():  # a shrunk configuration whose sizes disagree: the next one is tried
                if feeds_images:
                    model(pixel_values=torch.zeros(1, config_channels(config), size or 224, size or 224))
            model.save_pretrained(folder)
            return {"params": params, "processor": type(processor).__name__ if processor else "none"}
        except ImportError:  # a family on a library of its own: the config alone, for transferkit to answer
            config.architectures = [class_name]
            config.save_pretrained(folder)
            return {"params": 0, "processor": type(processor).__name__ if processor else "none"}
        except Exception as e:  # noqa: BLE001 - the next, larger configuration is tried
            last = f"{type(e).__name__}: {str(e)[:70]}"
    raise NotBuilt(f"not built here: {last}")


def _photo_parity(folder: Path) -> str:
    import skimage.data
    from transformers import AutoImageProcessor

    if not (folder / "preprocessor_config.json").is_file():
        return "no processor: transferkit's default (squash at image_size, mean and std 0.5)"
    processor = AutoImageProcessor.from_pretrained(str(folder))
    pre = Preprocessing.from_config(processor_config(folder))
    worst = 0.0
    for name in ("chelsea", "coffee", "rocket"):
        photo = Image.fromarray(getattr(skimage.data, name)())
        expected = processor(photo, return_tensors="pt").pixel_values[0]
        got = EvalTransform(pre)(photo)
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)} vs {tuple(expected.shape)}"
        worst = max(worst, float(((got - expected).abs() * torch.tensor(pre.std).view(-1, 1, 1) * 255).max()))
    mode = f"{pre.crop_mode} {pre.input_size[1]}" + (" BGR" if pre.channel_order == "BGR" else "")
    return f"{worst:.2f} ({mode})"


def _cell(row: dict, key: str, work):
    started = time.perf_counter()
    try:
        result = work()
        row[key] = "ok" if not isinstance(result, str) else result
        return result
    except TransferkitError as e:  # the sweep's temporary folder left out of the words
        text = re.sub(r"'?/tmp/[^/\s]+/([^'\s]*)'?", r"\1", str(e))
        row[key] = "refused: " + text.replace("|", "/").replace("\n", " ")[:90]
    except NotBuilt as e:
        row[key] = str(e).replace("|", "/")
    except Exception as e:  # noqa: BLE001 - every failure is a finding of the table
        row[key] = f"error: {type(e).__name__}: {str(e)[:80]}".replace("|", "/").replace("\n", " ")
    finally:
        row[key + "_s"] = time.perf_counter() - started
    return None


def one(model_type: str, class_name: str, data: Path, tmp: Path) -> dict:
    folder = tmp / class_name
    row: dict = {"type": model_type, "class": class_name}
    built = _cell(row, "build", lambda: _build(model_type, class_name, folder))
    if built is None:
        return row
    row["params"], row["processor"] = built["params"], built["processor"]
    _cell(row, "processor_parity", lambda: _photo_parity(folder))
    common = dict(model=str(folder), data=str(data), epochs=1, precision="fp32", channels_last=False, batch_size=8)
    quiet = lambda message: None  # noqa: E731
    for strategy in ("freeze", "lora", "full"):
        config = TrainConfig(**common, strategy=strategy, out=str(tmp / f"{class_name}-{strategy}"))
        _cell(row, strategy, lambda config=config: fit(config, log=quiet))
    files = [str(p) for p in sorted(data.glob("*/0.png"))]
    run = tmp / f"{class_name}-freeze"
    _cell(row, "predict", lambda: load_predictor(str(run), device="cpu").predict(files))
    export = _cell(row, "export", lambda: export_run(tmp / f"{class_name}-lora", format="onnx", log=quiet))
    if export is not None:
        row["export"] = f"ok ({export.parity['max_abs_diff']:.1e})"
    return row


def classes(only: list[str] | None) -> list[tuple[str, str]]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    found = []
    for model_type, names in sorted(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.items()):
        if only and model_type not in only:
            continue
        for name in (names,) if isinstance(names, str) else names:
            found.append((model_type, name))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    only = [t for t in args.only.split(",") if t] or None
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        for index, name in enumerate(("a", "b")):
            (tmp / "data" / name).mkdir(parents=True)
            for i in range(12):
                pixels = np.clip(rng.normal(60 + 120 * index, 30, (80, 120, 3)), 0, 255).astype("uint8")
                Image.fromarray(pixels).save(tmp / "data" / name / f"{i}.png")
        for model_type, class_name in classes(only):
            rows.append(one(model_type, class_name, tmp / "data", tmp))
            for path in tmp.iterdir():
                if path.name != "data":
                    shutil.rmtree(path, ignore_errors=True)
            print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("_s")}), flush=True)
    commands = ["processor_parity", "freeze", "lora", "full", "predict", "export"]
    lines = [
        f"`{command_line()}` on {machine()}.",
        "",
        "Random initialisation, each class's configuration shrunk (or its defaults), saved with its family's "
        "image processor; 24 images of 2 classes, one epoch, fp32. `processor` is the largest difference in "
        "grey levels between transferkit's tensor and the processor's own on three photos, with the crop mode "
        "and size it was read as; `export` is the lora run's ONNX export, with the parity proof's largest logit "
        "difference. `refused` cells are transferkit's one-line refusals; `error` cells are failures.",
        "",
        "Where `processor` is not 0: Perceiver crops the centre square before it resizes, PP-LCNet rounds the long "
        "side where torchvision truncates it (a pixel, on two of the three photos), TextNet keeps the aspect ratio "
        "without a crop (transferkit takes the centre square); each is a documented approximation.",
        "",
        "| model type | class | parameters | processor | " + " | ".join(commands[1:]) + " |",
        "|---|---|---:|---|" + "---|" * (len(commands) - 1),
    ]
    for r in rows:
        if "params" not in r:
            lines.append(f"| {r['type']} | {r['class']} | - | {r['build']} |" + " - |" * (len(commands) - 1))
            continue
        cells = [r.get(c, "-") for c in commands]
        params = f"{r['params'] / 1e6:.2f}M" if r["params"] else "-"
        lines.append(f"| {r['type']} | {r['class']} | {params} | " + " | ".join(cells) + " |")
    errors = sum(1 for r in rows for c in ["build", *commands] if str(r.get(c, "")).startswith("error"))
    worked = sum(1 for r in rows if all(str(r.get(c, "")).startswith("ok") for c in commands[1:]))
    refused = sum(1 for r in rows if str(r.get("freeze", "")).startswith("refused"))
    unbuilt = sum(1 for r in rows if "params" not in r)
    lines += [
        "",
        f"{len(rows)} classes: {worked} ran every command, {refused} were refused in one line, {unbuilt} could not be "
        f"built small enough for this sweep; {errors} cells are errors.",
    ]
    if only is None:
        write_section("transformers families through the commands", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

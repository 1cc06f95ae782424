"""Pretrained weights from the hubs people use, downloaded by the libraries' own clients into their caches.

A weights spec is one of:

* ``timm`` (the model's default pretrained tag) or ``timm:TAG`` (``timm:a1_in1k``): timm's
  pretrained configuration names a Hugging Face repo or a URL;
* ``hf-hub:ORG/REPO`` (a timm-style repo: ``config.json`` and ``model.safetensors`` or
  ``pytorch_model.bin``);
* ``transformers:ORG/REPO``: the weights of a transformers model's repo (the MODEL's own);
* ``torchvision:ENUM`` (``torchvision:IMAGENET1K_V2``, ``torchvision:DEFAULT``) for
  ``torchvision:`` models;
* an ``https://`` URL.

Hugging Face files go through ``huggingface_hub`` into ``HF_HOME``; URLs through ``torch.hub``
into ``TORCH_HOME`` (checked against the hash prefix in the file name where it has one, as
torchvision's and timm's files do), so a file fetched by timm or torchvision is reused here and
the other way round. Both write to a temporary file first: an interrupted download is never
taken for a complete one. ``HF_HUB_OFFLINE=1`` uses the cache only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from .._text import one_line
from ..data.preprocess import Preprocessing, torchvision_data_config
from ..errors import Unreachable, WeightsError
from ..offline import offline

__all__ = [
    "Fetched",
    "fetch",
    "is_remote",
    "model_weights",
    "remote_preprocessing",
    "timm_cached_file",
]

_PREFIXES = ("timm:", "hf-hub:", "transformers:", "torchvision:", "https://", "http://")
_HF_FILES = ("model.safetensors", "pytorch_model.bin")
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub's convention: name-<sha256 prefix>.ext


@dataclass
class Fetched:
    """A downloaded (or cached) weights file and the pretrained configuration that came with it."""

    path: Path
    spec: str
    config: dict | None  # mean, std, interpolation, crop_pct, input_size ... when the source gives them
    origin: str  # where it came from: a repo id or a URL


def is_remote(spec: str | os.PathLike) -> bool:
    text = str(spec)
    return text == "timm" or text.startswith(_PREFIXES)


def fetch(spec: str, model: nn.Module | None = None) -> Fetched:
    """Download ``spec`` (or take it from the cache) and return its file and configuration.

    Examples:
        >>> fetch("timm:a1_in1k", timm.create_model("resnet18")).origin
        'timm/resnet18.a1_in1k'
    """
    if spec == "timm" or spec.startswith("timm:"):
        cfg = _timm_cfg(spec, model)
        cached = timm_cached_file(cfg)
        if cached is not None:  # fetched before, by timm or here: either cache serves
            return Fetched(cached, spec, cfg, cfg.get("hf_hub_id") or cfg.get("url"))
        if cfg.get("hf_hub_id"):
            names = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else _HF_FILES
            return Fetched(_hf_file(cfg["hf_hub_id"], names), spec, cfg, cfg["hf_hub_id"])
        if cfg.get("url"):
            return Fetched(_url_file(cfg["url"]), spec, cfg, cfg["url"])
        raise WeightsError(f"timm has no download for {cfg.get('architecture')}.{cfg.get('tag')}.")
    if spec.startswith("hf-hub:"):
        repo = spec.split(":", 1)[1]
        return Fetched(_hf_file(repo, _HF_FILES), spec, _hf_config(repo), repo)
    if spec.startswith("transformers:"):  # the preprocessing comes with the model (model.hf_transformers)
        repo = spec.split(":", 1)[1]
        return Fetched(_hf_file(repo, _HF_FILES), spec, None, repo)
    if spec.startswith("torchvision:"):
        weights = _torchvision_weights(spec, model)
        return Fetched(_url_file(weights.url), spec, _torchvision_config(weights), weights.url)
    return Fetched(_url_file(spec), spec, None, spec)


def model_weights(model: str) -> list[dict]:
    """The pretrained weights a MODEL name has: spec, where they come from, whether cached (and the file's size).

    Nothing is downloaded. For torchvision models the size is torchvision's own record of it.

    Examples:
        >>> [w["spec"] for w in model_weights("resnet50")][:2]
        ['timm:a1_in1k', 'timm:a1h_in1k']
    """
    if model.startswith("torchvision:"):
        import torch.hub
        import torchvision

        name = model.split(":", 1)[1]
        try:
            enum = torchvision.models.get_model_weights(name)
        except (ValueError, KeyError):
            raise WeightsError(f"torchvision has no weights for '{name}'.") from None
        rows = []
        for member, weights in enum.__members__.items():
            path = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
            size = weights.meta.get("_file_size")
            rows.append(
                {
                    "spec": f"torchvision:{member}",
                    "origin": weights.url,
                    "cached": str(path) if path.is_file() else None,
                    "size_mb": path.stat().st_size / 2**20 if path.is_file() else size,
                    "default": weights is enum.DEFAULT and member != "DEFAULT",
                }
            )
        return rows
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(model):
        raise WeightsError(f"Unknown model '{model}': give a timm name or torchvision:NAME.")
    names = timm.list_pretrained(f"{model}.*")
    default = timm.create_model(model, pretrained=False).pretrained_cfg.get("tag") if names else None
    rows = []
    for full in names:
        tag = full.split(".", 1)[1]
        cfg = get_pretrained_cfg(full).to_dict()
        cached = timm_cached_file(cfg)
        rows.append(
            {
                "spec": f"timm:{tag}",
                "origin": cfg.get("hf_hub_id") or cfg.get("url"),
                "cached": str(cached) if cached else None,
                "size_mb": cached.stat().st_size / 2**20 if cached else None,
                "default": tag == default,
            }
        )
    return rows


def remote_preprocessing(spec: str, model: nn.Module) -> Preprocessing | None:
    """The preprocessing that ``spec``'s weights expect, from their configuration; None when it gives none."""
    if spec == "timm" or spec.startswith("timm:"):
        cfg = _timm_cfg(spec, model)
    elif spec.startswith("hf-hub:"):
        cfg = _hf_config(spec.split(":", 1)[1])
    elif spec.startswith("torchvision:"):
        cfg = _torchvision_config(_torchvision_weights(spec, model))
    else:
        return None
    if not cfg or "mean" not in cfg:
        return None
    return Preprocessing.from_config(cfg)


def _timm_cfg(spec: str, model: nn.Module | None) -> dict:
    from timm.models import get_pretrained_cfg

    own = getattr(model, "pretrained_cfg", None) if model is not None else None
    if not own:
        raise WeightsError(f"Weights '{spec}' need a timm model (MODEL a timm name such as resnet50).")
    arch = own.get("architecture")
    tag = spec.split(":", 1)[1] if ":" in spec else own.get("tag")
    name = f"{arch}.{tag}" if tag else arch
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # timm's word for a tag the architecture does not have
        cfg = None
    if cfg is None:
        from timm import list_pretrained

        tags = [n.split(".", 1)[1] for n in list_pretrained(f"{arch}.*")]
        raise WeightsError(f"timm has no pretrained tag '{tag}' for {arch}; its tags: {', '.join(tags) or 'none'}.")
    return cfg.to_dict()


def timm_cached_file(cfg: dict) -> Path | None:
    """timm's file for ``cfg`` when the Hugging Face cache or torch's holds it already."""
    import torch.hub
    from huggingface_hub import try_to_load_from_cache

    if cfg.get("hf_hub_id"):
        for name in (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else _HF_FILES:
            found = try_to_load_from_cache(cfg["hf_hub_id"], name)
            if isinstance(found, str):
                return Path(found)
    if cfg.get("url"):
        path = Path(torch.hub.get_dir()) / "checkpoints" / cfg["url"].split("?", 1)[0].rsplit("/", 1)[-1]
        if path.is_file():
            return path
    return None


def _hf_file(repo: str, names: tuple[str, ...]) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    missing = []
    for name in names:
        try:
            return Path(hf_hub_download(repo, name, local_files_only=offline()))
        except LocalEntryNotFoundError:
            missing.append(name)
            if not offline():
                raise Unreachable(
                    f"Cannot reach the Hugging Face Hub for {repo}/{name}, and it is not in the cache "
                    f"({_hf_cache()}). Connect, or copy the file into the cache."
                ) from None
        except EntryNotFoundError:
            missing.append(name)
        except HfHubHTTPError as e:
            raise WeightsError(f"Hugging Face Hub: {repo}: {_first_line(e)}") from None
        except Exception as e:  # a cut connection (httpx's own errors), a full disk
            raise Unreachable(f"Downloading {repo}/{name} failed: {_first_line(e)}. Try again.") from None
    where = f"the cache ({_hf_cache()}; HF_HUB_OFFLINE is set)" if offline() else "the repo"
    raise (Unreachable if offline() else WeightsError)(f"'{repo}' has none of {', '.join(missing)} in {where}.")


def _hf_config(repo: str) -> dict | None:
    """A timm-style repo's ``config.json``: its ``pretrained_cfg``, or None when there is none."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        path = hf_hub_download(repo, "config.json", local_files_only=offline())
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None
    except Exception as e:  # the weights file's download reports the reason in its own words
        raise WeightsError(f"Hugging Face Hub: {repo}: {_first_line(e)}") from None
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        raise WeightsError(f"'{repo}' has a config.json that is not JSON.") from None
    cfg = config.get("pretrained_cfg") if isinstance(config, dict) else None
    return cfg if isinstance(cfg, dict) else None


def _hf_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _url_file(url: str) -> Path:
    import torch.hub

    if not url.startswith(("https://", "http://")):
        raise WeightsError(f"'{url}' is not an http(s) URL.")
    name = url.split("?", 1)[0].rsplit("/", 1)[-1] or "weights.bin"
    target = Path(torch.hub.get_dir()) / "checkpoints" / name
    if target.is_file():
        return target
    if offline():
        raise Unreachable(f"'{name}' is not in torch's cache ({target.parent}) and HF_HUB_OFFLINE is set.")
    target.parent.mkdir(parents=True, exist_ok=True)
    found = _HASH_IN_NAME.search(name)
    try:
        # Written to a temporary file and moved into place complete, after the hash check.
        torch.hub.download_url_to_file(url, str(target), hash_prefix=found.group(1) if found else None)
    except RuntimeError as e:
        raise WeightsError(f"Downloaded '{name}' does not match its hash: {_first_line(e)}. Try again.") from None
    except Exception as e:  # HTTPError, URLError, a cut connection
        raise Unreachable(f"Downloading {url} failed: {_first_line(e)}.") from None
    return target


def _torchvision_weights(spec: str, model: nn.Module | None):
    import torchvision

    name = getattr(model, "transferkit_torchvision", None)
    if name is None:
        raise WeightsError(f"Weights '{spec}' need a torchvision model (MODEL torchvision:NAME).")
    enum = spec.split(":", 1)[1]
    weights = torchvision.models.get_model_weights(name)
    try:
        return weights[enum]
    except KeyError:
        known = ", ".join(["DEFAULT", *weights.__members__])
        raise WeightsError(f"torchvision has no weights '{enum}' for {name}; choose one of {known}.") from None


def _torchvision_config(weights) -> dict:
    return torchvision_data_config(weights.transforms())


def _first_line(error: BaseException) -> str:
    return one_line(error, 240) or type(error).__name__

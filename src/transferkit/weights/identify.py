"""Which network a checkpoint file came from, and whether another implementation computes the same.

A file *fits by names* an architecture whose parameter names and shapes it holds exactly (the
head aside: its class count may differ). It *fits by structure* one whose tensors have the
same shapes in the same order under other names: loading maps it by position, and the result
may compute something else (other padding, BatchNorm eps or activation). The two are told
apart by running both on natural photos (:func:`compare_outputs`).

Searching every timm and torchvision architecture means building about 1,450 models (four
minutes even on the meta device), so the search reads ``architectures.json``: for each
architecture a digest of its names and shapes and one of its shapes in order, made by
:func:`build_index` (``python -m transferkit.weights.identify``). Every candidate the index
names is built again and checked against the file before it is reported, so an index made
with other library versions can miss an architecture but never report a wrong one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import WeightsError

__all__ = ["Candidate", "Identification", "build_index", "compare_outputs", "identify", "variant_check"]

INDEX_PATH = Path(__file__).with_name("architectures.json")
# Outputs count as identical when they differ by less than this share of their largest value:
# float32 reorderings of the same computation stay near 1e-6, another padding or eps is 1e-3 and up.
IDENTICAL_REL = 1e-4


@dataclass
class Candidate:
    """An architecture a file fits, as a MODEL string, and how."""

    model: str  # "resnet18" (timm) or "torchvision:resnet18"
    fit: str  # "names" or "structure"
    num_classes: int | None  # the head's class count in the file; None when it has no head


@dataclass
class Identification:
    source: str
    tensors: int
    parameters: int
    record: str | None = None  # the registry record whose file this is
    record_model: str | None = None  # the architecture that record was made and checked for
    by_names: list[Candidate] = field(default_factory=list)
    by_structure: list[Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    transformers: dict | None = None  # a transformers model's class, family, labels and size (its config.json)

    @property
    def native(self) -> str | None:
        """The MODEL to build for this file: the record's, or the first that fits by names."""
        if self.record_model:
            return self.record_model
        return self.by_names[0].model if self.by_names else None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["native"] = self.native
        return out


# --- the index ---------------------------------------------------------------------------------


def _head_keys(model: nn.Module, keys: Iterable[str]) -> list[str]:
    from ..errors import SurgeryError
    from ..model.surgery import find_head

    heads = []
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier")
    if classifier:
        heads.extend(classifier if isinstance(classifier, (tuple, list)) else [classifier])
    try:
        heads.append(find_head(model))
    except SurgeryError:
        pass
    return [k for k in keys if any(k == h or k.startswith(h + ".") for h in heads)]


def _kept(tensors: Mapping[str, torch.Tensor]) -> list[tuple[str, tuple]]:
    # num_batches_tracked is left out: many checkpoints drop it, and it carries no shape.
    return [(k, tuple(t.shape)) for k, t in tensors.items() if not k.endswith("num_batches_tracked")]


def _digest(lines: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:20]


def _names_digest(kept: list[tuple[str, tuple]], head: set[str]) -> str:
    return _digest(sorted(f"{k}:{s}" for k, s in kept if k not in head))


def _shapes_digest(shapes: list[tuple]) -> str:
    return _digest(str(s) for s in shapes)


def signature(model: nn.Module) -> dict:
    """The index entry of a built model: its head's tensors and the two digests."""
    state = model.state_dict()
    kept = _kept(state)
    head = _head_keys(model, [k for k, _ in kept])
    body = [s for k, s in kept if k not in set(head)]
    return {"head": head, "names": _names_digest(kept, set(head)), "shapes": _shapes_digest(body)}


def _build(model: str, *, meta: bool = True) -> nn.Module:
    import warnings

    from ..model.factory import create_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's init warnings, timm's deprecations
        if meta:
            try:
                with torch.device("meta"):
                    return create_model(model)
            except Exception:  # a factory that computes with tensors while building (regnet)
                pass
        return create_model(model)


def _all_models() -> list[str]:
    import timm
    import torchvision

    return timm.list_models() + [f"torchvision:{n}" for n in torchvision.models.list_models(module=torchvision.models)]


def build_index(path: Path = INDEX_PATH, *, models: list[str] | None = None, progress=print) -> dict:
    """Build every timm and torchvision architecture on the meta device and write their signatures."""
    import timm
    import torchvision

    entries, failed = {}, []
    for i, name in enumerate(models or _all_models()):
        try:
            entries[name] = signature(_build(name))
        except Exception as e:  # noqa: BLE001 - an architecture that cannot be built is left out, and listed
            failed.append(f"{name}: {type(e).__name__}")
        if progress and (i + 1) % 100 == 0:
            progress(f"{i + 1} architectures")
    index = {
        "versions": {"timm": timm.__version__, "torchvision": torchvision.__version__},
        "failed": failed,
        "architectures": entries,
    }
    from ..serialization import write_text

    lines = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in entries.items())
    head = json.dumps({"versions": index["versions"], "failed": failed})[:-1]
    write_text(path, f'{head}, "architectures": {{\n{lines}\n}}}}\n')
    return index


@lru_cache(maxsize=1)
def _index() -> dict:
    try:
        return json.loads(INDEX_PATH.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(
            f"The architecture index {INDEX_PATH} cannot be read ({e}); reinstall transferkit."
        ) from None


# --- identification ----------------------------------------------------------------------------


def identify(source: str | Path, *, trust_checkpoint: bool = False) -> Identification:
    """The architectures ``source`` (a checkpoint file, a registry name, or a transformers model's folder or
    ``transformers:ORG/REPO``) fits, by names and by structure.

    Examples:
        >>> found = identify("resnet18-trained.pth")
        >>> [c.model for c in found.by_names]
        ['resnet18', 'torchvision:resnet18']
    """
    from ..model.hf_transformers import describe, is_transformers_model
    from .checkpoint import read_checkpoint
    from .registry import list_weights, resolve_source

    described = describe(str(source)) if is_transformers_model(str(source)) else None
    path, record = resolve_source(source)
    ckpt = read_checkpoint(path, trust_checkpoint=trust_checkpoint)
    tensors = {k: v for k, v in ckpt.tensors.items() if isinstance(v, torch.Tensor)}
    found = Identification(
        source=str(source),
        tensors=len(tensors),
        parameters=sum(t.numel() for t in tensors.values() if t.is_floating_point()),
    )
    if record is None and Path(path).is_file():
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        record = next((r for r in list_weights() if digest.startswith(r.sha256_prefix)), None)
    if record is not None:
        found.record, found.record_model = record.name, record.architecture
    if described is not None:  # the network its config.json names is the one it was saved from
        found.transformers, found.record_model = described, str(source)
    found.by_names, found.by_structure = _fits(tensors)
    versions = _index()["versions"]
    installed = _installed_versions()
    if versions != installed:
        found.notes.append(
            f"the architecture index was made with timm {versions['timm']} and torchvision {versions['torchvision']} "
            f"(installed: {installed['timm']}, {installed['torchvision']}): newer architectures are not searched"
        )
    return found


def _installed_versions() -> dict:
    import timm
    import torchvision

    return {"timm": timm.__version__, "torchvision": torchvision.__version__}


def _fits(tensors: Mapping[str, torch.Tensor]) -> tuple[list[Candidate], list[Candidate]]:
    kept = _kept(tensors)
    entries = _index()["architectures"]
    by_names, by_structure = [], []
    digests: dict[tuple, str] = {}
    for name, entry in entries.items():
        head = tuple(entry["head"])
        if head not in digests:
            digests[head] = _names_digest(kept, set(head))
        if digests[head] == entry["names"] and _confirm(name, tensors, by="names"):
            by_names.append(Candidate(name, "names", _classes([tensors[k] for k in head if k in tensors])))
    named = {c.model for c in by_names}
    for name, entry in entries.items():
        n = len(entry["head"])
        if name in named or len(kept) <= n:
            continue
        body, tail = kept[: len(kept) - n], kept[len(kept) - n :]
        if _shapes_digest([s for _, s in body]) == entry["shapes"] and _confirm(name, tensors, by="structure"):
            by_structure.append(Candidate(name, "structure", _classes([tensors[k] for k, _ in tail])))
    return by_names, by_structure


def _classes(head: list[torch.Tensor]) -> int | None:
    weights = [t for t in head if t.dim() >= 2]
    return int(weights[0].shape[0]) if weights else None


def _confirm(name: str, tensors: Mapping[str, torch.Tensor], *, by: str) -> bool:
    """Build ``name`` again and check the fit the index promised (the index may be another version's)."""
    try:
        model = _build(name)
    except Exception:  # noqa: BLE001 - not buildable here: not a fit
        return False
    state = model.state_dict()
    head = set(_head_keys(model, state))
    mine = [(k, s) for k, s in _kept(state) if k not in head]
    theirs = _kept(tensors)
    if by == "names":
        shapes = dict(theirs)
        return all(shapes.get(k) == s for k, s in mine)
    return [s for _, s in mine] == [s for _, s in theirs[: len(mine)]]


# --- comparing two implementations ---------------------------------------------------------------


@torch.no_grad()
def compare_outputs(reference: nn.Module, other: nn.Module, preprocessing) -> dict:
    """Run both models on scikit-image's sample photos and compare what they compute.

    Logits are compared when both heads have the same size; otherwise the features entering
    each head. Returns the largest and mean absolute difference, the largest absolute value
    of the reference (the scale), top-1 agreement, and whether the outputs are identical
    (difference within :data:`IDENTICAL_REL` of the scale).
    """
    from ..data.preprocess import BatchPrep, to_uint8_tensor
    from .photos import sample_photos

    photos = sample_photos(preprocessing.input_size[0])
    images = torch.stack([to_uint8_tensor(img, preprocessing) for img in photos])  # (N, C, H, W)
    x = BatchPrep(preprocessing, torch.device("cpu"), channels_last=False)(images)
    a, head_a = _run(reference, x)
    b, head_b = _run(other, x)
    compared = "logits"
    if a.shape != b.shape:
        a, b, compared = head_a, head_b, "features"
        if a is None or b is None or a.shape != b.shape:
            raise WeightsError("The two models' outputs and features have different shapes; they cannot be compared.")
    diff = (a - b).abs()
    scale = float(a.abs().max())
    out = {
        "compared": compared,
        "photos": len(photos),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "scale": scale,
        "identical": float(diff.max()) <= IDENTICAL_REL * max(scale, 1e-6),
    }
    if compared == "logits":
        out["top1_agreement"] = int((a.argmax(-1) == b.argmax(-1)).sum())
    return out


def _run(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits, and the features entering the head (captured by a hook)."""
    from ..errors import SurgeryError
    from ..model.surgery import find_head

    seen = {}
    try:
        head = model.get_submodule(find_head(model))
        handle = head.register_forward_pre_hook(lambda module, inputs: seen.setdefault("x", inputs[0].flatten(1)))
    except SurgeryError:
        handle = None
    was_training = model.training
    model.eval()
    try:
        logits = model(x.to(next(model.parameters()).dtype)).float()
    finally:
        model.train(was_training)
        if handle is not None:
            handle.remove()
    features = seen.get("x")
    return logits, None if features is None else features.float()


def model_name(model: nn.Module) -> str | None:
    """The MODEL string a model was built from, when it is a timm or torchvision architecture."""
    tv = getattr(model, "transferkit_torchvision", None)
    if tv:
        return f"torchvision:{tv}"
    return (getattr(model, "pretrained_cfg", None) or {}).get("architecture")


def variant_check(
    model: nn.Module,
    source: str | Path,
    report,
    preprocessing,
    *,
    trust_checkpoint: bool = False,
) -> dict | None:
    """Whether ``model``, with ``source`` loaded by structure, computes what the file's own network does.

    None when there is nothing to compare: everything loaded by names, or ``model`` is itself
    the architecture the file was made for. Otherwise ``{"native", "identical", ...numbers}``
    from :func:`compare_outputs`, the native architecture built with the file loaded by names
    as the reference. When the file's names fit no known architecture, the native is unknown
    and the other architectures it fits by structure are compared instead (``"native": None``).
    """
    from ..model.hf_transformers import TransformersClassifier, is_transformers_model

    if is_transformers_model(str(source)) and not isinstance(model, TransformersClassifier):
        # converted by name: transformers' own network with its own weights is the reference
        reference = _with_weights(str(source), source, report.head_classes, trust_checkpoint)
        return {"native": str(source), "model": model_name(model), **compare_outputs(reference, model, preprocessing)}
    if not report.how_counts.get("structure"):
        return None
    mine = model_name(model)
    found = identify(source, trust_checkpoint=trust_checkpoint)
    native = found.native
    if native is not None and native == mine:
        if found.record is None:
            return None
        from .registry import get_weights

        # The record's architecture was compared with the file's original implementation when it was added.
        return {"native": native, "model": mine, "identical": True, "checked": get_weights(found.record).checked[0]}
    classes = report.head_classes
    if native is None:
        others = [c.model for c in found.by_structure if c.model != mine][:3]
        results = []
        for other in others:
            reference = _with_weights(other, source, classes, trust_checkpoint)
            results.append({"model": other, **compare_outputs(reference, model, preprocessing)})
        differing = [r for r in results if not r["identical"]]
        return {"native": None, "alternatives": results, "identical": not differing}
    reference = _with_weights(native, source, classes, trust_checkpoint)
    return {"native": native, "model": mine, **compare_outputs(reference, model, preprocessing)}


def _with_weights(name: str, source, num_classes: int | None, trust_checkpoint: bool) -> nn.Module:
    from ..model.factory import create_model
    from .loading import LoadPolicy, load_pretrained

    net = create_model(name, num_classes=num_classes)
    load_pretrained(net, source, policy=LoadPolicy(allow_partial=True), trust_checkpoint=trust_checkpoint)
    return net.eval()


if __name__ == "__main__":
    built = build_index()
    print(f"{len(built['architectures'])} architectures, {len(built['failed'])} failed: {built['failed']}")

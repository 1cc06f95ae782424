"""Load pretrained weights into a model and report exactly what happened.

Nothing is dropped silently: every tensor of the model is either matched, missing or
shape-mismatched, and every tensor of the checkpoint is either used or unexpected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from timm.models import adapt_input_conv

from ..errors import ConfigError, LoadError, SurgeryError
from ..model.surgery import find_head
from ..offline import offline_mode
from ._align import align
from .checkpoint import Checkpoint, from_state_dict, read_checkpoint
from .hub import is_remote
from .registry import resolve_source
from .report import LoadReport, Match, Mismatch
from .resample import resample_mismatched

__all__ = [
    "LoadPolicy",
    "LoadReport",
    "Match",
    "Mismatch",
    "apply_checkpoint",
    "load_pretrained",
    "match_by_name",
    "match_by_structure",
]

# Prefixes that wrap a whole network in some training codebases; a checkpoint saved from
# `Wrapper.model` or `Classifier.backbone` loads into the bare network once they are aligned.
_CONTAINER_PREFIXES = ("model.", "backbone.", "encoder.", "net.", "network.", "base_model.", "features.")


_MAPPINGS = ("auto", "name", "structure")


@dataclass(frozen=True)
class LoadPolicy:
    """How tensors are matched and when a load is refused.

    Attributes:
        mapping: ``"auto"`` pairs by name, then aligns what is left by structure (definition
            order and shapes), for checkpoints from differently named implementations;
            ``"name"`` or ``"structure"`` use one method only.
        strict: fail unless every tensor of the model and the checkpoint is matched.
        min_loaded: fail, loading nothing, when less than this fraction of the parameters
            outside the head would load: a checkpoint for another architecture must not leave
            the model silently random.
        allow_partial: load even when some parameters outside the head would stay random
            (a resnet18 checkpoint into resnet34). By default that fails, naming the first.
        dry_run: compute the report without changing the model.
        allow_nonfinite: load tensors holding NaN or infinity. By default such a checkpoint
            (corrupted, or saved after training diverged) is refused: it would train to NaN.
    """

    mapping: str = "auto"
    strict: bool = False
    min_loaded: float = 0.5
    allow_partial: bool = False
    dry_run: bool = False
    allow_nonfinite: bool = False

    def __post_init__(self) -> None:
        if self.mapping not in _MAPPINGS:
            raise ConfigError(
                f"Unknown mapping '{self.mapping}'; use one of {', '.join(_MAPPINGS)}.", argument="mapping"
            )
        if not 0.0 <= self.min_loaded <= 1.0:
            raise ConfigError(f"min_loaded must be in [0, 1], got {self.min_loaded!r}.", argument="min_loaded")


def match_by_name(
    model_shapes: Mapping[str, tuple[int, ...]],
    source_shapes: Mapping[str, tuple[int, ...]],
) -> tuple[list[Match], list[Mismatch]]:
    """Pair tensors whose names agree, exactly or after removing a container prefix."""
    matches: list[Match] = []
    mismatches: list[Mismatch] = []
    used: set[str] = set()

    def pair(key: str, source: str, how: str) -> None:
        used.add(source)
        if tuple(model_shapes[key]) == tuple(source_shapes[source]):
            matches.append(Match(key, source, tuple(model_shapes[key]), how))
        else:
            mismatches.append(Mismatch(key, source, tuple(model_shapes[key]), tuple(source_shapes[source])))

    for key in model_shapes:
        if key in source_shapes:
            pair(key, key, "name")
    paired = {m.key for m in matches} | {m.key for m in mismatches}
    remaining = {_strip_container(s): s for s in source_shapes if s not in used}
    for key in model_shapes:
        if key in paired:
            continue
        source = remaining.get(_strip_container(key))
        if source is not None and source not in used:
            pair(key, source, "prefix")
    return matches, mismatches


def _strip_container(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _CONTAINER_PREFIXES:
            # Strip only when something follows: `features.0.weight` in AlexNet is a real name.
            rest = name[len(prefix) :]
            if name.startswith(prefix) and "." in rest and not rest.split(".", 1)[0].isdigit():
                name = rest
                changed = True
    return name


def load_pretrained(
    model: nn.Module,
    source: str | Path | Mapping[str, torch.Tensor],
    *,
    policy: LoadPolicy = LoadPolicy(),
    trust_checkpoint: bool = False,
    use_ema: bool = False,
    offline: bool | None = None,
) -> LoadReport:
    """Copy pretrained tensors into ``model`` and return a :class:`LoadReport`.

    A tensor whose shape differs from the model's (a 1000-class head into a 10-class model) is
    skipped and listed under ``mismatched``; it never raises, and never loads silently wrong.

    Args:
        source: a checkpoint path (``.pth``, ``.pt``, ``.bin``, ``.safetensors``), a registry
            name (``lite0``), ``"timm"`` for timm's locally cached weights, or a state dict.
        policy: how tensors are matched and when the load is refused (:class:`LoadPolicy`).
        trust_checkpoint: allow pickles that run code (only for files you trust).
        use_ema: prefer ``state_dict_ema`` when the checkpoint has one.
        offline: True downloads nothing (the caches only), False allows downloads; default as
            ``HF_HUB_OFFLINE`` says (the command line's ``--offline``).

    Examples:
        >>> model = create_model("resnet34", num_classes=10)
        >>> report = load_pretrained(model, "resnet34-imagenet.pth")
        >>> [m.key for m in report.mismatched]
        ['fc.weight', 'fc.bias']
    """
    from ..model.hf_transformers import TransformersClassifier, describe, is_transformers_model, pretrained_state

    record, converted = None, None
    if isinstance(source, Mapping):
        ckpt = from_state_dict(source, use_ema=use_ema)
    elif is_transformers_model(str(source)):  # read by transformers, which knows its checkpoints' names
        with offline_mode(offline):
            state = pretrained_state(str(source))
        if not isinstance(model, TransformersClassifier):  # into timm's names, by the family's written conversion
            from .transformers_to_timm import to_timm

            converted = describe(str(source))["model_type"]
            state = to_timm(converted, state)
        ckpt = from_state_dict(state)
        ckpt.source = str(source)
    else:
        with offline_mode(offline):
            path, record = resolve_source(source, model)
        ckpt = read_checkpoint(path, trust_checkpoint=trust_checkpoint, use_ema=use_ema)
        if record is not None:
            ckpt.source = record.name
        elif is_remote(source):
            ckpt.source = str(source)
    report = apply_checkpoint(model, ckpt, policy=policy)
    if converted is not None:
        report.notes.append(f"converted from transformers' {converted} names into timm's (q, k, v stacked into qkv)")
    if record is not None:
        report.notes.extend(_architecture_notes(model, record))
    return report


def _architecture_notes(model: nn.Module, record) -> list[str]:
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if arch is None or arch == record.architecture:
        return []
    if arch in record.also_fits:
        return [
            f"'{record.name}' was made for {record.architecture}; {arch} has the same tensors but computes "
            f"differently (see 'transferkit weights'). Use {record.architecture} to reproduce the original."
        ]
    return [f"'{record.name}' was made for {record.architecture}, not {arch}."]


def apply_checkpoint(model: nn.Module, ckpt: Checkpoint, *, policy: LoadPolicy = LoadPolicy()) -> LoadReport:
    """Match a read :class:`Checkpoint` against ``model`` as ``policy`` says and copy the matched tensors."""
    mapping = policy.mapping
    state = model.state_dict()
    model_shapes = {k: tuple(v.shape) for k, v in state.items()}
    source_shapes = {k: tuple(v.shape) for k, v in ckpt.tensors.items()}
    if mapping == "structure":
        matches, mismatches, ambiguous = match_by_structure(model_shapes, source_shapes)
    else:
        matches, mismatches = match_by_name(model_shapes, source_shapes)
        ambiguous = {}
        if mapping == "auto":
            paired = {m.key for m in matches} | {m.key for m in mismatches}
            used = {m.source for m in matches} | {m.source for m in mismatches}
            rest_model = {k: v for k, v in model_shapes.items() if k not in paired}
            rest_source = {k: v for k, v in source_shapes.items() if k not in used}
            if rest_model and rest_source:
                more, more_mismatches, ambiguous = match_by_structure(rest_model, rest_source)
                matches += more
                mismatches += more_mismatches
    adapted = _adapt_input_conv(model, mismatches, ckpt.tensors)
    matches += [Match(m.key, m.source, m.model_shape, "adapted") for m in adapted]
    mismatches = [m for m in mismatches if m not in adapted]
    resampled = resample_mismatched(
        model, {m.key: m.source for m in mismatches}, ckpt.tensors, {m.key: m.model_shape for m in mismatches}
    )
    matches += [Match(m.key, m.source, m.model_shape, "resampled") for m in mismatches if m.key in resampled]
    resampled_from = [m for m in mismatches if m.key in resampled]
    mismatches = [m for m in mismatches if m.key not in resampled]

    report = _report(model, ckpt, matches, mismatches, ambiguous)
    report.resampled = [{"key": m.key, "from": m.source_shape, "to": m.model_shape} for m in resampled_from]
    _check_values(report, ckpt, state, policy)
    if policy.strict and (report.missing or report.unexpected or report.mismatched):
        raise LoadError(
            f"Strict load of '{ckpt.source}' failed: {len(report.missing)} missing, "
            f"{len(report.unexpected)} unexpected, {len(report.mismatched)} shape-mismatched tensors "
            f"(first: {(report.missing + report.unexpected + [m.key for m in report.mismatched])[0]})."
        )
    if report.backbone_fraction < policy.min_loaded:
        raise LoadError(
            f"Only {report.backbone_fraction:.0%} of the parameters outside the head would load from "
            f"'{ckpt.source}' ({len(matches)} of {len(state)} tensors matched); the checkpoint is "
            f"probably for another architecture. Check MODEL, or lower min_loaded (now {policy.min_loaded:g}).",
            argument="min_loaded",
        )
    if report.partial and not policy.allow_partial:
        first = report.partial[0]
        why = " (ambiguous alignment)" if first in report.ambiguous else ""
        raise LoadError(
            f"'{ckpt.source}' would leave {len(report.partial)} parameter tensors outside the head "
            f"random (first: {first}{why}), {report.backbone_fraction:.0%} loaded: it fits a different "
            f"variant of this architecture ({len(ckpt.tensors)} tensors against the model's {len(state)}). "
            "Check MODEL, or set allow_partial to load the rest anyway.",
            argument="allow_partial",
        )
    if not policy.dry_run:
        with torch.no_grad():
            for m in matches:
                value = ckpt.tensors[m.source]
                if m.how == "adapted":
                    value = adapt_input_conv(m.shape[1], value)
                elif m.how == "resampled":
                    value = resampled[m.key]
                state[m.key].copy_(value)
        report.applied = True
    return report


def _check_values(report: LoadReport, ckpt: Checkpoint, state: Mapping, policy: LoadPolicy) -> None:
    """Refuse NaN or infinite values, and note tensors copied from integers into floats (or back)."""
    for m in report.matched:
        value, target = ckpt.tensors[m.source], state[m.key]
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            report.nonfinite.append(m.key)
        if value.is_floating_point() != target.is_floating_point() or value.is_complex() != target.is_complex():
            kind = lambda t: str(t.dtype).removeprefix("torch.")  # noqa: E731
            report.converted.append(f"{m.key}: {kind(value)} -> {kind(target)}")
    if report.converted:
        report.notes.append(
            f"{len(report.converted)} tensors were converted between integer and floating point "
            f"(first: {report.converted[0]}); a checkpoint for this architecture stores floats: check its source."
        )
    if report.nonfinite and not policy.allow_nonfinite:
        first = report.nonfinite[0]
        value = ckpt.tensors[report.key_map()[first]]
        bad = int((~torch.isfinite(value)).sum())
        raise LoadError(
            f"'{ckpt.source}' holds NaN or infinite values in {len(report.nonfinite)} tensors "
            f"(first: {first}, {bad:,} of {value.numel():,} values): it is corrupt or was saved after training "
            "diverged, and would train to NaN. Use other weights, or set allow_nonfinite to load it anyway.",
            argument="allow_nonfinite",
        )
    if report.nonfinite:
        report.notes.append(f"{len(report.nonfinite)} tensors hold NaN or infinite values (allow_nonfinite).")


def match_by_structure(
    model_shapes: Mapping[str, tuple[int, ...]],
    source_shapes: Mapping[str, tuple[int, ...]],
) -> tuple[list[Match], list[Mismatch], dict[str, list[str]]]:
    """Pair tensors by definition order and shape (see :mod:`transferkit._align`).

    Returns matches, mismatches (same place and kind, other shape) and the ambiguous model
    tensors with their candidate sources, which are left unloaded.
    """
    model_items = list(model_shapes.items())
    source_items = list(source_shapes.items())
    result = align(model_items, source_items)
    matches = [Match(model_items[i][0], source_items[j][0], model_items[i][1], "structure") for i, j in result.pairs]
    mismatches = [
        Mismatch(model_items[i][0], source_items[j][0], model_items[i][1], source_items[j][1])
        for i, j in result.mismatched
    ]
    ambiguous = {
        model_items[i][0]: [source_items[j][0] if j >= 0 else "(none)" for j in options]
        for i, options in result.ambiguous.items()
    }
    return matches, mismatches, ambiguous


def _adapt_input_conv(model: nn.Module, mismatches: list[Mismatch], tensors: Mapping) -> list[Mismatch]:
    """The first convolution's mismatch when only its input channels differ (RGB weights, gray input)."""
    first = next((f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    out = []
    for m in mismatches:
        a, b = m.model_shape, m.source_shape
        if m.key == first and len(a) == len(b) == 4 and a[0] == b[0] and a[2:] == b[2:] and a[1] != b[1]:
            out.append(m)
    return out


def _report(
    model: nn.Module,
    ckpt: Checkpoint,
    matches: list[Match],
    mismatches: list[Mismatch],
    ambiguous: dict[str, list[str]],
) -> LoadReport:
    try:
        head = find_head(model)
    except SurgeryError:
        head = None
    params = dict(model.named_parameters())
    loaded = {m.key for m in matches}
    paired = loaded | {m.key for m in mismatches}
    used = {m.source for m in matches} | {m.source for m in mismatches}

    def in_head(name: str) -> bool:
        return head is not None and name.startswith(head + ".")

    total = sum(p.numel() for p in params.values())
    done = sum(p.numel() for n, p in params.items() if n in loaded)
    body_total = sum(p.numel() for n, p in params.items() if not in_head(n))
    body_done = sum(p.numel() for n, p in params.items() if n in loaded and not in_head(n))
    return LoadReport(
        source=ckpt.source,
        matched=matches,
        missing=[k for k in model.state_dict() if k not in paired],
        unexpected=[k for k in ckpt.tensors if k not in used],
        mismatched=mismatches,
        loaded_fraction=done / total if total else 0.0,
        backbone_fraction=body_done / body_total if body_total else (1.0 if total else 0.0),
        head=head,
        partial=[n for n in params if n not in loaded and not in_head(n)],
        ambiguous=ambiguous,
        container=ckpt.container,
        stripped_prefixes=ckpt.stripped_prefixes,
    )

"""transformers' weights in timm's names, for the families both implement: a written conversion per family.

A ConvNeXt's and a ResNet's tensors only change their names. transformers' ViT, DeiT, Swin and
BEiT keep the query, key and value projections apart (``q_proj``, ``k_proj``, ``v_proj``); timm's
have one ``qkv`` projection, their rows stacked in that order (a BEiT's query and value biases stay
apart, as ``q_bias`` and ``v_bias``), and their other tensors only change their names. The
conversion reads the names of the installed transformers release (``vit.layers.N`` since
transformers 5, ``vit.encoder.layer.N`` before it) and says which transformers family it does not
know, rather than guess; ``transferkit load`` then compares the timm network with transformers'
own on natural photos (:func:`~transferkit.weights.identify.variant_check`).
"""

from __future__ import annotations

import re

import torch

from ..errors import WeightsError

__all__ = ["CONVERTED", "to_timm"]

# Per transformers 5 name (and its name before 5), timm's name inside a ViT block.
_VIT_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.o_proj": "attn.proj",
    "attention.output.dense": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "intermediate.dense": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "output.dense": "mlp.fc2",
}
_VIT_QKV = (
    ("attention.q_proj", "attention.k_proj", "attention.v_proj"),
    ("attention.attention.query", "attention.attention.key", "attention.attention.value"),  # ViT before 5
    ("attention.self.query", "attention.self.key", "attention.self.value"),  # Swin before 5
)
_SWIN_TABLES = (
    "attention.relative_position_bias.relative_position_bias_table",
    "attention.self.relative_position_bias_table",
)


def _block(state: dict[str, torch.Tensor], here: str, to: str) -> dict[str, torch.Tensor]:
    """One transformer block's tensors (ViT's, DeiT's, Swin's) from transformers' ``here`` to timm's ``to``."""
    out = {}
    for ours, theirs in _VIT_BLOCK.items():
        for kind in ("weight", "bias"):
            if f"{here}{ours}.{kind}" in state:
                out[f"{to}{theirs}.{kind}"] = state[f"{here}{ours}.{kind}"]
    names = next(n for n in _VIT_QKV if f"{here}{n[0]}.weight" in state)
    for kind in ("weight", "bias"):
        parts = [state.get(f"{here}{name}.{kind}") for name in names]
        if all(p is not None for p in parts):
            out[f"{to}attn.qkv.{kind}"] = torch.cat(parts)
    return out


def _layers(state: dict[str, torch.Tensor], prefix: str) -> list[tuple[int, str]]:
    """(index, name prefix) of each block of a ViT-like network: ``PREFIX.layers.N.`` since transformers 5,
    ``PREFIX.encoder.layer.N.`` before it."""
    layers = (
        f"{prefix}.layers." if any(k.startswith(f"{prefix}.layers.") for k in state) else f"{prefix}.encoder.layer."
    )
    indices = sorted({int(k[len(layers) :].split(".")[0]) for k in state if k.startswith(layers)})
    return [(index, f"{layers}{index}.") for index in indices]


def _vit(state: dict[str, torch.Tensor], prefix: str = "vit") -> dict[str, torch.Tensor]:
    e = f"{prefix}.embeddings."
    out = {
        "cls_token": state[e + "cls_token"],
        "pos_embed": state[e + "position_embeddings"],
        "patch_embed.proj.weight": state[e + "patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": state[e + "patch_embeddings.projection.bias"],
        "norm.weight": state[f"{prefix}.layernorm.weight"],
        "norm.bias": state[f"{prefix}.layernorm.bias"],
    }
    for index, here in _layers(state, prefix):
        out.update(_block(state, here, f"blocks.{index}."))
    if "classifier.weight" in state:
        out["head.weight"], out["head.bias"] = state["classifier.weight"], state["classifier.bias"]
    return out


def _deit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A DeiT: a ViT with a distillation token, and with its distillation head (``...WithTeacher``) timm's
    distilled DeiT, whose two heads are averaged as transformers' are."""
    heads = {"cls_classifier": "head", "distillation_classifier": "head_dist", "classifier": "head"}
    out = _vit({k: v for k, v in state.items() if k.split(".")[0] not in heads}, prefix="deit")
    out["dist_token"] = state["deit.embeddings.distillation_token"]
    for theirs, ours in heads.items():
        for kind in ("weight", "bias"):
            if f"{theirs}.{kind}" in state:
                out[f"{ours}.{kind}"] = state[f"{theirs}.{kind}"]
    return out


def _swin(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Swin: ViT-like blocks with a relative position bias table per block; transformers merges patches at the
    end of a stage, timm at the start of the next (both in the original's order of the four neighbours)."""
    out = {
        "patch_embed.proj.weight": state["swin.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": state["swin.embeddings.patch_embeddings.projection.bias"],
        "patch_embed.norm.weight": state["swin.embeddings.norm.weight"],
        "patch_embed.norm.bias": state["swin.embeddings.norm.bias"],
        "norm.weight": state["swin.layernorm.weight"],
        "norm.bias": state["swin.layernorm.bias"],
    }
    places = {tuple(k.split(".")[3:6:2]) for k in state if k.startswith("swin.encoder.layers.") and ".blocks." in k}
    for stage, block in sorted(places, key=lambda p: (int(p[0]), int(p[1]))):
        here, to = f"swin.encoder.layers.{stage}.blocks.{block}.", f"layers.{stage}.blocks.{block}."
        out.update(_block(state, here, to))
        table = next(t for t in _SWIN_TABLES if f"{here}{t}" in state)
        out[f"{to}attn.relative_position_bias_table"] = state[f"{here}{table}"]
    for key, tensor in state.items():
        merged = re.match(r"swin\.encoder\.layers\.(\d+)\.downsample\.(.+)", key)
        if merged:
            out[f"layers.{int(merged[1]) + 1}.downsample.{merged[2]}"] = tensor
    if "classifier.weight" in state:
        out["head.fc.weight"], out["head.fc.bias"] = state["classifier.weight"], state["classifier.bias"]
    return out


def _beit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A BEiT: ViT-like blocks with layer scale, a relative position bias table per block, biases on the query
    and value only (timm keeps them as ``q_bias`` and ``v_bias``), and mean pooling with a norm (``fc_norm``)."""
    out = {
        "cls_token": state["beit.embeddings.cls_token"],
        "patch_embed.proj.weight": state["beit.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": state["beit.embeddings.patch_embeddings.projection.bias"],
    }
    renames = {
        "beit.embeddings.position_embeddings": "pos_embed",
        "beit.pooler.layernorm.weight": "fc_norm.weight",
        "beit.pooler.layernorm.bias": "fc_norm.bias",
        "beit.layernorm.weight": "norm.weight",
        "beit.layernorm.bias": "norm.bias",
        "classifier.weight": "head.weight",
        "classifier.bias": "head.bias",
    }
    out.update({ours: state[theirs] for theirs, ours in renames.items() if theirs in state})
    for index, here in _layers(state, "beit"):
        to = f"blocks.{index}."
        out.update(_block(state, here, to))  # the key has no bias: no qkv bias
        out[f"{to}gamma_1"], out[f"{to}gamma_2"] = state[f"{here}lambda_1"], state[f"{here}lambda_2"]
        query, _, value = next(n for n in _VIT_QKV if f"{here}{n[0]}.weight" in state)
        out[f"{to}attn.q_bias"], out[f"{to}attn.v_bias"] = state[f"{here}{query}.bias"], state[f"{here}{value}.bias"]
        table = next(
            f"{here}{t}"
            for t in (
                "relative_position_bias.relative_position_bias_table",
                "attention.attention.relative_position_bias.relative_position_bias_table",
            )
            if f"{here}{t}" in state
        )
        out[f"{to}attn.relative_position_bias_table"] = state[table]
    return out


# transformers' ConvNeXt names -> timm's: only names change
_CONVNEXT = (
    (r"^convnext\.embeddings\.patch_embeddings\.", "stem.0."),
    (r"^convnext\.embeddings\.layernorm\.", "stem.1."),
    (r"^convnext\.encoder\.stages\.(\d+)\.downsampling_layer\.", r"stages.\1.downsample."),
    (r"^convnext\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer_scale_parameter$", r"stages.\1.blocks.\2.gamma"),
    (r"^convnext\.encoder\.stages\.(\d+)\.layers\.(\d+)\.dwconv\.", r"stages.\1.blocks.\2.conv_dw."),
    (r"^convnext\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layernorm\.", r"stages.\1.blocks.\2.norm."),
    (r"^convnext\.encoder\.stages\.(\d+)\.layers\.(\d+)\.pwconv1\.", r"stages.\1.blocks.\2.mlp.fc1."),
    (r"^convnext\.encoder\.stages\.(\d+)\.layers\.(\d+)\.pwconv2\.", r"stages.\1.blocks.\2.mlp.fc2."),
    (r"^convnext\.layernorm\.", "head.norm."),
    (r"^classifier\.", "head.fc."),
)


# transformers' ResNet names -> timm's (both v1.5: the stride in the 3x3 convolution); a layer's
# convolutions 0, 1, 2 are timm's conv1, conv2, conv3, its stage S timm's layer S+1
_RESNET = (
    (r"^resnet\.embedder\.embedder\.convolution\.", "conv1."),
    (r"^resnet\.embedder\.embedder\.normalization\.", "bn1."),
    (r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.", r"layer{\1}.\2.downsample.0."),
    (r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.", r"layer{\1}.\2.downsample.1."),
    (r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d)\.convolution\.", r"layer{\1}.\2.conv{\3}."),
    (r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d)\.normalization\.", r"layer{\1}.\2.bn{\3}."),
    (r"^classifier\.1\.", "fc."),
)


def _renamed(rules):
    """A conversion that only renames: each key by the first rule that matches it (``{N}`` in a new name
    stands for the number N plus one: transformers counts stages and convolutions from 0, timm from 1)."""

    def convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, tensor in state.items():
            new = next((re.sub(pattern, to, key) for pattern, to in rules if re.match(pattern, key)), None)
            if new is None:
                raise KeyError(key)
            out[re.sub(r"\{(\d+)\}", lambda m: str(int(m[1]) + 1), new)] = tensor
        return out

    return convert


# transformers' model_type -> its conversion
CONVERTED = {
    "vit": _vit,
    "deit": _deit,
    "swin": _swin,
    "beit": _beit,
    "convnext": _renamed(_CONVNEXT),
    "resnet": _renamed(_RESNET),
}


def to_timm(model_type: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (a transformers ``model_type`` network's, in its names) in timm's names."""
    convert = CONVERTED.get(model_type)
    if convert is None:
        raise WeightsError(
            f"transferkit has no written conversion of transformers' {model_type} into timm (it has: "
            f"{', '.join(CONVERTED)}); use the model itself as MODEL (transformers:ORG/REPO or its folder)."
        )
    try:
        return convert(state)
    except (KeyError, StopIteration) as e:
        raise WeightsError(f"These {model_type} weights do not have the names the conversion reads ({e}).") from None

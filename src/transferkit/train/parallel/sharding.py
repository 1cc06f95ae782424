"""Parameters sharded across the processes of a torchrun job (``--shard-params``), with FSDP2's ``fully_shard``.

For backbones whose weights, gradients and optimizer state do not fit one device: each process
keeps 1/W of every parameter, its gradient and its AdamW moments, and gathers a unit's
parameters only for that unit's forward and backward. A unit is a stage of the network as timm
groups it (a transformer block, a CNN stage; :func:`transferkit.model.freeze.stage_parameters`).
The stem (a patch embedding, a first convolution) and what belongs to no module (a ViT's
position embedding and class token) shard with the root: a stem is small, and a patch
embedding hands on a view of its output, which a unit's backward hook cannot follow safely.

Checkpoints are gathered into the layout of an unsharded run: full tensors, and the optimizer's
state by parameter index. ``predict``, ``eval`` and ``export`` read them unchanged, and a run
resumes with or without sharding, on any number of processes.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from ...model.freeze import stage_parameters
from ...runtime.fastpath import FastPath

__all__ = [
    "gather_state",
    "is_sharded",
    "load_optimizer_state",
    "shard_model",
    "shard_units",
    "shardable_kernels",
]

_CONTAINERS = (nn.ModuleList, nn.ModuleDict)  # never called: a unit must run forward for its hooks to gather


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def shard_units(model: nn.Module) -> list[str]:
    """The paths of the modules that become FSDP units: the outermost modules whose parameters all belong to one
    stage after the stem, and which are called (not a ModuleList) and share no parameter with another module."""
    stage_of = {name: index for index, stage in enumerate(stage_parameters(model)) for name in stage}
    holders: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        holders[id(param)] = holders.get(id(param), 0) + 1

    def walk(prefix: str, module: nn.Module) -> list[str]:
        units = []
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            params = list(child.named_parameters(prefix=path))
            if not params:
                continue
            stages = {stage_of.get(n) for n, _ in params}
            alone = all(holders[id(p)] == 1 for _, p in params)
            if len(stages) == 1 and None not in stages and alone and not isinstance(child, _CONTAINERS):
                if stages != {0}:
                    units.append(path)
            else:
                units.extend(walk(path + ".", child))
        return units

    return walk("", model)


def shardable_kernels(path: FastPath, device: torch.device) -> FastPath:
    """``path`` with bf16 (fp32 where bf16 cannot run) in place of fp16: sharded gradients have no loss scaling."""
    if path.precision != "fp16":
        return path
    bf16 = device.type == "cpu" or torch.cuda.is_bf16_supported()
    return replace(
        path, precision="bf16" if bf16 else "fp32", reason="sharded parameters train without fp16's loss scaling"
    )


def shard_model(model: nn.Module, *, precision: str, device: torch.device, world_size: int) -> list[str]:
    """Shard ``model`` in place across the job's processes; returns its units' paths.

    With bf16 kernels the parameters are gathered in bf16 and gradients reduced in fp32.
    """
    mesh = init_device_mesh(device.type, (world_size,))
    if precision == "bf16":
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        policy = MixedPrecisionPolicy()
    units = shard_units(model)
    for path in units:
        fully_shard(model.get_submodule(path), mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return units


def gather_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict] | None:
    """The full model and optimizer state of a sharded ``model`` on rank 0, in an unsharded run's layout (None on the
    other ranks). Every rank must call it: the shards are gathered."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    by_name = get_optimizer_state_dict(model, optimizer, options=options)
    if not weights:  # cpu_offload keeps the gathered tensors on rank 0 only
        return None
    layout = optimizer.state_dict()  # the hyperparameters, and each parameter's index
    names = _names_by_index(model, optimizer)
    state = {index: by_name["state"][name] for index, name in names.items() if name in by_name["state"]}
    return weights, {"state": state, "param_groups": layout["param_groups"]}


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load an optimizer state saved in an unsharded run's layout (by :func:`gather_state` or by an unsharded
    run) into the optimizer of a sharded ``model``: each rank keeps its shard."""
    names = _names_by_index(model, optimizer)
    by_name = {
        "state": {names[int(index)]: value for index, value in saved["state"].items()},
        "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in saved["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


def _names_by_index(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[int, str]:
    """Each parameter's name by the index ``optimizer.state_dict()`` gives it (its place across the groups)."""
    names = {id(p): n for n, p in model.named_parameters()}
    flat = [p for group in optimizer.param_groups for p in group["params"]]
    return {index: names[id(p)] for index, p in enumerate(flat)}

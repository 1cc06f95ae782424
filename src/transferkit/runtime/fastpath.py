"""Choose the memory format and precision that train a given model fastest, by measuring them.

The fastest choice differs by model and by use: on a CPU with AMX, resnet34 trains ~3x faster
with channels-last and bfloat16, while EfficientNet-Lite0 trains fastest with channels-last in
float32 but runs inference (feature extraction, evaluation) fastest in bfloat16. A short probe
times a few steps of each candidate on the real model and input size; for inference, where the
batch size does not change the result, it also finds the fastest batch size.

A measurement taken on a busy machine can say anything (4 images/s once, 268 the next time), so
the candidates are timed in interleaved rounds and compared by their medians, a reduced precision
must win by a margin, and the decision is kept in ``$XDG_CACHE_HOME/transferkit/kernels``, keyed
by machine, model structure, input and batch size and library versions: a second run with the
same key reuses it (and says so) instead of measuring again under whatever load there is then.
``reprobe`` measures again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._text import one_line
from ..errors import ConfigError
from ..model._trace import module_modes

__all__ = [
    "PRECISION_MARGIN",
    "FastPath",
    "autocast",
    "bf16_native",
    "candidates",
    "choose_fast_path",
    "interleaved_medians",
    "keep_decision",
    "kernel_label",
    "probing",
    "keep_measurement",
    "kept_measurement",
    "measure_throughput",
    "measurement_key",
    "pick_kernels",
    "resolve_device",
]

PRECISION_MARGIN = 1.1
_ROUNDS = 3  # interleaved timings of every candidate; the median decides
_MIN_IMAGES = 64
_CLIMB_SECONDS = 2.0
_DEFAULT_INFERENCE_BATCH = 64


@dataclass
class FastPath:
    channels_last: bool
    precision: str  # "fp32", "bf16" or "fp16"
    reason: str
    images_per_second: dict[str, float] = field(default_factory=dict)
    batch_size: int | None = None  # for inference: the fastest batch size measured (None: not measured)
    # What choosing cost this run: a probe's whole time; for a trial on real work, its time beyond what
    # the chosen kernels would have taken for the same work (None: nothing was measured).
    measuring_seconds: float | None = None

    @property
    def inference_batch_size(self) -> int:
        """The measured inference batch size, or a default where kernels were chosen by the user."""
        return self.batch_size or _DEFAULT_INFERENCE_BATCH

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(spec: str = "auto", *, local_rank: int | None = None) -> torch.device:
    """The device ``spec`` names: ``auto`` is CUDA when present, else the CPU.

    ``local_rank`` picks the GPU of a process under ``torchrun``.
    """
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if spec == "auto" else spec.split(":")[0]
    if kind == "cpu":
        return torch.device("cpu")
    if kind != "cuda":
        raise ConfigError(f"Unknown device '{spec}'; use auto, cpu, cuda or cuda:N.", argument="device")
    if not torch.cuda.is_available():
        raise ConfigError(f"device '{spec}' was asked for but no CUDA device is available; use cpu.", argument="device")
    if local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(spec if ":" in spec else "cuda:0")


def autocast(device: torch.device, precision: str):
    """The autocast context for ``precision`` (none for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2))
        return True
    except RuntimeError:
        return False


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware; a CPU without AVX-512 or AMX only emulates it in oneDNN.

    Emulated bf16 is never faster than fp32: on an AVX2 CPU, lite0 inference measured 65 images/s
    in bf16 against 498 in fp32, and a probe spent over a minute timing it.
    """
    if device.type != "cpu":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def candidates(device: torch.device, *, emulated: bool = False) -> list[tuple[bool, str]]:
    """(channels_last, precision) pairs worth measuring on ``device``; bf16 only where native, unless ``emulated``."""
    options = [(False, "fp32"), (True, "fp32")]
    if _bf16_supported(device) and (emulated or bf16_native(device)):
        options += [(True, "bf16"), (False, "bf16")]
    if device.type == "cuda":
        options += [(True, "fp16")]
    return options


def kernel_label(channels_last: bool, precision: str) -> str:
    return f"{'channels-last' if channels_last else 'NCHW'} {precision}"


def interleaved_medians(measurements: dict[str, Callable[[], float]], rounds: int = _ROUNDS) -> dict[str, float]:
    """The median of ``rounds`` calls of each measurement, called in interleaved rounds of alternating order.

    A burst of load elsewhere then hits every candidate, and one outlier does not decide.
    """
    taken: dict[str, list[float]] = {name: [] for name in measurements}
    order = list(measurements.items())
    for index in range(rounds):
        for name, measure in order if index % 2 == 0 else order[::-1]:
            taken[name].append(measure())
    return {name: statistics.median(values) for name, values in taken.items()}


@contextmanager
def probing(model: nn.Module, *, training: bool):
    """Time steps of ``model`` in the block and leave it unchanged: buffers (BatchNorm statistics, which
    move in train mode), gradients and each module's mode restored, the memory format back to NCHW."""
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    try:
        with module_modes(model, training=training):
            yield model
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.zero_grad(set_to_none=True)
        model.to(memory_format=torch.contiguous_format)


def measure_throughput(
    model: nn.Module,
    channels_last: bool,
    precision: str,
    batch_size: int,
    input_size: tuple[int, int, int],
    *,
    device: torch.device,
    steps: int,
    train: bool,
) -> float:
    """Images per second over ``steps`` timed steps, after one that warms up kernels and caches.

    Small batches get more steps, so that each measurement times at least ``_MIN_IMAGES`` images.
    """
    steps = max(steps, math.ceil(_MIN_IMAGES / batch_size))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    x = torch.randn(batch_size, *input_size, device=device).contiguous(memory_format=fmt)
    y = torch.zeros(batch_size, dtype=torch.long, device=device)
    for step in range(steps + 1):
        if step == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        if train:
            with autocast(device, precision):
                loss = F.cross_entropy(model(x).float(), y)
            loss.backward()
        else:
            with torch.inference_mode(), autocast(device, precision):
                model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    model.zero_grad(set_to_none=True)
    return steps * batch_size / seconds


def pick_kernels(options: list[tuple[bool, str]], speeds: dict[str, float]) -> tuple[bool, str]:
    """The fastest option; a reduced precision only when clearly faster than the fastest float32.

    The memory format does not change the arithmetic, the precision does: it must win by
    ``PRECISION_MARGIN``, so that timing noise does not flip a run between exact and reduced precision.
    """
    fastest = max(options, key=lambda o: speeds[kernel_label(*o)])
    exact = [o for o in options if o[1] == "fp32"]
    if fastest[1] == "fp32" or not exact:
        return fastest
    best_exact = max(exact, key=lambda o: speeds[kernel_label(*o)])
    clearly = speeds[kernel_label(*fastest)] > PRECISION_MARGIN * speeds[kernel_label(*best_exact)]
    return fastest if clearly else best_exact


def choose_fast_path(
    model: nn.Module,
    input_size: tuple[int, int, int],
    *,
    device: torch.device,
    batch_size: int = 32,
    steps: int = 2,
    channels_last: bool | None = None,
    precision: str | None = None,
    train: bool = True,
    max_batch_size: int = 256,
    reprobe: bool = False,
    trial: Callable[[list[tuple[bool, str]], str], object] | None = None,
) -> FastPath | object:
    """Time forward and backward (or, with ``train=False``, inference) for each candidate; return the fastest.

    ``channels_last`` or ``precision`` given by the user are kept and only the rest is chosen.
    For inference the batch size is chosen too: the winner is timed at ``batch_size``, doubled
    while that is faster, up to ``max_batch_size`` or a measurement of about two seconds. On a
    CPU, large batches of large activations are often slower: EfficientNet-Lite0 at 224 px runs
    inference 2.7x faster in batches of 16 than of 128.
    Gradients are cleared and buffers restored afterwards, and no optimizer steps: the model is unchanged.
    The decision is kept per machine, model and sizes and reused unless ``reprobe`` (module docstring).
    With ``trial`` (:class:`~transferkit.runtime.kernel_trial.KernelTrial` for training,
    :class:`~transferkit.runtime.kernel_trial.InferenceTrial` for inference), nothing is timed here:
    where there is a choice and no kept decision, ``trial(options, key)`` is returned, which
    decides on the run's own first steps or batches and keeps its decision under the key.
    """
    options = [
        (cl, p)
        for cl, p in candidates(device, emulated=precision is not None)
        if (channels_last is None or cl == channels_last) and (precision is None or p == precision)
    ]
    if not options:
        options = [(bool(channels_last), precision or "fp32")]
    if len(options) == 1:
        cl, p = options[0]
        return FastPath(cl, p, "as asked")
    key = _probe_key(model, input_size, device, batch_size, steps, train, max_batch_size, options)
    if not reprobe:
        kept = _kept_decision(key)
        if kept is not None:
            return kept
    if trial is not None:
        return trial(options, key)
    timed = partial(measure_throughput, model, input_size=input_size, device=device, steps=steps, train=train)
    failed: dict[str, str] = {}

    def measure(cl: bool, p: str, size: int) -> float:
        # A kernel some layer cannot run (peft's DoRA convolutions view their weight, which a
        # channels-last weight refuses) is not a candidate: 0 images/s, and the reason kept.
        try:
            return timed(cl, p, size)
        except RuntimeError as e:
            failed.setdefault(kernel_label(cl, p), one_line(e, 80))
            return 0.0

    batch_speeds: dict[int, float] = {}
    started = time.perf_counter()
    with probing(model, training=train):
        speeds = interleaved_medians({kernel_label(cl, p): partial(measure, cl, p, batch_size) for cl, p in options})
        best = pick_kernels(options, speeds)
        if speeds[kernel_label(*best)] == 0.0:
            reasons = "; ".join(f"{k}: {v}" for k, v in failed.items())
            raise RuntimeError(f"no kernel candidate runs this model: {reasons}")
        if not train:
            batch_speeds[batch_size] = speeds[kernel_label(*best)]
            size = batch_size * 2
            # A measurement runs steps + 1 batches; stop before one would take longer than a budget.
            while size <= max_batch_size and (steps + 1) * size / batch_speeds[size // 2] <= _CLIMB_SECONDS:
                batch_speeds[size] = measure(*best, size)
                if batch_speeds[size] <= batch_speeds[size // 2]:
                    break
                size *= 2
    chosen_batch = max(batch_speeds, key=batch_speeds.get) if batch_speeds else None
    reason = _measured_reason(options, best, speeds, failed, batch_speeds, asked=precision is not None, device=device)
    chosen = FastPath(best[0], best[1], reason, speeds, chosen_batch, time.perf_counter() - started)
    keep_decision(key, chosen)
    return chosen


def _measured_reason(options, best, speeds: dict, failed: dict, batch_speeds: dict, *, asked: bool, device) -> str:
    """Why ``best`` was chosen: its speed against NCHW fp32's (or the slowest), every candidate's, the ones that
    cannot run, bf16 left out on a CPU that emulates it, and the batch sizes timed."""
    baseline = kernel_label(False, "fp32") if (False, "fp32") in options else min(speeds, key=speeds.get)
    reason = (
        f"measured {speeds[kernel_label(*best)]:.0f} images/s against {speeds[baseline]:.0f} for {baseline} "
        f"({', '.join(f'{k} {v:.0f}' for k, v in speeds.items())})"
    )
    if failed:
        reason += "; " + "; ".join(f"{k} cannot run ({v})" for k, v in failed.items())
    if not asked and not bf16_native(device) and _bf16_supported(device):
        reason += "; bf16 not measured: this CPU only emulates it, slower than fp32"
    if batch_speeds:
        chosen_batch = max(batch_speeds, key=batch_speeds.get)
        reason += (
            f"; batches of {chosen_batch} ({', '.join(f'{b}: {v:.0f}' for b, v in batch_speeds.items())} images/s)"
        )
    return reason


def measurement_key(kind: str, model: nn.Module, device: torch.device, facts: list) -> str:
    """What a measurement depends on: the machine, the versions, the model's structure and frozen parts, ``facts``."""
    import platform

    import timm

    from .. import __version__

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    structure = hashlib.sha256(
        "".join(f"{n}{tuple(p.shape)}{p.requires_grad}" for n, p in model.named_parameters()).encode()
    ).hexdigest()
    described = {
        "machine": [cpu, os.cpu_count(), torch.get_num_threads(), gpu],
        "versions": [torch.__version__, timm.__version__, __version__],
        "model": [type(model).__name__, structure],
        "probe": facts,
    }
    if kind != "kernels":
        described["kind"] = kind
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]


def _probe_key(model, input_size, device, batch_size, steps, train, max_batch_size, options) -> str:
    facts = [list(input_size), device.type, batch_size, steps, train, max_batch_size, sorted(map(list, options))]
    return measurement_key("kernels", model, device, facts)


def _decisions() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "transferkit", "kernels")


def kept_measurement(key: str) -> dict | None:
    """What was kept for ``key`` (with ``measured``, when), or None; an unreadable file is never trusted."""
    try:
        with open(os.path.join(_decisions(), f"{key}.json"), encoding="utf-8") as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def keep_measurement(key: str, values: dict) -> None:
    """Keep ``values`` for ``key``, with the time of the measurement; a cache that cannot be written is skipped."""
    from ..serialization import write_json

    try:
        os.makedirs(_decisions(), exist_ok=True)
        measured = time.strftime("%Y-%m-%d %H:%M", time.localtime())
        write_json(os.path.join(_decisions(), f"{key}.json"), {**values, "measured": measured})
    except (OSError, RuntimeError):
        pass  # it costs a measurement next time, nothing else


def _kept_decision(key: str) -> FastPath | None:
    """The decision kept for ``key``, or None; an unreadable file is measured again, never trusted."""
    stored = kept_measurement(key)
    try:
        kept = FastPath(**stored["fast_path"])
        if not isinstance(kept.channels_last, bool) or kept.precision not in ("fp32", "bf16", "fp16"):
            return None
        when = str(stored.get("measured", "earlier"))
    except (TypeError, KeyError):
        return None
    kept.reason = f"reused the measurement of {when} on this machine (--reprobe measures again): {kept.reason}"
    kept.measuring_seconds = 0.0
    return kept


def keep_decision(key: str, chosen: FastPath) -> None:
    keep_measurement(key, {"fast_path": chosen.to_dict()})

"""torch.compile as a measured candidate, used only when the run is long enough to repay the compile.

Compiling a training step costs minutes on a CPU (89 s for EfficientNet-Lite0 at 96 px on
2 cores), and the compiled step is not always faster (on that CPU it trained 97 images/s against
91-106 eager). So ``compile="auto"``, where the kernels were measured (a user who pins them wants
to reproduce a run bitwise, and a compiled step rounds differently):

1. reuses this machine's kept measurement for the same model, sizes and versions, if any;
2. else measures only when the phase's training, at the eager rate, takes at least
   ``MEASURE_FROM_SECONDS``: the compile time, then the eager and the compiled step in
   interleaved rounds (medians), and keeps the result beside the kernel decisions;
3. uses the compiled step when the time it saves over the phase's remaining images exceeds the
   compile time, or, when the compile was just paid to measure, when it is faster by the margin.

``compile="on"`` compiles without asking; ``"off"`` never does. The log gives the compile time,
both rates and the saving either way. Only the training step is compiled: validation, the
frozen-feature cache and the saved weights use the model itself.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fastpath import (
    FastPath,
    autocast,
    interleaved_medians,
    keep_measurement,
    kept_measurement,
    kernel_label,
    measure_throughput,
    measurement_key,
    probing,
)

__all__ = ["CompileDecision", "MEASURE_FROM_SECONDS", "compiled_for_training"]

# Below this much training a compile (minutes on a CPU) could not be repaid by any usual speed-up.
MEASURE_FROM_SECONDS = 600.0
_MARGIN = 1.1  # the compiled step must be this much faster: timing noise must not decide


@dataclass
class CompileDecision:
    used: bool
    reason: str
    compile_seconds: float | None = None
    eager_images_per_second: float | None = None
    compiled_images_per_second: float | None = None
    measured: str | None = None  # when, for a kept measurement

    def saving(self, images: int) -> float:
        """Seconds the compiled step saves over ``images`` training images (compile time not counted)."""
        if not self.eager_images_per_second or not self.compiled_images_per_second:
            return 0.0
        return images / self.eager_images_per_second - images / self.compiled_images_per_second


def compiled_for_training(
    model: nn.Module,
    path: FastPath,
    input_size: tuple[int, int, int],
    *,
    device: torch.device,
    batch_size: int,
    images: int,
    mode: str = "auto",
    reprobe: bool = False,
    log=print,
) -> tuple[nn.Module, CompileDecision]:
    """The module to train with (``model`` or ``torch.compile(model)``, sharing its parameters) and why.

    ``images`` is how many images the phase still trains on; ``path`` the measured kernels.
    """
    if mode == "off":
        return model, _logged(CompileDecision(False, "off (--compile off)"), log)
    if mode == "on":
        decision = CompileDecision(True, "on (--compile on); compiled at the first step")
        return torch.compile(model), _logged(decision, log)
    if not path.images_per_second:  # the user pinned the kernels: a compiled step would round differently
        reason = "not measured: the kernels are pinned (--precision, --channels-last); --compile on compiles"
        return model, _logged(CompileDecision(False, reason), log)
    facts = [path.channels_last, path.precision, list(input_size), device.type, batch_size]
    key = measurement_key("compile", model, device, facts)
    decision = None if reprobe else _kept(key)
    if decision is not None:
        saving = decision.saving(images)
        decision.used = saving > decision.compile_seconds
        decision.reason = f"reused the measurement of {decision.measured} (--reprobe measures again): " + _weighed(
            decision, images, saving, paid=False
        )
        return (torch.compile(model) if decision.used else model), _logged(decision, log)
    eager_rate = path.images_per_second[kernel_label(path.channels_last, path.precision)]
    if images / eager_rate < MEASURE_FROM_SECONDS:
        reason = (
            f"not measured: this phase trains about {images / eager_rate:.0f} s at the eager rate, under the "
            f"{MEASURE_FROM_SECONDS:.0f} s a compile needs to pay back (--compile on compiles anyway)"
        )
        return model, _logged(CompileDecision(False, reason, eager_images_per_second=eager_rate), log)
    compiled = torch.compile(model)  # importing the compiler costs seconds: only where it may be used
    decision = _measure(model, compiled, path, input_size, device=device, batch_size=batch_size)
    keep_measurement(key, {"compile": asdict(decision)})
    saving = decision.saving(images)
    decision.used = decision.compiled_images_per_second > _MARGIN * decision.eager_images_per_second
    decision.reason = _weighed(decision, images, saving, paid=True)
    return (compiled if decision.used else model), _logged(decision, log)


def _measure(model, compiled, path: FastPath, input_size, *, device, batch_size) -> CompileDecision:
    """Compile time (the first compiled step less an eager one), then both steps in interleaved rounds."""
    fmt = torch.channels_last if path.channels_last else torch.contiguous_format
    x = torch.randn(batch_size, *input_size, device=device).contiguous(memory_format=fmt)
    y = torch.zeros(batch_size, dtype=torch.long, device=device)

    def step_seconds(module) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with autocast(device, path.precision):
            loss = F.cross_entropy(module(x).float(), y)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    def rate(module) -> float:
        return measure_throughput(
            module, path.channels_last, path.precision, batch_size, input_size, device=device, steps=2, train=True
        )

    with probing(model, training=True):
        model.to(memory_format=fmt)
        step_seconds(model)  # warm-up
        eager_step = step_seconds(model)
        compile_seconds = max(0.0, step_seconds(compiled) - eager_step)  # compiles forward and backward
        speeds = interleaved_medians({"eager": partial(rate, model), "compiled": partial(rate, compiled)})
    return CompileDecision(False, "", compile_seconds, speeds["eager"], speeds["compiled"])


def _weighed(decision: CompileDecision, images: int, saving: float, *, paid: bool) -> str:
    eager, compiled = decision.eager_images_per_second, decision.compiled_images_per_second
    facts = (
        f"compile {decision.compile_seconds:.0f} s, {compiled:.0f} images/s compiled against {eager:.0f} eager "
        f"({compiled / eager:.2f}x); over this phase's {images:,} images it "
        + (f"saves {saving:.1f} s" if saving >= 0 else f"costs {-saving:.1f} s more")
    )
    if decision.used:
        return f"used (compiled while measuring): {facts}" if paid else f"used: {facts}, more than the compile"
    if paid:
        return f"not used: {facts}; not {_MARGIN:g}x faster"
    return f"not used: {facts}, less than the compile"


def _kept(key: str) -> CompileDecision | None:
    """The kept measurement, or None; a damaged one is measured again, never trusted."""
    stored = kept_measurement(key)
    try:
        values = stored["compile"]
        decision = CompileDecision(
            False,
            "",
            float(values["compile_seconds"]),
            float(values["eager_images_per_second"]),
            float(values["compiled_images_per_second"]),
            str(stored.get("measured", "earlier")),
        )
    except (TypeError, KeyError, ValueError):
        return None
    if min(decision.eager_images_per_second, decision.compiled_images_per_second) <= 0:
        return None
    return decision


def _logged(decision: CompileDecision, log) -> CompileDecision:
    log(f"torch.compile: {decision.reason}")
    return decision

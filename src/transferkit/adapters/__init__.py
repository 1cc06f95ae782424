"""Parameter-efficient fine-tuning: which small set of parameters trains while the network stays frozen.

``lora`` puts peft's low-rank adapters (LoRA, or DoRA with ``dora=True``) beside the chosen
layers and keeps them in peft's own format; ``bitfit`` trains the biases. The head always trains
fully.
"""

from .bitfit import bitfit_parameters
from .lora import (
    ADAPTER_FOLDER,
    LoraSettings,
    adapter_parameters,
    default_targets,
    inject_lora,
    merged,
    peft_model_of,
    save_adapter,
)

__all__ = [
    "ADAPTER_FOLDER",
    "LoraSettings",
    "adapter_parameters",
    "bitfit_parameters",
    "default_targets",
    "inject_lora",
    "merged",
    "peft_model_of",
    "save_adapter",
]

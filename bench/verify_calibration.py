"""Calibrate the load verification's drift threshold on real weights and real photos.

Cases: ImageNet EfficientNet-Lite weights (lite0-2) in the architecture they were made for with
their own preprocessing (right), in the variant that pads differently (wrong variant), with
ImageNet's mean/std instead of theirs, with 0-255 input, and with BGR channel order (wrong
preprocessing); and a network never trained (untrained). The score is the first BatchNorm
layer's drift, and the largest over all layers, on scikit-image's sample photos.

    .venv/bin/python bench/verify_calibration.py
"""

from __future__ import annotations

import sys
from dataclasses import replace

import torch
from _report import command_line, machine, write_section

from transferkit.model.factory import create_model
from transferkit.weights.loading import load_pretrained
from transferkit.weights.registry import get_weights
from transferkit.weights.verify import DRIFT_WARN, verify_weights


class _Bgr(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.flip(1))


def main() -> int:
    rows = []
    for name in ("lite0", "lite1", "lite2"):
        record = get_weights(name)
        right = create_model(record.architecture)
        load_pretrained(right, name)
        pre = record.preprocessing
        cases = {
            "right": (right, pre),
            "wrong variant": (create_model(record.also_fits[0]), pre),
            "ImageNet mean/std": (right, replace(pre, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))),
            "0-255 input": (right, replace(pre, mean=(0.0,) * 3, std=(1 / 255,) * 3)),
            "BGR order": (_Bgr(right), pre),
        }
        load_pretrained(cases["wrong variant"][0], name)
        for case, (model, p) in cases.items():
            result = verify_weights(model, p)
            rows.append((name, case, result["drift"]["first"], result["drift"]["max"], result["status"]))
        untrained = verify_weights(create_model(record.architecture), pre)
        rows.append((name, "untrained", None, None, untrained["status"] + ": " + untrained["findings"][0]["kind"]))
    table = ["| weights | case | first-layer drift | largest drift | status |", "|---|---|---:|---:|---|"]
    for name, case, first, largest, status in rows:
        first_text = "-" if first is None else f"{first:.3f}"
        largest_text = "-" if largest is None else f"{largest:.3f}"
        table.append(f"| {name} | {case} | {first_text} | {largest_text} | {status} |")
        print(table[-1], flush=True)
    body = f"""
Machine: {machine()}

Command: `{command_line()}`. Photos: scikit-image's chelsea, coffee, rocket and astronaut,
preprocessed as each case says. Drift of a BatchNorm layer: mean over channels of
|batch mean - running mean| / sqrt(running var); the warning threshold is {DRIFT_WARN:g} on the first layer.

{chr(10).join(table)}

Unnormalised 0-255 input moves the first layer by about 90 running standard deviations, against
0.24-0.29 with the right preprocessing: the threshold sits between. ImageNet's mean/std instead of
the weights' own (0.41-0.48), BGR order (0.30-0.33) and the variant that pads differently (the same
first layer; 0.43-0.61 at most against 0.38-0.44) are not told apart reliably by four photos, so
they are not flagged: a closer check needs the native network's outputs (not built yet).
"""
    write_section("Load verification", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

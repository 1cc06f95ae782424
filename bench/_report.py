"""Shared by the benchmark scripts: describe the machine and write a section of BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"model name\s*:\s*(.+)", text)
        cpu = found.group(1).strip() if found else cpu
        flags = re.search(r"flags\s*:\s*(.+)", text)
        extras = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if flags and f in flags.group(1).split()]
    except OSError:
        extras = []
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu} ({', '.join(extras) or 'no AVX-512'}), {os.cpu_count()} cores, {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, {platform.system()} {platform.release()}"
    )


def write_section(title: str, body: str) -> None:
    """Replace (or append) the section ``## title`` of BENCHMARKS.md."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n\nWritten by the scripts in bench/.\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    BENCHMARKS.write_text(text.rstrip() + "\n")


def command_line() -> str:
    return " ".join([".venv/bin/python", *sys.argv])

#!/usr/bin/env bash
# The CUDA checks (bench/gpu_check.py) on a machine with PyTorch installed and no network, in under
# 8 minutes, one line per check.
#
#   bash bench/gpu_check.sh --fetch DIR   # here, with the registry: wheels of transferkit's
#                                         # dependencies other than torch, torchvision and numpy
#   bash bench/gpu_check.sh [DIR]         # there: installs what is missing from DIR (default
#                                         # bench/wheels) into a temporary folder, runs the checks
#
# transferkit itself runs from src/ on PYTHONPATH. Extra arguments after DIR go to gpu_check.py
# (--device cpu tries the script without a GPU).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}

if [ "${1:-}" = "--fetch" ]; then
    dir=${2:?usage: gpu_check.sh --fetch DIR}
    mkdir -p "$dir"
    # The installed closure of the core dependencies, at the versions installed here.
    "$py" - "$dir" <<'EOF'
import re, subprocess, sys
from importlib.metadata import distribution, PackageNotFoundError

skip = {"torch", "torchvision", "torchcodec", "numpy", "triton", "setuptools", "pip"}
roots = ["timm", "huggingface_hub", "scikit-learn", "pillow", "tqdm", "tensorboard", "matplotlib",
         "safetensors", "typer", "rich", "pyyaml"]
seen, todo = {}, list(roots)
while todo:
    name = re.split(r"[ ;<>=!~\[(]", todo.pop())[0].strip().lower().replace("_", "-")
    if not name or name in seen or name in skip or name.startswith("nvidia-"):
        continue
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        continue
    seen[name] = dist.version
    todo += [r for r in (dist.requires or []) if "extra ==" not in r]
pins = [f"{n}=={v}" for n, v in sorted(seen.items())]
subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", sys.argv[1], *pins],
               check=True)
EOF
    du -sh "$dir"
    exit 0
fi

wheels=${1:-$root/bench/wheels}
[ $# -gt 0 ] && shift
if [ -d "$wheels" ]; then
    target=$(mktemp -d)
    # Only the distributions this Python lacks: an installed one (numpy, pillow) is never shadowed.
    missing=$("$py" - "$wheels" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
from pathlib import Path

for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    name = wheel.name.split("-")[0]
    try:
        version(name.replace("_", "-"))
    except PackageNotFoundError:
        print(wheel)
EOF
)
    if [ -n "$missing" ]; then
        # shellcheck disable=SC2086
        "$py" -m pip install --quiet --no-index --no-deps --target "$target" $missing
        export PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}"
        export PATH="$target/bin:$PATH"
    fi
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 "$py" "$root/bench/gpu_check.py" "$@"

"""The package declares ranges that keep a user's PyTorch, ships its type information, and names its extras."""

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_pytorch_is_a_range_holding_the_pinned_release_and_the_pins_live_in_constraints():
    declared = {r.name: r for r in map(Requirement, PROJECT["dependencies"])}
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    pins = {r.name: r for r in map(Requirement, lines)}
    for name in ("torch", "torchvision", "torchcodec"):
        spec = declared[name].specifier
        assert not any(s.operator == "==" for s in spec), f"{name} is pinned in pyproject.toml: {spec}"
        pinned = next(iter(pins[name].specifier)).version
        installed = Version(version(name)).base_version
        assert pinned == installed and spec.contains(pinned), (name, spec, pinned, installed)
        assert spec.contains(f"{Version(pinned).major}.99") and not spec.contains(f"{Version(pinned).major + 1}.0")


def test_type_information_and_extras_are_shipped():
    assert (ROOT / "src" / "transferkit" / "py.typed").is_file()
    assert (
        "py.typed"
        in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["transferkit"]
    )
    extras = PROJECT["optional-dependencies"]
    assert {"peft", "hf", "all"} <= set(extras)
    (everything,) = extras["all"]
    named = set(Requirement(everything).extras)
    assert named == set(extras) - {"all", "dev"}

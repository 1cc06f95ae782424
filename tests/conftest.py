import os

# Tests never reach the internet: the Hugging Face Hub is a closed port on this machine unless a
# test serves a stand-in hub (tests/weights/stand_in_hub.py) and points huggingface_hub at it.
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import json
import sys

import pytest
import torch

from tests.helpers import TinyNet


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(run folder, its image folder): TinyNet, 2 epochs on 10 dark and 10 bright 16 px images (cat, dog),
    trained once for every test that uses a finished run as it is (exports may add files beside it)."""
    from tests.helpers import make_image_folder, tiny_config
    from transferkit.train.engine import fit

    root = tmp_path_factory.mktemp("runs")
    data = make_image_folder(root / "data", per_class=10, size=16)
    fit(tiny_config(data, root / "run", epochs=2, lr=0.05), log=lambda m: None)
    return root / "run", data


@pytest.fixture(autouse=True, scope="session")
def _user_cache(tmp_path_factory):
    """Keep the built-in data cache of the test session out of the user's home."""
    import os

    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the real entry point in-process: returns (exit code, stdout, stderr)."""

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["transferkit", *map(str, args)])
        capsys.readouterr()
        try:
            from transferkit.cli.app import main

            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def cli_json(cli):
    def run(*args):
        code, out, err = cli(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    return run

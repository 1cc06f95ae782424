import json
import pickle
import random
import struct

import pytest
import torch
from safetensors.torch import save_file

from transferkit import CheckpointError
from transferkit.weights.checkpoint import from_state_dict, read_checkpoint


class CreatesFile:
    """Unpickling this runs open(path, 'w'): a stand-in for any code a pickle can execute."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    victim = tmp_path / "created-by-unpickling"
    ckpt = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": CreatesFile(str(victim))}, ckpt)
    with pytest.raises(CheckpointError, match=r"refused: loading it would run code \((io|builtins)\.open\)"):
        read_checkpoint(ckpt)
    assert not victim.exists()


class RunsShell:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("layout", ["zip", "bare pickle"])
def test_os_system_pickle_is_recognised_by_its_globals_not_torch_wording(tmp_path, layout):
    victim = tmp_path / "touched"
    ckpt = tmp_path / "evil.pt"
    payload = {"w": torch.zeros(1), "x": RunsShell(victim)}
    if layout == "zip":
        torch.save(payload, ckpt)
    else:
        with open(ckpt, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"would run code \(posix\.system") as caught:
        read_checkpoint(ckpt)
    assert "weights_only" not in str(caught.value)  # torch's advice to turn the check off is not passed on
    assert not victim.exists()


def test_trusted_pickle_is_loaded(tmp_path):
    victim = tmp_path / "created"
    ckpt = tmp_path / "trusted.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": CreatesFile(str(victim))}, ckpt)
    result = read_checkpoint(ckpt, trust_checkpoint=True)
    assert victim.exists()  # trusting means the code ran, as documented
    torch.testing.assert_close(result.tensors["w"], torch.ones(2))


@pytest.mark.parametrize("container", ["state_dict", "model", "model_state_dict", "state_dict_ema"])
def test_unwraps_checkpoint_dicts(tmp_path, container):
    path = tmp_path / "c.pth"
    torch.save({container: {"fc.weight": torch.ones(2, 2)}, "epoch": 3}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.container == container and list(ckpt.tensors) == ["fc.weight"]


def test_use_ema_prefers_ema(tmp_path):
    path = tmp_path / "c.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "state_dict_ema": {"w": torch.ones(1)}}, path)
    assert read_checkpoint(path).tensors["w"].item() == 0
    assert read_checkpoint(path, use_ema=True).tensors["w"].item() == 1


def test_strips_wrapper_prefixes():
    ckpt = from_state_dict({"module.fc.weight": torch.ones(1), "_orig_mod.module.fc.bias": torch.ones(1)})
    assert sorted(ckpt.tensors) == ["fc.bias", "fc.weight"]
    assert ckpt.stripped_prefixes == ["module.", "_orig_mod."]


def test_reads_safetensors(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(3.0)}, str(path))
    ckpt = read_checkpoint(path)
    assert ckpt.format == "safetensors"
    torch.testing.assert_close(ckpt.tensors["a"], torch.arange(3.0))


def test_random_bytes(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(CheckpointError, match=r"random.pth' is neither a PyTorch checkpoint"):
        read_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "full.pth"
    torch.save({"w": torch.randn(64, 64)}, path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut.pth' is corrupt or truncated"):
        read_checkpoint(cut)


def test_empty_and_missing(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(empty)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")


def test_safetensors_header_lying_about_shape(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [100, 100], "data_offsets": [0, 16]}}).encode()
    path = tmp_path / "lies.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(CheckpointError, match=r"lies.safetensors' is not a valid safetensors file"):
        read_checkpoint(path)


def test_non_tensor_values(tmp_path):
    path = tmp_path / "mixed.pth"
    torch.save({"w": torch.ones(1), "note": "hello"}, path)
    with pytest.raises(CheckpointError, match=r"'note' holds a str, not a tensor"):
        read_checkpoint(path)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_globals_are_found_by_disassembly_in_every_protocol(protocol):
    import os

    from transferkit.torch_files import _pickle_globals

    data = pickle.dumps({"w": [1.0], "x": RunsShell("never")}, protocol=protocol)
    assert f"{os.system.__module__}.system" in _pickle_globals(data)

import torch

from transferkit.train.compare import compare
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit
from transferkit.train.run_folder import load_run


def test_strategies_share_decoded_data_kernels_and_activations_without_changing_results(tmp_path):
    # Pinned kernels, so that the run trained alone computes with the same ones.
    base = TrainConfig(
        model="tests.helpers:TinyNet",
        data="builtin:digits",
        out=str(tmp_path / "cmp"),
        epochs=2,
        image_size=16,
        precision="fp32",
        channels_last=False,
    )
    lines = []
    result = compare(base, ["freeze", "gradual"], log=lines.append)
    assert sum(line.startswith("data:") for line in lines) == 1
    assert sum(line.startswith("fast path for inference") for line in lines) == 1
    cache_lines = [line for line in lines if line.startswith("cache:")]
    assert len(cache_lines) == 2 and "reused from an earlier run" in cache_lines[1], cache_lines
    assert [r["strategy"] for r in result["rows"]] == ["freeze", "gradual"]

    alone = fit(TrainConfig.from_dict({**base.to_dict(), "strategy": "gradual", "out": str(tmp_path / "alone")}))
    compared = load_run(tmp_path / "cmp" / "gradual")
    assert [e["val_acc"] for e in compared["history"]] == [e["val_acc"] for e in alone["epochs"]]
    reference = load_run(tmp_path / "alone")["model"]
    assert all(torch.equal(compared["model"][k], reference[k]) for k in reference)

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
    # lp-ft and gradual both start with a head phase on statistics re-estimated the same way
    result = compare(base, ["lp-ft", "gradual"], log=lines.append)
    assert sum(line.startswith("data:") for line in lines) == 1
    assert sum(line.startswith("fast path for inference") for line in lines) == 1
    cache_lines = [line for line in lines if line.startswith("cache:")]
    assert len(cache_lines) == 2 and "reused from an earlier run" in cache_lines[1], cache_lines
    assert [r["strategy"] for r in result["rows"]] == ["lp-ft", "gradual"]

    alone = fit(TrainConfig.from_dict({**base.to_dict(), "strategy": "gradual", "out": str(tmp_path / "alone")}))
    compared = load_run(tmp_path / "cmp" / "gradual")
    assert [e["val_acc"] for e in compared["history"]] == [e["val_acc"] for e in alone["epochs"]]
    reference = load_run(tmp_path / "alone")["model"]
    assert all(torch.equal(compared["model"][k], reference[k]) for k in reference)


def test_the_verdict_is_read_off_the_numbers():
    from transferkit.train.compare import verdict

    rows = [
        {"strategy": "full", "trainable_params": 1000, "best_acc": 0.96, "val_acc": [0.66, 0.94, 0.96]},
        {"strategy": "freeze", "trainable_params": 4, "best_acc": 0.88, "val_acc": [0.78, 0.87, 0.88]},
        {"strategy": "gradual", "trainable_params": 1000, "best_acc": 0.90, "val_acc": [0.70, 0.50, 0.90]},
        {"strategy": "scratch", "trainable_params": 1000, "best_acc": 0.60, "val_acc": [0.10, 0.55, 0.60]},
    ]
    lines = verdict(rows)
    assert lines[0] == "full wins: 96.0% best, 6.0 points above gradual."
    assert "full beats scratch at every epoch (66.0/10.0, 94.0/55.0, 96.0/60.0%)." in lines
    assert "gradual is not ahead of scratch at epoch 2 (70.0/10.0, 50.0/55.0, 90.0/60.0%)." in lines
    assert "freeze trains 0.4% of the parameters and reaches 88.0%: 8.0 points from the best." in lines

import torch

from transferkit.advice.compare import compare
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit
from transferkit.train.folder.run_folder import load_run


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
    assert sum(line.startswith("kernels for inference") for line in lines) == 1
    cache_lines = [line for line in lines if line.startswith("cache:")]
    assert len(cache_lines) == 2 and "reused from an earlier run" in cache_lines[1], cache_lines
    assert [r["strategy"] for r in result["rows"]] == ["lp-ft", "gradual"]

    alone = fit(TrainConfig.from_dict({**base.to_dict(), "strategy": "gradual", "out": str(tmp_path / "alone")}))
    compared = load_run(tmp_path / "cmp" / "gradual")
    assert [e["val_acc"] for e in compared["history"]] == [e["val_acc"] for e in alone["epochs"]]
    reference = load_run(tmp_path / "alone")["model"]
    assert all(torch.equal(compared["model"][k], reference[k]) for k in reference)


def _rows(score, higher, table):
    return [
        {"strategy": s, "trainable_params": n, "best": best, "curve": curve, "score": score, "higher_better": higher}
        for s, n, best, curve in table
    ]


def test_the_verdict_is_read_off_the_numbers():
    from transferkit.advice.compare import verdict

    rows = _rows(
        "val_acc",
        True,
        [
            ("full", 1000, 0.96, [0.66, 0.94, 0.96]),
            ("freeze", 4, 0.88, [0.78, 0.87, 0.88]),
            ("gradual", 1000, 0.90, [0.70, 0.50, 0.90]),
            ("scratch", 1000, 0.60, [0.10, 0.55, 0.60]),
        ],
    )
    lines = verdict(rows)
    assert lines[0] == "full wins: 96.0% best, 6.0 points above gradual."
    assert "full beats scratch at every epoch (66.0/10.0, 94.0/55.0, 96.0/60.0%)." in lines
    assert "gradual is not ahead of scratch at epoch 2 (70.0/10.0, 50.0/55.0, 90.0/60.0%)." in lines
    assert "freeze trains 0.4% of the parameters and reaches 88.0%: 8.0 points from the best." in lines


def test_the_verdict_on_an_error_counts_lower_as_better():
    from transferkit.advice.compare import verdict

    rows = _rows(
        "val_mae",
        False,
        [("full", 1000, 0.10, [0.30, 0.10]), ("freeze", 4, 0.25, [0.28, 0.25]), ("scratch", 1000, 0.29, [0.5, 0.29])],
    )
    lines = verdict(rows)
    assert lines[0] == "full wins: MAE 0.1 best, 0.15 below freeze."
    assert "full beats scratch at every epoch (0.3/0.5, 0.1/0.29)." in lines
    assert "freeze trains 0.4% of the parameters and reaches MAE 0.25: 0.15 from the best." in lines

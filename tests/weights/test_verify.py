"""Load verification: untrained statistics, and natural photos against the statistics the weights expect."""

from dataclasses import replace

import pytest
import torch

from tests.helpers import TinyNet
from transferkit.model.factory import create_model
from transferkit.weights.loading import load_pretrained
from transferkit.weights.registry import get_weights
from transferkit.weights.verify import DRIFT_WARN, verify_weights


def test_statistics_of_a_new_layer_mean_an_untrained_file():
    fresh = TinyNet().state_dict()  # BatchNorm: mean 0, var 1, no batch tracked
    model = TinyNet()
    load_pretrained(model, fresh)
    result = verify_weights(model, photos=False)
    assert result["status"] == "warn" and result["findings"][0]["kind"] == "untrained_statistics"
    assert result["findings"][0]["layers"] == result["findings"][0]["of"] == 2
    trained = TinyNet()
    trained.train()
    trained(torch.rand(8, 3, 16, 16))  # one forward pass moves the running statistics
    load_pretrained(model, trained.state_dict())
    assert verify_weights(model, photos=False) == {"status": "ok", "findings": [], "drift": None, "variant": None}


@pytest.mark.slow
def test_real_weights_pass_and_0_255_input_is_caught():
    record = get_weights("lite0")
    model = create_model(record.architecture)
    load_pretrained(model, "lite0")
    right = verify_weights(model, record.preprocessing)
    assert right["status"] == "ok" and right["drift"]["first"] < 0.35  # 0.286 measured (BENCHMARKS.md)
    raw = replace(record.preprocessing, mean=(0.0,) * 3, std=(1 / 255,) * 3)  # pixels 0-255, unnormalised
    wrong = verify_weights(model, raw)
    finding = wrong["findings"][0]
    assert wrong["status"] == "warn" and finding["kind"] == "statistics_drift"
    assert finding["layer"] == "bn1" and finding["score"] > 50 * DRIFT_WARN


def test_load_reports_the_verification_and_strict_fails_on_it(tmp_path, cli, cli_json):
    torch.save(TinyNet().state_dict(), tmp_path / "fresh.pt")
    command = ["load", "tests.helpers:TinyNet", tmp_path / "fresh.pt"]
    verification = cli_json(*command)["verification"]
    assert verification["status"] == "warn" and verification["findings"][0]["kind"] == "untrained_statistics"
    code, out, _ = cli(*command, "--strict")
    assert code == 1 and "untrained_statistics" in out

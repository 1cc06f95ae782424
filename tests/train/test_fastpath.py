import torch

from transferkit.model.factory import create_model
from transferkit.train.fastpath import _pick, candidates, choose_fast_path


def test_probe_measures_and_leaves_the_model_unchanged():
    model = create_model("resnet18", num_classes=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = choose_fast_path(model, (3, 32, 32), device=torch.device("cpu"), batch_size=8, steps=1)
    measured = {f"{'channels-last' if cl else 'NCHW'} {p}" for cl, p in candidates(torch.device("cpu"))}
    assert set(fast.images_per_second) == measured and all(v > 0 for v in fast.images_per_second.values())
    assert fast.reason.startswith("measured")
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert model.conv1.weight.is_contiguous()


def test_user_choice_is_kept():
    model = create_model("resnet18", num_classes=4)
    fast = choose_fast_path(model, (3, 32, 32), device=torch.device("cpu"), channels_last=False, precision="fp32")
    assert (fast.channels_last, fast.precision, fast.reason) == (False, "fp32", "as asked")
    fast = choose_fast_path(model, (3, 32, 32), device=torch.device("cpu"), batch_size=8, steps=1, precision="fp32")
    assert fast.precision == "fp32" and set(fast.images_per_second) == {"NCHW fp32", "channels-last fp32"}


def test_inference_probe_also_chooses_the_batch_size():
    model = create_model("resnet18", num_classes=4)
    fast = choose_fast_path(
        model, (3, 32, 32), device=torch.device("cpu"), batch_size=4, max_batch_size=16, train=False
    )
    assert fast.batch_size in (4, 8, 16)
    assert f"batches of {fast.batch_size}" in fast.reason
    trained = choose_fast_path(model, (3, 32, 32), device=torch.device("cpu"), batch_size=4, steps=1)
    assert trained.batch_size is None  # the training batch size is the user's: it changes the result


def test_reduced_precision_must_win_clearly_but_the_memory_format_need_not():
    options = [(False, "fp32"), (True, "fp32"), (True, "bf16"), (False, "bf16")]

    def speeds(*values):
        return dict(zip(["NCHW fp32", "channels-last fp32", "channels-last bf16", "NCHW bf16"], values))

    assert _pick(options, speeds(156, 170, 256, 277)) == (False, "bf16")  # fastest, 1.6x the best fp32
    assert _pick(options, speeds(100, 105, 110, 90)) == (True, "fp32")  # bf16 within the margin of fp32
    assert _pick(options, speeds(100, 99, 50, 60)) == (False, "fp32")
    assert _pick(options[2:], speeds(0, 0, 100, 101)) == (False, "bf16")  # no fp32 to compare against
